import datetime as dt

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.events import TouchConfig, event_id, find_anchors
from spymaster_assets.lib.labels import LabelConfig, label_events, label_from_path

S = 1_000_000_000
SESSION = dt.date(2024, 12, 9)
LEVEL = 100.0


def levels(price=LEVEL, kind="OR_HIGH", known_at=0):
    return pl.DataFrame({"level_kind": [kind], "price": [price], "known_at_ns": [known_at]})


def anchors(prices, *, step_s=1, atr=4.0, lv=None, config=TouchConfig(), window=None):
    ts = np.arange(len(prices), dtype=np.int64) * step_s * S + S
    px = np.asarray(prices, dtype=float)
    return find_anchors(SESSION, ts, px, lv if lv is not None else levels(), np.array([0]), np.array([atr]),
                        window or (0, int(ts[-1])), config)


def test_touch_from_below_is_up_and_from_above_is_down():
    # atr 4 → band = max(0.25, 1.0) = 1.0
    up = anchors([97.0, 98.0, 98.5, 99.0, 99.5])
    assert up["direction"].to_list() == ["UP"] and up["dir_sign"].to_list() == [1]
    assert up["ts_ns"][0] == 4 * S and up["spot"][0] == 99.0
    down = anchors([103.0, 102.0, 101.0, 100.5])
    assert down["direction"].to_list() == ["DOWN"] and down["dir_sign"].to_list() == [-1]


def test_band_floor_is_one_tick_in_quiet_regimes():
    quiet = anchors([99.0, 99.5, 99.75], atr=0.4)  # 0.25 * 0.4 = 0.1 < one tick
    assert quiet["band_pt"][0] == 0.25 and quiet["ts_ns"][0] == 3 * S


def test_starting_inside_the_band_is_not_a_touch():
    assert anchors([100.0, 100.5, 102.0]).height == 0


def test_debounce_and_attempts_come_from_past_touches_only():
    # touch at 2 s, leave, re-enter at 4 s (debounced), leave, re-enter after 5 min
    path = [97.0, 99.5, 97.0, 99.5, 97.0] + [97.0] * 300 + [99.5]
    out = anchors(path)
    assert out["ts_ns"].to_list() == [2 * S, 306 * S]
    assert out["attempt_index"].to_list() == [1, 2]
    assert out["time_since_last_touch_s"].to_list() == [None, 304.0]


def test_event_id_is_deterministic():
    assert event_id(SESSION, "PM_HIGH", 6050.25, 123, "UP") == "2024-12-09_PM_HIGH_605025_123_UP"
    out = anchors([97.0, 99.5])
    assert out["event_id"][0] == f"2024-12-09_OR_HIGH_10000_{2 * S}_UP"


def test_level_unknown_before_known_at():
    out = anchors([97.0, 99.5, 97.0] + [97.0] * 400 + [99.5], lv=levels(known_at=10 * S))
    assert out["ts_ns"].to_list() == [404 * S]


def test_bar_range_touch_at_t0():
    ts = np.array([60, 120, 180], dtype=np.int64) * S
    close = np.array([96.0, 97.0, 96.5])
    high = np.array([96.5, 99.2, 97.0])  # second bar's high reaches the band [99, 101]
    low = close - 0.5
    out = find_anchors(SESSION, ts, close, levels(), np.array([0]), np.array([4.0]), (0, 200 * S),
                       spot_low=low, spot_high=high)
    assert out["ts_ns"].to_list() == [120 * S] and out["direction"][0] == "UP"


def trade_path(prices, start_s=1):
    ts = (np.arange(len(prices), dtype=np.int64) + start_s) * S
    px = np.asarray(prices, dtype=float)
    return ts, px, px


@pytest.mark.parametrize(
    "prices,dir_sign,label,t",
    [
        ([100.5, 102.0, 104.0, 95.0], 1, "BREAK", 3.0),  # UP reaches L+4 at 3 s, before L-4
        ([99.0, 97.0, 96.0, 105.0], 1, "REJECT", 3.0),
        ([101.0, 99.0, 102.0], 1, "CHOP", None),
        ([99.0, 97.0, 96.0], -1, "BREAK", 3.0),  # DOWN mirrored: L-4 is a break
        ([101.0, 104.0], -1, "REJECT", 2.0),
    ],
)
def test_first_crossing_cases(prices, dir_sign, label, t):
    ts, low, high = trade_path(prices)
    barrier = label_from_path(0, LEVEL, dir_sign, 4.0, 240 * S, ts, low, high, None, LabelConfig())
    assert barrier.label == label
    assert barrier.time_to_barrier_s == t
    assert not barrier.ambiguous


def test_horizon_edge_is_inclusive_and_later_prints_do_not_count():
    ts = np.array([240, 241], dtype=np.int64) * S
    px = np.array([104.0, 90.0])
    assert label_from_path(0, LEVEL, 1, 4.0, 240 * S, ts, px, px, None, LabelConfig()).label == "BREAK"
    assert label_from_path(0, LEVEL, 1, 4.0, 239 * S, ts, px, px, None, LabelConfig()).label == "CHOP"


def test_same_bar_both_barriers_is_ambiguous_chop():
    start = np.array([0, 60], dtype=np.int64) * S
    end = start + 60 * S
    low, high = np.array([99.0, 95.0]), np.array([101.0, 105.0])
    barrier = label_from_path(0, LEVEL, 1, 4.0, 240 * S, start, low, high, end, LabelConfig())
    assert barrier.label == "CHOP" and barrier.ambiguous


def test_excursions_in_atr_units_and_fixed_points_mode():
    ts, low, high = trade_path([101.0, 102.0, 99.0, 96.0])
    barrier = label_from_path(0, LEVEL, 1, 4.0, 240 * S, ts, low, high, None, LabelConfig())
    assert barrier.label == "REJECT"
    assert barrier.mfe_atr == pytest.approx(0.5) and barrier.mae_atr == pytest.approx(1.0)
    fixed = label_from_path(0, LEVEL, 1, 4.0, 240 * S, ts, low, high, None, LabelConfig(threshold_points=12.5))
    assert fixed.label == "CHOP"


def test_label_events_per_horizon_and_end_time():
    events = anchors([97.0, 99.5])
    ts = np.array([3, 150, 400], dtype=np.int64) * S
    px = np.array([101.0, 104.5, 80.0])
    out = label_events(events, ts, px, px)
    assert out["label_2m"][0] == "CHOP" and out["label_4m"][0] == "BREAK" and out["label"][0] == "BREAK"
    assert out["label_8m"][0] == "BREAK"
    # the latest time any horizon's label looked at: the 2-min CHOP ends at 122 s, both breaks at 150 s
    assert out["label_end_ns"][0] == 150 * S
