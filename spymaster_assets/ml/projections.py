"""Stream projections as of each session (SPEC §10), and their held-out evaluation.

gold/streams (sessions before D) ─► ml/projection_models (D) ─► ml/projections (D) ─► reports/projection_evaluation
                                    gold/streams (D) ──────────┘

- `ml/projection_models` (partition D): per projected stream, LightGBM q10/q50/q90 models of its
  change 2, 5 and 10 bars ahead (lib/stream_projections.py), fitted on the streams of at most 20
  sessions strictly before the retrain day R (every 5th session of the calendar, like the break
  model; days in between copy R's files byte for byte). Each fit is an MLflow run.
- `ml/projections` (partition D): D's forecasts — every (30 s bar, level, stream) the q10/q50/q90
  10-bar path from D's models, each made from rows ≤ its bar (`project`, the function the live
  engine calls). The models never saw D, so the union of partitions is a held-out evaluation.
- `reports/projection_evaluation`: that evaluation (path R², endpoint MAE, q10–q90 coverage per
  stream, against holding the current value flat), scored on D's realised later bars, and a PNG.
"""


import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from ..gold.streams import level_longest_in_approach, plot_stream_panels
from ..lake import Lake, write_json_atomic
from ..lib.calendar import sessions_before
from ..lib.mlflow_tracking import AS_OF_TAG, CONFIG_HASH_TAG, PARTITION_TAG, log_retrain, run_ui_command
from ..lib.stream_projections import (ANCHOR_BARS, HORIZON, PROJECTED_STREAMS, PROJECTION_SCHEMA, QUANTILES,
                                      ProjectionConfig, ProjectionModels, StreamProjector, band_coverage, path_metrics_from_sums,
                                      path_sums, project, projection_samples, realised_paths, session_split)
from ..partitioned import OWNERS, RangeRun, as_of_deps, blocking_check, session_asset_defaults, session_check, stamp
from ..resources import LakeResource, MlflowResource, PipelineSettings
from .training import retrain_session

STREAMS = dg.AssetKey(["gold", "streams"])
MODELS_KEY = dg.AssetKey(["ml", "projection_models"])
PROJECTIONS_KEY = dg.AssetKey(["ml", "projections"])
EVALUATION_KEY = dg.AssetKey(["reports", "projection_evaluation"])
LAYER, MODELS_TABLE, PROJECTIONS_TABLE = "ml", "projection_models", "projections"
SCHEMA_VERSION = "projections-1"
EXPECTED = (FileNotFoundError, ValueError)

WINDOW_SESSIONS = 20  # trailing window of gold/streams, strictly before the retrain day
MIN_SESSIONS = 3  # sessions with samples of a stream, below which it gets no model
HOLDOUT_SESSIONS = 2  # the window's last sessions validate a second fit (MLflow metrics) when it has enough
RETRAIN_EVERY = 5
SAMPLE_EVERY = 2  # neighbouring 30 s bars are near-copies: every other bar, half the fitting cost
MODEL_CONFIG = ProjectionConfig()
META = "meta.json"
TRAINED, REUSED, NOT_ENOUGH_HISTORY = "trained", "reused", "not_enough_history"
EXPERIMENT = "spymaster_projection_models"

TRAINED_STRICTLY_BEFORE = "TRAINED_STRICTLY_BEFORE"
BANDS_ORDERED_AND_FINITE = "BANDS_ORDERED_AND_FINITE"
PROJECTED_BY_AN_EARLIER_MODEL = "PROJECTED_BY_AN_EARLIER_MODEL"

FORECAST_SCHEMA: dict[str, pl.DataType] = {
    **PROJECTION_SCHEMA,
    "model_as_of": pl.Date,  # the retrain day whose window the models were fitted on (≤ session)
    "trained_on_last": pl.Date,  # the newest session the models saw (< session)
}


def config_hash(settings: PipelineSettings) -> str:
    return f"{settings.config_hash()}-{MODEL_CONFIG.fingerprint()}-w{WINDOW_SESSIONS}-r{RETRAIN_EVERY}-s{SAMPLE_EVERY}"


def model_file(stream: str, anchor: int, quantile: float) -> str:
    return f"{stream}_h{anchor}_q{int(round(quantile * 100)):02d}.txt"


def read_meta(store: Lake, session: dt.date | str) -> dict | None:
    path = store.partition_dir(LAYER, MODELS_TABLE, session) / META
    return json.loads(path.read_text()) if store.has_partition(LAYER, MODELS_TABLE, session) and path.exists() else None


def load_projectors(store: Lake, session: dt.date | str) -> ProjectionModels:
    """The projection models serving `session` (fitted on earlier sessions); empty when there are none."""
    meta = read_meta(store, session)
    if meta is None:
        raise FileNotFoundError(f"no {LAYER}/{MODELS_TABLE} partition for {session}")
    import lightgbm as lgb  # here, not at module level: see lib/stream_projections.py

    folder = store.partition_dir(LAYER, MODELS_TABLE, session)
    return ProjectionModels({stream: StreamProjector(stream, {(h, q): lgb.Booster(model_file=str(folder / model_file(stream, h, q)))
                                                              for h in ANCHOR_BARS for q in QUANTILES})
                             for stream in meta.get("streams", [])})


def streams_window(store: Lake, before: dt.date, cache: dict[dt.date, pl.DataFrame]) -> tuple[pl.DataFrame, list[dt.date]]:
    """gold/streams of the WINDOW_SESSIONS trading sessions strictly before `before` that exist (gap-tolerant)."""
    present = [d for d in sessions_before(before, WINDOW_SESSIONS) if store.has_partition("gold", "streams", d)]
    for day in [d for d in cache if d not in present]:
        del cache[day]  # a range run moves forward: memory stays bounded by the window
    for day in present:
        if day not in cache:
            cache[day] = store.read("gold", "streams", day)
    return (pl.concat([cache[d] for d in present], how="vertical_relaxed") if present else pl.DataFrame()), present


def fit_window(history: pl.DataFrame) -> tuple[ProjectionModels, dict, dict]:
    """Per projected stream with samples in ≥ MIN_SESSIONS sessions: the served models on the whole
    window, and, when the window has HOLDOUT_SESSIONS more, a second fit without its last sessions
    scored on them (band coverage and MAE vs no change: the held-out evidence of the MLflow run).
    Returns the models, the validation per stream and the training samples per stream."""
    models, validation, counts = ProjectionModels(), {}, {}
    for stream in [s for s in PROJECTED_STREAMS if s in history.columns]:
        samples = projection_samples(history, stream).gather_every(SAMPLE_EVERY)
        sessions = samples["session"].n_unique() if samples.height else 0
        if sessions < MIN_SESSIONS:
            continue  # e.g. σ_F at a tier without the book: a null stream has no samples
        models.projectors[stream] = StreamProjector.fit(samples, stream, MODEL_CONFIG)
        counts[stream] = samples.height
        if sessions >= MIN_SESSIONS + HOLDOUT_SESSIONS:
            train, held_out = session_split(samples, HOLDOUT_SESSIONS)
            validation[stream] = band_coverage(StreamProjector.fit(train, stream, MODEL_CONFIG), held_out)
    return models, validation, counts


def reusable_partition(store: Lake, session: dt.date, trained_for: dt.date, wanted_hash: str) -> str | None:
    """An earlier partition (at or after the retrain day) holding the retrain day's models with the same
    configuration: the retrain day's own first, then the newest copy; None when they must be fitted."""
    candidates = sorted((d for d in store.partitions(LAYER, MODELS_TABLE) if trained_for.isoformat() <= d < session.isoformat()),
                        key=lambda d: (d == trained_for.isoformat(), d))
    for day in reversed(candidates):
        meta = read_meta(store, day) or {}
        if meta.get("trained_for") == trained_for.isoformat() and meta.get("config_hash") == wanted_hash:
            return day
    return None


def log_fit(home: Path, staging: Path, meta: dict, session: dt.date, dagster_run_id: str) -> str:
    """One MLflow run for a fit: the partition's model files and meta.json as artifacts, the window
    as params, the held-out validation as metrics, tagged with the partition and its as-of date."""
    metrics = {}
    for stream, report in meta["validation"].items():
        for h in ANCHOR_BARS:
            for name in ("coverage_q10_q90", "mae_q50", "mae_no_change"):
                metrics[f"{stream}.{name}.h{h}"] = report[name][str(h)]
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch)
        for path in staging.iterdir():
            shutil.copyfile(path, bundle / path.name)
        run_id, _ = log_retrain(
            home, bundle, run_name=f"projection_models as of {meta['trained_for']} (partition {session})",
            params={**{f"model.{k}": v for k, v in MODEL_CONFIG.as_dict().items()},
                    "window_sessions": WINDOW_SESSIONS, "min_sessions": MIN_SESSIONS, "holdout_sessions": HOLDOUT_SESSIONS,
                    "retrain_every": RETRAIN_EVERY, "sample_every": SAMPLE_EVERY, "config_hash": meta["config_hash"],
                    "trained_for": meta["trained_for"], "trained_on_first": meta["fitted_on_sessions"][0],
                    "trained_on_last": meta["fitted_on_sessions"][-1], "n_sessions": len(meta["fitted_on_sessions"]),
                    "streams": meta["streams"], "samples": meta["samples"]},
            metrics=metrics,
            tags={PARTITION_TAG: session.isoformat(), AS_OF_TAG: meta["trained_for"], CONFIG_HASH_TAG: meta["config_hash"],
                  "dagster/run_id": dagster_run_id},
            registered_model_name=EXPERIMENT, experiment_name=EXPERIMENT)
    return run_id


def build_models_partition(store: Lake, session: dt.date, wanted_hash: str, file_stamp: dict, cache: dict,
                           mlflow_home: Path | None, dagster_run_id: str = "") -> dict:
    """Write ml/projection_models/date=`session`: copy the retrain day's models if an earlier partition
    holds them, else fit them on the window before the retrain day (an MLflow run, if `mlflow_home`)."""
    trained_for = retrain_session(session, RETRAIN_EVERY)
    source = reusable_partition(store, session, trained_for, wanted_hash)
    staging = store.staging_dir(LAYER, MODELS_TABLE, session)
    try:
        if source is not None:
            folder = store.partition_dir(LAYER, MODELS_TABLE, source)
            for path in folder.iterdir():  # byte copies: the served models are the retrain day's
                shutil.copyfile(path, staging / path.name)
            meta = json.loads((staging / META).read_text()) | {"reused_from": source}
            if meta["status"] == TRAINED:
                meta["status"] = REUSED
        else:
            history, used = streams_window(store, trained_for, cache)
            models, validation, counts = fit_window(history) if used else (ProjectionModels(), {}, {})
            meta = file_stamp | {"config_hash": wanted_hash, "trained_for": trained_for.isoformat(),
                                 "fitted_on_sessions": [d.isoformat() for d in used], "streams": models.streams,
                                 "samples": counts, "validation": validation,
                                 "status": TRAINED if models else NOT_ENOUGH_HISTORY}
            for stream, projector in models.projectors.items():
                for (h, q), booster in projector.boosters.items():
                    booster.save_model(str(staging / model_file(stream, h, q)))
            if not models:
                meta["note"] = (f"insufficient history: no projected stream has samples in {MIN_SESSIONS} of the "
                                f"{len(used)} sessions with streams before {trained_for}")
            meta = json.loads(json.dumps(meta, default=str))  # as every later reader sees it (anchor keys as text)
            (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
            if models and mlflow_home is not None:
                meta["mlflow_run_id"] = log_fit(mlflow_home, staging, meta, session, dagster_run_id)
        meta["as_of"] = session.isoformat()
        (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        store.publish_dir(staging, LAYER, MODELS_TABLE, session)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary = {k: meta[k] for k in ("status", "trained_for", "streams") if k in meta}
    summary |= {"sessions_used": len(meta["fitted_on_sessions"]),
                "trained_on_last": meta["fitted_on_sessions"][-1] if meta["fitted_on_sessions"] else None}
    for key in ("reused_from", "note", "mlflow_run_id"):
        if meta.get(key):
            summary[key] = meta[key]
    if meta.get("mlflow_run_id"):
        summary["mlflow_ui"] = run_ui_command(mlflow_home)
    summary["validation_coverage_h10"] = {s: v["coverage_q10_q90"]["10"] for s, v in meta["validation"].items()}
    return summary


@dg.asset(
    key=MODELS_KEY,
    deps=as_of_deps(STREAMS),
    kinds={"lightgbm", "mlflow"},
    code_version=SCHEMA_VERSION,
    check_specs=[session_check(TRAINED_STRICTLY_BEFORE, asset=MODELS_KEY, blocking=True,
                               description="Projection models were fitted only on sessions strictly before the date")],
    **session_asset_defaults("ml"),
)
def projection_models(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource,
                      settings: PipelineSettings) -> dg.MaterializeResult:
    """Per projected stream (σ_P, σ_M, σ_F, σ_B, σ_R), LightGBM q10/q50/q90 models of its change 2, 5
    and 10 bars ahead from its last 16 bars and the other streams, fitted on the streams of at most
    20 sessions strictly before the retrain day (every 5th session; days in between copy its files).
    Each fit is an MLflow run tagged with its partition, with a held-out validation of its last 2
    sessions when the window is long enough. Fewer than 3 sessions with streams: no models, said so."""
    store, home = lake.lake(), mlflow.home_path()
    wanted = config_hash(settings)
    cache: dict = {}
    run = RangeRun(context)
    run.run(lambda session: build_models_partition(store, session, wanted, stamp(settings, SCHEMA_VERSION), cache,
                                                   home, context.run_id), expected=EXPECTED)
    leaks = {day: s["trained_on_last"] for day, s in run.per_session.items()
             if s.get("trained_on_last") and s["trained_on_last"] >= min(day, s["trained_for"])}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[dg.AssetCheckResult(check_name=TRAINED_STRICTLY_BEFORE, passed=not leaks,
                                           metadata={"leaks": dg.MetadataValue.json(leaks)})],
    )


def session_forecasts(streams: pl.DataFrame, models: ProjectionModels, meta: dict) -> pl.DataFrame:
    """D's forecasts for every bar, level and modelled stream, with the models' provenance."""
    forecasts = project(models, streams)
    return forecasts.with_columns(
        model_as_of=pl.lit(dt.date.fromisoformat(meta["trained_for"])),
        trained_on_last=pl.lit(dt.date.fromisoformat(meta["fitted_on_sessions"][-1])),
    ).select(list(FORECAST_SCHEMA)).cast(FORECAST_SCHEMA)


def band_problems(forecasts: pl.DataFrame) -> dict:
    """Counts of rows whose band is not finite, not ordered q10 ≤ q50 ≤ q90, or outside [−1, 1]."""
    bands = [pl.col(c) for c in ("q10", "q50", "q90")]
    counts = forecasts.select(
        not_finite=(~pl.all_horizontal([b.is_finite() for b in bands])).sum(),
        not_ordered=((pl.col("q10") > pl.col("q50")) | (pl.col("q50") > pl.col("q90"))).sum(),
        out_of_range=(~pl.all_horizontal([b.is_between(-1.0, 1.0) for b in bands])).sum(),
    ).row(0, named=True)
    return {k: int(v) for k, v in counts.items() if v}


@dg.asset(
    key=PROJECTIONS_KEY,
    deps=[STREAMS, MODELS_KEY],
    kinds={"lightgbm", "parquet"},
    code_version=SCHEMA_VERSION,
    check_specs=[
        session_check(BANDS_ORDERED_AND_FINITE, asset=PROJECTIONS_KEY, blocking=True,
                      description="Every band is finite, ordered q10 ≤ q50 ≤ q90 and inside [−1, 1]"),
        session_check(PROJECTED_BY_AN_EARLIER_MODEL, asset=PROJECTIONS_KEY, blocking=True,
                      description="Every forecast comes from models fitted on earlier sessions only"),
    ],
    **session_asset_defaults("ml"),
)
def projections(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Session D's projections: for every (30 s bar, level, stream) the q10/q50/q90 path of the next
    10 bars from D's models (fitted strictly before D), each from the bars at or before it. No
    models for D (not enough history) → an empty partition, flagged; nothing is faked."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date) -> dict:
        meta = read_meta(store, session)
        if meta is None:
            raise FileNotFoundError(f"no {LAYER}/{MODELS_TABLE} partition for {session}")
        streams = store.read("gold", "streams", session)
        models = load_projectors(store, session)
        forecasts = session_forecasts(streams, models, meta) if models else pl.DataFrame(schema=FORECAST_SCHEMA)
        file_meta = stamp(settings, SCHEMA_VERSION) | {"model_as_of": meta["trained_for"],
                                                        "fitted_on_sessions": ",".join(meta["fitted_on_sessions"])}
        if not models:
            file_meta["note"] = meta.get("note", "no projection models")
            context.log.warning(f"{session}: no projections ({file_meta['note']})")
        store.write_frames(LAYER, PROJECTIONS_TABLE, session, [forecasts], FORECAST_SCHEMA, file_meta)
        late = [d for d in meta["fitted_on_sessions"] if d >= session.isoformat()]
        return {"rows": forecasts.height, "streams": models.streams, "model_as_of": meta["trained_for"],
                "band_problems": band_problems(forecasts), "late_sessions": late}

    run.run(build, expected=EXPECTED)
    bad_bands = {day: s["band_problems"] for day, s in run.per_session.items() if s["band_problems"]}
    leaks = {day: s["late_sessions"] for day, s in run.per_session.items() if s["late_sessions"]}
    tables = [(LAYER, PROJECTIONS_TABLE)]
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[blocking_check(store, BANDS_ORDERED_AND_FINITE, bad_bands, tables),
                       blocking_check(store, PROJECTED_BY_AN_EARLIER_MODEL, leaks, tables)],
    )


# --- the held-out evaluation -------------------------------------------------------------------

def scored_forecasts(store: Lake, session: str) -> pl.DataFrame:
    """One session's forecasts joined with the realised stream values h bars later (FORWARD-LOOKING:
    the label side, read from the session's own streams here and nowhere upstream). Forecasts whose
    models saw the session, or whose future runs past the end of the level's bars, are left out."""
    forecasts = store.read(LAYER, PROJECTIONS_TABLE, session).filter(pl.col("trained_on_last") < pl.col("session"))
    if forecasts.height == 0:
        return forecasts.with_columns(realised=pl.lit(None, pl.Float64))
    streams = store.read("gold", "streams", session)
    realised = pl.concat([realised_paths(streams, s) for s in forecasts["stream"].unique().to_list()])
    return forecasts.join(realised, on=["session", "t_ns", "level_kind", "stream", "horizon"], how="inner").filter(
        pl.col("realised").is_not_null())


def evaluation_report(store: Lake) -> dict:
    """Per stream and pooled: path R², endpoint MAE and q10–q90 coverage of every session's
    forecasts (each made by models fitted before that session) against the flat forecast. Sessions
    are scored one at a time and only their sums kept: memory does not grow with history."""
    sums, first, last = [], None, None
    for day in [d for d in store.partitions(LAYER, PROJECTIONS_TABLE) if store.has_partition("gold", "streams", d)]:
        scored = scored_forecasts(store, day)
        if scored.height:
            sums.append(path_sums(scored))
            first, last = first or day, day
    if not sums:
        return {"sessions": 0, "note": "no session has projections from earlier models yet"}
    everything = pl.concat(sums)
    return {
        "sessions": len(sums), "first_session": first, "last_session": last,
        "held_out": "each session is forecast by models fitted on earlier sessions only (ml/projection_models as of it)",
        "horizon_bars": HORIZON, "target_coverage": "0.80 (q10–q90)",
        "pooled": path_metrics_from_sums(everything),
        "by_stream": {stream: path_metrics_from_sums(group)
                      for (stream,), group in everything.group_by("stream", maintain_order=True)},
    }


def projection_png(store: Lake, path: Path, session: str | None = None, level_kind: str | None = None,
                   stream: str = "sigma_p", every: int = 20) -> tuple[Path, str, str]:
    """The canonical streams of one session and level, and `stream` with the q10–q90 band and q50
    path of its forecasts every `every` bars (default: the last session with projections and its
    level longest in approach)."""
    from matplotlib.figure import Figure

    from ..lib.calendar import ns_to_et

    with_rows = [d for d in store.partitions(LAYER, PROJECTIONS_TABLE)
                 if store.scan(LAYER, PROJECTIONS_TABLE, d).select(pl.len()).collect().item()]
    session = session or with_rows[-1]
    streams = store.read("gold", "streams", session)
    level_kind = level_kind or level_longest_in_approach(streams)
    rows = streams.filter(pl.col("level_kind") == level_kind).sort("t_ns")
    forecasts = store.read(LAYER, PROJECTIONS_TABLE, session).filter(
        (pl.col("level_kind") == level_kind) & (pl.col("stream") == stream))
    bar_ns = 30_000_000_000
    made_at = forecasts["t_ns"].unique().sort().gather_every(every)
    clock = [ns_to_et(t) for t in rows["t_ns"].to_list()]
    fig = Figure(figsize=(10.0, 6.5), dpi=100)
    canon, projected = fig.subplots(2, 1, sharex=True)
    canon.set_title(f"Streams and {stream} projections (q10–q90, q50), {session} {level_kind}")
    projected.plot(clock, rows[stream].to_list(), color="black", linewidth=1, label=f"{stream} realised")
    for i, t in enumerate(made_at.to_list()):
        fan = forecasts.filter(pl.col("t_ns") == t).sort("horizon")
        times = [ns_to_et(t + h * bar_ns) for h in [0, *fan["horizon"].to_list()]]  # from the value now
        now = [fan["value_now"][0]]
        projected.fill_between(times, now + fan["q10"].to_list(), now + fan["q90"].to_list(), color="tab:blue",
                               alpha=0.25, label="q10–q90" if i == 0 else None)
        projected.plot(times, now + fan["q50"].to_list(), color="tab:blue", linewidth=1, linestyle="--",
                       label="q50" if i == 0 else None)
    plot_stream_panels(rows, clock, canon, [canon, projected], path)
    return path, session, level_kind


@dg.asset(
    key=EVALUATION_KEY,
    deps=[PROJECTIONS_KEY, STREAMS],
    group_name="reports",
    kinds={"json", "png"},
    owners=OWNERS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def projection_evaluation(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The held-out evaluation of stream projections over every session with forecasts: per stream,
    path R² and endpoint MAE of the q50 path against holding the current value flat, and the share
    of realised values inside the q10–q90 band (target 0.8), per horizon; plus a PNG of one
    session's streams with the projection bands."""
    store = lake.lake()
    report = evaluation_report(store)
    out = store.root / "reports" / "projection_evaluation"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"sessions": report["sessions"]}
    if report["sessions"]:
        _, session, level = projection_png(store, out / "projections.png")
        report["png"] = {"session": session, "level_kind": level, "stream": "sigma_p"}
        meta["png"] = dg.MetadataValue.path(str(out / "projections.png"))
        meta["by_stream"] = dg.MetadataValue.json({s: {k: m[k] for k in ("coverage_q10_q90", "path_r2", "path_r2_flat",
                                                                        "endpoint_mae", "endpoint_mae_flat")}
                                                   for s, m in report["by_stream"].items()})
    write_json_atomic(out / "report.json", report)
    meta["report"] = dg.MetadataValue.path(str(out / "report.json"))
    context.log.info(f"projection evaluation over {report['sessions']} held-out sessions")
    return dg.MaterializeResult(metadata=meta)


def projection_at(store: Lake, session: dt.date, level_kind: str, t_ns: int) -> dict | None:
    """The projection made at bar `t_ns` for one level (from ml/projections): per stream the value
    now and the q10/q50/q90 path; None when D has no projections partition, {} without models."""
    if not store.has_partition(LAYER, PROJECTIONS_TABLE, session):
        return None
    rows = store.read(LAYER, PROJECTIONS_TABLE, session).filter(
        (pl.col("level_kind") == level_kind) & (pl.col("t_ns") == t_ns)).sort(["stream", "horizon"])
    if rows.height == 0:
        return {"note": store.file_metadata(LAYER, PROJECTIONS_TABLE, session).get("note")
                or "no projection at this bar (fewer than 16 bars of the level's history)"}
    out = {"model_as_of": str(rows["model_as_of"][0]), "trained_on_last": str(rows["trained_on_last"][0]), "streams": {}}
    for (stream,), group in rows.group_by("stream", maintain_order=True):
        out["streams"][stream] = {"now": group["value_now"][0],
                                  **{q: group[q].to_list() for q in ("q10", "q50", "q90")}}
    return out


projection_assets = [projection_models, projections]
projection_report_assets = [projection_evaluation]
