"""Stream projections: causal features, cubic paths through the anchors, exact compiled trees, the one
inference function (`project`) batch = row by row and blind to the future, calibrated bands on held-out sessions."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib import stream_projections as P

T0_NS = 1_733_841_000_000_000_000
BAR_NS = 30_000_000_000


def mean_reverting_streams(sessions: int = 10, bars: int = 120, seed: int = 3) -> pl.DataFrame:
    """σ_P follows x' = 0.85·x + N(0, 0.08²) (clipped): its future is partly predictable from its present."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(sessions):
        for level in ("OR_HIGH", "PM_LOW"):
            x = np.empty(bars)
            x[0] = rng.uniform(-0.5, 0.5)
            for i in range(1, bars):
                x[i] = np.clip(0.85 * x[i - 1] + rng.normal(0, 0.08), -1, 1)
            frame = {"session": [dt.date(2024, 12, 2) + dt.timedelta(days=s)] * bars, "level_kind": [level] * bars,
                     "t_ns": T0_NS + np.arange(bars) * BAR_NS, "sigma_p": x}
            frame |= {c: rng.uniform(-1, 1, bars) for c in P.CONTEXT_STREAMS}
            frames.append(pl.DataFrame(frame))
    return pl.concat(frames)


def test_features_read_only_the_past_and_targets_only_the_future():
    streams = mean_reverting_streams(sessions=1)
    cut = T0_NS + 60 * BAR_NS
    perturbed = streams.with_columns(pl.when(pl.col("t_ns") > cut).then(-pl.col("sigma_p")).otherwise("sigma_p").alias("sigma_p"))
    before, after = (P.projection_samples(s, "sigma_p", with_targets=False).filter(pl.col("t_ns") <= cut)
                     for s in (streams, perturbed))
    assert before.height > 0 and before.equals(after)
    samples = P.projection_samples(streams, "sigma_p").filter(pl.col("level_kind") == "OR_HIGH").sort("t_ns")
    x = streams.filter(pl.col("level_kind") == "OR_HIGH").sort("t_ns")["sigma_p"].to_numpy()
    first = samples.row(0, named=True)  # the first bar with 16 bars of history
    assert first["t_ns"] == T0_NS + (P.LOOKBACK - 1) * BAR_NS
    assert first["sigma_p_lag3"] == x[P.LOOKBACK - 1 - 3]
    assert first["target_h5"] == pytest.approx(x[P.LOOKBACK - 1 + 5] - x[P.LOOKBACK - 1])


def test_cubic_paths_pass_through_the_anchors_and_stay_in_range():
    current = np.array([0.1, 0.9])
    anchors = np.array([[[0.02, 0.05, 0.1]], [[0.1, 0.3, 0.5]]])  # rows × 1 quantile × anchors
    paths = P.cubic_paths(current, anchors)
    assert paths.shape == (2, 1, P.HORIZON)
    for i, h in enumerate(P.ANCHOR_BARS):
        assert paths[0, 0, h - 1] == pytest.approx(0.1 + anchors[0, 0, i])
    assert paths[1].max() <= 1.0  # 0.9 + 0.5 is clipped


def test_quantile_bands_cover_held_out_sessions_and_beat_no_change():
    samples = P.projection_samples(mean_reverting_streams(), "sigma_p")
    train, held_out = P.session_split(samples, holdout_sessions=3)
    assert set(train["session"].unique()).isdisjoint(held_out["session"].unique())
    projector = P.StreamProjector.fit(train, "sigma_p", P.ProjectionConfig(n_estimators=60))
    report = P.band_coverage(projector, held_out)
    assert report["sessions"] == 3
    for h in P.ANCHOR_BARS:
        assert 0.65 <= report["coverage_q10_q90"][h] <= 0.93, report
    assert report["mae_q50"][10] < report["mae_no_change"][10]  # mean reversion is learned
    paths = projector.paths(held_out.head(5))
    assert paths.shape == (5, 3, P.HORIZON) and (paths[:, 0] <= paths[:, 2] + 1e-12).all()


@pytest.fixture(scope="module")
def fitted() -> tuple[pl.DataFrame, P.ProjectionModels]:
    """Models of σ_P and σ_M fitted on eight mean-reverting sessions; the streams include two more."""
    streams = mean_reverting_streams(sessions=10, bars=80).with_columns(
        (pl.col("sigma_p").ewm_mean(alpha=0.3, adjust=False).over("session", "level_kind")).alias("sigma_p_smooth"))
    train = streams.filter(pl.col("session") < dt.date(2024, 12, 10))
    models = P.ProjectionModels({s: P.StreamProjector.fit(P.projection_samples(train, s), s, P.ProjectionConfig(n_estimators=30))
                                 for s in ("sigma_p", "sigma_m")})
    return streams.filter(pl.col("session") >= dt.date(2024, 12, 10)), models


def test_compiled_trees_equal_lightgbm_predictions_with_missing_values(fitted):
    held_out, models = fitted
    X = P.projection_samples(held_out, "sigma_p", with_targets=False).select(P.feature_names("sigma_p")).to_numpy()
    X[::3, P.LOOKBACK + 2] = np.nan  # a missing context stream (a tier without it)
    X[::5, P.LOOKBACK] = 0.0
    projector = models.projectors["sigma_p"]
    expected = np.column_stack([projector.boosters[(h, q)].predict(X) for q in P.QUANTILES for h in P.ANCHOR_BARS])
    np.testing.assert_allclose(projector.compiled.predict(X, chunk_rows=7), expected, rtol=0, atol=1e-12)
    assert projector.compiled.depth <= P.ProjectionConfig().max_depth


def test_project_at_t_reads_no_row_after_t_and_batch_equals_row_by_row(fitted):
    held_out, models = fitted
    cut = T0_NS + 40 * BAR_NS
    later = pl.col("t_ns") > cut
    future_changed = held_out.with_columns(*[pl.when(later).then(-pl.col(c) * 0.5).otherwise(pl.col(c)).alias(c)
                                             for c in ("sigma_p", "sigma_p_smooth", "sigma_m", "sigma_f")])
    batch = P.project(models, held_out)
    before = batch.filter(pl.col("t_ns") <= cut)
    assert before.height > 0 and set(before["stream"].unique()) == {"sigma_p", "sigma_m"}
    assert P.project(models, future_changed).filter(pl.col("t_ns") <= cut).equals(before)
    assert not P.project(models, future_changed).filter(later).equals(batch.filter(later))  # the perturbation bites

    # The live engine's call: one level, no session column, only the last LOOKBACK + 2 rows up to t.
    level = held_out.filter((pl.col("session") == held_out["session"].min()) & (pl.col("level_kind") == "PM_LOW"))
    recent = level.filter(pl.col("t_ns") <= cut).sort("t_ns").tail(P.LOOKBACK + 2).drop("session")
    live = P.project(models, recent, latest_only=True)
    assert live["t_ns"].unique().to_list() == [cut] and live.height == 2 * P.HORIZON
    same = batch.filter((pl.col("session") == level["session"][0]) & (pl.col("level_kind") == "PM_LOW")
                        & (pl.col("t_ns") == cut)).drop("session")
    assert live.sort(["stream", "horizon"]).equals(same.sort(["stream", "horizon"]))


def test_bands_are_ordered_in_range_and_start_from_the_value_now(fitted):
    held_out, models = fitted
    bands = P.project(models, held_out)
    assert (bands["q10"] <= bands["q50"]).all() and (bands["q50"] <= bands["q90"]).all()
    assert bands.select(pl.col("q10").min() >= -1.0, pl.col("q90").max() <= 1.0).row(0) == (True, True)
    first = bands.filter(pl.col("stream") == "sigma_p").sort(["session", "level_kind", "t_ns"]).row(0, named=True)
    x = held_out.filter((pl.col("session") == first["session"]) & (pl.col("level_kind") == first["level_kind"])).sort("t_ns")
    assert first["t_ns"] == x["t_ns"][P.LOOKBACK - 1] and first["value_now"] == x["sigma_p"][P.LOOKBACK - 1]
    # Rows without their own 16 bars of history get no projection; a missing context stream is fine.
    no_context = P.project(models, held_out.with_columns(pl.lit(None, pl.Float64).alias("sigma_d")))
    assert no_context.height == bands.height


def test_path_metrics_by_hand():
    scored = pl.DataFrame({
        "horizon": [1, 10, 1, 10], "value_now": [0.0, 0.0, 0.5, 0.5], "realised": [0.1, 0.3, 0.4, 0.2],
        "q10": [0.0, 0.1, 0.3, 0.3], "q50": [0.1, 0.2, 0.4, 0.4], "q90": [0.2, 0.4, 0.5, 0.5],
    }, schema_overrides={"horizon": pl.Int8})
    m = P.path_metrics(scored)
    actual, median, flat = np.array([0.1, 0.3, 0.4, 0.2]), np.array([0.1, 0.2, 0.4, 0.4]), np.array([0.0, 0.0, 0.5, 0.5])
    sst = ((actual - actual.mean()) ** 2).sum()
    assert m["path_r2"] == pytest.approx(1 - ((actual - median) ** 2).sum() / sst)
    assert m["path_r2_flat"] == pytest.approx(1 - ((actual - flat) ** 2).sum() / sst)
    assert m["endpoint_mae"] == pytest.approx((0.1 + 0.2) / 2) and m["endpoint_mae_flat"] == pytest.approx((0.3 + 0.3) / 2)
    assert m["coverage_q10_q90"] == 0.75 and m["coverage_by_horizon"] == {1: 1.0, 10: 0.5}  # 0.2 < q10 0.3 at h 10


def test_realised_paths_stay_on_their_level_and_session():
    streams = mean_reverting_streams(sessions=2, bars=20)
    realised = P.realised_paths(streams, "sigma_p")
    x = streams.filter((pl.col("session") == dt.date(2024, 12, 2)) & (pl.col("level_kind") == "OR_HIGH")).sort("t_ns")
    row = realised.filter((pl.col("session") == dt.date(2024, 12, 2)) & (pl.col("level_kind") == "OR_HIGH")
                          & (pl.col("t_ns") == x["t_ns"][5]) & (pl.col("horizon") == 3))
    assert row["realised"].item() == x["sigma_p"][8]
    last = realised.filter((pl.col("t_ns") == x["t_ns"][-1]) & (pl.col("horizon") == 1))
    assert last["realised"].null_count() == last.height  # past the end of the path: no value, not the next level's
