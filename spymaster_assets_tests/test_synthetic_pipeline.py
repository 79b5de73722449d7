"""The whole graph on two tiny synthetic sessions: round trip, idempotency, causality, ground truth."""

import datetime as dt
import hashlib

import dagster as dg
import numpy as np
import polars as pl
import pytest

from spymaster_assets.definitions import build_definitions
from spymaster_assets.lake import Lake
from spymaster_assets.lib.calendar import et_to_ns, session_window
from spymaster_assets.lib.dbn_decode import decode_frames
from spymaster_assets.lib.state import StateConfig, build_bars, build_levels, build_state, find_session_anchors
from spymaster_assets.silver.inputs import load_session_inputs
from spymaster_assets.synthetic import read_ground_truth
from spymaster_assets_tests.conftest import SYNTHETIC_SESSIONS
from spymaster_assets_tests.helpers import resources_for, run_range

pytestmark = pytest.mark.slow
NS = 1_000_000_000
DAY = dt.date.fromisoformat(SYNTHETIC_SESSIONS[0])


@pytest.fixture(scope="module")
def lake(synthetic_home) -> Lake:
    return Lake(synthetic_home / "lake")


def test_two_sessions_materialize_with_every_blocking_check_passing(synthetic_home, lake):
    assert (synthetic_home / "check_failures.txt").read_text() == ""
    for day in SYNTHETIC_SESSIONS:
        front = lake.read("bronze", "front_month_contract", day).filter("is_front")
        assert front["symbol"].item() == "ESZ4" and not front["roll_contaminated"].item()
        for table in ("futures_trades", "futures_mbp10", "options_trades", "options_open_interest"):
            assert lake.read("bronze", table, day).height > 0, table
        assert lake.read("silver", "state", day)["tier"].unique().to_list() == ["T3"]


def test_round_trip_keeps_every_front_month_record(lake):
    """Bronze holds exactly the front-month records of the raw DBN within the session window."""
    files = lake.read("raw", "dbn_files", DAY)
    window = session_window(DAY)
    front_id = lake.read("bronze", "front_month_contract", DAY).filter("is_front")["instrument_id"].item()
    for schema, table in (("trades", "futures_trades"), ("mbp-10", "futures_mbp10")):
        paths = files.filter((pl.col("venue") == "futures") & (pl.col("schema") == schema))["path"].to_list()
        raw = pl.concat(list(decode_frames(paths, schema)))
        expected = raw.filter(
            (pl.col("instrument_id") == front_id)
            & pl.col("ts_event").is_between(window.keep_start_ns, window.keep_end_ns, closed="left")
        )
        stored = lake.read("bronze", table, DAY)
        assert stored.height == expected.height > 0
        assert stored.drop("symbol").equals(expected)


def _digests(lake: Lake, day: str) -> dict[str, str]:
    return {
        f"{layer}/{table}": hashlib.sha256(lake.partition_file(layer, table, day).read_bytes()).hexdigest()
        for layer, table in (("bronze", "futures_trades"), ("bronze", "futures_mbp10"), ("bronze", "options_mbp1"),
                             ("silver", "state"), ("silver", "events"), ("silver", "labels"))
    }


def test_rerunning_a_partition_is_byte_identical(synthetic_home, lake):
    before = _digests(lake, SYNTHETIC_SESSIONS[1])
    defs = build_definitions(resources_for(synthetic_home, source="synthetic", synthetic_scale="tiny"))
    with dg.instance_for_test() as instance:
        assert run_range(defs, SYNTHETIC_SESSIONS[1], SYNTHETIC_SESSIONS[1], instance).success
    assert _digests(lake, SYNTHETIC_SESSIONS[1]) == before


def _perturb_after(frame: pl.DataFrame | None, t_ns: int, rng: np.random.Generator) -> pl.DataFrame | None:
    """Replace every numeric value of records after t with garbage (prices, sizes, book)."""
    if frame is None or frame.height == 0:
        return frame
    time_col = "ts_event" if "ts_event" in frame.columns else "bar_start_ns"
    after = (frame[time_col] > t_ns).to_numpy()
    columns = []
    for name, dtype in frame.schema.items():
        if name in ("ts_event", "ts_recv", "instrument_id", "bar_start_ns", "bar_end_ns") or not dtype.is_numeric():
            columns.append(frame[name])
            continue
        values = frame[name].to_numpy().copy()
        noise = rng.integers(1, 50, size=int(after.sum()))
        values[after] = (values[after] + noise * (0.25 if dtype.is_float() else 1)).astype(values.dtype)
        columns.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(columns)


def _silver(inputs):
    bars = build_bars(inputs)
    levels = build_levels(inputs, bars)
    events = find_session_anchors(inputs, bars, levels, StateConfig())
    return build_state(inputs, bars, levels, events), events


@pytest.mark.parametrize("clock", [dt.time(9, 40), dt.time(10, 17, 10), dt.time(11, 45)])
def test_state_and_events_at_t_do_not_see_the_future(lake, clock):
    """Perturb every record after t (trades, book, bars, options) and rebuild: rows ≤ t are identical."""
    inputs = load_session_inputs(lake, DAY)
    t_ns = et_to_ns(DAY, clock)
    state, events = _silver(inputs)
    rng = np.random.default_rng(11)
    inputs.trades = _perturb_after(inputs.trades, t_ns, rng)
    inputs.book = _perturb_after(inputs.book, t_ns, rng)
    inputs.ohlcv_1m = _perturb_after(inputs.ohlcv_1m, t_ns, rng)
    inputs.options.trades = _perturb_after(inputs.options.trades, t_ns, rng)
    inputs.options.mbp1 = _perturb_after(inputs.options.mbp1, t_ns, rng)
    perturbed_state, perturbed_events = _silver(inputs)
    past = pl.col("t_ns") <= t_ns
    assert state.filter(past).height > 0
    assert state.filter(past).equals(perturbed_state.filter(past))
    assert events.filter(pl.col("ts_ns") <= t_ns).equals(perturbed_events.filter(pl.col("ts_ns") <= t_ns))
    assert not state.filter(~past).equals(perturbed_state.filter(~past))  # the perturbation did bite


def test_anchors_line_up_with_the_simulators_touches(synthetic_home, lake):
    """Pipeline anchors vs ground-truth touches (same level kind and direction, within 2 s)."""
    matched, found, truth = 0, 0, 0
    for day in SYNTHETIC_SESSIONS:
        events = lake.read("silver", "events", day)
        touches = read_ground_truth(synthetic_home / "raw" / "synthetic" / "seed7-tiny", [dt.date.fromisoformat(day)])
        found += events.height
        truth += touches.height
        for touch in touches.iter_rows(named=True):
            near = events.filter(
                (pl.col("level_kind") == touch["level_kind"])
                & (pl.col("direction") == touch["direction"])
                & ((pl.col("ts_ns") - touch["touch_ts_event"]).abs() <= 2 * NS)
            )
            matched += near.height > 0
    recall, precision = matched / truth, matched / found
    print(f"approach detection: recall {recall:.2f}, precision {precision:.2f} ({matched}/{truth} touches, {found} anchors)")
    assert recall > 0.8 and precision > 0.6
