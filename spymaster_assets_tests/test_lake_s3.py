"""The lake on a real S3-compatible server (moto's HTTP server in its own process): the same API,
byte-identical files, and the same guarantees with a pointer object in place of the symlink."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from spymaster_assets.lake import CRASH_AT_ENV, Lake, ObjectStoreLake, ObjectStoreSettings, QuarantinedPartition
from spymaster_assets.stack import s3_server

from .test_lake import SCHEMA, frames

REPO = Path(__file__).resolve().parents[1]
SESSION = "2024-12-09"


@pytest.fixture(scope="module")
def s3_env():
    with s3_server() as env:
        yield env


@pytest.fixture
def lake(s3_env, tmp_path, request) -> ObjectStoreLake:
    bucket = "lake-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    store = ObjectStoreLake.open(f"s3://{bucket}/research", tmp_path / "cache", ObjectStoreSettings.from_env(s3_env))
    store.create_bucket()
    return store


def objects(store: ObjectStoreLake, table: str = "t") -> list[str]:
    """Every object of a table, version ids replaced by their kind (what a crash could leave)."""
    from pyarrow import fs as pafs

    prefix = store._object_key("bronze", table)
    infos = store._fs().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    names = []
    for info in infos:
        if info.type == pafs.FileType.File:
            parts = info.path.removeprefix(prefix + "/").split("/")
            names.append("/".join(p[:2] + "*" if p.startswith(("v-", "q-")) else
                                  ("part-*.parquet" if p.startswith("part-") else p) for p in parts))
    return sorted(names)


def test_write_read_scan_and_metadata_match_a_local_lake_byte_for_byte(lake, tmp_path):
    local = Lake(tmp_path / "local")
    local_result = local.write_frames("bronze", "t", SESSION, frames(), SCHEMA, {"schema_version": "1"})
    result = lake.write_frames("bronze", "t", SESSION, frames(), SCHEMA, {"schema_version": "1"})
    assert result.rows == 3 and result.path.startswith(f"{lake.uri}/bronze/t/.versions/{SESSION}/v-")
    remote_bytes = lake._fs().open_input_stream(result.path.removeprefix("s3://")).read()
    assert hashlib.sha256(remote_bytes).hexdigest() == hashlib.sha256(local_result.path.read_bytes()).hexdigest()
    assert lake.read("bronze", "t", SESSION).equals(local.read("bronze", "t", SESSION))
    assert lake.read("bronze", "t", SESSION, columns=["price"])["price"].to_list() == [1.0, 2.0, 3.0]
    assert lake.scan("bronze", "t", SESSION).filter(pl.col("ts_event") > 1).collect()["price"].to_list() == [2.0, 3.0]
    assert lake.file_metadata("bronze", "t", SESSION) == local.file_metadata("bronze", "t", SESSION)
    assert lake.partitions("bronze", "t") == [SESSION] and lake.has_partition("bronze", "t", SESSION)
    assert not lake.has_partition("bronze", "t", "2024-12-10") and lake.partitions("bronze", "missing") == []
    assert objects(lake) == [".versions/2024-12-09/v-*/part-*.parquet", "date=2024-12-09"]


def test_a_missing_partition_fails_clearly(lake):
    with pytest.raises(FileNotFoundError, match="has no partition 2024-12-09"):
        lake.read("bronze", "t", SESSION)


def test_the_pointer_object_names_the_current_version_and_a_replace_swaps_it(lake):
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [1], "price": [1.0]}))
    first = json.loads(lake._fs().open_input_stream(lake._object_key("bronze", "t", f"date={SESSION}")).read())
    old_scan = lake.scan("bronze", "t", SESSION)  # resolved now: keeps reading the first version
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [1, 2], "price": [5.0, 6.0]}))
    second = json.loads(lake._fs().open_input_stream(lake._object_key("bronze", "t", f"date={SESSION}")).read())
    assert first["version"] != second["version"] and second["files"] == [f"part-{second['version'][2:]}.parquet"]
    assert lake.read("bronze", "t", SESSION)["price"].to_list() == [5.0, 6.0]
    assert old_scan.collect()["price"].to_list() == [1.0]  # the superseded version is kept for its grace period
    assert lake.cleanup("bronze", "t") == [] and len(objects(lake)) == 3
    removed = lake.cleanup("bronze", "t", grace_seconds=-1, stale_seconds=-1)
    assert [path.name for path in removed] == [first["version"]]
    assert objects(lake) == [".versions/2024-12-09/v-*/part-*.parquet", "date=2024-12-09"]
    assert lake.read("bronze", "t", SESSION)["price"].to_list() == [5.0, 6.0]


def test_a_directory_partition_is_published_whole_and_downloaded_for_file_readers(lake):
    staging = lake.staging_dir("gold", "index", SESSION)
    (staging / "manifest.json").write_text('{"parts": 1}')
    (staging / "sub").mkdir()
    (staging / "sub" / "a.bin").write_bytes(b"\x00\x01")
    pq.write_table(pl.DataFrame({"x": [1]}).to_arrow(), Lake.staged_data_file(staging))
    lake.publish_dir(staging, "gold", "index", SESSION)
    assert not staging.exists()
    folder = lake.partition_dir("gold", "index", SESSION)
    assert folder.is_dir() and folder.is_relative_to(lake.root)
    assert json.loads((folder / "manifest.json").read_text()) == {"parts": 1}
    assert (folder / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    assert lake.read("gold", "index", SESSION)["x"].to_list() == [1]
    assert lake.partition_file("gold", "index", SESSION).parent == folder
    assert lake.partition_dir("gold", "index", "2024-12-10").name == "date=2024-12-10"  # absent: nominal, empty


def test_a_quarantined_partition_reads_as_unavailable_and_a_rebuild_clears_it(lake):
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [1], "price": [1.0]}))
    lake.quarantine("bronze", "t", SESSION, "crossed book")
    with pytest.raises(QuarantinedPartition, match="crossed book") as raised:
        lake.read("bronze", "t", SESSION)
    assert raised.value.reason == "crossed book"
    assert lake.quarantine_reason("bronze", "t", SESSION) == "crossed book"
    assert lake.quarantined("bronze", "t") == {SESSION: "crossed book"}
    assert lake.partitions("bronze", "t") == [] and not lake.has_partition("bronze", "t", SESSION)
    lake.quarantine("bronze", "t", "2024-12-10", "never existed")  # works on an absent partition too
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [2], "price": [2.0]}))
    assert lake.quarantine_reason("bronze", "t", SESSION) is None
    assert lake.partitions("bronze", "t") == [SESSION] and lake.quarantined("bronze", "t") == {"2024-12-10": "never existed"}


WRITER = r"""
import json, sys
from pathlib import Path
import polars as pl
from spymaster_assets.lake import Lake

job = json.loads(sys.argv[1])
lake = Lake.at(job["uri"], Path(job["cache"]))
lake.write_frame("bronze", "t", job["session"], pl.DataFrame({"ts_event": [0], "price": [job["price"]]}))
"""


def write_in_a_process(lake: ObjectStoreLake, env: dict, price: float, crash_at: str | None = None) -> int:
    job = {"uri": lake.uri, "cache": str(lake.root.parent.parent), "session": SESSION, "price": price}
    extra = {CRASH_AT_ENV: crash_at} if crash_at else {}
    done = subprocess.run([sys.executable, "-c", WRITER, json.dumps(job)], cwd=REPO, env={**os.environ, **env, **extra},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, -9), done.stderr
    return done.returncode


@pytest.mark.parametrize(("step", "survivor"), [("before_swap", 1.0), ("after_swap", 2.0)])
def test_kill_9_before_or_after_the_pointer_put_leaves_old_or_new_never_none(lake, s3_env, step, survivor):
    assert write_in_a_process(lake, s3_env, 1.0) == 0
    assert write_in_a_process(lake, s3_env, 2.0, crash_at=step) == -9
    assert lake.read("bronze", "t", SESSION)["price"].to_list() == [survivor]
    assert len(objects(lake)) == 3  # pointer, the survivor, and the other (orphaned or superseded) version
    lake.cleanup("bronze", "t", grace_seconds=-1, stale_seconds=-1)
    assert objects(lake) == [".versions/2024-12-09/v-*/part-*.parquet", "date=2024-12-09"]
    assert lake.read("bronze", "t", SESSION)["price"].to_list() == [survivor]


def test_a_crash_before_the_first_pointer_leaves_no_partition(lake, s3_env):
    assert write_in_a_process(lake, s3_env, 1.0, crash_at="before_swap") == -9
    assert lake.partitions("bronze", "t") == [] and not lake.has_partition("bronze", "t", SESSION)
    # The dead writer's local staging goes; its fresh upload may be a live writer's: kept until stale.
    assert [path.name.split("-")[0] for path in lake.cleanup("bronze", "t")] == [".tmp"]
    assert objects(lake) == [".versions/2024-12-09/v-*/part-*.parquet"]
    lake.cleanup("bronze", "t", stale_seconds=-1)
    assert objects(lake) == []


def test_an_upload_without_its_pointer_yet_survives_cleanup_until_stale(lake):
    """An upload whose pointer is not written yet looks like an orphan; only its age tells them apart."""
    lake.write_frame("bronze", "t", SESSION, pl.DataFrame({"ts_event": [1], "price": [1.0]}))
    in_flight = lake._object_key("bronze", "t", ".versions", SESSION, "v-99999999999999999999_inflight", "part-x.parquet")
    lake._put(in_flight, b"not yet published")
    assert lake.cleanup("bronze", "t", grace_seconds=-1) == []
    assert lake.read("bronze", "t", SESSION)["price"].to_list() == [1.0]
    assert [p.name for p in lake.cleanup("bronze", "t", grace_seconds=-1, stale_seconds=-1)] == ["v-99999999999999999999_inflight"]


def test_lake_at_keeps_local_paths_local_and_rejects_unknown_schemes(tmp_path):
    assert type(Lake.at(tmp_path)) is Lake and type(Lake.at(str(tmp_path))) is Lake
    with pytest.raises(ValueError, match="only s3://"):
        Lake.at("gs://bucket/lake")
