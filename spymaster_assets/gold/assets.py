"""Gold assets: episode vectors, and what is known as of each session — trailing normalization,
the learned similarity metric and the similarity index."""

import datetime as dt

import dagster as dg
import polars as pl

from ..lake import Lake, write_json_atomic
from ..lib.calendar import session_window
from ..lib.episodes import VECTOR_SCHEMA_VERSION, build_episodes, episode_schema, missing_vector_values, vector_layout
from ..lib.metrics import reliability_png, reliability_table
from ..lib.similarity_metric import METRIC_SCHEMA_VERSION
from ..partitioned import OWNERS, RangeRun, as_of_deps, blocking_check, session_asset_defaults, session_check, stamp
from ..resources import LakeResource, MarketDataResource, PipelineSettings
from ..synthetic import match_ground_truth, read_ground_truth
from .as_of import (
    INDEX_SCHEMA_VERSION,
    PLAIN_COSINE,
    write_normalization_stats,
    write_similarity_index,
    write_similarity_metric,
)
from .evaluation import (
    BREAK_PREDICTIONS,
    PREDICTION_SCHEMA,
    comparison_frame,
    comparison_table,
    evaluation_report,
    headline,
    oracle_comparison,
    read_break_predictions,
    walk_forward_predictions,
)

GOLD = session_asset_defaults("gold")
EXPECTED = (FileNotFoundError, ValueError)

NO_NAN_IN_VECTORS = "NO_NAN_IN_VECTORS"
EVERY_ANCHOR_DESCRIBED = "EVERY_ANCHOR_DESCRIBED"
TRAILING_WINDOW_STRICTLY_BEFORE = "TRAILING_WINDOW_STRICTLY_BEFORE"
METRIC_STRICTLY_BEFORE = "METRIC_STRICTLY_BEFORE"
INDEX_STRICTLY_BEFORE = "INDEX_STRICTLY_BEFORE"


def key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["gold", table])


def silver(table: str) -> dg.AssetKey:
    return dg.AssetKey(["silver", table])


def sessions_at_or_after(store: Lake, table: str, session: str) -> list[str]:
    """Sessions recorded in a written partition's `fitted_on_sessions` that are not strictly before it."""
    recorded = store.file_metadata("gold", table, session).get("fitted_on_sessions", "")
    return [day for day in recorded.split(",") if day and day >= session]


@dg.asset(
    key=key("episodes"),
    deps=[silver("state"), silver("events"), silver("labels")],
    kinds={"polars", "parquet"},
    check_specs=[
        session_check(NO_NAN_IN_VECTORS, asset=key("episodes"), blocking=True,
                          description="No NaN/null in any dimension the episode's tier supplies"),
        session_check(EVERY_ANCHOR_DESCRIBED, asset=key("episodes"),
                          description="Every silver anchor became an episode (an anchor needs a state row at or before it)"),
    ],
    code_version=f"episodes-{VECTOR_SCHEMA_VERSION}",
    **GOLD,
)
def gold_episodes(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """One row per anchor: id, time, level, direction, time bucket, tier, labels, excursions and
    the raw episode vector (absent tiers' dimensions null) described by the state at the touch itself
    (silver/anchor_state) and its level's recent grid rows (micro-history, trajectory)."""
    store = lake.lake()
    run = RangeRun(context)

    def build(session: dt.date):
        events = store.read("silver", "events", session)
        episodes = build_episodes(store.read("silver", "state", session), events, store.read("silver", "labels", session),
                                  session_window(session).rth_open_ns, anchor_state=store.read("silver", "anchor_state", session))
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
            blocking_check(store, NO_NAN_IN_VECTORS, nan_problems, [("gold", "episodes")]),
            dg.AssetCheckResult(check_name=EVERY_ANCHOR_DESCRIBED, passed=not undescribed,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"dropped_per_session": dg.MetadataValue.json(undescribed)}),
        ],
    )


@dg.asset(
    key=key("normalization_stats"),
    # Declared lineage: episodes through D-1 and D's raw manifest (see partitioned.as_of_deps);
    # the asset reads its whole 60-session window from the lake.
    deps=as_of_deps(key("episodes")),
    kinds={"polars", "parquet"},
    check_specs=[session_check(TRAILING_WINDOW_STRICTLY_BEFORE, asset=key("normalization_stats"), blocking=True,
                                   description="Stats were fitted only on sessions strictly before the partition date")],
    **GOLD,
)
def normalization_stats(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Robust z (median, 1.4826·MAD) per vector dimension, fitted on the episodes of the 60
    trading sessions strictly before the date; a date with no history gets no_data rows."""
    store = lake.lake()
    run = RangeRun(context)
    episodes_read: dict = {}
    run.run(lambda session: write_normalization_stats(store, session, stamp(settings, VECTOR_SCHEMA_VERSION), episodes_read),
            expected=EXPECTED)
    leaks = {day: late for day in run.per_session if (late := sessions_at_or_after(store, "normalization_stats", day))}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[blocking_check(store, TRAILING_WINDOW_STRICTLY_BEFORE, leaks, [("gold", "normalization_stats")])],
    )


@dg.asset(
    key=key("similarity_metric"),
    # Episodes through D-1 and D's raw manifest (partitioned.as_of_deps), plus D's own stats:
    # the metric weighs robust-z dimensions, so it is fitted in the space D's stats define.
    deps=[*as_of_deps(key("episodes")), key("normalization_stats")],
    kinds={"numpy", "parquet"},
    check_specs=[session_check(METRIC_STRICTLY_BEFORE, asset=key("similarity_metric"), blocking=True,
                                   description="The metric was fitted only on sessions strictly before the partition date")],
    code_version=f"similarity-metric-{METRIC_SCHEMA_VERSION}",
    **GOLD,
)
def similarity_metric(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """Per-dimension weights of each feature set, learned as of the date from the labelled
    episodes of the 120 sessions strictly before it (L2 logistic BREAK vs REJECT on robust-z
    vectors, weight = |coefficient|), so that neighbours are alike in what decides the outcome;
    identity weights (plain robust-z cosine) while the window holds too few decided episodes."""
    store = lake.lake()
    run = RangeRun(context)
    episodes_read: dict = {}
    run.run(lambda session: write_similarity_metric(store, session, stamp(settings, METRIC_SCHEMA_VERSION), episodes_read),
            expected=EXPECTED)
    leaks = {day: late for day in run.per_session if (late := sessions_at_or_after(store, "similarity_metric", day))}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[blocking_check(store, METRIC_STRICTLY_BEFORE, leaks, [("gold", "similarity_metric")])],
    )


@dg.asset(
    key=key("similarity_index"),
    deps=[*as_of_deps(key("episodes")), key("normalization_stats"), key("similarity_metric")],
    kinds={"faiss", "numpy"},
    check_specs=[session_check(INDEX_STRICTLY_BEFORE, asset=key("similarity_index"), blocking=True,
                                   description="No indexed episode comes from the partition date or later")],
    code_version=f"similarity-index-{INDEX_SCHEMA_VERSION}",
    **GOLD,
)
def similarity_index(context: dg.AssetExecutionContext, lake: LakeResource, settings: PipelineSettings) -> dg.MaterializeResult:
    """What the date's FAISS cosine indices are built from: every labelled episode of the 250
    sessions strictly before it, normalized with the date's stats (float16), their metadata and
    the date's learned metric. Serving builds one index per feature set (tier) in the metric's
    space, partitioned by level kind × direction × time bucket with coarser fallbacks; exact
    below 50 k vectors, HNSW above."""
    store = lake.lake()
    run = RangeRun(context)
    episodes_read: dict = {}
    run.run(lambda session: write_similarity_index(store, session, stamp(settings, INDEX_SCHEMA_VERSION), episodes_read),
            expected=EXPECTED)
    leaks = {day: s["latest_indexed_session"] for day, s in run.per_session.items()
             if s["latest_indexed_session"] is not None and s["latest_indexed_session"] >= day}
    return dg.MaterializeResult(
        metadata=run.metadata(),
        check_results=[blocking_check(store, INDEX_STRICTLY_BEFORE, leaks, [("gold", "similarity_index")])],
    )


# What reports/retrieval_predictions holds per episode: the served (learned-metric) answer plus
# the plain-cosine baseline's p(BREAK) and neighbour similarity on the same episode.
RETRIEVAL_PREDICTIONS_SCHEMA = PREDICTION_SCHEMA | {"p_break_plain_cosine": pl.Float64,
                                                    "similarity_median_plain_cosine": pl.Float64}


@dg.asset(
    key=dg.AssetKey(["reports", "retrieval_evaluation"]),
    deps=[key("similarity_index"), key("episodes"), dg.AssetKey(list(BREAK_PREDICTIONS))],
    group_name="reports",
    kinds={"json", "png"},
    owners=OWNERS,
    # Unpartitioned: it reads every session that has an index, and rides along in range runs.
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def retrieval_evaluation(context: dg.AssetExecutionContext, lake: LakeResource, market_data: MarketDataResource) -> dg.MaterializeResult:
    """Walk-forward retrieval quality: every session's episodes answered by its own as-of index
    (earlier sessions only), with the learned metric and with plain robust-z cosine. Brier, log
    loss, ECE and AUC of p(BREAK) against the base rate, pooled and by level kind and direction,
    with a reliability table and PNG, fallback rates and the neighbours' similarity; a comparison
    table of every predictor on the same episodes (learned-metric retrieval, plain-cosine
    retrieval, base rate and — when ml/break_predictions exists — the as-of break model and its
    best single-feature baseline); on the synthetic market each against the simulator's oracle."""
    store = lake.lake()
    sessions = [dt.date.fromisoformat(day) for day in store.partitions("gold", "similarity_index")]
    predictions = walk_forward_predictions(store, sessions)
    plain = walk_forward_predictions(store, sessions, metric=PLAIN_COSINE)
    model = read_break_predictions(store)
    report = evaluation_report(predictions)
    report["plain_cosine"] = evaluation_report(plain)
    truth_root = market_data.ground_truth_root()
    matched = None
    if truth_root is not None and predictions.height:
        truth = read_ground_truth(truth_root, sorted(set(predictions["session"].to_list())))
        matched = match_ground_truth(predictions, truth)
        report["oracle"] = oracle_comparison(predictions, matched)
    compared = comparison_frame(predictions, plain, model)
    if model is not None and compared.height == 0:
        # early sessions have no as-of model yet (too little history): compare retrieval alone
        compared, model_note = comparison_frame(predictions, plain, None), "no episode scored by an as-of model yet: model rows skipped"
    else:
        model_note = "included" if model is not None else "ml/break_predictions absent: model rows skipped"
    report["comparison"] = {
        "episodes": compared.height,
        "break_model": model_note,
        "rows": comparison_table(compared, matched),
    }
    out = store.root / "reports" / "retrieval_evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    served = predictions.join(plain.select("episode_id", pl.col("p_break").alias("p_break_plain_cosine"),
                                           pl.col("similarity_median").alias("similarity_median_plain_cosine")),
                              on="episode_id", how="left")
    for (session,), per_session in served.group_by("session"):
        store.write_frames("reports", "retrieval_predictions", session, [per_session], RETRIEVAL_PREDICTIONS_SCHEMA)
    if predictions.height:
        y = (served["label"] == "BREAK").to_numpy().astype(float)
        reliability_png({"retrieval p(BREAK), learned metric": reliability_table(y, served["p_break"].to_numpy()),
                         "retrieval p(BREAK), robust-z cosine": reliability_table(
                             y, served["p_break_plain_cosine"].fill_null(served["base_break"]).to_numpy()),
                         "base rate": reliability_table(y, served["base_break"].to_numpy())},
                        out / "reliability.png", title="Retrieval p(BREAK), walk-forward")
    numbers = headline(report)
    context.log.info(f"retrieval evaluation: {numbers}")
    return dg.MaterializeResult(metadata={
        **{k: dg.MetadataValue.float(v) for k, v in numbers.items()},
        "report": dg.MetadataValue.path(str(out / "report.json")),
        "reliability_png": dg.MetadataValue.path(str(out / "reliability.png")),
        "comparison": dg.MetadataValue.json(report["comparison"]),
        "by_level_kind": dg.MetadataValue.json(report.get("by_level_kind", {})),
    })


gold_assets = [gold_episodes, normalization_stats, similarity_metric, similarity_index]
report_assets = [retrieval_evaluation]
