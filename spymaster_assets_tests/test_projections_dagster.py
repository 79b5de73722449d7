"""Projection assets through Dagster on ten sessions of planted mean-reverting streams: models as of
each date (retrained every 5th session, copied between, each fit an MLflow run), D's forecasts, and the
held-out evaluation — with the proofs that D's models never saw D and only held-out sessions are scored."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from spymaster_assets.cli import main as cli
from spymaster_assets.lake import Lake
from spymaster_assets.lib import stream_projections as P
from spymaster_assets.lib.calendar import ns_to_et, session_window, trading_sessions
from spymaster_assets.lib.mlflow_tracking import tracking_uri
from spymaster_assets.ml import projections as M
from spymaster_assets.ml.training import retrain_session
from spymaster_assets.resources import LakeResource, MlflowResource, PipelineSettings
from spymaster_assets_tests.helpers import RANGE_END, RANGE_START

pytestmark = pytest.mark.slow
SESSIONS = trading_sessions(dt.date(2024, 12, 2), dt.date(2024, 12, 13))
BAR_NS = 30_000_000_000
BARS = 80


def planted_streams(session: dt.date, seed: int) -> pl.DataFrame:
    """σ_P mean-reverts (x' = 0.85·x + N(0, 0.08²)); the other streams are noise. Two levels, 80 bars
    from the open, with the columns the CLI shows."""
    rng = np.random.default_rng(seed)
    t0 = session_window(session).rth_open_ns
    frames = []
    for level, price in (("OR_HIGH", 6010.0), ("PM_LOW", 5990.0)):
        x = np.empty(BARS)
        x[0] = rng.uniform(-0.5, 0.5)
        for i in range(1, BARS):
            x[i] = np.clip(0.85 * x[i - 1] + rng.normal(0, 0.08), -1, 1)
        frame = pl.DataFrame({"session": [session] * BARS, "t_ns": t0 + np.arange(BARS) * BAR_NS, "level_kind": [level] * BARS,
                              "level_price": price, "dir_sign": pl.Series([1] * BARS, dtype=pl.Int8), "tier": "T3",
                              "in_approach": np.arange(BARS) > 30, "spot": 6000.0, "d_atr": (6000.0 - price) / 10.0,
                              "sigma_p": x, **{c: rng.uniform(-1, 1, BARS) for c in ("sigma_m", "sigma_f", "sigma_b", "sigma_d",
                                                                                    "sigma_s", "sigma_r", "alignment")}})
        frames.append(frame.with_columns(pl.col("sigma_p").ewm_mean(alpha=0.3, adjust=False).alias("sigma_p_smooth"))
                      .with_columns(pl.col("sigma_p_smooth").diff().alias("sigma_p_slope")))
    return pl.concat(frames)


def resources(home: Path) -> dict:
    return {"lake": LakeResource(root=str(home / "lake")), "mlflow": MlflowResource(home=str(home)), "settings": PipelineSettings()}


def materialize(home: Path, assets, first: dt.date, last: dt.date) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources={k: v for k, v in resources(home).items()
                                             if k in {"lake", "mlflow", "settings"}},
                          tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat()})


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("projections_home")
    lake = Lake(home / "lake")
    for number, day in enumerate(SESSIONS):
        lake.write_frame("gold", "streams", day, planted_streams(day, seed=number))
    result = materialize(home, [*M.projection_assets], SESSIONS[0], SESSIONS[-1])
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    report = dg.materialize(M.projection_report_assets, resources={"lake": resources(home)["lake"]})
    assert report.success
    return home


def with_models() -> list[dt.date]:
    """Sessions whose retrain day has ≥ MIN_SESSIONS earlier sessions with streams in the lake."""
    return [d for d in SESSIONS if sum(s < retrain_session(d, M.RETRAIN_EVERY) for s in SESSIONS) >= M.MIN_SESSIONS]


def test_models_as_of_each_date_are_fitted_before_it_and_copied_between_retrains(home):
    lake = Lake(home / "lake")
    served = with_models()
    assert served and len(served) < len(SESSIONS)
    for day in SESSIONS:
        meta = M.read_meta(lake, day)
        assert meta["trained_for"] == retrain_session(day, M.RETRAIN_EVERY).isoformat() <= day.isoformat()
        assert all(s < meta["trained_for"] for s in meta["fitted_on_sessions"])
        if day not in served:
            assert meta["status"] == M.NOT_ENOUGH_HISTORY and "insufficient history" in meta["note"]
            assert not M.load_projectors(lake, day)
            continue
        assert meta["streams"] == ["sigma_p", "sigma_m", "sigma_f", "sigma_b", "sigma_r"]
        retrain_day = meta["trained_for"]
        if day.isoformat() == retrain_day:
            assert meta["status"] == M.TRAINED and meta["validation"]["sigma_p"]["sessions"] == M.HOLDOUT_SESSIONS
        else:  # the retrain day's files, byte for byte
            assert meta["status"] == M.REUSED and meta["reused_from"] >= retrain_day
            ours, theirs = (lake.partition_dir("ml", "projection_models", d) for d in (day, meta["reused_from"]))
            name = M.model_file("sigma_p", 10, 0.9)
            assert (ours / name).read_bytes() == (theirs / name).read_bytes()


def test_each_fit_is_an_mlflow_run_tagged_with_its_partition(home):
    import mlflow

    lake = Lake(home / "lake")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(home))
    fitted = [d for d in with_models() if M.read_meta(lake, d)["status"] == M.TRAINED]
    assert fitted
    for day in fitted:
        run = client.get_run(M.read_meta(lake, day)["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["dagster/partition"] == day.isoformat()
        assert run.data.params["trained_on_last"] < day.isoformat()
        assert run.data.params["config_hash"] == M.config_hash(PipelineSettings())
        assert 0.0 <= run.data.metrics["sigma_p.coverage_q10_q90.h10"] <= 1.0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
        assert f"model/{M.model_file('sigma_p', 5, 0.5)}" in artifacts and "model/meta.json" in artifacts


def test_the_models_for_d_never_saw_d(home, tmp_path):
    """Rebuilt after D's own streams (and every later session's) are replaced, D's models are the same bytes."""
    day = next(d for d in with_models() if M.read_meta(Lake(home / "lake"), d)["status"] == M.TRAINED)
    copy = tmp_path / "copy"
    lake = Lake(copy / "lake")
    for number, session in enumerate(SESSIONS):
        lake.write_frame("gold", "streams", session, planted_streams(session, seed=number if session < day else 99 + number))
    assert materialize(copy, [M.projection_models], day, day).success
    original = Lake(home / "lake").partition_dir("ml", "projection_models", day)
    rebuilt = lake.partition_dir("ml", "projection_models", day)
    for stream in ("sigma_p", "sigma_b"):
        for h in P.ANCHOR_BARS:
            name = M.model_file(stream, h, 0.1)
            assert (rebuilt / name).read_bytes() == (original / name).read_bytes()


def test_projections_of_d_come_from_earlier_models_and_cover_every_bar_with_history(home):
    lake = Lake(home / "lake")
    for day in SESSIONS:
        forecasts = lake.read("ml", "projections", day)
        if day not in with_models():
            assert forecasts.height == 0 and "insufficient history" in lake.file_metadata("ml", "projections", day)["note"]
            continue
        assert (forecasts["trained_on_last"] < day).all() and (forecasts["q10"] <= forecasts["q50"]).all()
        per_stream = BARS - P.LOOKBACK + 1  # bars with 16 bars of history, per level
        assert forecasts.filter(pl.col("stream") == "sigma_p").height == 2 * per_stream * P.HORIZON
        # The asset's rows are the one inference function's answer on D's streams.
        again = P.project(M.load_projectors(lake, day), lake.read("gold", "streams", day))
        assert forecasts.drop("model_as_of", "trained_on_last").sort(["t_ns", "level_kind", "stream", "horizon"]).equals(
            again.sort(["t_ns", "level_kind", "stream", "horizon"]))


def test_evaluation_scores_held_out_sessions_only(home):
    lake = Lake(home / "lake")
    report = json.loads((lake.root / "reports" / "projection_evaluation" / "report.json").read_text())
    served = with_models()
    assert report["sessions"] == len(served) and report["first_session"] == served[0].isoformat()
    planted = report["by_stream"]["sigma_p"]
    assert 0.6 <= planted["coverage_q10_q90"] <= 0.95, planted
    assert planted["endpoint_mae"] < planted["endpoint_mae_flat"] and planted["path_r2"] > planted["path_r2_flat"]
    noise = report["by_stream"]["sigma_m"]  # i.i.d. noise: the band still covers, the path explains ~nothing
    assert 0.5 <= noise["coverage_q10_q90"] <= 0.95 and noise["path_r2"] < 0.1, noise
    assert (lake.root / "reports" / "projection_evaluation" / "projections.png").stat().st_size > 10_000

    # A forecast whose models had seen its session would not be held out: the evaluation leaves it out.
    leaked_day = served[0]
    leaked = lake.read("ml", "projections", leaked_day).with_columns(pl.lit(leaked_day).alias("trained_on_last"))
    assert M.scored_forecasts(lake, leaked_day.isoformat()).height > 0
    lake.write_frame("ml", "projections", leaked_day, leaked)
    assert M.scored_forecasts(lake, leaked_day.isoformat()).height == 0
    assert M.evaluation_report(lake)["sessions"] == len(served) - 1


def test_streams_cli_prints_the_projection_band(home, monkeypatch):
    monkeypatch.setenv("SPYMASTER_HOME", str(home))
    day = with_models()[-1]
    at = ns_to_et(session_window(day).rth_open_ns + 40 * BAR_NS)
    out = CliRunner().invoke(cli, ["streams", "--date", day.isoformat(), "--level", "PM_LOW", "--at", f"{at:%H:%M}", "--json"])
    assert out.exit_code == 0, out.output
    projection = json.loads(out.stdout)["projection"]
    band = projection["streams"]["sigma_p"]
    assert len(band["q50"]) == P.HORIZON and all(lo <= mid <= hi for lo, mid, hi in zip(band["q10"], band["q50"], band["q90"]))
    assert projection["trained_on_last"] < day.isoformat()
    text = CliRunner().invoke(cli, ["streams", "--date", day.isoformat(), "--level", "PM_LOW", "--at", f"{at:%H:%M}"])
    assert text.exit_code == 0 and "projection (models as of" in text.output and "sigma_p" in text.output
    early = CliRunner().invoke(cli, ["streams", "--date", SESSIONS[0].isoformat(), "--level", "PM_LOW", "--at", f"{at:%H:%M}"])
    assert early.exit_code == 0 and "projection: none (insufficient history" in early.output
