"""Gold assets: episode vectors, trailing normalization, and the as-of similarity index."""

import datetime as dt

import dagster as dg

from ..lake import Lake, write_json_atomic
from ..lib.calendar import session_window
from ..lib.episodes import VECTOR_SCHEMA_VERSION, build_episodes, episode_schema, missing_vector_values, vector_layout
from ..lib.normalization import NORMALIZATION_SESSIONS, STATS_SCHEMA, fit_robust_z
from ..lib.metrics import reliability_png, reliability_table
from ..partitioned import OWNERS, RangeRun, as_of_deps, session_asset_defaults, stamp
from ..resources import LakeResource, MarketDataResource, PipelineSettings
from ..synthetic import match_ground_truth, read_ground_truth
from .as_of import INDEX_LOOKBACK_SESSIONS, build_indices, history_for, index_dir
from .evaluation import PREDICTION_SCHEMA, evaluation_report, headline, oracle_comparison, walk_forward_predictions

GOLD = session_asset_defaults("gold")
EXPECTED = (FileNotFoundError, ValueError)

NO_NAN_IN_VECTORS = "NO_NAN_IN_VECTORS"
EVERY_ANCHOR_DESCRIBED = "EVERY_ANCHOR_DESCRIBED"
TRAILING_WINDOW_STRICTLY_BEFORE = "TRAILING_WINDOW_STRICTLY_BEFORE"
INDEX_STRICTLY_BEFORE = "INDEX_STRICTLY_BEFORE"


def key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["gold", table])


def silver(table: str) -> dg.AssetKey:
    return dg.AssetKey(["silver", table])


def trailing(sessions: int) -> dg.TimeWindowPartitionMapping:
    """The `sessions` partitions strictly before the partition itself (never its own date)."""
    return dg.TimeWindowPartitionMapping(start_offset=-sessions, end_offset=-1, allow_nonexistent_upstream_partitions=True)


def sessions_at_or_after(store: Lake, table: str, session: str) -> list[str]:
    """Sessions recorded in a written partition's `fitted_on_sessions` that are not strictly before it."""
    recorded = store.file_metadata("gold", table, session).get("fitted_on_sessions", "")
    return [day for day in recorded.split(",") if day and day >= session]


@dg.asset(
    key=key("episodes"),
    deps=[silver("state"), silver("events"), silver("labels")],
    kinds={"polars", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(NO_NAN_IN_VECTORS, asset=key("episodes"), blocking=True,
                          description="No NaN/null in any dimension the episode's tier supplies"),
        dg.AssetCheckSpec(EVERY_ANCHOR_DESCRIBED, asset=key("episodes"),
                          description="Every silver anchor became an episode (an anchor needs a state row at or before it)"),
    ],
    code_version=f"episodes-{VECTOR_SCHEMA_VERSION}",
    **GOLD,
)
def gold_episodes(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """One row per anchor: id, time, level, direction, time bucket, tier, labels, excursions and
    the raw episode vector (absent tiers' dimensions null) described by the state just before the touch."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        events = store.read("silver", "events", session)
        episodes = build_episodes(store.read("silver", "state", session), events, store.read("silver", "labels", session),
                                  session_window(session).rth_open_ns)
        store.write_frames("gold", "episodes", session, [episodes], episode_schema(),
                           stamp(settings, VECTOR_SCHEMA_VERSION))
        return {"rows": episodes.height, "anchors": events.height, "missing": missing_vector_values(episodes),
                "tier": episodes["tier"][0] if episodes.height else None}

    run.run(build, expected=EXPECTED)
    nan_problems = {day: s["missing"] for day, s in run.per_session.items() if s["missing"]}
    undescribed = {day: s["anchors"] - s["rows"] for day, s in run.per_session.items() if s["anchors"] != s["rows"]}
    return dg.MaterializeResult(
        metadata=run.metadata(**{"dagster/row_count": run.total("rows"), "dimensions": len(vector_layout())}),
        check_results=[
            dg.AssetCheckResult(check_name=NO_NAN_IN_VECTORS, passed=not nan_problems,
                                metadata={"problems": dg.MetadataValue.json(nan_problems)}),
            dg.AssetCheckResult(check_name=EVERY_ANCHOR_DESCRIBED, passed=not undescribed,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"dropped_per_session": dg.MetadataValue.json(undescribed)}),
        ],
    )


@dg.asset(
    key=key("normalization_stats"),
    deps=as_of_deps(),
    kinds={"polars", "parquet"},
    check_specs=[dg.AssetCheckSpec(TRAILING_WINDOW_STRICTLY_BEFORE, asset=key("normalization_stats"), blocking=True,
                                   description="Stats were fitted only on sessions strictly before the partition date")],
    **GOLD,
)
def normalization_stats(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Robust z (median, 1.4826·MAD) per vector dimension, fitted on the episodes of the 60
    trading sessions strictly before the date; a date with no history gets no_data rows."""
    store = lake.lake()
    run = RangeRun(context)
    episodes_read: dict = {}

    def build(session: dt.date):
        history, used = history_for(store, session, NORMALIZATION_SESSIONS, episodes_read)
        stats = fit_robust_z(history, vector_layout())
        meta = stamp(settings, VECTOR_SCHEMA_VERSION) | {
            "fitted_on_sessions": ",".join(day.isoformat() for day in used)}
        store.write_frames("gold", "normalization_stats", session, [stats], STATS_SCHEMA, meta)
        return {"episodes": history.height, "sessions_used": len(used),
                "first_session": used[0].isoformat() if used else None,
                "last_session": used[-1].isoformat() if used else None}

    run.run(build, expected=EXPECTED)
    leaks = {day: late for day in run.per_session if (late := sessions_at_or_after(store, "normalization_stats", day))}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[dg.AssetCheckResult(check_name=TRAILING_WINDOW_STRICTLY_BEFORE, passed=not leaks,
                                           metadata={"leaks": dg.MetadataValue.json(leaks)})],
    )


@dg.asset(
    key=key("similarity_index"),
    deps=[*as_of_deps(), key("normalization_stats")],
    kinds={"faiss"},
    check_specs=[dg.AssetCheckSpec(INDEX_STRICTLY_BEFORE, asset=key("similarity_index"), blocking=True,
                                   description="No indexed episode comes from the partition date or later")],
    **GOLD,
)
def similarity_index(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """FAISS cosine indices "as of" the date: every labelled episode of earlier sessions,
    normalized with the date's stats, one index per feature set (tier), partitioned by level
    kind × direction × time bucket with coarser fallbacks; exact below 50 k vectors, HNSW above."""
    store = lake.lake()
    run = RangeRun(context)
    episodes_read: dict = {}

    def build(session: dt.date):
        history, used = history_for(store, session, INDEX_LOOKBACK_SESSIONS, episodes_read)
        stats = store.read("gold", "normalization_stats", session)
        provenance = stamp(settings, VECTOR_SCHEMA_VERSION) | {"as_of": session.isoformat()}
        indices = build_indices(history, stats, provenance=provenance)
        staging = store.staging_dir("gold", "similarity_index", session)
        for tier, index in indices.items():
            index.save(staging / index_dir(store, session, tier).name)
        store.publish_dir(staging, "gold", "similarity_index", session)
        return {"episodes": history.height, "sessions_used": len(used), "tiers": sorted(indices),
                "partitions": sum(len(i.partition_sizes()) for i in indices.values()),
                "latest_indexed_session": max((str(i.meta["session"].max()) for i in indices.values()), default=None)}

    run.run(build, expected=EXPECTED)
    leaks = {day: s["latest_indexed_session"] for day, s in run.per_session.items()
             if s["latest_indexed_session"] is not None and s["latest_indexed_session"] >= day}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[dg.AssetCheckResult(check_name=INDEX_STRICTLY_BEFORE, passed=not leaks,
                                           metadata={"leaks": dg.MetadataValue.json(leaks)})],
    )


@dg.asset(
    key=dg.AssetKey(["reports", "retrieval_evaluation"]),
    deps=[key("similarity_index"), key("episodes")],
    group_name="reports",
    kinds={"json", "png"},
    owners=OWNERS,
    # Unpartitioned: it reads every session that has an index, and rides along in range runs.
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def retrieval_evaluation(context: dg.AssetExecutionContext, lake: LakeResource, market_data: MarketDataResource) -> dg.MaterializeResult:
    """Walk-forward retrieval quality: every session's episodes answered by its own as-of index
    (earlier sessions only). Brier, log loss, ECE and AUC of p(BREAK) against the base-rate
    predictor, pooled and by level kind and direction, with a reliability table and PNG; on the
    synthetic market also the simulator's oracle AUC on the same episodes."""
    store = lake.lake()
    sessions = [dt.date.fromisoformat(day) for day in store.partitions("gold", "similarity_index")]
    predictions = walk_forward_predictions(store, sessions)
    report = evaluation_report(predictions)
    truth_root = market_data.ground_truth_root()
    if truth_root is not None and predictions.height:
        truth = read_ground_truth(truth_root, sorted(set(predictions["session"].to_list())))
        report["oracle"] = oracle_comparison(predictions, match_ground_truth(predictions, truth))
    out = store.root / "reports" / "retrieval_evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    for (session,), per_session in predictions.group_by("session"):
        store.write_frames("reports", "retrieval_predictions", session, [per_session], PREDICTION_SCHEMA)
    if predictions.height:
        y = (predictions["label"] == "BREAK").to_numpy().astype(float)
        reliability_png({"retrieval p(BREAK)": reliability_table(y, predictions["p_break"].to_numpy()),
                         "base rate": reliability_table(y, predictions["base_break"].to_numpy())},
                        out / "reliability.png", title="Retrieval p(BREAK), walk-forward")
    numbers = headline(report)
    context.log.info(f"retrieval evaluation: {numbers}")
    return dg.MaterializeResult(metadata={
        **{k: dg.MetadataValue.float(v) for k, v in numbers.items()},
        "report": dg.MetadataValue.path(str(out / "report.json")),
        "reliability_png": dg.MetadataValue.path(str(out / "reliability.png")),
        "by_level_kind": dg.MetadataValue.json(report.get("by_level_kind", {})),
    })


gold_assets = [gold_episodes, normalization_stats, similarity_index]
report_assets = [retrieval_evaluation]
