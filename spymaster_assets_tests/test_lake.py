import hashlib

import polars as pl
import pytest

from spymaster_assets.lake import Lake

SCHEMA = {"ts_event": pl.Int64, "price": pl.Float64}


def frames():
    yield pl.DataFrame({"ts_event": [1, 2], "price": [1.0, 2.0]})
    yield pl.DataFrame({"ts_event": [3], "price": [3.0]})


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_is_streamed_typed_and_stamped(tmp_path):
    lake = Lake(tmp_path)
    result = lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA, {"schema_version": "1"})
    assert result.rows == 3
    assert result.path == tmp_path / "bronze" / "t" / "date=2024-12-09" / "part-0.parquet"
    assert lake.read("bronze", "t", "2024-12-09")["price"].to_list() == [1.0, 2.0, 3.0]
    assert lake.file_metadata("bronze", "t", "2024-12-09")["schema_version"] == "1"


def test_rewrite_is_byte_identical(tmp_path):
    lake = Lake(tmp_path)
    first = digest(lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA).path)
    second = digest(lake.write_frames("bronze", "t", "2024-12-09", frames(), SCHEMA).path)
    assert first == second


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
    assert [p.name for p in (tmp_path / "bronze" / "t").iterdir()] == ["date=2024-12-09"]


def test_failure_on_a_new_partition_leaves_nothing(tmp_path):
    lake = Lake(tmp_path)

    def exploding():
        raise RuntimeError("no data")
        yield

    with pytest.raises(RuntimeError):
        lake.write_frames("bronze", "t", "2024-12-10", exploding(), SCHEMA)
    assert not lake.has_partition("bronze", "t", "2024-12-10")
    assert list((tmp_path / "bronze" / "t").iterdir()) == []


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
