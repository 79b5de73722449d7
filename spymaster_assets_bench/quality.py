""""Answers worth trusting": retrieval and the as-of break model vs the oracle on a planted market.

Reproduce (CPU-heavy: one at a time, niced; a 44-session tiny lake takes ~10–25 min to build on
a loaded 2-core box, its evaluation ~5–15 min):

    export OMP_WAIT_POLICY=passive POLARS_MAX_THREADS=1
    nice -n 10 uv run python -m spymaster_assets_bench.quality --generate --seed 31 --sessions 44 \
        --home /tmp/quality-seed31 --scratch /tmp/quality-seed31-eval
    # evaluate an existing lake again (SCRATCH must be a new, empty directory):
    nice -n 10 uv run python -m spymaster_assets_bench.quality --home /tmp/quality-seed31 --scratch /tmp/q31-again
    # after a feature change, rebuild silver + gold/episodes only (raw and bronze do not depend on it):
    nice -n 10 uv run python -m spymaster_assets_bench.quality --generate --layers silver --seed 11 \
        --home /tmp/quality-seed11 --no-evaluate

`--generate` materializes raw → bronze → silver → gold/episodes in-process, a few range runs of
GENERATE_CHUNK sessions (tiny scale, from 2024-09-03 unless --start). HOME then holds
gold/episodes of a synthetic market (and raw/synthetic/<seed>-<scale>/ground_truth);
SCRATCH receives a copy of those episodes and every session's as-of partitions, built oldest first
by the plain functions the assets call (gold/as_of.write_*, ml/assets.build_model_partition and
score_session), so the lake can be inspected afterwards. Reported, all on held-out episodes:

- the comparison table of gold/evaluation (every predictor on the episodes all of them answered,
  BREAK = 1 vs REJECT or CHOP), with the oracle's AUC on the planned touches among them;
- the model's p(BREAK | decisive) on decisive episodes vs the oracle on the same planned ones,
  pooled and restricted to dates whose model was trained on ≥ 20 sessions;
- diagnostics: pipeline label vs the simulator's drawn outcome, and how well the episode vector
  carries each planted precursor (best |Spearman| of any dimension with the simulator's z).
Numbers, not asserts.

Before (2026-11-29, main at da2222a: grid-row features, OI-convention dealer gamma only, 15-leaf
model; tiny scale, 44 sessions from 2024-09-03, seeds 11 / 23, never tuned on; held-out = each
session answered by its own as-of partitions; 1050 / 1045 episodes answered by every predictor,
613 / 629 of them planned touches):

    predictor (BREAK vs rest)     AUC          ECE          Brier skill    AUC/oracle (planned)
    retrieval, learned metric     0.617/0.626  0.038/0.064  +0.060/+0.054  0.756/0.770
    retrieval, robust-z cosine    0.613/0.616  0.049/0.063  +0.058/+0.050  0.749/0.765
    break model p_break           0.609/0.632  0.071/0.039  +0.039/+0.070  0.734/0.753
    best single feature           0.591/0.566  0.056/0.054  +0.033/+0.009  0.711/0.661
    base rate                     0.518/0.542  0.060/0.074   0            0.654/0.684
    oracle AUC on those planned touches 0.808/0.818; median neighbour similarity 0.250/0.25.

After (vector v3: features at the touch itself, flow_gex_band_2, tape_imbalance_toward_120s;
4-leaf model, Platt; tree-attribution metric candidate). Same 44 sessions; seeds 11 / 23 (continuity),
seeds 31 / 47 fresh (generated and looked at only for this final run; no tuning run was possible in
the time — every change was fixed a priori):

    seed                          11 (cont.)   23 (cont.)   31 (fresh)   47 (fresh)
    oracle AUC (planned touches)  0.808        0.818        0.803        0.835
    retrieval AUC planned / ratio 0.674/0.834  0.649/0.794  0.637/0.793  0.677/0.811
    model AUC planned / ratio     0.679/0.840  0.659/0.806  0.655/0.815  0.687/0.824
    ECE retrieval / model         0.036/0.037  0.065/0.038  0.057/0.047  0.039/0.038
    best single feature ratio     0.801        0.701        0.773        0.792
    base rate ratio               0.654        0.684        0.630        0.661
    median neighbour similarity   0.256        0.271        0.294        0.312
    model p_break_decisive, dates with ≥ 20 training sessions: ratio 0.870 / 0.835 / 0.867 / 0.834 (planned touches)
    precursor carried (best |Spearman| with the simulator's z, seed 11 before → after): wall
    0.51 → 0.85 (defending_depth), flow 0.54 → 0.98 (tape_imbalance_toward_120s), gamma 0.25 →
    0.86 (flow_gex_band_2), attempt 0.99, speed 0.78 → 0.79 (velocity_10min; no exact 5-min
    displacement feature yet).
Retrieval within 0.02 of the model: met on each seed. AUC ≥ 0.9 × oracle and ECE ≤ 0.03: still
missed. The pooled numbers include the dates whose model had only 5–19 sessions of history (the
first 10 sessions have no model and are not scored); on dates with ≥ 20 training sessions the model reaches
0.83–0.87 × oracle. ECE is measured on ~1,100 episodes in 10 bins: a *perfectly calibrated*
predictor scores 0.027 on average there (p10–p90 0.017–0.040; 200 simulated draws with
lib.metrics.binary_report), so ECE ≤ 0.03 cannot be told apart at this size — 60–80 sessions
are the fair test (not run: out of time).

After vector v4 (displacement_5min_toward_atr: the planted speed precursor read from the print
path at the touch) and metric v2 (a learned metric must beat plain cosine by the session-
jackknife SE of the paired held-out AUC gain, Bonferroni t bound over its six candidates; it had
beaten it by noise in 9 of 12 random-label windows under the fixed 0.005 margin). Both changes
fixed a priori from the earlier diagnosis. Seed 5: diagnostics only (44 sessions, looked at
before the fresh runs, nothing tuned on it); seeds 59 / 71: fresh, 60 sessions, generated and
evaluated once each after every change was committed (2026-11-29):

    seed                          5 (diag, 44) 59 (fresh, 60) 71 (fresh, 60)
    oracle AUC (planned touches)  0.795        0.796          0.808
    retrieval AUC planned / ratio 0.602/0.758  0.622/0.782    0.634/0.785
    model AUC planned / ratio     0.690/0.869  0.670/0.842    0.716/0.886
    ECE retrieval / model         0.034/0.028  0.045/0.018    0.053/0.017
    best single feature ratio     0.755        0.821          0.877
    base rate ratio               0.668        0.660          0.626
    median neighbour similarity   0.262        0.260          0.255
    retrieval, plain cosine ratio 0.758        0.777          0.768
    episodes answered / planned   1069/642     1543/873       1636/991
    model p_break_decisive, dates with ≥ 20 training sessions: ratio 0.882 / 0.834 / 0.880
    speed precursor carried: |Spearman| 0.991 / 0.992 / 0.992 (displacement_5min_toward_atr; was 0.79)
Met: model ECE ≤ 0.03 (all three). Missed: model 0.842–0.886 × oracle (short by 0.014–0.058);
retrieval 0.782–0.785 × oracle, 0.048–0.082 AUC below the model, ECE 0.045–0.053 (a perfectly
calibrated predictor scores ~0.022 at ~1,600 episodes, so this is real miscalibration).
What limits retrieval (seed 5, decisive planned touches on dates ≥ 20, plain global 50-NN on
whole-lake robust-z, no partitions): all dims 0.830 × oracle; as-of learned weights at λ = 1
(tree |SHAP| or logistic |β|) 0.874–0.879; only the five precursor dims 0.938. So a metric that
concentrates on the deciding dimensions would clear the bar, and the learned weights gain
~+0.04 AUC on planned touches; but on all decided episodes (unplanned touches included) the
gain shrinks (4-fold cross-fitted over a whole 43-session window: −0.002 to +0.008, SE
0.004–0.018), and the held-out choice on ≤ 11 newest sessions (~250 episodes) measures each
candidate's gain with SE 0.03–0.04: it cannot tell that gain from noise, and plain cosine
serves in most windows (seed 5: nearly every tier and date). The served retrieval also sits
below that global kNN on the same episodes (0.640 vs 0.682 AUC on seed 5; the diagnostic
normalizes over the whole lake, the served answer as of D and within partitioned neighbour
pools: 50–58 % of answers fall back to kind_direction, 31–45 % to direction only).

After metric v3 (the as-of tree attributions at λ = 1 are the incumbent; plain cosine, |β| and
the blends must beat *them* by the same paired-gain bound — decided from the seed-5 diagnosis
above, before any run on the seeds below). Seeds 83 / 97: fresh, 60 sessions, generated and
evaluated once each (2026-11-29; the v4/metric-v2 seeds 59 / 71 were not re-run: they had been
looked at):

    seed                          83 (fresh, 60) 97 (fresh, 60)
    oracle AUC (planned touches)  0.802          0.797
    retrieval AUC planned / ratio 0.647/0.807    0.677/0.849
    model AUC planned / ratio     0.688/0.858    0.680/0.853
    ECE retrieval / model         0.035/0.024    0.021/0.042
    best single feature ratio     0.728          0.815
    base rate ratio               0.616          0.674
    median neighbour similarity   0.323          0.329   (plain cosine 0.251 / 0.250)
    retrieval, plain cosine ratio 0.749          0.818
    episodes answered / planned   1600/929       1566/892
    model p_break_decisive, dates with ≥ 20 training sessions: ratio 0.888 / 0.872
Retrieval is back above plain cosine (+0.058 / +0.031 × oracle) and within 0.02 of the model on
seed 97 (0.041 below it on 83); neither predictor reaches 0.9 × oracle; ECE ≤ 0.03 holds for
one of the two predictors on each seed (model on 83, retrieval on 97). Half of the answers
still come from coarse neighbour pools (kind_direction 58 %, direction 31 %).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before lightgbm loads OpenMP

import numpy as np
import polars as pl

MIN_TRAINING_SESSIONS = 20


def build_model_tier(store, sessions) -> dict:
    """ml/break_model and ml/break_predictions for every session, oldest first, as the assets write them."""
    from spymaster_assets.ml.assets import LAYER, PREDICTION_SCHEMA, PREDICTIONS_TABLE, build_model_partition, score_session
    from spymaster_assets.ml.model_store import load_model, read_summary

    stamp = {"schema_version": "bench", "config_hash": "bench"}
    cache: dict = {}
    summaries = {}
    for session in sessions:
        summaries[session] = build_model_partition(store, session, "bench", stamp, cache, None)
        loaded = load_model(store, session)
        if loaded is None:
            continue
        predictor, baseline, provenance = loaded
        scored = score_session(store.read("gold", "episodes", session), predictor, baseline, provenance,
                               read_summary(store, session))
        store.write_frames(LAYER, PREDICTIONS_TABLE, session, [scored], PREDICTION_SCHEMA, stamp)
    return summaries


def _metrics(y: np.ndarray, p: np.ndarray, base: np.ndarray) -> dict:
    from spymaster_assets.lib.metrics import binary_report

    r = binary_report(y, p, base)
    return {k: r[k] for k in ("auc", "ece", "brier_skill")}


def _oracle_auc(frame: pl.DataFrame) -> float:
    from spymaster_assets.lib.metrics import roc_auc

    planned = frame.filter(pl.col("gt_planned").fill_null(False) & pl.col("gt_p_break").is_not_null())
    return roc_auc((planned["label"] == "BREAK").to_numpy().astype(float), planned["gt_p_break"].to_numpy()), planned.height


def decisive_rows(model: pl.DataFrame, learned: pl.DataFrame, matched: pl.DataFrame, summaries: dict) -> list[dict]:
    """The model's conditional question (BREAK vs REJECT on decisive episodes) beside retrieval on the
    same episodes and the oracle on the planned touches among them; all dates, then dates whose model
    had ≥ MIN_TRAINING_SESSIONS training sessions."""
    from spymaster_assets.lib.metrics import roc_auc

    frame = (model.filter(pl.col("label").is_in(["BREAK", "REJECT"]))
             .join(learned.select("episode_id", pl.col("p_break").alias("p_retrieval")), on="episode_id", how="inner")
             .join(matched.select("episode_id", "gt_planned", "gt_p_break"), on="episode_id", how="left"))
    trained_on = {s: v.get("n_sessions", 0) for s, v in summaries.items()}
    frame = frame.with_columns(pl.col("session").replace_strict(trained_on, default=0).alias("n_training_sessions"))
    rows = []
    for scope, part in (("all dates", frame),
                        (f"≥{MIN_TRAINING_SESSIONS} training sessions", frame.filter(pl.col("n_training_sessions") >= MIN_TRAINING_SESSIONS))):
        if part.height < 20:
            continue
        y = (part["label"] == "BREAK").to_numpy().astype(float)
        oracle, n_planned = _oracle_auc(part)
        planned = part.filter(pl.col("gt_planned").fill_null(False) & pl.col("gt_p_break").is_not_null())
        yp = (planned["label"] == "BREAK").to_numpy().astype(float)
        for name, column, base in (("model p_break_decisive", "p_break_decisive", "base_break_decisive"),
                                   ("retrieval (learned) p_break", "p_retrieval", "base_break_decisive")):
            m = _metrics(y, part[column].to_numpy(), part[base].to_numpy())
            auc_planned = roc_auc(yp, planned[column].to_numpy())
            rows.append({"scope": scope, "predictor": name, "n": part.height, "sessions": part["session"].n_unique(),
                         **m, "n_planned": n_planned, "auc_planned": auc_planned, "oracle_auc": oracle,
                         "auc_ratio": auc_planned / oracle})
    return rows


def label_agreement(matched: pl.DataFrame) -> dict:
    """Pipeline labels vs the simulator's drawn outcome on planned touches."""
    planned = matched.filter(pl.col("gt_planned").fill_null(False))
    if planned.height == 0:
        return {"n": 0}
    table = planned.group_by("gt_outcome", "label").len().sort("gt_outcome", "label")
    return {"n_planned_matched": planned.height, "n_episodes": matched.height,
            "agreement": float((planned["gt_outcome"] == planned["label"]).mean()),
            "confusion (gt_outcome, label, n)": table.rows()}


def precursor_coverage(matched: pl.DataFrame, truth: pl.DataFrame) -> dict:
    """For each planted precursor: the vector dimensions most rank-correlated with the simulator's
    z on matched planned touches, the dimension's NaN share and whether it varies."""
    from spymaster_assets.lib.episodes import vector_layout
    from spymaster_assets.synthetic.ground_truth import PRECURSORS

    z_columns = [f"z_{p.name}" for p in PRECURSORS]
    planned = matched.filter(pl.col("gt_planned").fill_null(False)).join(
        truth.select(pl.col("touch_ts_event").alias("gt_ts_ns"), "level_kind", "direction",
                     *[pl.col(c).alias(f"gt_{c}") for c in z_columns]),
        on=["gt_ts_ns", "level_kind", "direction"], how="left")
    names = [d.name for d in vector_layout() if d.name in planned.columns]
    ranks = planned.select([pl.col(n).cast(pl.Float64).rank() for n in names]).to_numpy()
    out = {}
    for precursor in PRECURSORS:
        column = f"gt_z_{precursor.name}"
        if column not in planned.columns:
            out[precursor.name] = "no gt column"
            continue
        z = planned[column].cast(pl.Float64).rank().to_numpy()
        corr = []
        for j, name in enumerate(names):
            x = ranks[:, j]
            ok = np.isfinite(x) & np.isfinite(z)
            if ok.sum() > 20 and np.std(x[ok]) > 0:
                corr.append((abs(float(np.corrcoef(x[ok], z[ok])[0, 1])), name))
        corr.sort(reverse=True)
        out[precursor.name] = [(n, round(c, 3)) for c, n in corr[:3]]
    return out


def measure(home: Path, scratch: Path) -> dict:
    from spymaster_assets.gold.as_of import LEARNED_METRIC, PLAIN_COSINE
    from spymaster_assets.gold.evaluation import (comparison_frame, comparison_table, evaluation_report,
                                                  walk_forward_predictions)
    from spymaster_assets.lake import Lake
    from spymaster_assets.synthetic import match_ground_truth, read_ground_truth
    from spymaster_assets_bench.retrieval import build_as_of, clean_copy

    if scratch.exists() and any(scratch.iterdir()):
        raise SystemExit(f"{scratch} is not empty: evaluate into a new directory (stale as-of partitions would be reused)")
    store, sessions, flagged = clean_copy(Lake(home / "lake"), Lake(scratch))
    began = time.perf_counter()
    build_as_of(store, sessions)
    gold_s = time.perf_counter() - began
    began = time.perf_counter()
    summaries = build_model_tier(store, sessions)
    model_s = time.perf_counter() - began
    answers = {m: walk_forward_predictions(store, sessions, m) for m in (LEARNED_METRIC, PLAIN_COSINE)}
    model = pl.concat([store.read("ml", "break_predictions", d) for d in store.partitions("ml", "break_predictions")],
                      how="vertical_relaxed")
    (truth_root,) = (p.parent for p in (home / "raw" / "synthetic").glob("*/ground_truth"))
    truth = read_ground_truth(truth_root, sessions)
    episodes = pl.concat([store.read("gold", "episodes", d) for d in sessions], how="vertical_relaxed").filter(
        pl.col("label").is_not_null())
    matched_all = match_ground_truth(episodes, truth)
    rows = comparison_table(comparison_frame(answers[LEARNED_METRIC], answers[PLAIN_COSINE], model), matched_all)
    reports = {m: evaluation_report(f) for m, f in answers.items()}
    statuses = {}
    for s in summaries.values():
        statuses[s["status"]] = statuses.get(s["status"], 0) + 1
    return {
        "home": str(home), "sessions": len(sessions), "flagged": flagged, "gold_s": gold_s, "model_s": model_s,
        "rows": rows, "decisive": decisive_rows(model, answers[LEARNED_METRIC], matched_all, summaries),
        "similarity": {m: r.get("neighbour_similarity", {}).get("median", {}) for m, r in reports.items()},
        "fallback_rates": {m: r.get("fallback_rates", {}) for m, r in reports.items()},
        "model_statuses": statuses,
        "window_held_out_auc": {k: v.get("held_out_auc_decisive") for k, v in summaries.items()
                                if v.get("status") == "trained"},
        "labels": label_agreement(matched_all), "precursors": precursor_coverage(matched_all, truth),
        "oracle_observable_auc": float(_observable_auc(truth)),
    }


def _observable_auc(truth: pl.DataFrame) -> float:
    from spymaster_assets.synthetic.ground_truth import oracle_auc

    return oracle_auc(truth, "p_break_observable")


def bars(r: dict) -> dict:
    """The issue's quality bars from the comparison rows: AUC on the planned touches ÷ the oracle's."""
    by = {row["predictor"]: row for row in r["rows"]}
    retrieval, model = by.get("retrieval (learned metric)", {}), by.get("break model (as of D)", {})
    single, base = by.get("best single feature", {}), by.get("base rate", {})
    sim = r["similarity"].get("learned", {}) or next(iter(r["similarity"].values()), {})
    out = {"oracle_auc": retrieval.get("oracle_auc"), "retrieval_auc": retrieval.get("predictor_auc"),
           "retrieval_ratio": retrieval.get("auc_ratio"), "retrieval_ece": retrieval.get("ece"),
           "model_auc": model.get("predictor_auc"), "model_ratio": model.get("auc_ratio"), "model_ece": model.get("ece"),
           "single_feature_ratio": single.get("auc_ratio"), "base_rate_ratio": base.get("auc_ratio"),
           "median_neighbour_similarity": sim.get("median")}
    if None not in (out["retrieval_ratio"], out["model_ratio"]):
        out["passes"] = {"retrieval ≥ 0.9×oracle": out["retrieval_ratio"] >= 0.9,
                         "retrieval within 0.02 of model": out["retrieval_auc"] >= out["model_auc"] - 0.02,
                         "model ≥ 0.9×oracle": out["model_ratio"] >= 0.9,
                         "ECE ≤ 0.03 (retrieval, model)": (out["retrieval_ece"] <= 0.03, out["model_ece"] <= 0.03)}
    return out


def print_result(r: dict) -> None:
    print(f"\n{r['home']}: {r['sessions']} sessions (left out: {r['flagged'] or 'none'}); gold as-of {r['gold_s']:.0f} s, "
          f"model tier {r['model_s']:.0f} s; model partitions {r['model_statuses']}")
    print(f"  {'predictor':<30}{'n':>6}{'AUC':>7}{'ECE':>7}{'skill':>8}{'planned':>8}{'AUC pl':>7}{'oracle':>7}{'ratio':>7}")
    for row in r["rows"]:
        print(f"  {row['predictor']:<30}{row['n']:>6}{row['auc']:>7.3f}{row['ece']:>7.3f}{row['brier_skill']:>+8.3f}"
              f"{row.get('n_matched', 0):>8}{row.get('predictor_auc', float('nan')):>7.3f}"
              f"{row.get('oracle_auc', float('nan')):>7.3f}{row.get('auc_ratio', float('nan')):>7.3f}"
              + (f"  [{row['feature']}]" if "feature" in row else ""))
    print("  decisive episodes (BREAK vs REJECT), base = window's decisive BREAK share:")
    for row in r["decisive"]:
        print(f"  {row['scope']:<27}{row['predictor']:<30}{row['n']:>6} ({row['sessions']} sess){row['auc']:>7.3f}"
              f"{row['ece']:>7.3f}{row['brier_skill']:>+8.3f}{row['n_planned']:>8}{row['auc_planned']:>7.3f}"
              f"{row['oracle_auc']:>7.3f}{row['auc_ratio']:>7.3f}")
    for m, sim in r["similarity"].items():
        print(f"  {m}: median neighbour similarity {sim.get('median', float('nan')):.3f} "
              f"(p10 {sim.get('p10', float('nan')):.3f}, p90 {sim.get('p90', float('nan')):.3f}); fallbacks "
              + ", ".join(f"{g} {s:.1%}" for g, s in r["fallback_rates"][m].items()))
    print(f"  window held-out AUC (inner walk-forward, per retrain): "
          f"{ {str(k): round(v, 3) for k, v in r['window_held_out_auc'].items() if v is not None} }")
    print(f"  oracle AUC of p_break_observable on all planned touches: {r['oracle_observable_auc']:.3f}")
    print(f"  labels vs simulator outcome: {r['labels']}")
    print(f"  precursor → best-matching vector dims (|Spearman| with the simulator's z): {r['precursors']}")
    summary = bars(r)
    print("  BARS: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float)))
    print(f"  BARS passed: {summary.get('passes')}")


GENERATE_START = dt.date(2024, 9, 3)
GENERATE_CHUNK = 11  # sessions per in-process range run (one run per chunk, not per session)


def generate(home: Path, seed: int, n_sessions: int, start: dt.date = GENERATE_START, layers: str = "all") -> None:
    """Materialize a tiny planted market's raw → bronze → silver → gold/episodes under `home`,
    in-process, a few range runs of GENERATE_CHUNK sessions each. `layers="bronze"` stops after
    bronze; `layers="silver"` rebuilds only silver and gold/episodes over existing bronze (after a
    feature change: the raw files and bronze do not depend on the feature code)."""
    import dagster as dg

    from spymaster_assets.definitions import build_definitions
    from spymaster_assets.freshness import SESSION_PARTITION_PRESENT
    from spymaster_assets.lib.calendar import trading_sessions
    from spymaster_assets_tests.helpers import RANGE_END, RANGE_START, resources_for

    sessions = trading_sessions(start)[:n_sessions]
    defs = build_definitions(resources_for(home, source="synthetic", synthetic_scale="tiny", synthetic_seed=seed))
    to_episodes = dg.AssetSelection.keys(dg.AssetKey(["gold", "episodes"])).upstream()
    selection = {"all": to_episodes,
                 "bronze": to_episodes - dg.AssetSelection.key_prefixes(["silver"], ["gold"]),
                 "silver": to_episodes & dg.AssetSelection.key_prefixes(["silver"], ["gold"])}[layers]
    # The freshness checks ask "is the latest session present?" — meaningless for a 2024 market and
    # ~20 s per run: left out.
    freshness = [k for k in defs.resolve_asset_graph().asset_check_keys if k.name == SESSION_PARTITION_PRESENT]
    selection = selection - dg.AssetSelection.checks(*freshness)
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("quality_lake", selection=selection)]))
    job = defs.resolve_job_def("quality_lake")
    with dg.instance_for_test() as instance:
        for i in range(0, len(sessions), GENERATE_CHUNK):
            part = sessions[i:i + GENERATE_CHUNK]
            began = time.perf_counter()
            result = job.execute_in_process(instance=instance, tags={RANGE_START: str(part[0]), RANGE_END: str(part[-1])},
                                            raise_on_error=False)
            print(f"{part[0]} … {part[-1]} ({layers}): {'ok' if result.success else 'FAILED'} "
                  f"in {time.perf_counter() - began:.0f} s", flush=True)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m spymaster_assets_bench.quality", description=__doc__.split("\n")[0])
    parser.add_argument("--generate", action="store_true", help="build a planted-market lake under --home first")
    parser.add_argument("--layers", choices=("all", "bronze", "silver"), default="all")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--sessions", type=int, default=44)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=GENERATE_START)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, help="evaluate into this directory (default: HOME/quality-scratch)")
    parser.add_argument("--no-evaluate", action="store_true")
    args = parser.parse_args(argv)
    if args.generate:
        if args.seed is None:
            parser.error("--generate needs --seed")
        generate(args.home, args.seed, args.sessions, args.start, args.layers)
    if not args.no_evaluate:
        print_result(measure(args.home, args.scratch or args.home / "quality-scratch"))


if __name__ == "__main__":
    main(sys.argv[1:])
