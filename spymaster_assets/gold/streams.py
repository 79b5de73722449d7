"""Pentaview assets (SPEC §10): stream normalization as of D, streams, alerts, and their report.

gold/stream_normalization (as of D) ─► gold/streams (D) ─► gold/alerts (D) ─► reports/stream_alerts
silver/state (sessions before D) ──┘   silver/state (D) ─┘
Projections of the streams (models as of D, D's forecasts, their evaluation): ml/projections.py.
"""

import datetime as dt

import dagster as dg
import polars as pl

from ..lake import Lake, write_json_atomic
from ..lib.calendar import sessions_before
from ..lib.stream_alerts import (ALERTS_SCHEMA, ALERTS_SCHEMA_VERSION, OUTCOME_BARS, OUTCOME_MOVE_ATR, alert_hit_rates,
                                 compute_alerts, exit_action_outcomes, forward_moves)
from ..lib.streams import (NORMALIZATION_SESSIONS, STREAM_STATS_SCHEMA, STREAMS_SCHEMA_VERSION, compute_streams,
                           fit_stream_stats, normalized_features, stream_registry, streams_schema)
from ..partitioned import OWNERS, RangeRun, as_of_deps, session_asset_defaults, session_check, stamp
from ..resources import LakeResource, PipelineSettings
from .assets import TRAILING_WINDOW_STRICTLY_BEFORE, sessions_at_or_after

GOLD = session_asset_defaults("gold")
EXPECTED = (FileNotFoundError, ValueError)
SILVER_STATE = dg.AssetKey(["silver", "state"])
NORMALIZATION = dg.AssetKey(["gold", "stream_normalization"])
STREAMS = dg.AssetKey(["gold", "streams"])
ALERTS = dg.AssetKey(["gold", "alerts"])
REPORT = dg.AssetKey(["reports", "stream_alerts"])
STREAMS_BOUNDED = "STREAMS_BOUNDED"


def state_history(store: Lake, session: dt.date, sessions: int, cache: dict[dt.date, pl.DataFrame]) -> tuple[pl.DataFrame, list[dt.date]]:
    """The stream inputs of silver/state over the `sessions` trading sessions strictly before
    `session` that exist in the lake (gap-tolerant); `cache` spares re-reads within a range run."""
    present = [day for day in sessions_before(session, sessions) if store.has_partition("silver", "state", day)]
    for day in present:
        if day not in cache:
            columns = set(store.scan("silver", "state", day).collect_schema().names())
            cache[day] = store.read("silver", "state", day,
                                    columns=["time_bucket", *[f for f in normalized_features() if f in columns]])
    frames = [cache[day] for day in present]
    return (pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()), present


@dg.asset(
    key=NORMALIZATION,
    deps=as_of_deps(SILVER_STATE),
    kinds={"polars", "parquet"},
    check_specs=[session_check(TRAILING_WINDOW_STRICTLY_BEFORE, asset=NORMALIZATION, blocking=True,
                                   description="Stream stats were fitted only on sessions strictly before the partition date")],
    code_version=f"stream-normalization-{STREAMS_SCHEMA_VERSION}",
    **GOLD,
)
def stream_normalization(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Robust z stats (median, 1.4826·MAD) of every stream input feature per time bucket (global
    below 30 values), fitted on silver/state of the 20 trading sessions strictly before the date."""
    store = lake.lake()
    run = RangeRun(context)
    cache: dict[dt.date, pl.DataFrame] = {}

    def build(session: dt.date):
        history, used = state_history(store, session, NORMALIZATION_SESSIONS, cache)
        stats = fit_stream_stats(history)
        meta = stamp(settings, STREAMS_SCHEMA_VERSION) | {"fitted_on_sessions": ",".join(d.isoformat() for d in used)}
        store.write_frames("gold", "stream_normalization", session, [stats], STREAM_STATS_SCHEMA, meta)
        for day in [d for d in cache if d not in sessions_before(session, NORMALIZATION_SESSIONS)]:
            del cache[day]  # a range run moves forward: memory stays bounded by the window
        return {"rows": history.height, "sessions_used": len(used),
                "no_data_features": stats.filter(pl.col("scale_source") == "no_data").height}

    run.run(build, expected=EXPECTED)
    leaks = {day: late for day in run.per_session if (late := sessions_at_or_after(store, "stream_normalization", day))}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[dg.AssetCheckResult(check_name=TRAILING_WINDOW_STRICTLY_BEFORE, passed=not leaks,
                                           metadata={"leaks": dg.MetadataValue.json(leaks)})],
    )


@dg.asset(
    key=STREAMS,
    deps=[SILVER_STATE, NORMALIZATION],
    kinds={"polars", "parquet"},
    check_specs=[session_check(STREAMS_BOUNDED, asset=STREAMS, blocking=True,
                                   description="Every stream and composite lies in [−1, 1] (nulls only at absent tiers)")],
    code_version=f"streams-{STREAMS_SCHEMA_VERSION}",
    **GOLD,
)
def gold_streams(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Per (30 s bar, level): σ_M, σ_F, σ_B, σ_D, σ_S, merged σ_P and σ_R, composites, and the
    slope/curvature/jerk of the smoothed σ_P, σ_M, σ_F, σ_B — all from rows at or before the bar,
    normalized with the stats fitted on earlier sessions."""
    store = lake.lake()
    run = RangeRun(context)
    bounded = [c for c in streams_schema() if c.startswith("sigma_") and not c.endswith(("_slope", "_curvature", "_jerk"))]
    bounded += ["alignment", "divergence", "alignment_dealer"]

    def build(session: dt.date):
        streams = compute_streams(store.read("silver", "state", session), store.read("gold", "stream_normalization", session))
        store.write_frames("gold", "streams", session, [streams], streams_schema(), stamp(settings, STREAMS_SCHEMA_VERSION))
        outside = streams.select(pl.sum_horizontal([(pl.col(c).abs() > 1.0).sum() for c in bounded])).item()
        return {"rows": streams.height, "out_of_bounds": int(outside or 0),
                "null_streams": [c for c in ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s")
                                 if streams.height and streams[c].null_count() == streams.height]}

    run.run(build, expected=EXPECTED)
    problems = {day: s["out_of_bounds"] for day, s in run.per_session.items() if s["out_of_bounds"]}
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[dg.AssetCheckResult(check_name=STREAMS_BOUNDED, passed=not problems,
                                           metadata={"out_of_bounds": dg.MetadataValue.json(problems)})],
    )


@dg.asset(key=ALERTS, deps=[STREAMS], kinds={"polars", "parquet"}, code_version=f"alerts-{ALERTS_SCHEMA_VERSION}", **GOLD)
def gold_alerts(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Active alerts per (bar, level) with confidence, onset and age, under hysteresis (on after
    2 bars of the condition, off after 3 bars without it)."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        alerts = compute_alerts(store.read("gold", "streams", session))
        store.write_frames("gold", "alerts", session, [alerts], ALERTS_SCHEMA, stamp(settings, ALERTS_SCHEMA_VERSION))
        return {"rows": alerts.height, "onsets": int(alerts["onset"].sum()) if alerts.height else 0}

    run.run(build, expected=EXPECTED)
    return dg.MaterializeResult(metadata=run.metadata(**{"dagster/row_count": run.total("rows")}))


def read_all(store: Lake, layer: str, table: str, columns: list[str] | None = None) -> pl.DataFrame:
    frames = [store.read(layer, table, day, columns=columns) for day in store.partitions(layer, table)]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def stream_alerts_report(store: Lake) -> dict:
    """Hit rates of every alert type and realised outcomes of the exit score's actions over every
    session with streams (FORWARD-LOOKING outcomes, computed here and nowhere upstream)."""
    sessions = store.partitions("gold", "streams")
    streams = read_all(store, "gold", "streams")
    alerts = read_all(store, "gold", "alerts")
    if streams.height == 0:
        return {"sessions": 0, "note": "no gold/streams partitions yet"}
    market = pl.concat([store.read("silver", "state", day, columns=["session", "t_ns", "spot", "atr"]) for day in sessions
                        if store.has_partition("silver", "state", day)], how="vertical_relaxed")
    moves = forward_moves(market)
    return {
        "sessions": len(sessions), "first_session": sessions[0], "last_session": sessions[-1],
        "outcome": {"horizon_min": OUTCOME_BARS // 2, "move_atr": OUTCOME_MOVE_ATR,
                    "unit": "alert onsets (a spell of an active alert counts once); base rate over every bar where "
                            "the alert could be computed"},
        "alerts": alert_hit_rates(streams, alerts, moves),
        "exit_actions": exit_action_outcomes(streams, moves),
        "registry": stream_registry(),
    }


CANONICAL_STREAMS = ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s")


def level_longest_in_approach(streams: pl.DataFrame) -> str:
    """The level a session's streams spent the most bars in approach to (ties: the last by name)."""
    by_level = streams.group_by("level_kind").agg(pl.col("in_approach").sum()).sort(["in_approach", "level_kind"])
    return by_level["level_kind"][-1]


def plot_stream_panels(rows: pl.DataFrame, clock: list, canonical, bounded: list, path) -> None:
    """Draw the canonical streams on `canonical`, give every stream panel (`bounded`, all in
    [−1, 1]) the same scale, zero line and legend, and save the figure as PNG at `path`."""
    for name in CANONICAL_STREAMS:
        canonical.plot(clock, rows[name].to_list(), linewidth=1, label=name)
    for ax in bounded:
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.legend(loc="upper left", fontsize=7, ncol=5)
    figure = canonical.get_figure()
    figure.tight_layout()
    figure.savefig(path, format="png")


def streams_png(store: Lake, path, session: str | None = None, level_kind: str | None = None):
    """Streams of one session and level (default: the last session, its level longest in approach)."""
    from matplotlib.figure import Figure

    from ..lib.calendar import ns_to_et

    session = session or store.partitions("gold", "streams")[-1]
    streams = store.read("gold", "streams", session)
    level_kind = level_kind or level_longest_in_approach(streams)
    rows = streams.filter(pl.col("level_kind") == level_kind).sort("t_ns")
    clock = [ns_to_et(t) for t in rows["t_ns"].to_list()]
    fig = Figure(figsize=(10.0, 7.0), dpi=100)
    price, canon, merged = fig.subplots(3, 1, sharex=True)
    price.plot(clock, rows["spot"].to_list(), color="black", linewidth=1, label="spot")
    price.plot(clock, rows["level_price"].to_list(), color="tab:red", linestyle="--", linewidth=1, label=level_kind)
    price.legend(loc="upper left", fontsize=8)
    price.set_title(f"Pentaview streams, {session} {level_kind}")
    for name in ("sigma_p", "sigma_r", "alignment", "sigma_p_smooth"):
        merged.plot(clock, rows[name].to_list(), linewidth=1, label=name)
    plot_stream_panels(rows, clock, canon, [canon, merged], path)
    return path, session, level_kind


@dg.asset(
    key=REPORT,
    deps=[ALERTS, STREAMS],
    group_name="reports",
    kinds={"json", "png"},
    owners=OWNERS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def stream_alerts(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Realised hit rate of each alert type against its base rate ("when EXHAUSTION_UP fired, price
    fell ≥ 0.5 ATR within 10 min X % of N times, base rate Y %"), the exit score's realised outcome
    by action and side, and a PNG of one session's streams for one level."""
    store = lake.lake()
    report = stream_alerts_report(store)
    out = store.root / "reports" / "stream_alerts"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"sessions": report["sessions"]}
    if report["sessions"]:
        _, session, level = streams_png(store, out / "streams.png")
        report["png"] = {"session": session, "level_kind": level}
        meta["png"] = dg.MetadataValue.path(str(out / "streams.png"))
        meta["hit_rates"] = dg.MetadataValue.json({a["alert"]: {"n": a["n_onsets"], "hit": a["hit_rate"], "base": a["base_rate"]}
                                                   for a in report["alerts"]})
    write_json_atomic(out / "report.json", report)
    meta["report"] = dg.MetadataValue.path(str(out / "report.json"))
    context.log.info(f"stream alerts over {report['sessions']} sessions")
    return dg.MaterializeResult(metadata=meta)


stream_assets = [stream_normalization, gold_streams, gold_alerts]
stream_report_assets = [stream_alerts]


STREAM_VIEW_COLUMNS = ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s", "sigma_p", "sigma_r", "alignment",
                       "sigma_p_slope")


def streams_answer(store: Lake, session: dt.date, level_kind: str, at: dt.time | None = None, rows: int = 6) -> dict:
    """The stream bars of one level up to `at` (ET; default the end of the session), the alerts
    active at the last of them, the exit score for a LONG and a SHORT position, and the projection
    made at that bar (ml/projections; None when not built). JSON-ready."""
    from ..lib.calendar import et_to_ns, ns_to_et
    from ..lib.stream_alerts import exit_score, stream_rows_up_to
    from ..ml.projections import projection_at  # imports LightGBM: only when asked

    streams = store.read("gold", "streams", session)
    at_ns = et_to_ns(session, at) if at is not None else None
    bars = stream_rows_up_to(streams, level_kind, at_ns, rows)
    if bars.height == 0:
        known = sorted(streams["level_kind"].unique().to_list())
        raise ValueError(f"{level_kind} has no stream bar at or before {at or 'the end'} on {session} (levels: {known})")
    last = bars.row(-1, named=True)
    alerts = store.read("gold", "alerts", session) if store.has_partition("gold", "alerts", session) else None
    active = [] if alerts is None else (
        alerts.filter((pl.col("level_kind") == level_kind) & (pl.col("t_ns") == last["t_ns"]))
        .sort("confidence", descending=True).select("alert", "confidence", "onset", "bars_active").to_dicts())
    return {
        "session": session.isoformat(), "level_kind": level_kind, "level_price": last["level_price"],
        "time_et": ns_to_et(last["t_ns"]).strftime("%H:%M:%S"), "spot": last["spot"], "d_atr": last["d_atr"],
        "tier": last["tier"], "direction": "UP" if last["dir_sign"] > 0 else "DOWN",
        "bars": [{"time_et": ns_to_et(r["t_ns"]).strftime("%H:%M:%S"), **{c: r[c] for c in STREAM_VIEW_COLUMNS}}
                 for r in bars.iter_rows(named=True)],
        "alerts": active if alerts is not None else None,
        "exit": {side: exit_score(last, side) for side in ("LONG", "SHORT")},
        "projection": projection_at(store, session, level_kind, last["t_ns"]),
    }


def demo_streams_level(store: Lake, session: dt.date) -> tuple[str, dt.time]:
    """A level worth showing and a moment: the level longest in approach that session, at its last
    bar in approach (to the minute), else the first level at the session's last bar."""
    from ..lib.calendar import ns_to_et

    streams = store.read("gold", "streams", session, columns=["t_ns", "level_kind", "in_approach"])
    approach = streams.filter(pl.col("in_approach"))
    pool = approach if approach.height else streams
    level = pool.group_by("level_kind").len().sort(["len", "level_kind"])["level_kind"][-1]
    t_ns = pool.filter(pl.col("level_kind") == level)["t_ns"].max()
    return level, ns_to_et(t_ns).time().replace(second=0, microsecond=0)
