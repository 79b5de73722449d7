"""Silver on one `realistic` synthetic session (≥ 5 M MBP-10 updates, options on).

Bronze for the session is materialized through Dagster first (not timed here; see
`spymaster_assets_bench.bronze`). Then, in a fresh subprocess so the peak RSS is silver's
own, the silver build runs stage by stage exactly as the assets call it: read inputs →
bars + ATR → levels → anchors → state (with each feature family timed) → labels → writes.
Target: ≤ 20 s wall on 2 cores, peak RSS ≤ 4 GB.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION = dt.date(2024, 12, 9)
SCALE = os.environ.get("BENCH_SCALE", "realistic")
FAMILY_FUNCTIONS = ("tape_features", "tape_level_features", "ofi_per_update", "ofi_features", "near_level_ofi",
                    "liquidity_features", "dealer_features", "_kinematics", "_context")


def ensure_bronze(home: Path) -> None:
    import dagster as dg

    from spymaster_assets.bronze.futures import futures_assets
    from spymaster_assets.bronze.options import options_assets
    from spymaster_assets.bronze.raw import raw_dbn_files
    from spymaster_assets.resources import resources_from_env

    if (home / "lake" / "bronze" / "options_open_interest" / f"date={SESSION}").exists():
        return
    resources = resources_from_env({"SPYMASTER_HOME": str(home), "SPYMASTER_SYNTHETIC_SCALE": SCALE})
    began = time.perf_counter()
    result = dg.materialize([raw_dbn_files, *futures_assets, *options_assets], partition_key=SESSION.isoformat(),
                            resources=resources, raise_on_error=True)
    assert result.success
    print(f"  bronze materialized through Dagster in {time.perf_counter() - began:.1f} s (not part of the silver figure)")


def stage_silver(home: Path) -> dict:
    from spymaster_assets.lake import Lake
    from spymaster_assets.lib import state as state_module
    from spymaster_assets.lib.events import EVENT_SCHEMA
    from spymaster_assets.lib.features.bars import BAR_SCHEMA
    from spymaster_assets.lib.features.levels import LEVEL_SCHEMA
    from spymaster_assets.lib.labels import LabelConfig, label_events, label_schema
    from spymaster_assets.lib.state import StateConfig, build_bars, build_levels, build_state, find_session_anchors, state_schema
    from spymaster_assets.silver.assets import label_path
    from spymaster_assets.silver.inputs import BARS_1M_SCHEMA, load_session_inputs

    store = Lake(home / "lake")
    stages: dict[str, float] = {}
    family: dict[str, float] = {}

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                family[name] = family.get(name, 0.0) + time.perf_counter() - began
        return wrapper

    for name in FAMILY_FUNCTIONS:
        setattr(state_module, name, timed(name, getattr(state_module, name)))

    def stage(name, fn, *args):
        began = time.perf_counter()
        out = fn(*args)
        stages[name] = time.perf_counter() - began
        return out

    total = time.perf_counter()
    inputs = stage("read_inputs", load_session_inputs, store, SESSION)
    bars = stage("bars_atr", build_bars, inputs)
    levels = stage("levels", build_levels, inputs, bars)
    events = stage("anchors", find_session_anchors, inputs, bars, levels, StateConfig())
    state = stage("state", build_state, inputs, bars, levels, events)
    config = LabelConfig()
    labels = stage("labels", lambda: label_events(events, *label_path(store, SESSION, bars), config=config))

    def write_all():
        for name, frame in (("bars_10s", bars.bars_10s), ("bars_2m", bars.bars_2m)):
            store.write_frames("silver", name, SESSION, [frame], BAR_SCHEMA)
        store.write_frames("silver", "bars_1m", SESSION, [bars.bars_1m], BARS_1M_SCHEMA)
        store.write_frames("silver", "levels", SESSION, [levels], LEVEL_SCHEMA)
        store.write_frames("silver", "events", SESSION, [events], EVENT_SCHEMA)
        store.write_frames("silver", "state", SESSION, [state], state_schema())
        store.write_frames("silver", "labels", SESSION, [labels], label_schema(config))

    stage("writes", write_all)
    return {
        "wall_s": time.perf_counter() - total,
        "stages": stages,
        "state_families": family,
        "book_updates": inputs.book.height if inputs.book is not None else 0,
        "trades": inputs.trades.height if inputs.trades is not None else 0,
        "option_quotes": inputs.options.mbp1.height if inputs.options is not None else 0,
        "state_rows": state.height,
        "events": events.height,
        "tier": inputs.tier,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--stage":
        result = stage_silver(Path(sys.argv[2]))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    home = Path(os.environ.get("BENCH_HOME", Path(tempfile.gettempdir()) / "spymaster-bench"))
    print(f"silver benchmark: one {SCALE} synthetic session ({SESSION}), home {home}")
    ensure_bronze(home)
    out = subprocess.run([sys.executable, "-m", "spymaster_assets_bench.silver", "--stage", str(home)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  inputs: {r['book_updates']:,} book updates, {r['trades']:,} trades, {r['option_quotes']:,} option quotes "
          f"(tier {r['tier']}) → {r['state_rows']:,} state rows, {r['events']} anchors")
    print(f"  wall {r['wall_s']:.1f} s (target ≤ 20 s, ratio {r['wall_s'] / 20:.2f}), "
          f"peak RSS {r['peak_rss_mb']:.0f} MB (target ≤ 4096, ratio {r['peak_rss_mb'] / 4096:.2f})")
    print(f"  book throughput through the whole silver build: {r['book_updates'] / r['wall_s'] / 1e6:.2f} M updates/s")
    for name, seconds in r["stages"].items():
        print(f"    {name:<12} {seconds:6.2f} s")
    print("  inside state:")
    for name, seconds in sorted(r["state_families"].items(), key=lambda kv: -kv[1]):
        print(f"    {name:<20} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
