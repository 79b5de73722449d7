"""Bronze futures tables: the session's front month, and its trades, book and bars at full resolution."""


import datetime as dt
import dagster as dg
import numpy as np
import polars as pl

from ..lake import Lake, ParquetOptions
from ..lib.calendar import previous_session, session_window
from ..lib.dbn_decode import BOOK_DEPTH, FRAME_SCHEMAS, DbnDecodeError, DecodeStats, decode_frames, instrument_symbols
from ..lib.front_month import (
    CHOSEN_BY_ROLL_CALENDAR,
    FRONT_MONTH_SCHEMA,
    NoFrontMonthError,
    choose_front_month,
    front_instrument_ids,
    front_symbol,
    session_volume,
)
from ..lib.quality import (ES_TICK, PRICE_BAND, crossed_book_share, duplicate_records, price_sanity, schema_mismatches,
                           timestamp_regressions)
from ..resources import LakeResource, PipelineSettings
from ..sources.base import FUTURES, SessionFiles
from ..partitioned import RangeRun, blocking_check, session_asset_defaults, session_check, stamp
from . import BRONZE_SCHEMA_VERSION
from .manifest import session_files

FRONT_MONTH_DOMINANCE = "FRONT_MONTH_DOMINANCE"
SCHEMA_MATCHES = "SCHEMA_MATCHES"
MONOTONIC_TIMESTAMPS = "MONOTONIC_TIMESTAMPS"
NO_CROSSED_BOOK = "NO_CROSSED_BOOK"
NON_EMPTY_RTH = "NON_EMPTY_RTH"
NO_DUPLICATE_RECORDS = "NO_DUPLICATE_RECORDS"
PRICE_SANITY = "PRICE_SANITY"

FRONT_MONTH_KEY = dg.AssetKey(["bronze", "front_month_contract"])

# The front-month record tables: millions of never-null rows a session, read back by time range.
RECORD_TABLE = ParquetOptions(zstd_level=1, statistics=("ts_event", "ts_recv"), not_null=True)


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


def session_volume_by_instrument(files: SessionFiles, session: dt.date, chunk_records: int) -> tuple[pl.DataFrame, str]:
    """Overnight and RTH volume per instrument over the kept window, from the finest schema present
    (trades, else 1-min bars): the overnight chooses the front month, RTH measures its dominance."""
    window = session_window(session)
    if files.has(FUTURES, "trades"):
        schema, size = "trades", "size"
    elif files.has(FUTURES, "ohlcv-1m"):
        schema, size = "ohlcv-1m", "volume"
    else:
        raise NoFrontMonthError("the session has neither futures trades nor ohlcv-1m")
    partials = [
        session_volume(frame, size, rth_open_ns=window.rth_open_ns, close_ns=window.close_ns)
        for frame in decode_frames(files.get(FUTURES, schema), schema, ts_range=(window.keep_start_ns, window.keep_end_ns),
                                   chunk_records=chunk_records)
    ]
    if not partials:
        raise NoFrontMonthError(f"no futures {schema} in the session window (empty session)")
    volume = pl.concat(partials).group_by("instrument_id").agg(pl.col("overnight_volume", "rth_volume").sum())
    if not volume["rth_volume"].sum():
        # an overnight alone (files that end before the open, a truncated file) is not a session
        raise NoFrontMonthError(f"no futures {schema} during RTH (empty session)")
    return volume, schema


def write_front_month(store: Lake, settings: PipelineSettings, session: dt.date) -> dict[str, object]:
    """Choose the session's front month from its overnight volume and write the front_month_contract partition."""
    files = session_files(store, session)
    volume, source_schema = session_volume_by_instrument(files, session, settings.chunk_records)
    table = choose_front_month(
        volume, futures_symbols(files), session,
        volume_source=source_schema, min_dominance=settings.min_front_month_dominance,
    )
    store.write_frames("bronze", "front_month_contract", session, [table], FRONT_MONTH_SCHEMA, stamp(settings, BRONZE_SCHEMA_VERSION))
    return {
        "front_month": front_symbol(table),
        "chosen_by": table["chosen_by"][0],
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
                      "The front month chosen before the open holds ≥ 60% of the session's outright RTH "
                      "volume (else the session is roll-contaminated)")
    ],
    **session_asset_defaults("bronze"),
)
def front_month_contract(
    context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """Per session, the front-month ES outright chosen before the RTH open — the largest volume
    over the session's overnight (18:00 ET previous evening → 09:30 ET), ties to the nearer
    expiry, the CME roll calendar when nothing traded overnight — so that no afternoon volume
    can change a morning value. Its dominance (share of the session's outright RTH volume,
    reported after the fact) and the roll_contaminated flag (< 0.60); one row per outright
    that traded, with its overnight and RTH volume and `chosen_by`."""
    store = lake.lake()
    run = RangeRun(context)
    run.run(lambda session: write_front_month(store, settings, session),
            expected=(NoFrontMonthError, DbnDecodeError, FileNotFoundError),
            empty=lambda session, _: store.write_frames("bronze", "front_month_contract", session, [], FRONT_MONTH_SCHEMA,
                                                        stamp(settings, BRONZE_SCHEMA_VERSION)))
    flagged = {day: s["dominance"] for day, s in run.per_session.items() if s["roll_contaminated"]}
    by_calendar = sorted(day for day, s in run.per_session.items() if s["chosen_by"] == CHOSEN_BY_ROLL_CALENDAR)
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[
            dg.AssetCheckResult(
                check_name=FRONT_MONTH_DOMINANCE,
                passed=not flagged,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "roll_contaminated_sessions": dg.MetadataValue.json(flagged),
                    # no outright traded overnight: chosen by the roll calendar, not by volume
                    "chosen_by_roll_calendar": dg.MetadataValue.json(by_calendar),
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
    written = store.write_frames("bronze", table, session, frames, bronze_futures_schema(schema),
                                 stamp(settings, BRONZE_SCHEMA_VERSION), RECORD_TABLE)
    return {
        "rows": written.rows,
        "records_read": sum(s.records_read for s in stats),
        "front_month": symbol,
        "schema_present": files.has(FUTURES, schema),
        "path": str(written.path),
    }


def bronze_futures_schema(schema: str) -> dict[str, pl.DataType]:
    return FRAME_SCHEMAS[schema] | {"symbol": pl.Utf8}


# What identifies one record: the same key twice is a double-ingested file or chunk.
DUPLICATE_KEYS = {
    "trades": ["ts_event", "ts_recv", "instrument_id", "sequence", "action", "side", "price", "size", "flags"],
    "mbp-10": ["ts_event", "ts_recv", "instrument_id", "sequence", "action", "side", "price", "size", "flags", "depth"],
    "ohlcv-1m": ["ts_event", "instrument_id"],  # one bar per instrument and minute, whatever its values
}


def required_prices(schema: str) -> dict[str, pl.Expr | None]:
    """Price columns that must hold a sane price, and when: every trade and bar price; a book
    update's own price unless it clears the book (action R); a book level only while it has size."""
    if schema == "trades":
        return {"price": None}
    if schema == "ohlcv-1m":
        return {column: None for column in ("open", "high", "low", "close")}
    levels = {f"{side}_px_{level:02d}": pl.col(f"{side}_sz_{level:02d}") > 0
              for level in range(BOOK_DEPTH) for side in ("bid", "ask")}
    return {"price": pl.col("action") != "R", **levels}


def previous_close(store: Lake, session: dt.date) -> float | None:
    """The last sane front-month price of the previous session (trades, else 1-min closes), or None
    when that session is absent, empty or quarantined — then the session's own median stands in."""
    try:
        before = previous_session(session)
    except ValueError:
        return None
    for table, column in (("futures_trades", "price"), ("futures_ohlcv_1m", "close")):
        if not store.has_partition("bronze", table, before):
            continue
        px = pl.col(column)
        last = (store.scan("bronze", table, before).filter(px.is_not_nan() & (px > 0))
                .select(px.sort_by("ts_event").last()).collect().item())
        if last is not None:
            return float(last)
    return None


def write_empty_table(store: Lake, settings: PipelineSettings, session: dt.date, schema: str, table: str) -> None:
    """A flagged empty session's typed, empty partition."""
    store.write_frames("bronze", table, session, [], bronze_futures_schema(schema), stamp(settings, BRONZE_SCHEMA_VERSION),
                       RECORD_TABLE)


def _quality_checks(store: Lake, table: str, schema: str, run: RangeRun, settings: PipelineSettings, key):
    """Schema, duplicates, monotonic timestamps, crossed book, price sanity and non-empty RTH.

    Every check but NON_EMPTY_RTH's WARN is blocking: a failing session's partition is
    quarantined (partitioned.blocking_check), so no later run reads it until it is rebuilt.
    A schema the source does not have (a lower tier) yields an empty, typed partition and
    is not an empty-RTH failure; a flagged empty session (raw/dbn_files) is a WARN.
    """
    expected = bronze_futures_schema(schema)
    sessions = run.per_session
    schema_problems, ts_problems, crossed, empty_rth, duplicates, prices = {}, {}, {}, {}, {}, {}
    for day in sessions:
        frame = store.scan("bronze", table, day)
        if problems := schema_mismatches(dict(frame.collect_schema()), expected):
            schema_problems[day] = problems
            continue
        window = session_window(dt.date.fromisoformat(day))
        rth_rows = frame.filter(pl.col("ts_event").is_between(window.rth_open_ns, window.close_ns, closed="left"))
        if sessions[day]["schema_present"] and rth_rows.select(pl.len()).collect().item() == 0:
            empty_rth[day] = f"no front-month {schema} in RTH for {sessions[day]['front_month']} on {day}"
        if repeated := duplicate_records(frame, DUPLICATE_KEYS[schema]):
            duplicates[day] = {"duplicated_records": repeated}
        sanity = price_sanity(frame, required_prices(schema), previous_close(store, dt.date.fromisoformat(day)))
        if sanity["bad_rows"]:
            prices[day] = {k: sanity[k] for k in ("bad_rows", "problems", "reference", "reference_source")}
        if schema != "ohlcv-1m":
            regressions = timestamp_regressions(frame)
            if any(regressions.values()):
                ts_problems[day] = regressions
        if schema == "mbp-10":
            share = crossed_book_share(frame)
            if share["share"] > settings.crossed_book_tolerance:
                crossed[day] = share
    partition = [("bronze", table)]
    results = [
        blocking_check(store, SCHEMA_MATCHES, schema_problems, partition, asset_key=key),
        blocking_check(store, NO_DUPLICATE_RECORDS, duplicates, partition, asset_key=key,
                       identifying_fields=", ".join(DUPLICATE_KEYS[schema])),
        blocking_check(store, PRICE_SANITY, prices, partition, asset_key=key,
                       tick=ES_TICK, band=PRICE_BAND),
        _non_empty_rth(store, key, empty_rth, run.empty, partition),
    ]
    if schema != "ohlcv-1m":
        results.append(blocking_check(store, MONOTONIC_TIMESTAMPS, ts_problems, partition, asset_key=key))
    if schema == "mbp-10":
        results.append(blocking_check(store, NO_CROSSED_BOOK, crossed, partition, asset_key=key,
                                      tolerance=settings.crossed_book_tolerance))
    return results


def _non_empty_rth(store: Lake, key, empty_rth: dict, flagged: dict, partition) -> dg.AssetCheckResult:
    """An unexpected empty RTH blocks (and quarantines); a session raw/dbn_files flagged empty is a WARN."""
    if empty_rth or not flagged:
        return blocking_check(store, NON_EMPTY_RTH, empty_rth, partition, asset_key=key,
                              flagged_empty_sessions=dg.MetadataValue.json(flagged))
    return dg.AssetCheckResult(asset_key=key, check_name=NON_EMPTY_RTH, passed=False, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"flagged_empty_sessions": dg.MetadataValue.json(flagged)})


def _check_specs(key: dg.AssetKey, schema: str) -> list[dg.AssetCheckSpec]:
    specs = [
        session_check(SCHEMA_MATCHES, key, "Columns and dtypes are the bronze schema", blocking=True),
        session_check(NON_EMPTY_RTH, key, "The front month has records in RTH (WARN for a session flagged empty)",
                      blocking=True),
        session_check(NO_DUPLICATE_RECORDS, key, "No record repeats another on its identifying fields", blocking=True),
        session_check(PRICE_SANITY, key, "Every price defined (not UNDEF), > 0, on the 0.25 tick, within ±10% of the "
                                         "previous session's close (else the session median)", blocking=True),
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
                expected=(DbnDecodeError, FileNotFoundError),
                empty=lambda session, _: write_empty_table(store, settings, session, schema, table))
        return dg.MaterializeResult(
            metadata=run.metadata(**{"dagster/row_count": run.total("rows"), "records_read": run.total("records_read")}),
            check_results=_quality_checks(store, table, schema, run, settings, key),
        )

    return _asset


bronze_futures_trades = build_futures_table_asset(
    "trades", "futures_trades", "Front-month trades of the session window at full resolution, with aggressor sign (+1 buyer, −1 seller, 0 unknown).")
bronze_futures_mbp10 = build_futures_table_asset(
    "mbp-10", "futures_mbp10", "Front-month MBP-10 book updates of the session window, every update kept (no thinning).")
bronze_futures_ohlcv_1m = build_futures_table_asset(
    "ohlcv-1m", "futures_ohlcv_1m", "Front-month 1-minute OHLCV bars of the session window, stamped by bar start.")

futures_assets = [front_month_contract, bronze_futures_trades, bronze_futures_mbp10, bronze_futures_ohlcv_1m]
