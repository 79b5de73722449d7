import datetime as dt
import hashlib
import os
import re

import duckdb
import polars as pl
import pytest

import pyarrow.parquet as pq

from spymaster_assets.lake import Lake, ParquetOptions, QuarantinedPartition

SCHEMA = {"ts_event": pl.Int64, "price": pl.Float64}


def frames():
    yield pl.DataFrame({"ts_event": [1, 2], "price": [1.0, 2.0]})
    yield pl.DataFrame({"ts_event": [3], "price": [3.0]})


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored(table_dir) -> list[str]:
    """Everything under a table directory (relative paths) except the partition locks, version ids
    replaced by their kind: what a crash or a race could leave behind."""
    names = []
    for path in sorted(table_dir.rglob("*")):
        relative = path.relative_to(table_dir).as_posix()
        parts = [part[:2] + "*" if part.startswith(("v-", "q-")) else re.sub(r"^part-.+\.parquet$", "part-*.parquet", part)
                 for part in relative.split("/")]
        if parts[-1] != ".lock":
            names.append("/".join(parts) + ("@" if path.is_symlink() else ""))
    return names


def test_write_is_streamed_typed_and_stamped(tmp_path):
    lake = Lake(tmp_path)
    result = lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA, {"schema_version": "1"})
    assert result.rows == 3
    assert result.path.parent == tmp_path / "bronze" / "t" / "date=2024-12-09"
    assert result.path.name == lake.partition_file("bronze", "t", "2024-12-09").name and result.path.exists()
    assert lake.read("bronze", "t", "2024-12-09")["price"].to_list() == [1.0, 2.0, 3.0]
    assert lake.file_metadata("bronze", "t", "2024-12-09")["schema_version"] == "1"


def test_rewrite_is_byte_identical(tmp_path):
    lake = Lake(tmp_path)
    first = digest(lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA).path)
    second = digest(lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA).path)
    assert first == second


def test_record_table_options_write_required_columns_and_time_statistics_only(tmp_path):
    lake = Lake(tmp_path)
    options = ParquetOptions(zstd_level=1, statistics=("ts_event", "ts_recv"), not_null=True)
    written = lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA, options=options)
    meta = pq.ParquetFile(written.path).metadata
    columns = {meta.schema.column(i).name: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert [pq.read_schema(written.path).field(name).nullable for name in SCHEMA] == [False, False]
    assert columns["ts_event"].is_stats_set and (columns["ts_event"].statistics.min, columns["ts_event"].statistics.max) == (1, 2)
    assert not columns["price"].is_stats_set  # ts_recv is not in this schema: skipped, not an error
    assert lake.read("bronze", "t", "2024-12-09").equals(pl.concat(frames()))
    first = digest(written.path)
    assert digest(lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA, options=options).path) == first


def test_a_null_in_a_not_null_table_fails_the_write_and_keeps_the_old_version(tmp_path):
    lake = Lake(tmp_path)
    options = ParquetOptions(not_null=True)
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA, options=options)
    with_null = [pl.DataFrame({"ts_event": [4], "price": [None]}, schema=SCHEMA)]
    with pytest.raises(ValueError, match="null values to non-nullable"):
        lake.write_frames("bronze", "t", "2024-12-09", with_null, SCHEMA, options=options)
    assert lake.read("bronze", "t", "2024-12-09")["price"].to_list() == [1.0, 2.0, 3.0]


def test_empty_input_gives_an_empty_typed_partition(tmp_path):
    lake = Lake(tmp_path)
    lake.write_frames("bronze", "t", "2024-12-09", iter(()), SCHEMA)
    empty = lake.read("bronze", "t", "2024-12-09")
    assert empty.height == 0 and dict(empty.schema) == SCHEMA


def test_failure_mid_stream_leaves_the_previous_partition_untouched(tmp_path):
    lake = Lake(tmp_path)
    good = lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA).path
    before = digest(good)

    def exploding():
        yield pl.DataFrame({"ts_event": [9], "price": [9.0]})
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        lake.write_frames("bronze", "t", "2024-12-09", exploding(), SCHEMA)
    assert digest(good) == before
    assert stored(tmp_path / "bronze" / "t") == [
        ".versions", ".versions/2024-12-09", ".versions/2024-12-09/v-*", ".versions/2024-12-09/v-*/part-*.parquet",
        "date=2024-12-09@"]


def test_failure_on_a_new_partition_leaves_nothing(tmp_path):
    lake = Lake(tmp_path)

    def exploding():
        raise RuntimeError("no data")
        yield

    with pytest.raises(RuntimeError):
        lake.write_frames("bronze", "t", "2024-12-10", exploding(), SCHEMA)
    assert not lake.has_partition("bronze", "t", "2024-12-10")
    assert lake.partitions("bronze", "t") == []
    assert stored(tmp_path / "bronze" / "t") == [".versions", ".versions/2024-12-10"]


def test_prefetch_reraises_producer_errors_and_stops_when_the_consumer_does():
    import threading
    import time

    from spymaster_assets.lake import prefetched

    def failing():
        yield 1
        raise ValueError("bad chunk")

    got = []
    with pytest.raises(ValueError, match="bad chunk"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]

    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    for item in prefetched(endless(), depth=2):
        if item == 3:
            break
    time.sleep(0.3)
    settled = len(produced)
    time.sleep(0.3)
    assert len(produced) == settled <= 3 + 2 + 2  # the producer stopped, at most a buffer ahead
    assert not any(t.name == "lake-prefetch" and t.is_alive() for t in threading.enumerate())


def test_a_partition_is_a_pointer_to_its_current_version(tmp_path):
    lake = Lake(tmp_path)
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA)
    first = lake.partition_dir("bronze", "t", "2024-12-09")
    lake.write_frame("bronze", "t", "2024-12-09", pl.DataFrame({"ts_event": [7], "price": [7.0]}))
    second = lake.partition_dir("bronze", "t", "2024-12-09")
    assert first != second and first.parent == second.parent == tmp_path / "bronze" / "t" / ".versions" / "2024-12-09"
    # The superseded version stays readable (a reader may hold it) until its grace period ends.
    old_file = first / f"part-{first.name.removeprefix('v-')}.parquet"
    assert pl.read_parquet(old_file)["price"].to_list() == [1.0, 2.0, 3.0]
    assert lake.read("bronze", "t", "2024-12-09")["price"].to_list() == [7.0]
    assert lake.partition_file("bronze", "t", "2024-12-09") == second / f"part-{second.name.removeprefix('v-')}.parquet"
    assert lake.cleanup() == []  # within the grace period nothing goes
    assert lake.cleanup(grace_seconds=0) == [first]
    assert lake.read("bronze", "t", "2024-12-09")["price"].to_list() == [7.0]


def test_duckdb_and_polars_globs_read_exactly_the_current_versions(tmp_path):
    lake = Lake(tmp_path)
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA)
    lake.write_frame("bronze", "t", "2024-12-09", pl.DataFrame({"ts_event": [7], "price": [7.0]}))
    lake.write_frame("bronze", "t", "2024-12-10", pl.DataFrame({"ts_event": [8], "price": [8.0]}))
    lake.quarantine("bronze", "t", "2024-12-11", "feed gap")
    glob = (tmp_path / "bronze" / "t" / "date=*" / "part-*.parquet").as_posix()
    rows = duckdb.sql(f"SELECT date, price FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY date").fetchall()
    assert rows == [(dt.date(2024, 12, 9), 7.0), (dt.date(2024, 12, 10), 8.0)]
    assert pl.read_parquet(glob, hive_partitioning=True)["price"].sort().to_list() == [7.0, 8.0]


def test_a_directory_partition_is_published_whole(tmp_path):
    lake = Lake(tmp_path)
    staging = lake.staging_dir("gold", "index", "2024-12-09")
    (staging / "tier=A").mkdir()
    (staging / "tier=A" / "manifest.json").write_text("{}")
    published = lake.publish_dir(staging, "gold", "index", "2024-12-09")
    assert not staging.exists() and published == lake.partition_dir("gold", "index", "2024-12-09")
    assert (published / "tier=A" / "manifest.json").read_text() == "{}"
    assert lake.has_partition("gold", "index", "2024-12-09") and lake.partitions("gold", "index") == ["2024-12-09"]
    with pytest.raises(ValueError, match="not a staging directory"):
        lake.publish_dir(tmp_path, "gold", "index", "2024-12-09")


def test_a_partition_of_the_pre_versioning_layout_is_read_and_replaced_without_a_gap(tmp_path):
    lake = Lake(tmp_path)
    legacy = tmp_path / "bronze" / "t" / "date=2024-12-09"
    legacy.mkdir(parents=True)
    pl.DataFrame({"ts_event": [1], "price": [1.0]}).write_parquet(legacy / "part-0.parquet")
    assert lake.partitions("bronze", "t") == ["2024-12-09"] and lake.read("bronze", "t", "2024-12-09").height == 1
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA)
    assert legacy.is_symlink() and lake.read("bronze", "t", "2024-12-09").height == 3
    assert lake.cleanup(grace_seconds=0)[0].name.endswith("_legacy")
    assert stored(tmp_path / "bronze" / "t") == [
        ".versions", ".versions/2024-12-09", ".versions/2024-12-09/v-*", ".versions/2024-12-09/v-*/part-*.parquet",
        "date=2024-12-09@"]


def test_cleanup_restores_a_replace_of_the_old_layout_that_died_between_its_renames(tmp_path):
    lake = Lake(tmp_path)
    table = tmp_path / "bronze" / "t"
    trash = table / ".trash-date=2024-12-09-0123456789abcdef0123456789abcdef"
    trash.mkdir(parents=True)
    pl.DataFrame({"ts_event": [1], "price": [1.0]}).write_parquet(trash / "part-0.parquet")
    old_staging = table / ".tmp-date=2024-12-10-0123456789abcdef0123456789abcdef"
    old_staging.mkdir()
    assert lake.cleanup() == []
    assert lake.read("bronze", "t", "2024-12-09").height == 1 and old_staging.exists()
    assert lake.cleanup(stale_seconds=0) == [old_staging]


# --- quarantine ----------------------------------------------------------------------------------

def test_a_quarantined_partition_reads_as_unavailable_with_its_reason(tmp_path):
    lake = Lake(tmp_path)
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA)
    lake.write_frames("bronze", "t", "2024-12-10", frames(), SCHEMA)
    lake.quarantine("bronze", "t", "2024-12-09", "MBP-10 file truncated")
    assert lake.quarantine_reason("bronze", "t", "2024-12-09") == "MBP-10 file truncated"
    assert lake.quarantine_reason("bronze", "t", "2024-12-10") is None
    assert not lake.has_partition("bronze", "t", "2024-12-09")
    assert lake.partitions("bronze", "t") == ["2024-12-10"]
    assert lake.quarantined("bronze", "t") == {"2024-12-09": "MBP-10 file truncated"}
    for read in (lake.read, lake.scan, lake.file_metadata):
        with pytest.raises(QuarantinedPartition, match=r"bronze/t partition 2024-12-09 is quarantined: MBP-10 file truncated"):
            read("bronze", "t", "2024-12-09")
    with pytest.raises(FileNotFoundError):  # every "missing partition" path catches it
        lake.read("bronze", "t", "2024-12-09")
    assert not lake.partition_file("bronze", "t", "2024-12-09").exists()


def test_a_partition_that_never_existed_can_be_quarantined(tmp_path):
    lake = Lake(tmp_path)
    lake.quarantine("silver", "events", dt.date(2024, 12, 11), "no trades file")
    assert lake.quarantined("silver", "events") == {"2024-12-11": "no trades file"}
    assert lake.partitions("silver", "events") == [] and not lake.has_partition("silver", "events", "2024-12-11")
    assert lake.quarantined("silver", "never_written") == {}
    with pytest.raises(ValueError, match="reason"):
        lake.quarantine("silver", "events", "2024-12-11", " ")


def test_publishing_a_rebuild_clears_the_quarantine(tmp_path):
    lake = Lake(tmp_path)
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA)
    lake.quarantine("bronze", "t", "2024-12-09", "bad")
    lake.quarantine("bronze", "t", "2024-12-09", "worse")  # a second mark replaces the first
    assert lake.quarantine_reason("bronze", "t", "2024-12-09") == "worse"
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA)
    assert lake.quarantine_reason("bronze", "t", "2024-12-09") is None and lake.quarantined("bronze", "t") == {}
    assert lake.read("bronze", "t", "2024-12-09").height == 3
    lake.quarantine("gold", "index", "2024-12-09", "built from a bad day")
    staging = lake.staging_dir("gold", "index", "2024-12-09")
    (staging / "manifest.json").write_text("{}")
    lake.publish_dir(staging, "gold", "index", "2024-12-09")
    assert lake.quarantined("gold", "index") == {} and lake.partitions("gold", "index") == ["2024-12-09"]


def test_the_quarantine_mark_survives_a_new_process(tmp_path):
    Lake(tmp_path).quarantine("bronze", "t", "2024-12-09", "checksum mismatch")
    assert Lake(tmp_path).quarantine_reason("bronze", "t", "2024-12-09") == "checksum mismatch"
    # The mark is a published version: no staging or link is left behind.
    assert [name for name in stored(tmp_path / "bronze" / "t") if ".tmp-" in name or ".link-" in name] == []
    assert os.readlink(tmp_path / "bronze" / "t" / "date=2024-12-09").startswith(".versions/2024-12-09/q-")


def test_a_lake_copied_without_its_symlinks_still_reads(tmp_path):
    """`cp -r` / `shutil.copytree` turn each pointer into a plain directory holding the current version."""
    import shutil

    lake = Lake(tmp_path / "a")
    lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA)
    lake.write_frame("bronze", "t", "2024-12-09", pl.DataFrame({"ts_event": [7], "price": [7.0]}))
    lake.quarantine("bronze", "t", "2024-12-10", "bad feed")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = Lake(tmp_path / "b")
    assert not (tmp_path / "b" / "bronze" / "t" / "date=2024-12-09").is_symlink()
    assert copy.read("bronze", "t", "2024-12-09")["price"].to_list() == [7.0]
    assert copy.partitions("bronze", "t") == ["2024-12-09"]
    assert copy.quarantined("bronze", "t") == {"2024-12-10": "bad feed"}
    with pytest.raises(QuarantinedPartition):
        copy.read("bronze", "t", "2024-12-10")
    copy.write_frames("bronze", "t", "2024-12-10", frames(), SCHEMA)  # a rebuild of a copied tombstone
    assert copy.partitions("bronze", "t") == ["2024-12-09", "2024-12-10"]
