"""Break-model cost per day: the ml/break_model partition of the last date of a tiny market with
250 vs 750 sessions of history (episodes replicated from a 20-session base to reach those lengths).

Reported per size: CPU seconds (process time: all threads) and bytes written for that one
partition, trained on its retrain day (the expensive case: a reuse day only copies files), and
its training window. Target: the two within 1.5× of each other (the window is bounded at
`AsOfConfig.window_sessions` sessions, so history beyond it must cost nothing). Then the
single-episode latency p50/p99 of `predict` and `predict + explain` on that model. MLflow
logging is left out (a constant per retrain, measured separately by the asset's tests).
Numbers, not asserts. `BENCH_SESSIONS=250,750` to change the sizes.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before lightgbm loads OpenMP

import numpy as np
import polars as pl

from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import session_window, trading_sessions
from spymaster_assets.lib.episodes import episode_schema, feature_set, vector_layout
from spymaster_assets.ml.assets import AS_OF, build_model_partition
from spymaster_assets.ml.model_store import load_model, model_dir

EPISODES_PER_SESSION = 40
BASE_SESSIONS = 20
LATENCY_QUERIES = 500
LATENCY_TARGET_MS = 5.0
NS_PER_S = 1_000_000_000


def base_episodes(seed: int = 7) -> list[pl.DataFrame]:
    """`BASE_SESSIONS` sessions of T0 episodes, BREAK odds planted on approach_velocity, 10 % CHOP."""
    rng = np.random.default_rng(seed)
    supplied = {d.name for d in feature_set("T0")}
    frames = []
    for _ in range(BASE_SESSIONS):
        n = EPISODES_PER_SESSION
        columns = {d.name: rng.normal(size=n) if d.name in supplied else [None] * n for d in vector_layout()}
        p = 1 / (1 + np.exp(-2.0 * columns["approach_velocity"]))
        labels = np.where(rng.random(n) < 0.1, "CHOP", np.where(rng.random(n) < p, "BREAK", "REJECT"))
        columns |= {"level_kind": rng.choice(["OR_HIGH", "OR_LOW", "PM_HIGH", "PM_LOW"], n).tolist(),
                    "direction": rng.choice(["UP", "DOWN"], n).tolist(), "label": labels.tolist(),
                    "time_bucket": rng.choice(["T0_15", "T60_120"], n).tolist(), "tier": ["T0"] * n}
        frames.append(pl.DataFrame(columns))
    return frames


def write_market(lake: Lake, sessions: list[dt.date], base: list[pl.DataFrame]) -> None:
    schema = episode_schema()
    for i, session in enumerate(sessions):
        frame = base[i % len(base)]
        ts = session_window(session).rth_open_ns + 1800 * NS_PER_S + np.arange(frame.height, dtype=np.int64) * 240 * NS_PER_S
        full = frame.with_columns(
            pl.Series("episode_id", [f"{session}_{j}" for j in range(frame.height)]), pl.lit(session).alias("session"),
            pl.Series("ts_ns", ts), pl.Series("state_t_ns", ts), pl.Series("label_end_ns", ts + 480 * NS_PER_S))
        full = full.with_columns([pl.lit(None).cast(t).alias(c) for c, t in schema.items() if c not in full.columns])
        lake.write_frame("gold", "episodes", session, full.select(list(schema)).cast(schema))


def last_retrain_day(n_sessions: int) -> list[dt.date]:
    """`n_sessions` consecutive calendar sessions ending on a retrain day (index multiple of retrain_every)."""
    calendar = trading_sessions(end=dt.date(2025, 6, 30))
    end = len(calendar) - 1
    end -= end % AS_OF.retrain_every
    return calendar[end - n_sessions + 1:end + 1]


def partition_cost(n_sessions: int, base: list[pl.DataFrame], scratch: Path) -> dict:
    lake = Lake(scratch / f"lake_{n_sessions}")
    sessions = last_retrain_day(n_sessions)
    write_market(lake, sessions[:-1], base)  # the last date's own episodes are not needed to build its model
    began_cpu, began_wall = time.process_time(), time.perf_counter()
    summary = build_model_partition(lake, sessions[-1], "bench", {"schema_version": "bench"}, {}, None)
    cpu, wall = time.process_time() - began_cpu, time.perf_counter() - began_wall
    written = sum(p.stat().st_size for p in model_dir(lake, sessions[-1]).iterdir())
    return {"sessions": n_sessions, "cpu_s": cpu, "wall_s": wall, "bytes": written, "lake": lake, "day": sessions[-1],
            "window": f"{summary['trained_on_first']}..{summary['trained_on_last']} ({summary['n_sessions']} sessions, "
                      f"{summary['n_episodes']} episodes)", "status": summary["status"]}


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SESSIONS", "250,750").split(",")]
    base = base_episodes()
    print(f"ml/break_model partition of the last date (a retrain day): {EPISODES_PER_SESSION} episodes/session, "
          f"window ≤ {AS_OF.window_sessions} sessions, {len(feature_set('T0'))} T0 dims")
    print(f"  {'history':>8} {'CPU s':>7} {'wall s':>7} {'bytes':>10}  window")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in sizes:
            result = partition_cost(n, base, Path(scratch))
            results.append(result)
            print(f"  {n:>8} {result['cpu_s']:>7.1f} {result['wall_s']:>7.1f} {result['bytes']:>10}  {result['window']} "
                  f"[{result['status']}]")
        print(f"  CPU ratio {results[-1]['cpu_s'] / results[0]['cpu_s']:.2f}×, bytes ratio "
              f"{results[-1]['bytes'] / results[0]['bytes']:.2f}× (target ≤ 1.5×)")

        last = results[-1]
        predictor, _, provenance = load_model(last["lake"], last["day"])
        window = pl.concat([last["lake"].read("gold", "episodes", d) for d in last["lake"].partitions("gold", "episodes")
                            if provenance["trained_on_first"] <= d <= provenance["trained_on_last"]])
        rng = np.random.default_rng(0)
        names = list(predictor.feature_names)
        layout = {d.name: d for d in vector_layout()}
        sections, drivers = {n: layout[n].section for n in names}, {n: layout[n].driver for n in names}
        history = window.select(names).to_numpy().astype(np.float64)  # once per query session, as serving does
        X = history[rng.integers(0, len(history), LATENCY_QUERIES)]
        for row in X[:20]:  # warm-up: first calls pay for lazy allocations
            predictor.explain(row, names, sections, drivers, history)
        predict_s, explain_s = [], []
        for row in X:
            began = time.perf_counter()
            predictor.predict(row)
            predict_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            predictor.predict(row)
            predictor.explain(row, names, sections, drivers, history)
            explain_s.append(time.perf_counter() - began)
        for label, samples in (("predict", predict_s), ("predict + explain", explain_s)):
            p50, p99 = np.percentile(np.asarray(samples) * 1e3, [50, 99])
            print(f"  {label:<18} p50 {p50:6.3f} ms   p99 {p99:6.3f} ms   p99 / {LATENCY_TARGET_MS:.0f} ms target "
                  f"{p99 / LATENCY_TARGET_MS:.2f}")


if __name__ == "__main__":
    main()
