"""Stream projections: causal features, cubic paths through the anchors, calibrated bands on held-out sessions."""

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


def test_projection_models_as_of_a_date_save_load_and_never_see_it(tmp_path):
    """The as-of asset on a lake of eight sessions of streams: models for the last date are fitted on
    the earlier ones only, reload to the same predictions, and report held-out coverage."""
    import json

    import dagster as dg

    from spymaster_assets.gold.streams import load_projectors, stream_projection_models
    from spymaster_assets.lake import Lake
    from spymaster_assets.lib.calendar import trading_sessions
    from spymaster_assets.resources import LakeResource, PipelineSettings

    lake = Lake(tmp_path / "lake")
    sessions = trading_sessions(dt.date(2024, 12, 2), dt.date(2024, 12, 11))
    streams = mean_reverting_streams(sessions=len(sessions), bars=80).with_columns(
        pl.col("session").replace_strict(dict(zip(sorted(set(mean_reverting_streams(len(sessions), 80)["session"])),
                                                  sessions))).alias("session"))
    for day in sessions[:-1]:
        lake.write_frame("gold", "streams", day, streams.filter(pl.col("session") == day))
    target = sessions[-1]
    result = dg.materialize([stream_projection_models], partition_key=target.isoformat(),
                            resources={"lake": LakeResource(root=str(lake.root)), "settings": PipelineSettings()})
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    meta = json.loads((lake.partition_dir("gold", "stream_projection_models", target) / "meta.json").read_text())
    assert max(meta["fitted_on_sessions"]) < target.isoformat() and meta["streams"] == ["sigma_p", "sigma_m", "sigma_f", "sigma_b"]
    assert 0.5 <= meta["coverage"]["sigma_p"]["coverage_q10_q90"]["10"] <= 1.0
    projectors = load_projectors(lake, target)
    samples = P.projection_samples(streams.filter(pl.col("session") == sessions[0]), "sigma_p").head(4)
    assert projectors["sigma_p"].paths(samples).shape == (4, 3, P.HORIZON)
