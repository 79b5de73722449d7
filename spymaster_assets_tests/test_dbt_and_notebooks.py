"""The analyst layer on the two-session synthetic lake: `dbt build` of the marts through Dagster
(every dbt test an asset check, all passing), mart contents against the lake recomputed with
polars, the optional lake tables (retrieval predictions, break-model predictions) absent and present,
and both notebooks executed top to bottom."""

import datetime as dt
import math
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import polars as pl
import pytest

from spymaster_assets_tests.conftest_dbt import prepare_dbt_manifest

pytestmark = pytest.mark.slow

prepare_dbt_manifest()  # before the import below reads it (also done by the pytest_configure hook)

from spymaster_assets.lake import Lake  # noqa: E402
from spymaster_assets.lib.metrics import reliability_table  # noqa: E402
from spymaster_assets.marts import dbt_resource, marts_dbt  # noqa: E402
from spymaster_assets.warehouse import LAKE_VIEWS_KEY  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
OPTIONAL_TABLES = ("reports/retrieval_predictions", "ml/break_predictions")
Z90 = 1.6448536269514722
ET = ZoneInfo("America/New_York")


def copy_lake(src_home: Path, dst_home: Path, without: tuple[str, ...] = OPTIONAL_TABLES) -> Lake:
    """A private copy of a home's lake (tiny) minus `without` tables, so each case controls exactly
    which optional tables exist, and the shared fixture's warehouse is never written."""
    skip = {(src_home / "lake" / table).resolve() for table in without}
    shutil.copytree(src_home / "lake", dst_home / "lake",
                    ignore=lambda folder, names: [n for n in names if (Path(folder) / n).resolve() in skip])
    return Lake(dst_home / "lake")


def read_mart(home: Path, table: str) -> pl.DataFrame:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(f"select * from {table}").pl()


def scan_lake(store: Lake, layer: str, table: str) -> pl.DataFrame:
    return pl.read_parquet(store.table_dir(layer, table) / "date=*" / "part-*.parquet", hive_partitioning=True)


def wilson(k: int, n: int, z: float = Z90) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.fixture(scope="module")
def marts_run(synthetic_home, tmp_path_factory):
    """The marts materialized with Dagster on a copy of the synthetic lake without the optional tables."""
    home = tmp_path_factory.mktemp("marts_home")
    store = copy_lake(synthetic_home, home)
    result = dg.materialize([marts_dbt], resources={"dbt": dbt_resource(home)}, raise_on_error=False)
    return home, store, result


def test_marts_wiring():
    """Sources map to the assets that write them; models reading the lake wait for the DuckDB views."""
    upstream = {key for deps in marts_dbt.asset_deps.values() for key in deps} - set(marts_dbt.keys)
    assert {dg.AssetKey(k) for k in (["silver", "events"], ["silver", "labels"], ["silver", "levels"],
                                      ["gold", "episodes"], ["bronze", "front_month_contract"],
                                      ["reports", "retrieval_evaluation"], ["ml", "break_predictions"],
                                      ["ml", "projections"])} <= upstream
    staging = [key for key in marts_dbt.keys if key.path[0] == "staging"]
    assert len(staging) == 9 and all(LAKE_VIEWS_KEY in marts_dbt.asset_deps[key] for key in staging)
    assert {dg.AssetKey(["marts", m]) for m in ("daily_level_stats", "outcomes_by_segment", "retrieval_calibration",
                                                 "model_performance_by_fold")} <= set(marts_dbt.keys)
    assert set(marts_dbt.group_names_by_key.values()) == {"marts"}
    assert not marts_dbt.partitions_def
    names = {check.name for check in marts_dbt.check_keys}
    assert any(n.startswith("relationships_stg_labels_event_id") for n in names)
    assert any(n.startswith("shares_sum_to_one_daily_level_stats") for n in names)


def test_dbt_build_passes_every_test_as_asset_check(marts_run):
    _, _, result = marts_run
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    materialized = {m.materialization.asset_key for m in result.get_asset_materialization_events()}
    assert materialized == set(marts_dbt.keys)
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_check_key for e in evaluations} == set(marts_dbt.check_keys)
    assert [e.check_name for e in evaluations if not e.passed] == []


def test_daily_level_stats_match_the_lake(marts_run):
    home, store, _ = marts_run
    mart = read_mart(home, "marts.daily_level_stats")
    labels = scan_lake(store, "silver", "labels").select("event_id", "label_4m", "mfe_atr_4m")
    events = scan_lake(store, "silver", "events").join(labels, on="event_id", how="left")
    expected = (events.group_by("session", "level_kind")
                .agg(pl.len().alias("touches"), (pl.col("label_4m") == "BREAK").sum().alias("breaks"),
                     (pl.col("label_4m") == "REJECT").sum().alias("rejects"),
                     (pl.col("label_4m") == "CHOP").sum().alias("chops"),
                     pl.col("mfe_atr_4m").mean().alias("mean_mfe_atr"), pl.col("ts_ns").min().alias("first_ns"),
                     pl.col("level_price").sort_by("ts_ns").first().alias("first_price")))
    assert mart.height == expected.height == events.select("session", "level_kind").unique().height > 0
    joined = expected.join(mart, on=["session", "level_kind"], how="left", suffix="_mart")
    for column in ("touches", "breaks", "rejects", "chops"):
        assert joined[column].cast(pl.Int64).to_list() == joined[f"{column}_mart"].to_list(), column
    for column in ("mean_mfe_atr",):
        assert (joined[column] - joined[f"{column}_mart"]).abs().max() < 1e-9
    assert (joined["first_price"] - joined["level_price_at_first_touch"]).abs().max() < 1e-9
    first_et = [dt.datetime.fromtimestamp(ns / 1e9, ET).replace(tzinfo=None) for ns in joined["first_ns"]]
    assert all(abs((a - b).total_seconds()) < 1e-3 for a, b in zip(first_et, joined["first_touch_et"]))
    front = scan_lake(store, "bronze", "front_month_contract").filter(pl.col("is_front"))
    assert set(mart["front_month"]) == set(front["symbol"])
    shares = mart.filter(pl.col("break_share").is_not_null())
    assert ((shares["break_share"] + shares["reject_share"] + shares["chop_share"]) - 1).abs().max() < 1e-12


def test_outcomes_by_segment_match_gold_episodes(marts_run):
    home, store, _ = marts_run
    mart = read_mart(home, "marts.outcomes_by_segment")
    episodes = scan_lake(store, "gold", "episodes").select("level_kind", "direction", "time_bucket", "label",
                                                            "time_to_barrier_s")
    expected = (episodes.group_by("level_kind", "direction", "time_bucket")
                .agg(pl.len().alias("n"), pl.col("label").is_not_null().sum().alias("labelled"),
                     (pl.col("label") == "BREAK").sum().alias("k"),
                     pl.col("time_to_barrier_s").filter(pl.col("label").is_in(["BREAK", "REJECT"])).mean()
                     .alias("ttb")))
    assert mart.height == expected.height > 0
    joined = expected.join(mart, on=["level_kind", "direction", "time_bucket"])
    assert joined.height == expected.height
    assert joined["n"].cast(pl.Int64).to_list() == joined["episodes"].to_list()
    for row in joined.filter(pl.col("labelled") > 0).iter_rows(named=True):
        low, high = wilson(row["k"], row["labelled"])
        assert row["break_share_lo90"] == pytest.approx(low, abs=1e-12)
        assert row["break_share_hi90"] == pytest.approx(high, abs=1e-12)
        assert row["break_share_lo90"] - 1e-12 <= row["break_share"] <= row["break_share_hi90"] + 1e-12
        if row["ttb"] is not None:
            assert row["mean_time_to_barrier_s"] == pytest.approx(row["ttb"], rel=1e-12)


def test_optional_tables_absent_give_empty_marts(marts_run):
    home, store, result = marts_run
    assert result.success
    assert not any(store.table_dir(*table.split("/")).exists() for table in OPTIONAL_TABLES)
    folds = read_mart(home, "marts.model_performance_by_fold")
    calibration = read_mart(home, "marts.retrieval_calibration")
    assert folds.height == calibration.height == 0
    assert {"fold_id", "scheme", "model_as_of", "test_session", "auc", "brier_skill", "run_mean_auc"} <= set(folds.columns)
    assert {"level_kind", "bin", "mean_p_break", "observed_break_rate", "brier_retrieval"} <= set(calibration.columns)


def test_optional_tables_present_fill_the_marts(synthetic_home, tmp_path):
    from spymaster_assets.gold.evaluation import PREDICTION_SCHEMA, walk_forward_predictions
    from spymaster_assets.lib.metrics import binary_report
    from spymaster_assets.ml.assets import PREDICTION_SCHEMA as MODEL_PREDICTION_SCHEMA
    from spymaster_assets.ml.assets import PREDICTIONS_TABLE

    store = copy_lake(synthetic_home, tmp_path)
    sessions = sorted(dt.date.fromisoformat(p.name.removeprefix("date="))
                      for p in store.table_dir("gold", "similarity_index").glob("date=*"))
    predictions = walk_forward_predictions(store, sessions)
    assert predictions.height > 0
    for (session,), frame in predictions.group_by("session"):
        store.write_frames("reports", "retrieval_predictions", session, [frame], PREDICTION_SCHEMA)
    # Three sessions scored by two retrains (as ml/break_predictions writes them), with a tie, a CHOP
    # (out of scope for p(BREAK | decisive)) and an unlabelled episode (not scored).
    days = [dt.date(2024, 12, 9), dt.date(2024, 12, 10), dt.date(2024, 12, 11)]
    scored = pl.DataFrame({
        "episode_id": [f"e{i}" for i in range(11)],
        "session": [days[0]] * 5 + [days[1]] * 3 + [days[2]] * 3,
        "label": ["BREAK", "REJECT", "BREAK", "CHOP", None, "REJECT", "BREAK", "REJECT", "BREAK", "REJECT", "REJECT"],
        "p_break_decisive": [0.7, 0.4, 0.4, 0.9, 0.5, 0.2, 0.6, 0.65, 0.55, 0.5, 0.3],
        "base_break_decisive": [0.45] * 5 + [0.45] * 3 + [0.5] * 3,
        "model_as_of": [days[0]] * 8 + [days[2]] * 3,
    }).with_columns(pl.lit(0).cast(pl.Int64).alias("ts_ns"), pl.lit("OR_HIGH").alias("level_kind"),
                    pl.lit("UP").alias("direction"), pl.lit("T0_15").alias("time_bucket"), pl.lit("T0").alias("tier"),
                    pl.col("p_break_decisive").alias("p_break"), (1 - pl.col("p_break_decisive")).alias("p_reject"),
                    pl.lit(0.0).alias("p_chop"), pl.col("base_break_decisive").alias("base_break"),
                    pl.lit(0.1).alias("base_chop"), pl.lit(dt.date(2024, 9, 1)).alias("trained_on_first"),
                    (pl.col("model_as_of") - pl.duration(days=2)).alias("trained_on_last"),
                    pl.lit(0.5).alias("p_break_baseline"), pl.lit("approach_velocity").alias("baseline_feature"))
    for (session,), frame in scored.group_by("session"):
        store.write_frames("ml", PREDICTIONS_TABLE, session, [frame], MODEL_PREDICTION_SCHEMA)

    invocation = dbt_resource(tmp_path).cli(["build"]).wait()
    statuses = {r["unique_id"]: r["status"] for r in invocation.get_artifact("run_results.json")["results"]}
    assert {k: v for k, v in statuses.items() if v not in ("success", "pass")} == {}

    by_fold = read_mart(tmp_path, "marts.model_performance_by_fold").sort("test_session")
    assert by_fold["fold_id"].to_list() == [f"walk_forward/{d}" for d in days]
    decisive = scored.filter(pl.col("label").is_in(["BREAK", "REJECT"]))
    for row in by_fold.iter_rows(named=True):
        day = decisive.filter(pl.col("session") == row["test_session"])
        expected = binary_report((day["label"] == "BREAK").to_numpy().astype(float), day["p_break_decisive"].to_numpy(),
                                 day["base_break_decisive"].to_numpy())
        assert row["n_test"] == day.height
        for column in ("auc", "brier", "brier_base", "brier_skill", "log_loss", "log_loss_base", "log_loss_skill"):
            assert row[column] == pytest.approx(expected[column], rel=1e-12), column
    assert by_fold["auc"].to_list()[0] == pytest.approx(0.75)  # by hand: 0.7 > 0.4, the tied 0.4s count half
    first_run = by_fold.filter(pl.col("model_as_of") == days[0])
    assert first_run["folds_in_run"].to_list() == [2, 2]
    assert first_run["run_mean_auc"][0] == pytest.approx(first_run["auc"].mean(), rel=1e-12)

    calibration = read_mart(tmp_path, "marts.retrieval_calibration")
    pooled = calibration.filter(pl.col("level_kind") == "ALL").sort("bin")
    y = (predictions["label"] == "BREAK").to_numpy().astype(float)
    reference = reliability_table(y, predictions["p_break"].to_numpy())
    assert pooled["bin"].to_list() == reference["bin"].to_list()
    assert pooled["predictions"].to_list() == reference["count"].to_list()
    assert (pooled["mean_p_break"] - reference["p_mean"]).abs().max() < 1e-12
    assert (pooled["observed_break_rate"] - reference["y_rate"]).abs().max() < 1e-12
    brier = float(((predictions["p_break"] - pl.Series(y)) ** 2).mean())
    assert pooled["brier_retrieval"][0] == pytest.approx(brier, rel=1e-12)
    per_kind = calibration.filter(pl.col("level_kind") != "ALL").group_by("level_kind").agg(pl.col("predictions").sum())
    expected_kinds = predictions.group_by("level_kind").len()
    assert dict(per_kind.iter_rows()) == dict(expected_kinds.iter_rows())


def test_notebooks_are_stored_without_outputs():
    import nbformat

    assert [p.name for p in NOTEBOOKS] == ["01_explore_a_session.ipynb", "02_retrieval_for_one_approach.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert "parameters" in code[0].metadata.get("tags", []), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, marts_run, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    home, store, _ = marts_run
    last_session = sorted(p.name.removeprefix("date=") for p in store.table_dir("silver", "events").glob("date=*"))[-1]
    monkeypatch.setenv("SPYMASTER_HOME", str(home))  # the kernel inherits it: the notebooks' default home
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                     if o.output_type == "stream")
    assert last_session in text  # the default session is the lake's last
    assert not any(o.output_type == "error" for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
