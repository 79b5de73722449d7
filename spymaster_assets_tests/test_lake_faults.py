"""The lake under faults, with real processes: kill -9 mid-write, crashes between the steps of a
replace, readers during replaces, racing writers, a full disk.

Each writer is a fresh Python process (`WRITER`), so a kill is a real kill: no `finally`, no
interpreter shutdown, open files and the partition lock dropped by the kernel.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from spymaster_assets.lake import CRASH_AT_ENV, Lake

from .test_lake import stored

REPO = Path(__file__).resolve().parents[1]
SESSION = "2024-12-09"
OLD, NEW = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0, 50.0]

WRITER = r"""
import json, os, sys, time
from pathlib import Path
import polars as pl
from spymaster_assets.lake import Lake

job = json.loads(sys.argv[1])
lake = Lake(Path(job["root"]))
if job.get("ready"):
    Path(job["ready"]).touch()
    while not Path(job["go"]).exists():
        time.sleep(0.001)


def frames(values):
    for i, value in enumerate(values):  # one frame per value: the file grows as it is written
        yield pl.DataFrame({"ts_event": [i], "price": [value]})
        if job.get("stalled"):
            Path(job["stalled"]).touch()
            time.sleep(3600)


for turn in range(job.get("times", 1)):
    values = job["contents"][turn % len(job["contents"])]
    lake.write_frames("bronze", "t", job["session"], frames(values), {"ts_event": pl.Int64, "price": pl.Float64})
    if "grace" in job:
        lake.cleanup("bronze", "t", grace_seconds=job["grace"])
"""


def start_writer(root: Path, contents: list[list[float]], env: dict | None = None, **job) -> subprocess.Popen:
    job = {"root": str(root), "session": SESSION, "contents": contents, **job}
    return subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(job)], cwd=REPO,
                            env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)


def finish(writer: subprocess.Popen, timeout: float = 60) -> int:
    _, err = writer.communicate(timeout=timeout)
    assert writer.returncode in (0, -9), err
    return writer.returncode


def prices(lake: Lake) -> list[float]:
    return lake.read("bronze", "t", SESSION)["price"].to_list()


def wait_for(path: Path, writer: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert writer.poll() is None, writer.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def leftovers(table_dir: Path) -> list[str]:
    return [name for name in stored(table_dir) if any(mark in name for mark in (".tmp-", ".link-", ".del-", ".trash-"))]


# One version behind the pointer and nothing else: a partition with no history left.
SETTLED = [".versions", f".versions/{SESSION}", f".versions/{SESSION}/v-*", f".versions/{SESSION}/v-*/part-*.parquet",
           f"date={SESSION}@"]


@pytest.mark.parametrize("previous", [OLD, None], ids=["replacing", "first-write"])
def test_kill_9_mid_write_leaves_the_old_partition_and_the_next_write_cleans_up(tmp_path, previous):
    lake, table_dir = Lake(tmp_path), tmp_path / "bronze" / "t"
    if previous:
        lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0, 1, 2], "price": previous}))
    writer = start_writer(tmp_path, [NEW], stalled=str(tmp_path / "stalled"))
    wait_for(tmp_path / "stalled", writer)
    writer.kill()
    assert finish(writer) == -9
    assert [name for name in leftovers(table_dir) if name.count("/") == 2] != []  # its staging is still there
    if previous:
        assert prices(lake) == previous
    else:
        assert not lake.has_partition("bronze", "t", SESSION) and lake.partitions("bronze", "t") == []
    # The retry of the partition removes the dead writer's staging before it stages its own.
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0], "price": [0.0]}))
    assert leftovers(table_dir) == [] and prices(lake) == [0.0]


def test_a_new_process_sweeps_the_whole_table_on_its_first_write(tmp_path):
    lake, table_dir = Lake(tmp_path), tmp_path / "bronze" / "t"
    writer = start_writer(tmp_path, [NEW], stalled=str(tmp_path / "stalled"))
    wait_for(tmp_path / "stalled", writer)
    writer.kill()
    finish(writer)
    assert leftovers(table_dir) != []
    # Another process writes another session of the table: its first write sweeps the table.
    assert finish(start_writer(tmp_path, [OLD], session="2024-12-10")) == 0
    assert leftovers(table_dir) == [] and lake.partitions("bronze", "t") == ["2024-12-10"]


def test_a_live_writers_staging_survives_cleanup(tmp_path):
    lake = Lake(tmp_path)
    writer = start_writer(tmp_path, [NEW], stalled=str(tmp_path / "stalled"))
    try:
        wait_for(tmp_path / "stalled", writer)
        assert lake.cleanup(grace_seconds=0) == []
        assert len(leftovers(tmp_path / "bronze" / "t")) >= 2  # staging dir + its part file
    finally:
        writer.kill()
        finish(writer)
    assert len(lake.cleanup()) == 1 and leftovers(tmp_path / "bronze" / "t") == []


@pytest.mark.parametrize("step, survivor", [("before_swap", OLD), ("after_swap", NEW)])
def test_a_crash_between_the_steps_of_a_replace_leaves_old_or_new_never_none(tmp_path, step, survivor):
    lake, table_dir = Lake(tmp_path), tmp_path / "bronze" / "t"
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0, 1, 2], "price": OLD}))
    writer = start_writer(tmp_path, [NEW], env={CRASH_AT_ENV: step})
    assert finish(writer) == -9
    assert prices(lake) == survivor
    assert leftovers(table_dir) == []  # the staging had become a version before the crash point
    lake.cleanup(grace_seconds=0)
    assert stored(table_dir) == SETTLED and prices(lake) == survivor
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0], "price": [7.0]}))  # the lock was released
    assert prices(lake) == [7.0]


def test_a_crash_before_the_first_swap_leaves_no_partition(tmp_path):
    lake = Lake(tmp_path)
    assert finish(start_writer(tmp_path, [NEW], env={CRASH_AT_ENV: "before_swap"})) == -9
    assert not lake.has_partition("bronze", "t", SESSION)
    with pytest.raises(FileNotFoundError, match="has no partition"):
        lake.read("bronze", "t", SESSION)
    lake.cleanup(grace_seconds=0)
    assert stored(tmp_path / "bronze" / "t") == [".versions", f".versions/{SESSION}"]


def test_a_reader_polling_during_many_replaces_never_sees_a_missing_or_half_partition(tmp_path):
    lake = Lake(tmp_path)
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0, 1, 2], "price": OLD}))
    # The writer also removes superseded versions as soon as their (short) grace period ends.
    writer = start_writer(tmp_path, [NEW, OLD], times=60, grace=5.0)
    seen, reads = set(), 0
    while writer.poll() is None:
        assert lake.has_partition("bronze", "t", SESSION) and lake.partitions("bronze", "t") == [SESSION]
        seen.add(tuple(prices(lake)))
        seen.add(tuple(lake.scan("bronze", "t", SESSION).collect()["price"]))
        reads += 1
    assert finish(writer) == 0
    assert seen == {tuple(OLD), tuple(NEW)}, f"{reads} reads saw {seen}"
    assert reads >= 10


def test_a_duckdb_glob_during_many_replaces_sees_a_whole_version_or_fails_loudly(tmp_path):
    """DuckDB reads a file's footer when it binds and reopens the file by path to scan it, so a
    query racing the swap of a partition it reads fails loudly with "no such file" / "no files found"
    (the data file is named after its version) and needs a retry. It never returns an empty or
    mixed answer: never one version's footer with another's pages (which a fixed file name would: measured, it returned
    rows of both versions)."""
    lake = Lake(tmp_path)
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0, 1, 2], "price": OLD}))
    writer = start_writer(tmp_path, [NEW, OLD], times=60, grace=5.0)
    glob = (tmp_path / "bronze" / "t" / "date=*" / "part-*.parquet").as_posix()
    query = f"SELECT list(price ORDER BY ts_event), any_value(date) FROM read_parquet('{glob}', hive_partitioning = true)"
    con, seen, failures = duckdb.connect(), set(), 0  # failures: queries that raced a swap
    while writer.poll() is None:
        try:
            prices_, date = con.execute(query).fetchone()
        except duckdb.Error as error:
            # loud, never wrong rows: the data file (or, under heavy load, the superseded version the
            # glob had resolved, removed after its grace period) vanished between DuckDB's steps
            assert "No such file" in str(error) or "No files found" in str(error), error
            failures += 1
            continue
        assert str(date) == SESSION
        seen.add(tuple(prices_))
    assert finish(writer) == 0
    assert seen == {tuple(OLD), tuple(NEW)}, f"{failures} failed queries, saw {seen}"


def test_racing_writers_leave_exactly_one_complete_version(tmp_path):
    lake, table_dir = Lake(tmp_path), tmp_path / "bronze" / "t"
    contents = [[float(writer)] * (writer + 1) for writer in range(3)]
    writers = [start_writer(tmp_path, [content], times=5, ready=str(tmp_path / f"ready-{i}"), go=str(tmp_path / "go"))
               for i, content in enumerate(contents)]
    for i, writer in enumerate(writers):
        wait_for(tmp_path / f"ready-{i}", writer)
    (tmp_path / "go").touch()
    assert [finish(writer) for writer in writers] == [0, 0, 0]
    assert prices(lake) in contents
    assert leftovers(table_dir) == []
    lake.cleanup(grace_seconds=0)
    assert stored(table_dir) == SETTLED


@pytest.fixture
def small_disk(tmp_path):
    """A 5 MB tmpfs (needs root and mount rights, as in the CI container)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_fails_clearly_and_keeps_the_previous_version(small_disk):
    lake = Lake(small_disk)
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0, 1, 2], "price": OLD}))
    noise = np.random.default_rng(0).random(1_000_000)  # 8 MB that zstd cannot shrink, on a 5 MB disk
    with pytest.raises(OSError, match="No space left on device"):
        lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": np.arange(noise.size), "price": noise}))
    assert prices(lake) == OLD
    assert leftovers(small_disk / "bronze" / "t") == []  # the failed writer removed its staging
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [0], "price": [7.0]}))  # space is back
    assert prices(lake) == [7.0]


def test_kill_9_of_a_directory_partition_writer(tmp_path):
    """FAISS-style partitions (staging_dir + publish_dir) get the same guarantee."""
    lake = Lake(tmp_path)
    staging = lake.staging_dir("gold", "index", SESSION)
    (staging / "manifest.json").write_text('{"version": "old"}')
    lake.publish_dir(staging, "gold", "index", SESSION)
    script = (
        "import sys; from pathlib import Path; from spymaster_assets.lake import Lake\n"
        f"lake = Lake(Path({str(tmp_path)!r}))\n"
        f"staging = lake.staging_dir('gold', 'index', {SESSION!r})\n"
        "(staging / 'manifest.json').write_text('{\"version\": \"new\"}')\n"
        f"lake.publish_dir(staging, 'gold', 'index', {SESSION!r})\n"
    )
    for step, survivor in (("before_swap", "old"), ("after_swap", "new")):
        crashed = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, CRASH_AT_ENV: step})
        assert crashed.returncode == -9
        manifest = json.loads((lake.partition_dir("gold", "index", SESSION) / "manifest.json").read_text())
        assert manifest == {"version": survivor}
