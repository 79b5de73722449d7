"""Bronze options tables: the session's options, their trades, NBBO and open interest."""


import datetime as dt

import dagster as dg
import numpy as np
import polars as pl

from ..lib.calendar import session_window
from ..lib.dbn_decode import FRAME_SCHEMAS, DbnDecodeError, decode_frames
from ..lib.options_bronze import OPTION_DEFINITION_SCHEMA, open_interest_before, session_option_definitions
from ..lib.quality import schema_mismatches
from ..resources import LakeResource, PipelineSettings
from ..sources.base import OPTIONS
from ..partitioned import RangeRun, blocking_check, session_asset_defaults, session_check, stamp
from . import BRONZE_SCHEMA_VERSION
from .futures import FRONT_MONTH_KEY, read_front_month
from .manifest import session_files

SCHEMA_MATCHES = "SCHEMA_MATCHES"
OPTION_DEFINITIONS_KEY = dg.AssetKey(["bronze", "options_definitions"])
DEFINITION_COLUMNS = ["right", "strike", "expiration", "underlying"]

OPEN_INTEREST_SCHEMA: dict[str, pl.DataType] = {
    "instrument_id": pl.UInt32,
    "raw_symbol": pl.Utf8,
    "right": pl.Utf8,
    "strike": pl.Float64,
    "expiration": pl.Int64,
    "underlying": pl.Utf8,
    "is_0dte": pl.Boolean,
    "oi_ts_event": pl.Int64,
    "open_interest": pl.Int64,
}


def _schema_check(store, table: str, key: dg.AssetKey, expected: dict, days) -> dg.AssetCheckResult:
    problems = {
        day: found
        for day in days
        if (found := schema_mismatches(dict(store.scan("bronze", table, day).collect_schema()), expected))
    }
    return blocking_check(store, SCHEMA_MATCHES, problems, [("bronze", table)], asset_key=key)


def _write_empty(store, settings: PipelineSettings, table: str, schema: dict):
    """The typed empty partition of a session raw/dbn_files flagged as without data."""
    return lambda session, _reason: store.write_frames("bronze", table, session, [], schema,
                                                       stamp(settings, BRONZE_SCHEMA_VERSION))


def _schema_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return session_check(SCHEMA_MATCHES, key, "Columns and dtypes are the bronze schema", blocking=True)


@dg.asset(
    key=OPTION_DEFINITIONS_KEY,
    deps=[dg.AssetKey(["raw", "dbn_files"]), FRONT_MONTH_KEY],
    kinds={"polars", "parquet"},
    check_specs=[_schema_spec(OPTION_DEFINITIONS_KEY)],
    **session_asset_defaults("bronze"),
)
def bronze_options_definitions(
    context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """The session's options — calls and puts on the front month plus the 0DTE products
    expiring that session — with strike, right and expiry read from their definitions."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        files = session_files(store, session)
        front, _ = read_front_month(store, session)
        frames = list(decode_frames(files.get(OPTIONS, "definition"), "definition", chunk_records=settings.chunk_records))
        definitions = pl.concat(frames) if frames else pl.DataFrame(schema=FRAME_SCHEMAS["definition"])
        options = session_option_definitions(definitions, front, session)
        written = store.write_frames("bronze", "options_definitions", session, [options], OPTION_DEFINITION_SCHEMA, stamp(settings, BRONZE_SCHEMA_VERSION))
        return {"rows": written.rows, "zero_dte": int(options["is_0dte"].sum()), "underlying": front,
                "schema_present": files.has(OPTIONS, "definition")}

    run.run(build, expected=(DbnDecodeError, FileNotFoundError),
            empty=_write_empty(store, settings, "options_definitions", OPTION_DEFINITION_SCHEMA))
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[_schema_check(store, "options_definitions", OPTION_DEFINITIONS_KEY, OPTION_DEFINITION_SCHEMA, run.per_session)],
    )


def build_options_events_asset(schema: str, table: str, description: str) -> dg.AssetsDefinition:
    """Options trades or NBBO for the session's options, joined to their definitions."""
    key = dg.AssetKey(["bronze", table])
    out_schema = FRAME_SCHEMAS[schema] | {column: OPTION_DEFINITION_SCHEMA[column] for column in DEFINITION_COLUMNS}

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["raw", "dbn_files"]), OPTION_DEFINITIONS_KEY],
        kinds={"polars", "parquet"},
        description=description,
        check_specs=[_schema_spec(key)],
        **session_asset_defaults("bronze"),
    )
    def _asset(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
        store = lake.lake()
        run = RangeRun(context)

        def build(session: dt.date):
            files = session_files(store, session)
            window = session_window(session)
            definitions = store.read("bronze", "options_definitions", session).select("instrument_id", *DEFINITION_COLUMNS)
            ids = definitions["instrument_id"].to_numpy().astype(np.uint32)
            frames = (
                frame.join(definitions, on="instrument_id", how="left")
                for frame in decode_frames(
                    files.get(OPTIONS, schema),
                    schema,
                    ts_range=(window.keep_start_ns, window.keep_end_ns),
                    instrument_ids=ids,
                    chunk_records=settings.chunk_records,
                )
            )
            written = store.write_frames("bronze", table, session, frames, out_schema, stamp(settings, BRONZE_SCHEMA_VERSION))
            return {"rows": written.rows, "schema_present": files.has(OPTIONS, schema)}

        run.run(build, expected=(DbnDecodeError, FileNotFoundError), empty=_write_empty(store, settings, table, out_schema))
        return dg.MaterializeResult(
            metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
            check_results=[_schema_check(store, table, key, out_schema, run.per_session)],
        )

    return _asset


bronze_options_trades = build_options_events_asset(
    "trades", "options_trades", "Trades of the session's options with aggressor sign, strike, right and expiry.")
bronze_options_mbp1 = build_options_events_asset(
    "mbp-1", "options_mbp1", "Top-of-book (NBBO) updates of the session's options, with strike, right and expiry.")

OPEN_INTEREST_KEY = dg.AssetKey(["bronze", "options_open_interest"])


@dg.asset(
    key=OPEN_INTEREST_KEY,
    deps=[dg.AssetKey(["raw", "dbn_files"]), OPTION_DEFINITIONS_KEY],
    kinds={"polars", "parquet"},
    check_specs=[_schema_spec(OPEN_INTEREST_KEY)],
    **session_asset_defaults("bronze"),
)
def bronze_options_open_interest(
    context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """Open interest per session option: the latest OPEN_INTEREST statistic published before
    the RTH open (other statistic types are ignored)."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        files = session_files(store, session)
        definitions = store.read("bronze", "options_definitions", session)
        frames = list(decode_frames(files.get(OPTIONS, "statistics"), "statistics", chunk_records=settings.chunk_records))
        statistics = pl.concat(frames) if frames else pl.DataFrame(schema=FRAME_SCHEMAS["statistics"])
        oi = open_interest_before(statistics, definitions, session_window(session).rth_open_ns)
        written = store.write_frames("bronze", "options_open_interest", session, [oi], OPEN_INTEREST_SCHEMA, stamp(settings, BRONZE_SCHEMA_VERSION))
        return {"rows": written.rows, "total_open_interest": int(oi["open_interest"].sum())}

    run.run(build, expected=(DbnDecodeError, FileNotFoundError),
            empty=_write_empty(store, settings, "options_open_interest", OPEN_INTEREST_SCHEMA))
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows")}),
        check_results=[_schema_check(store, "options_open_interest", OPEN_INTEREST_KEY, OPEN_INTEREST_SCHEMA, run.per_session)],
    )


options_assets = [bronze_options_definitions, bronze_options_trades, bronze_options_mbp1, bronze_options_open_interest]
