"""Silver assets: causal bars, levels, anchors, the 30-second state table, and labels."""

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.events import EVENT_SCHEMA
from ..lib.features.bars import BAR_SCHEMA
from ..lib.features.levels import LEVEL_SCHEMA
from ..lib.labels import LabelConfig, label_events, label_schema
from ..lib.quality import schema_mismatches
from ..lib.state import (
    STATE_SCHEMA_VERSION,
    SessionBars,
    StateConfig,
    anchor_state,
    build_bars,
    build_levels,
    build_state,
    find_session_anchors,
    state_schema,
)
from ..partitioned import RangeRun, blocking_check, session_asset_defaults, session_check, stamp
from ..resources import LakeResource, PipelineSettings
from .checks import atr_plausibility, label_share_check, levels_ordered, state_nan_check
from .inputs import BARS_1M_SCHEMA, load_session_inputs, read_bars

SILVER_SCHEMA_VERSION = "1"
SILVER = session_asset_defaults("silver")
EXPECTED = (FileNotFoundError, ValueError)


def key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["silver", table])


def bronze(table: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", table])


def write_empty(store: Lake, settings: PipelineSettings, schemas: dict[str, dict]):
    """For a session raw/dbn_files flagged as without data: each table's typed, empty partition
    (a session with no bars, levels, anchors, state rows or labels)."""
    def write(session: dt.date, _reason: str) -> None:
        for table, schema in schemas.items():
            store.write_frames("silver", table, session, [], schema, stamp(settings, SILVER_SCHEMA_VERSION))
    return write


ANCHOR_STATE_SCHEMA = {"event_id": pl.Utf8} | state_schema()
RAW_FILES = dg.AssetKey(["raw", "dbn_files"])
BARS_KEYS = {name: key(name) for name in ("bars_10s", "bars_1m", "bars_2m")}

ATR_PLAUSIBLE = "ATR_PLAUSIBLE"
LEVELS_ORDERED = "LEVELS_ORDERED"
EVENTS_PER_SESSION = "EVENTS_PER_SESSION"
NO_NAN_IN_REQUIRED = "NO_NAN_IN_REQUIRED"
LABEL_SHARES_SANE = "LABEL_SHARES_SANE"
SCHEMA_MATCHES = "SCHEMA_MATCHES"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(BARS_KEYS["bars_10s"], deps=[bronze("futures_trades"), RAW_FILES], kinds={"polars", "parquet"},
                     description="10-second front-month bars from trades (tier T1+; empty at T0), stamped by start."),
        dg.AssetSpec(BARS_KEYS["bars_1m"], deps=[bronze("futures_trades"), bronze("futures_ohlcv_1m"), RAW_FILES],
                     kinds={"polars", "parquet"},
                     description="1-minute bars (from trades, or bronze ohlcv-1m at T0) with ATR-14 known at each bar's close."),
        dg.AssetSpec(BARS_KEYS["bars_2m"], deps=[BARS_KEYS["bars_1m"]], kinds={"polars", "parquet"},
                     description="2-minute bars resampled from the 1-minute bars (usable at their close)."),
    ],
    check_specs=[session_check(ATR_PLAUSIBLE, asset=BARS_KEYS["bars_1m"],
                                   description="Median RTH ATR-14 of 1-min bars within 0.25–15 points (ES)")],
    # Subsettable so that a UI backfill by partition names validates: Dagster 1.13 compares the
    # three keys' target subsets with NamedTuple `!=` (which sees a lazily computed partition
    # count), and rejects the whole backfill whenever their BFS order differs (hash-seed dependent).
    can_subset=True,
    **{k: v for k, v in SILVER.items() if k != "owners"},
)
def silver_bars(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings):
    """Front-month OHLCV bars at 10 s, 1 min and 2 min with the 1-min ATR, all causal."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        bars = build_bars(load_session_inputs(store, session, book=False, options=False))
        meta = stamp(settings, SILVER_SCHEMA_VERSION)
        empty_10s = pl.DataFrame(schema=BAR_SCHEMA)
        store.write_frames("silver", "bars_10s", session, [bars.bars_10s if bars.bars_10s is not None else empty_10s], BAR_SCHEMA, meta)
        store.write_frames("silver", "bars_1m", session, [bars.bars_1m], BARS_1M_SCHEMA, meta)
        store.write_frames("silver", "bars_2m", session, [bars.bars_2m], BAR_SCHEMA, meta)
        return {"bars_1m": bars.bars_1m.height, "bars_10s": 0 if bars.bars_10s is None else bars.bars_10s.height,
                "median_rth_atr": atr_plausibility(bars.bars_1m, session)["median_rth_atr"]}

    run.run(build, expected=EXPECTED,
            empty=write_empty(store, settings, {"bars_10s": BAR_SCHEMA, "bars_1m": BARS_1M_SCHEMA, "bars_2m": BAR_SCHEMA}))
    atr_by_day = {day: s["median_rth_atr"] for day, s in run.per_session.items()}
    implausible = {day: v for day, v in atr_by_day.items() if v is None or not 0.25 <= v <= 15}
    for name, asset_key in BARS_KEYS.items():
        if asset_key not in context.selected_asset_keys:  # all three are always written together
            continue
        rows = int(sum(s.get(name, 0) for s in run.per_session.values()))
        yield dg.MaterializeResult(asset_key=asset_key, metadata={"dagster/row_count": rows, "sessions": len(run.per_session)})
    if BARS_KEYS["bars_1m"] not in context.selected_asset_keys:
        return
    yield dg.AssetCheckResult(asset_key=BARS_KEYS["bars_1m"], check_name=ATR_PLAUSIBLE, passed=not implausible,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"median_rth_atr": dg.MetadataValue.json(atr_by_day)})


@dg.asset(
    key=key("levels"),
    deps=[
        BARS_KEYS["bars_1m"],
        # Lineage like partitioned.as_of_deps: a backfill of D reaches levels through D's raw
        # manifest first, so the D-1 warm-up edge below does not also target D+1's levels.
        RAW_FILES,
        # SMA_90 / EMA_20 warm up on the previous session's 2-min bars (gap-tolerant: a missing
        # previous partition only shortens the warm-up, and is reported in the metadata).
        dg.AssetDep(BARS_KEYS["bars_2m"], partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True)),
    ],
    kinds={"polars", "parquet"},
    check_specs=[session_check(LEVELS_ORDERED, asset=key("levels"), blocking=True,
                                   description="PM_LOW ≤ PM_HIGH and OR_LOW ≤ OR_HIGH")],
    **SILVER,
)
def silver_levels(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """The six levels per session, each row with the time it becomes known: PM_HIGH/PM_LOW
    (09:30), OR_HIGH/OR_LOW (09:45), and SMA_90/EMA_20 of 2-min closes at every 2-min close."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        inputs = load_session_inputs(store, session, book=False, options=False)
        levels = build_levels(inputs, read_bars(store, session))
        store.write_frames("silver", "levels", session, [levels], LEVEL_SCHEMA, stamp(settings, SILVER_SCHEMA_VERSION))
        static = {r["level_kind"]: r["price"] for r in levels.filter(~pl.col("level_kind").is_in(["SMA_90", "EMA_20"])).iter_rows(named=True)}
        return {"rows": levels.height, "warmup_from_previous_session": inputs.warmup_bars_2m is not None, **static}

    run.run(build, expected=EXPECTED, empty=write_empty(store, settings, {"levels": LEVEL_SCHEMA}))
    disordered = {day: problems for day, s in run.per_session.items() if (problems := levels_ordered(s))}
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[blocking_check(store, LEVELS_ORDERED, disordered, [("silver", "levels")])],
    )


@dg.asset(
    key=key("events"),
    deps=[key("levels"), BARS_KEYS["bars_1m"], bronze("futures_trades")],
    kinds={"polars", "parquet"},
    check_specs=[session_check(EVENTS_PER_SESSION, asset=key("events"),
                                   description="Between 1 and 200 anchors per session")],
    **SILVER,
)
def silver_events(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Anchors: each time price, having been outside, enters a level's touch band
    (max(1 tick, 0.25·ATR)) in 09:30–12:30 ET, with direction, attempt index and a
    deterministic event id; 5-minute debounce per level."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        inputs = load_session_inputs(store, session, book=False, options=False)
        events = find_session_anchors(inputs, read_bars(store, session), store.read("silver", "levels", session), StateConfig())
        store.write_frames("silver", "events", session, [events], EVENT_SCHEMA, stamp(settings, SILVER_SCHEMA_VERSION))
        return {"rows": events.height, "up": int((events["direction"] == "UP").sum()), "tier": inputs.tier}

    run.run(build, expected=EXPECTED, empty=write_empty(store, settings, {"events": EVENT_SCHEMA}))
    out_of_band = {day: s["rows"] for day, s in run.per_session.items() if not 1 <= s["rows"] <= 200}
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[dg.AssetCheckResult(check_name=EVENTS_PER_SESSION, passed=not out_of_band,
                                           severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"sessions_out_of_band": dg.MetadataValue.json(out_of_band)})],
    )


@dg.asset(
    key=key("state"),
    deps=[key("events"), key("levels"), *BARS_KEYS.values(), bronze("futures_trades"), bronze("futures_mbp10"),
          bronze("options_definitions"), bronze("options_trades"), bronze("options_mbp1"), bronze("options_open_interest")],
    kinds={"polars", "parquet"},
    check_specs=[
        session_check(NO_NAN_IN_REQUIRED, asset=key("state"), blocking=True,
                          description="No NaN anywhere; keys, spot, ATR and distance never null"),
        session_check(SCHEMA_MATCHES, asset=key("state"), blocking=True,
                          description="Columns are the registry's features in registry order"),
    ],
    code_version=f"state-{STATE_SCHEMA_VERSION}",
    **SILVER,
)
def silver_state(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """The state table: one row per (30 s grid time in 09:30–12:30 ET, active level) with
    every feature of the session's tier computed from data at or before that time; features
    of absent tiers are null. Beside it, silver/anchor_state: the same features of each
    anchor's level at the anchor's own time (what gold/episodes describes a touch with)."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        inputs = load_session_inputs(store, session)
        bars = read_bars(store, session)
        levels, events = store.read("silver", "levels", session), store.read("silver", "events", session)
        state = build_state(inputs, bars, levels, events)
        at_anchors = anchor_state(inputs, bars, levels, events)
        store.write_frames("silver", "state", session, [state], state_schema(), stamp(settings, STATE_SCHEMA_VERSION))
        store.write_frames("silver", "anchor_state", session, [at_anchors], ANCHOR_STATE_SCHEMA,
                           stamp(settings, STATE_SCHEMA_VERSION))
        return {"rows": state.height, "tier": inputs.tier, "in_approach_rows": int(state["in_approach"].sum()),
                "anchor_rows": at_anchors.height}

    run.run(build, expected=EXPECTED,
            empty=write_empty(store, settings, {"state": state_schema(), "anchor_state": ANCHOR_STATE_SCHEMA}))
    days = list(run.per_session)
    nan_problems = {day: p for day in days if (p := state_nan_check(store.read("silver", "state", day)))}
    schema_problems = {day: p for day in days
                       if (p := schema_mismatches(dict(store.scan("silver", "state", day).collect_schema()), state_schema()))}
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[
            blocking_check(store, NO_NAN_IN_REQUIRED, nan_problems, [("silver", "state")]),
            blocking_check(store, SCHEMA_MATCHES, schema_problems, [("silver", "state")]),
        ],
    )


def label_path(store: Lake, session: dt.date, bars: SessionBars):
    """The finest forward path the tier has: trade prints at T1+, 1-min bars (with ends) at T0."""
    if bars.bars_10s is not None:
        trades = store.read("bronze", "futures_trades", session, columns=["ts_event", "price"]).sort("ts_event", maintain_order=True)
        ts, px = trades["ts_event"].to_numpy(), trades["price"].to_numpy()
        return ts, px, px, None
    b = bars.bars_1m
    return b["bar_start_ns"].to_numpy(), b["low"].to_numpy(), b["high"].to_numpy(), b["bar_end_ns"].to_numpy()


@dg.asset(
    key=key("labels"),
    deps=[key("events"), BARS_KEYS["bars_1m"], bronze("futures_trades")],
    kinds={"polars", "parquet"},
    check_specs=[session_check(LABEL_SHARES_SANE, asset=key("labels"),
                                   description="No outcome class above 97% of a session's labels")],
    **SILVER,
)
def silver_labels(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """First-crossing BREAK / REJECT / CHOP per anchor at 2, 4 and 8 minutes (4 primary), with
    time to barrier, excursions in ATRs and the label end time. Forward-looking by design:
    labels never enter a feature."""
    store = lake.lake()
    run = RangeRun(context)
    config = LabelConfig()

    def build(session: dt.date):
        events = store.read("silver", "events", session)
        path = label_path(store, session, read_bars(store, session))
        labels = label_events(events, *path, config=config)
        store.write_frames("silver", "labels", session, [labels], label_schema(config), stamp(settings, SILVER_SCHEMA_VERSION))
        counts = dict(zip(*np.unique(labels["label"].to_numpy(), return_counts=True))) if labels.height else {}
        return {"rows": labels.height, **{k: int(v) for k, v in counts.items()}}

    run.run(build, expected=EXPECTED, empty=write_empty(store, settings, {"labels": label_schema(config)}))
    verdict = label_share_check(run.per_session)
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[dg.AssetCheckResult(check_name=LABEL_SHARES_SANE, passed=verdict["passed"],
                                           severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"shares": dg.MetadataValue.json(verdict["shares"])})],
    )


silver_assets = [silver_bars, silver_levels, silver_events, silver_state, silver_labels]
