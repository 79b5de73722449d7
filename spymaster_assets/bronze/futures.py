"""Bronze futures tables: the session's front month, and its trades, book and bars at full resolution."""


import datetime as dt
import dagster as dg
import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.calendar import session_window
from ..lib.dbn_decode import FRAME_SCHEMAS, DbnDecodeError, DecodeStats, decode_frames, instrument_symbols
from ..lib.front_month import FRONT_MONTH_SCHEMA, NoFrontMonthError, choose_front_month, front_instrument_ids, front_symbol
from ..lib.quality import crossed_book_share, schema_mismatches, timestamp_regressions
from ..resources import LakeResource, PipelineSettings
from ..sources.base import FUTURES, SessionFiles
from ..partitioned import RangeRun, session_asset_defaults, session_check, stamp
from . import BRONZE_SCHEMA_VERSION
from .manifest import session_files

FRONT_MONTH_DOMINANCE = "FRONT_MONTH_DOMINANCE"
SCHEMA_MATCHES = "SCHEMA_MATCHES"
MONOTONIC_TIMESTAMPS = "MONOTONIC_TIMESTAMPS"
NO_CROSSED_BOOK = "NO_CROSSED_BOOK"
NON_EMPTY_RTH = "NON_EMPTY_RTH"

FRONT_MONTH_KEY = dg.AssetKey(["bronze", "front_month_contract"])


def futures_symbols(files: SessionFiles) -> dict[int, str]:
    """instrument_id → raw symbol: the definitions are authoritative, file symbology fills gaps."""
    symbols: dict[int, str] = {}
    for schema in ("ohlcv-1m", "trades", "mbp-10"):
        symbols |= instrument_symbols(files.get(FUTURES, schema))
    definitions = list(decode_frames(files.get(FUTURES, "definition"), "definition"))
    if definitions:
        latest = pl.concat(definitions).sort("ts_recv").unique("instrument_id", keep="last")
        symbols |= dict(zip(latest["instrument_id"].to_list(), latest["raw_symbol"].to_list()))
    return symbols


def rth_volume_by_instrument(files: SessionFiles, session: dt.date, chunk_records: int) -> tuple[pl.DataFrame, str]:
    """RTH volume per instrument from the finest schema present (trades, else 1-min bars)."""
    window = session_window(session)
    rth = (window.rth_open_ns, window.close_ns)
    if files.has(FUTURES, "trades"):
        schema, size = "trades", "size"
    elif files.has(FUTURES, "ohlcv-1m"):
        schema, size = "ohlcv-1m", "volume"
    else:
        raise NoFrontMonthError("the session has neither futures trades nor ohlcv-1m")
    partials = [
        frame.group_by("instrument_id").agg(pl.col(size).cast(pl.UInt64).sum().alias("volume"))
        for frame in decode_frames(files.get(FUTURES, schema), schema, ts_range=rth, chunk_records=chunk_records)
    ]
    if not partials:
        raise NoFrontMonthError(f"no futures {schema} during RTH (empty session)")
    volume = pl.concat(partials).group_by("instrument_id").agg(pl.col("volume").sum())
    return volume, schema


def write_front_month(store: Lake, settings: PipelineSettings, session: dt.date) -> dict[str, object]:
    """Choose the session's front month from RTH volume and write the front_month_contract partition."""
    files = session_files(store, session)
    volume, source_schema = rth_volume_by_instrument(files, session, settings.chunk_records)
    table = choose_front_month(
        volume, futures_symbols(files), volume_source=source_schema, min_dominance=settings.min_front_month_dominance
    )
    store.write_frames("bronze", "front_month_contract", session, [table], FRONT_MONTH_SCHEMA, stamp(settings, BRONZE_SCHEMA_VERSION))
    return {
        "front_month": front_symbol(table),
        "dominance": round(float(table["dominance"][0]), 4),
        "roll_contaminated": bool(table["roll_contaminated"][0]),
        "volume_source": source_schema,
    }


@dg.asset(
    key=FRONT_MONTH_KEY,
    deps=[dg.AssetKey(["raw", "dbn_files"])],
    kinds={"polars", "parquet"},
    check_specs=[
        session_check(FRONT_MONTH_DOMINANCE, FRONT_MONTH_KEY,
                      "Front month holds ≥ 60% of outright RTH volume (else the session is roll-contaminated)")
    ],
    **session_asset_defaults("bronze"),
)
def front_month_contract(
    context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """Per session, the ES outright with the largest RTH volume, its dominance (share of
    outright RTH volume) and the roll_contaminated flag; one row per outright that traded."""
    store = lake.lake()
    run = RangeRun(context)
    run.run(lambda session: write_front_month(store, settings, session),
            expected=(NoFrontMonthError, DbnDecodeError, FileNotFoundError))
    flagged = {day: s["dominance"] for day, s in run.per_session.items() if s["roll_contaminated"]}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[
            dg.AssetCheckResult(
                check_name=FRONT_MONTH_DOMINANCE,
                passed=not flagged,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "roll_contaminated_sessions": dg.MetadataValue.json(flagged),
                    "min_dominance": settings.min_front_month_dominance,
                },
            )
        ],
    )


def read_front_month(store: Lake, session: dt.date) -> tuple[str, np.ndarray]:
    table = store.read("bronze", "front_month_contract", session)
    return front_symbol(table), np.asarray(front_instrument_ids(table), dtype=np.uint32)


def write_front_month_table(
    store: Lake, settings: PipelineSettings, session: dt.date, schema: str, table: str
) -> dict[str, object]:
    """Decode one futures schema for the session window, keep only the front month, write it."""
    files = session_files(store, session)
    window = session_window(session)
    symbol, ids = read_front_month(store, session)
    stats: list[DecodeStats] = []
    frames = (
        frame.with_columns(pl.lit(symbol).alias("symbol"))
        for frame in decode_frames(
            files.get(FUTURES, schema),
            schema,
            ts_range=(window.keep_start_ns, window.keep_end_ns),
            instrument_ids=ids,
            chunk_records=settings.chunk_records,
            stats=stats,
        )
    )
    written = store.write_frames("bronze", table, session, frames, bronze_futures_schema(schema), stamp(settings, BRONZE_SCHEMA_VERSION))
    return {
        "rows": written.rows,
        "records_read": sum(s.records_read for s in stats),
        "front_month": symbol,
        "schema_present": files.has(FUTURES, schema),
        "path": str(written.path),
    }


def bronze_futures_schema(schema: str) -> dict[str, pl.DataType]:
    return FRAME_SCHEMAS[schema] | {"symbol": pl.Utf8}


def _quality_checks(store: Lake, table: str, schema: str, sessions: dict[str, dict], settings: PipelineSettings, key):
    """Schema, monotonic timestamps, crossed book and non-empty RTH over the run's sessions.

    A schema the source does not have (a lower tier) yields an empty, typed partition and
    is not an empty-RTH failure.
    """
    expected = bronze_futures_schema(schema)
    schema_problems, ts_problems, crossed, empty_rth = {}, {}, {}, []
    for day in sessions:
        frame = store.scan("bronze", table, day)
        if problems := schema_mismatches(dict(frame.collect_schema()), expected):
            schema_problems[day] = problems
            continue
        window = session_window(dt.date.fromisoformat(day))
        rth_rows = frame.filter(pl.col("ts_event").is_between(window.rth_open_ns, window.close_ns, closed="left"))
        if sessions[day]["schema_present"] and rth_rows.select(pl.len()).collect().item() == 0:
            empty_rth.append(day)
        if schema != "ohlcv-1m":
            regressions = timestamp_regressions(frame)
            if any(regressions.values()):
                ts_problems[day] = regressions
        if schema == "mbp-10":
            share = crossed_book_share(frame)
            if share["share"] > settings.crossed_book_tolerance:
                crossed[day] = share
    results = [
        dg.AssetCheckResult(asset_key=key, check_name=SCHEMA_MATCHES, passed=not schema_problems,
                            metadata={"problems": dg.MetadataValue.json(schema_problems)}),
        dg.AssetCheckResult(asset_key=key, check_name=NON_EMPTY_RTH, passed=not empty_rth,
                            metadata={"sessions_with_empty_rth": dg.MetadataValue.json(empty_rth)}),
    ]
    if schema != "ohlcv-1m":
        results.append(dg.AssetCheckResult(asset_key=key, check_name=MONOTONIC_TIMESTAMPS, passed=not ts_problems,
                                           metadata={"regressions": dg.MetadataValue.json(ts_problems)}))
    if schema == "mbp-10":
        results.append(dg.AssetCheckResult(asset_key=key, check_name=NO_CROSSED_BOOK, passed=not crossed,
                                           metadata={"crossed": dg.MetadataValue.json(crossed),
                                                     "tolerance": settings.crossed_book_tolerance}))
    return results


def _check_specs(key: dg.AssetKey, schema: str) -> list[dg.AssetCheckSpec]:
    specs = [
        session_check(SCHEMA_MATCHES, key, "Columns and dtypes are the bronze schema", blocking=True),
        session_check(NON_EMPTY_RTH, key, "The front month has records in RTH", blocking=True),
    ]
    if schema != "ohlcv-1m":
        specs.append(session_check(MONOTONIC_TIMESTAMPS, key, "ts_recv never decreases; ts_event never decreases per instrument",
                                   blocking=True))
    if schema == "mbp-10":
        specs.append(session_check(NO_CROSSED_BOOK, key, "Share of records with best bid ≥ best ask within tolerance",
                                   blocking=True))
    return specs


def build_futures_table_asset(schema: str, table: str, description: str) -> dg.AssetsDefinition:
    key = dg.AssetKey(["bronze", table])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["raw", "dbn_files"]), FRONT_MONTH_KEY],
        kinds={"polars", "parquet"},
        description=description,
        check_specs=_check_specs(key, schema),
        **session_asset_defaults("bronze"),
    )
    def _asset(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
        store = lake.lake()
        run = RangeRun(context)
        run.run(lambda session: write_front_month_table(store, settings, session, schema, table),
                expected=(DbnDecodeError, FileNotFoundError))
        return dg.MaterializeResult(
            metadata=run.metadata(**{"dagster/row_count": run.total("rows"), "records_read": run.total("records_read")}),
            check_results=_quality_checks(store, table, schema, run.per_session, settings, key),
        )

    return _asset


bronze_futures_trades = build_futures_table_asset(
    "trades", "futures_trades", "Front-month trades of the session window at full resolution, with aggressor sign (+1 buyer, −1 seller, 0 unknown).")
bronze_futures_mbp10 = build_futures_table_asset(
    "mbp-10", "futures_mbp10", "Front-month MBP-10 book updates of the session window, every update kept (no thinning).")
bronze_futures_ohlcv_1m = build_futures_table_asset(
    "ohlcv-1m", "futures_ohlcv_1m", "Front-month 1-minute OHLCV bars of the session window, stamped by bar start.")

futures_assets = [front_month_contract, bronze_futures_trades, bronze_futures_mbp10, bronze_futures_ohlcv_1m]
