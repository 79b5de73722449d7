"""Gold: as-of indices never see their own date or later; retrieval and its evaluation on the synthetic lake."""

import datetime as dt
import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from spymaster_assets.cli import main as cli
from spymaster_assets.gold.as_of import (
    INDEX_LOOKBACK_SESSIONS,
    PLAIN_COSINE,
    AsOf,
    StoredIndex,
    fit_metrics,
    history_for,
    index_dir,
    query_answer,
)
from spymaster_assets.gold.assets import normalization_stats, retrieval_evaluation, similarity_index, similarity_metric
from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import ns_to_et, trading_sessions
from spymaster_assets.lib.episodes import episode_schema, feature_set, vector_layout
from spymaster_assets.lib.normalization import fit_robust_z
from spymaster_assets.lib.similarity_metric import ATTRIBUTION, IDENTITY, LEARNED
from spymaster_assets.partitioned import NEWEST_EARLIER_SESSION
from spymaster_assets.resources import LakeResource, PipelineSettings
from spymaster_assets_tests.conftest import SYNTHETIC_SESSIONS
from spymaster_assets_tests.helpers import resources_for

SESSIONS = trading_sessions(dt.date(2024, 3, 1), dt.date(2024, 4, 30))
KINDS = ("PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20")


def fake_episodes(session: dt.date, n: int, tier: str, rng: np.random.Generator) -> pl.DataFrame:
    schema = episode_schema()
    supplied = {d.name for d in feature_set(tier)}
    frame = {
        "episode_id": [f"{session}_{i}" for i in range(n)], "session": [session] * n, "ts_ns": np.arange(n, dtype=np.int64),
        "state_t_ns": np.arange(n, dtype=np.int64), "level_kind": rng.choice(KINDS, n).tolist(),
        "level_price": np.full(n, 5000.0), "direction": rng.choice(["UP", "DOWN"], n).tolist(),
        "dir_sign": np.ones(n, dtype=np.int8), "time_bucket": rng.choice(["T0_15", "T60_120"], n).tolist(),
        "tier": [tier] * n, "anchor_atr": np.ones(n), "label": rng.choice(["BREAK", "REJECT", "CHOP"], n).tolist(),
    }
    for d in vector_layout():
        frame[d.name] = rng.normal(size=n) if d.name in supplied else [None] * n
    return pl.DataFrame(frame).with_columns([pl.lit(None).cast(t).alias(c) for c, t in schema.items() if c not in frame]).select(
        list(schema)).cast(schema)


@pytest.fixture(scope="module")
def fake_lake(tmp_path_factory) -> Lake:
    """Sixty sessions of random episodes with gaps (every 7th session missing), tiers T0 and T2."""
    lake = Lake(tmp_path_factory.mktemp("gold_lake"))
    rng = np.random.default_rng(3)
    for i, session in enumerate(SESSIONS):
        if i % 7 == 3:
            continue
        tier = "T0" if i % 5 == 0 else "T2"
        lake.write_frame("gold", "episodes", session, fake_episodes(session, 12, tier, rng))
    return lake


def stored_index(history: pl.DataFrame) -> StoredIndex:
    stats = fit_robust_z(history, vector_layout())
    return StoredIndex.build(history, stats, fit_metrics(history, stats))


def tier_indices(stored: StoredIndex) -> dict:
    return {tier: stored.tier_index(tier) for tier in stored.tiers()}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(SESSIONS[1:]))
def test_as_of_index_never_holds_the_date_or_later(fake_lake, as_of):
    history, used = history_for(fake_lake, as_of)
    assert all(day < as_of for day in used)
    indices = tier_indices(stored_index(history))
    for tier, index in indices.items():
        sessions = index.meta["session"]
        assert sessions.max() < as_of, tier
        assert index.n_episodes == history.filter(pl.col("tier") >= tier).height
    # Every earlier episode is in the T0 index (T0's dimensions are supplied by every tier).
    assert indices["T0"].n_episodes == history.height


def test_feature_sets_drop_absent_sections_rather_than_zero_filling(fake_lake):
    history, _ = history_for(fake_lake, SESSIONS[-1])
    indices = tier_indices(stored_index(history))
    assert indices["T0"].dim == len(feature_set("T0")) < indices["T2"].dim == len(feature_set("T2"))
    assert set(indices) == {"T0", "T1", "T2"}  # no T3 session: no T3 index


def test_stored_index_round_trip_is_compact_and_answers_alike(fake_lake, tmp_path):
    history, _ = history_for(fake_lake, SESSIONS[-1])
    stored = stored_index(history)
    stored.save(tmp_path)
    loaded = StoredIndex.load(tmp_path)
    assert loaded.z.dtype == np.float16 and loaded.z.shape == (history.height, len(vector_layout()))
    # One float16 copy of each vector: not one float32 FAISS copy per granularity × tier.
    assert (tmp_path / "vectors.npy").stat().st_size < history.height * len(vector_layout()) * 2 + 1024
    query = np.ones(len(feature_set("T2")), dtype=np.float32)
    for metric in ("learned", PLAIN_COSINE):
        before, after = stored.tier_index("T2", metric), loaded.tier_index("T2", metric)
        rows_before, sims_before = before.search_partition(("UP",), before_unit(query), 20)
        rows_after, sims_after = after.search_partition(("UP",), before_unit(query), 20)
        np.testing.assert_array_equal(rows_before, rows_after)
        np.testing.assert_allclose(sims_before, sims_after)
    # Random labels: nothing decides the outcome; still a fitted (or identity) metric per tier.
    assert set(loaded.metric["tier"].unique().to_list()) == {"T0", "T1", "T2"}


def before_unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).reshape(1, -1).astype(np.float32)


def test_as_of_assets_declare_one_earlier_session_not_a_lookback_window():
    """A UI backfill of one session must build that session's as-of partitions, not fan out
    to every later date whose trailing window contains it (measured before: 60 + 486)."""
    for asset in (normalization_stats, similarity_metric, similarity_index):
        spec = asset.specs_by_key[asset.key]
        mappings = {dep.asset_key.to_user_string(): dep.partition_mapping for dep in spec.deps}
        assert mappings["gold/episodes"] == NEWEST_EARLIER_SESSION
        assert "raw/dbn_files" in mappings
        lookbacks = [m for m in mappings.values() if isinstance(m, dg.TimeWindowPartitionMapping) and m.start_offset < -1]
        assert not lookbacks, asset.key


def materialize_as_of(lake: Lake, first: dt.date, last: dt.date) -> None:
    """normalization_stats → similarity_metric → similarity_index as one range run, as a backfill makes it."""
    defs = dg.Definitions(assets=[normalization_stats, similarity_metric, similarity_index],
                          resources={"lake": LakeResource(root=str(lake.root)), "settings": PipelineSettings()})
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(tags={"dagster/asset_partition_range_start": first.isoformat(),
                                          "dagster/asset_partition_range_end": last.isoformat()})
    assert result.success


def copy_episodes(source: Lake, target: Lake) -> None:
    for day in source.partitions("gold", "episodes"):
        target.write_frame("gold", "episodes", day, source.read("gold", "episodes", day))


def test_a_range_run_answers_a_date_exactly_as_a_from_scratch_build_of_that_date(fake_lake, tmp_path):
    ranged, alone = Lake(tmp_path / "ranged"), Lake(tmp_path / "alone")
    copy_episodes(fake_lake, ranged)
    copy_episodes(fake_lake, alone)
    dates = [d for d in SESSIONS[-12:] if fake_lake.has_partition("gold", "episodes", d)]
    served = dates[-1]
    materialize_as_of(ranged, dates[0], served)
    materialize_as_of(alone, served, served)
    assert alone.partitions("gold", "similarity_index") == [served.isoformat()]  # nothing else was built
    episodes = fake_lake.read("gold", "episodes", served)
    for metric in ("learned", PLAIN_COSINE):
        from_range = AsOf(ranged, served, metric=metric).answer(episodes.filter(pl.col("tier") == episodes["tier"][0]))
        from_scratch = AsOf(alone, served, metric=metric).answer(episodes.filter(pl.col("tier") == episodes["tier"][0]))
        assert [r.probabilities for r in from_range] == [r.probabilities for r in from_scratch]
        assert [r.neighbours["episode_id"].to_list() for r in from_range] == \
            [r.neighbours["episode_id"].to_list() for r in from_scratch]
    # The window is bounded and strictly before the date; the metric records what it was fitted on.
    fitted_on = alone.file_metadata("gold", "similarity_metric", served)["fitted_on_sessions"].split(",")
    assert max(fitted_on) < served.isoformat()
    assert StoredIndex.load(index_dir(alone, served)).provenance["window_sessions"] == INDEX_LOOKBACK_SESSIONS
    # 12 random-label episodes a session: a few hundred decided episodes, nothing to learn but still fitted.
    methods = set(alone.read("gold", "similarity_metric", served)["method"].to_list())
    assert methods <= {IDENTITY, LEARNED, ATTRIBUTION}


@pytest.fixture(scope="module")
def synthetic_lake(synthetic_home) -> Lake:
    return Lake(synthetic_home / "lake")


@pytest.mark.slow
def test_second_session_is_answered_by_the_first_only(synthetic_lake):
    first, second = (dt.date.fromisoformat(d) for d in SYNTHETIC_SESSIONS)
    assert not StoredIndex.load(index_dir(synthetic_lake, first)).tiers()  # nothing before the first session
    episodes = synthetic_lake.read("gold", "episodes", second)
    results = AsOf(synthetic_lake, second).answer(episodes)
    assert len(results) == episodes.height and all(r is not None for r in results)
    for r in results:
        assert sum(r.probabilities.values()) == pytest.approx(1.0)
        assert r.p_break_interval[0] <= r.probabilities["BREAK"] <= r.p_break_interval[1]
        assert set(r.neighbours["session"].to_list()) <= {first}


@pytest.mark.slow
def test_query_cli_prints_distribution_and_neighbours(synthetic_home, synthetic_lake, monkeypatch):
    monkeypatch.setenv("SPYMASTER_HOME", str(synthetic_home))
    monkeypatch.delenv("SPYMASTER_SERVER", raising=False)
    second = SYNTHETIC_SESSIONS[1]
    # A whole-minute grid time where price is within 1 ATR of a level (inside its approach zone, SPEC §6).
    state = synthetic_lake.read("silver", "state", second)
    on_minute = pl.col("t_ns") % 60_000_000_000 == 0
    near = state.filter((pl.col("d_atr").abs() <= 1.0) & on_minute).row(0, named=True)
    clock, level = ns_to_et(near["t_ns"]).time(), near["level_kind"]
    ask = ["query", "--date", second, "--time", f"{clock:%H:%M}", "--level", level]
    runner = CliRunner()
    out = runner.invoke(cli, [*ask, "--json"])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    assert answer["level_kind"] == level and answer["tier"] == "T3" and answer["near_level"] is True
    retrieval = answer["retrieval"]
    assert sum(retrieval["probabilities"].values()) == pytest.approx(1.0)
    assert all(n["session"] == SYNTHETIC_SESSIONS[0] for n in retrieval["neighbours"])
    direct = query_answer(synthetic_lake, dt.date.fromisoformat(second), clock, level)
    assert direct["retrieval"]["probabilities"] == pytest.approx(retrieval["probabilities"])  # deterministic
    text = runner.invoke(cli, ask)
    assert text.exit_code == 0 and "outcome: BREAK" in text.output and "nearest past setups" in text.output
    # A grid time where price is more than 2 ATR from a level: said so, not answered.
    far = state.filter((pl.col("d_atr").abs() > 2.5) & on_minute).row(0, named=True)
    far_clock = ns_to_et(far["t_ns"]).time()
    away = runner.invoke(cli, ["query", "--date", second, "--time", f"{far_clock:%H:%M}", "--level", far["level_kind"]])
    assert away.exit_code == 0 and "outside its approach zone" in away.output and "outcome:" not in away.output
    bad = runner.invoke(cli, ["query", "--date", second, "--time", "09:31", "--level", "OR_HIGH"])
    assert bad.exit_code != 0 and "OR_HIGH has no state" in bad.output


@pytest.mark.slow
def test_retrieval_evaluation_reports_against_base_rate_and_oracle(synthetic_home, synthetic_lake):
    resources = resources_for(synthetic_home, source="synthetic", synthetic_scale="tiny")
    result = dg.materialize([retrieval_evaluation], resources={k: resources[k] for k in ("lake", "market_data")})
    assert result.success
    report = json.loads((synthetic_lake.root / "reports" / "retrieval_evaluation" / "report.json").read_text())
    second_session_episodes = synthetic_lake.read("gold", "episodes", SYNTHETIC_SESSIONS[1]).height
    assert report["n"] == second_session_episodes and report["sessions"] == 1  # the first session has no history
    pooled = report["pooled"]
    for key in ("brier", "brier_base", "log_loss", "ece", "auc"):
        assert key in pooled
    oracle = report["oracle"]
    assert oracle["n_matched"] >= 10  # tiny sessions still plant enough touches to compare
    assert 0.5 < oracle["oracle_auc"] <= 1.0 and oracle["predictor_auc"] == pytest.approx(
        oracle["auc_ratio"] * oracle["oracle_auc"])
    assert (synthetic_lake.root / "reports" / "retrieval_evaluation" / "reliability.png").stat().st_size > 1000
    comparison = report["comparison"]
    # two sessions: no as-of model has enough history, so the model rows are skipped, never the retrieval rows
    assert "model rows skipped" in comparison["break_model"]
    assert {"retrieval (learned metric)", "retrieval (robust-z cosine)", "base rate"} <= {
        row["predictor"] for row in comparison["rows"]}
    assert all(row["n"] == report["n"] for row in comparison["rows"])
    assert set(report["fallback_rates"]) == {"kind_direction_bucket", "kind_direction", "direction"}
    assert sum(report["fallback_rates"].values()) == pytest.approx(1.0)
    similarity = report["neighbour_similarity"]["median"]
    assert -1.0 <= similarity["p10"] <= similarity["median"] <= similarity["p90"] <= 1.0
    served = synthetic_lake.read("reports", "retrieval_predictions", SYNTHETIC_SESSIONS[1])
    assert served["similarity_p10"].le(served["similarity_median"]).all()
    assert served["p_break_plain_cosine"].null_count() == 0
    assert (served["p_break"] > 0).all() and (served["p_break_high"] > served["p_break_low"]).all()


def test_an_episode_missing_a_supplied_dimension_is_named_not_indexed(fake_lake):
    history, _ = history_for(fake_lake, SESSIONS[-1])
    t2 = [d.name for d in feature_set("T2") if d.tier == "T2"][0]
    broken = history.with_columns(pl.when(pl.col("tier") == "T2").then(None).otherwise(pl.col(t2)).alias(t2))
    stats = fit_robust_z(history, vector_layout())
    with pytest.raises(ValueError, match="lack supplied dimensions"):
        StoredIndex.build(broken, stats, fit_metrics(history, stats))
    with pytest.raises(ValueError, match="lack supplied dimensions"):
        fit_metrics(broken, stats)


def test_comparison_joins_the_model_table_and_scores_every_predictor_on_the_same_episodes(tmp_path):
    from spymaster_assets.gold.evaluation import comparison_frame, comparison_table, read_break_predictions

    lake = Lake(tmp_path)
    assert read_break_predictions(lake) is None  # the model tier has not run: rows skipped, no error
    ids = [f"e{i}" for i in range(6)]
    labels = ["BREAK", "REJECT", "BREAK", "CHOP", "BREAK", "REJECT"]
    learned = pl.DataFrame({"episode_id": ids, "label": labels, "p_break": [.9, .2, .8, .3, .7, .1],
                            "base_break": [.5] * 6, "similarity_median": [.6] * 6})
    plain = learned.with_columns(pl.Series("p_break", [.6, .5, .4, .5, .7, .3]))  # 7 of 9 pairs ordered
    model = pl.DataFrame({"episode_id": ids[1:], "session": [dt.date(2024, 3, 4)] * 5,
                          "p_break": [.1, .9, .2, .8, .3], "p_break_baseline": [.4, .6, .4, .5, .4],
                          "baseline_feature": ["wall_ratio_30min"] * 5})
    lake.write_frame("ml", "break_predictions", "2024-03-04", model)
    frame = comparison_frame(learned, plain, read_break_predictions(lake))
    assert frame["episode_id"].to_list() == ids[1:]  # only episodes every predictor answered
    rows = {row["predictor"]: row for row in comparison_table(frame)}
    assert set(rows) == {"retrieval (learned metric)", "retrieval (robust-z cosine)", "base rate",
                         "break model (as of D)", "best single feature"}
    assert all(row["n"] == 5 for row in rows.values())
    assert rows["retrieval (learned metric)"]["auc"] == 1.0 and rows["break model (as of D)"]["auc"] == 1.0
    assert rows["best single feature"]["feature"] == "wall_ratio_30min"
    assert rows["base rate"]["auc"] == 0.5


def test_an_index_partition_in_the_old_layout_is_an_error_not_an_empty_answer(tmp_path):
    lake = Lake(tmp_path)
    (index_dir(lake, SESSIONS[5]) / "tier=T3").mkdir(parents=True)  # schema 1: one directory per tier
    with pytest.raises(ValueError, match="rematerialize"):
        AsOf(lake, SESSIONS[5]).index("T3")
    assert AsOf(lake, SESSIONS[6]).index("T3") is None  # no partition at all: nothing indexed yet
