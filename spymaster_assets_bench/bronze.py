"""Bronze throughput on one `realistic` synthetic session.

Each stage runs in a fresh subprocess so its peak RSS is its own. Reported:
MBP-10 records/s end to end (decode + front-month filter + Parquet write), wall time,
peak RSS, and the ratio to a decode-only pass of the same file (`DBNStore.to_ndarray`
chunks, nothing else), which is the ceiling this stage can approach.
"""

from __future__ import annotations

import datetime as dt
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_generate(home: Path) -> dict:
    from spymaster_assets.sources.factory import build_source

    began = time.perf_counter()
    files = build_source("synthetic", home / "raw", synthetic_scale=SCALE).acquire(SESSION)
    return {"wall_s": time.perf_counter() - began, "files": {f"{v}/{s}": [str(p) for p in ps] for (v, s), ps in files.files.items()}}


def stage_decode_only(home: Path, mbp10: str) -> dict:
    import databento as db

    began = time.perf_counter()
    records = sum(len(chunk) for chunk in db.DBNStore.from_file(mbp10).to_ndarray(count=1_000_000))
    return {"records": records, "wall_s": time.perf_counter() - began}


def stage_bronze(home: Path) -> dict:
    from spymaster_assets.bronze.futures import write_front_month, write_front_month_table
    from spymaster_assets.bronze.manifest import manifest_frame
    from spymaster_assets.lake import Lake
    from spymaster_assets.resources import PipelineSettings
    from spymaster_assets.sources.factory import build_source

    lake, settings = Lake(home / "lake"), PipelineSettings()
    files = build_source("synthetic", home / "raw", synthetic_scale=SCALE).acquire(SESSION)
    lake.write_frame("raw", "dbn_files", SESSION, manifest_frame(files))
    timings = {}
    began = time.perf_counter()
    write_front_month(lake, settings, SESSION)
    timings["front_month_s"] = time.perf_counter() - began
    for schema, table in (("mbp-10", "futures_mbp10"), ("trades", "futures_trades"), ("ohlcv-1m", "futures_ohlcv_1m")):
        began = time.perf_counter()
        summary = write_front_month_table(lake, settings, SESSION, schema, table)
        timings[f"{table}_s"] = time.perf_counter() - began
        timings[f"{table}_records_read"] = summary["records_read"]
        timings[f"{table}_rows"] = summary["rows"]
    return timings


STAGES = {"generate": stage_generate, "decode_only": stage_decode_only, "bronze": stage_bronze}


def _run_stage(name: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "spymaster_assets_bench.bronze", "--stage", name, *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--stage":
        name, args = sys.argv[2], sys.argv[3:]
        result = STAGES[name](Path(args[0]), *args[1:])
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return
    home = Path(os.environ.get("BENCH_HOME", Path(tempfile.gettempdir()) / "spymaster-bench"))
    print(f"bronze benchmark: one {SCALE} synthetic session ({SESSION}), home {home}")
    generated = _run_stage("generate", str(home))
    mbp10 = generated["files"]["futures/mbp-10"][0]
    size_mb = Path(mbp10).stat().st_size / 1e6
    print(f"  generate: {generated['wall_s']:.1f} s, mbp-10 file {size_mb:.0f} MB (zstd)")
    decode = _run_stage("decode_only", str(home), mbp10)
    bronze = _run_stage("bronze", str(home))
    records = bronze["futures_mbp10_records_read"]
    wall = bronze["futures_mbp10_s"]
    decode_rate = decode["records"] / decode["wall_s"]
    print(f"  decode only (DBNStore.to_ndarray): {decode['records']:,} records, {decode['wall_s']:.2f} s, "
          f"{decode_rate / 1e6:.2f} M rec/s, peak RSS {decode['peak_rss_mb']:.0f} MB")
    print(f"  bronze futures_mbp10 (decode + filter + write): {records:,} read, {bronze['futures_mbp10_rows']:,} kept, "
          f"{wall:.2f} s, {records / wall / 1e6:.2f} M rec/s  (ratio to decode-only {records / wall / decode_rate:.2f})")
    print(f"  bronze futures_trades: {bronze['futures_trades_records_read']:,} read in {bronze['futures_trades_s']:.2f} s; "
          f"front month choice {bronze['front_month_s']:.2f} s; ohlcv {bronze['futures_ohlcv_1m_s']:.2f} s")
    print(f"  peak RSS of the bronze process: {bronze['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
