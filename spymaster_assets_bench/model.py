"""Break-model cost on synthetic episode sets shaped like ours (40 episodes/session, ~150 dims).

Reported per size (10 / 30 / 60 sessions by default; `BENCH_SESSIONS=10,30` to change):
training wall time (walk-forward after min(10, sessions/2) warm-up sessions, leave-one-day-out,
calibration, final fit), number of fitted fold pairs and seconds per fold pair, and out-of-fold AUC as a ratio to
the oracle AUC of the planted signal. Then, on the model of the largest size, single-episode
latency p50/p99 of `predict` and of `predict + explain` (TreeSHAP, drivers, percentiles vs
history), with the ratio to the 5 ms p99 target. Numbers, not asserts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before lightgbm loads OpenMP

import numpy as np

from spymaster_assets.lib.break_model import BreakModelConfig, train_break_model
from spymaster_assets.lib.metrics import roc_auc
from spymaster_assets.lib.validation import session_span_ns

EPISODES_PER_SESSION = 40
DIMENSIONS = 150
LATENCY_TARGET_MS = 5.0
LATENCY_QUERIES = 2000
NS_PER_S = 1_000_000_000
SECTIONS = ("context", "kinematics", "order_flow", "liquidity", "dealer", "micro_history", "trajectory")


def synthetic_episodes(n_sessions: int, seed: int = 7):
    """A planted logistic signal on 6 of 150 correlated-ish dims, a session regime, 15% CHOP."""
    rng = np.random.default_rng(seed)
    days = [dt.date(2024, 1, 2) + dt.timedelta(days=i) for i in range(n_sessions)]
    n = n_sessions * EPISODES_PER_SESSION
    sessions = np.repeat(np.array(days, dtype="datetime64[D]"), EPISODES_PER_SESSION)
    day_start = np.repeat([session_span_ns(d)[0] for d in days], EPISODES_PER_SESSION)
    ts = day_start + (10 * 3600 + rng.integers(0, 3 * 3600, n)) * NS_PER_S
    latent = rng.normal(size=(n, 20))
    X = latent @ rng.normal(scale=0.3, size=(20, DIMENSIONS)) + rng.normal(size=(n, DIMENSIONS))
    coef = np.zeros(DIMENSIONS)
    coef[[0, 7, 21, 40, 77, 120]] = [0.9, -0.8, 0.6, 0.5, -0.5, 0.4]
    logit = X @ coef + np.repeat(rng.normal(0.0, 0.3, n_sessions), EPISODES_PER_SESSION)
    breaks = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    labels = np.where(rng.random(n) < 0.15, "CHOP", np.where(breaks, "BREAK", "REJECT"))
    decisive = labels != "CHOP"
    oracle_auc = roc_auc(labels[decisive] == "BREAK", logit[decisive])
    return X, labels, sessions, ts + 240 * NS_PER_S, ts, oracle_auc


def _percentiles_ms(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples) * 1e3, [50, 99])
    return float(p50), float(p99)


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SESSIONS", "10,30,60").split(",")]
    default = BreakModelConfig()
    names = [f"dim_{i:03d}" for i in range(DIMENSIONS)]
    sections = {name: SECTIONS[i % len(SECTIONS)] for i, name in enumerate(names)}
    driver_names = {name: f"driver {i // 3}" for i, name in enumerate(names)}  # 3 dims per driver, like lag groups
    print(f"break model benchmark: {EPISODES_PER_SESSION} episodes/session × {DIMENSIONS} dims, "
          f"{default.n_estimators} trees, num_threads={default.num_threads}")
    print(f"  {'sessions':>8} {'episodes':>8} {'train s':>8} {'fold pairs':>10} {'s/fold':>7} "
          f"{'wf AUC':>7} {'lodo AUC':>8} {'oracle':>7} {'wf/oracle':>9} {'calib':>9}")
    model = X = None
    for n_sessions in sizes:
        X, labels, sessions, label_end, ts, oracle = synthetic_episodes(n_sessions)
        # The default 10-session warm-up would leave a 10-session set with no walk-forward fold at all.
        config = dataclasses.replace(default, min_train_sessions=min(default.min_train_sessions, n_sessions // 2))
        began = time.perf_counter()
        model = train_break_model(X, labels, sessions, label_end, ts, names, config)
        wall = time.perf_counter() - began
        metrics = model.pooled_metrics()
        fold_pairs = sum(len(r.folds) for r in model.validation.values()) + 1  # + the final fit
        print(f"  {n_sessions:>8} {len(labels):>8} {wall:>8.1f} {fold_pairs:>10} {wall / fold_pairs:>7.2f} "
              f"{metrics.get('wf_auc', float('nan')):>7.3f} {metrics.get('lodo_auc', float('nan')):>8.3f} "
              f"{oracle:>7.3f} {metrics.get('wf_auc', float('nan')) / oracle:>9.2f} {model.calibrator.method:>9}")

    rng = np.random.default_rng(0)
    queries = X[rng.integers(0, len(X), LATENCY_QUERIES)]
    for row in queries[:50]:  # warm-up: first calls pay for lazy allocations
        model.explain(row, names, sections, driver_names, X)
    predict_s, explain_s = [], []
    for row in queries:
        began = time.perf_counter()
        model.predict(row)
        predict_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        model.predict(row)
        model.explain(row, names, sections, driver_names, X)
        explain_s.append(time.perf_counter() - began)
    print(f"  single-episode latency ({LATENCY_QUERIES} queries, model of {sizes[-1]} sessions, history {len(X)} rows):")
    for label, samples in (("predict", predict_s), ("predict + explain", explain_s)):
        p50, p99 = _percentiles_ms(samples)
        print(f"    {label:<18} p50 {p50:6.3f} ms   p99 {p99:6.3f} ms   p99 / {LATENCY_TARGET_MS:.0f} ms target "
              f"{p99 / LATENCY_TARGET_MS:.2f}")


if __name__ == "__main__":
    main()
