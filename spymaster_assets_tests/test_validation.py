"""Session-grouped purged/embargoed splits: nothing the test day's labels know leaks into training."""

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from spymaster_assets.lib.validation import leave_one_day_out_splits, session_span_ns, walk_forward_splits

ET = ZoneInfo("America/New_York")
S = 1_000_000_000
MIN = 60 * S


def et_ns(day: dt.date, hour: int, minute: int = 0) -> int:
    local = dt.datetime(day.year, day.month, day.day, hour, tzinfo=ET) + dt.timedelta(minutes=minute)
    return int(local.timestamp()) * S


def grid(n_sessions=8, per_session=3, start=dt.date(2024, 3, 4), horizon_min=4):
    """Consecutive weekdays, episodes at 10:00, 10:30, … ET, label windows of `horizon_min` minutes."""
    days, day = [], start
    while len(days) < n_sessions:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    sessions = np.repeat(np.array(days, dtype="datetime64[D]"), per_session)
    ts = np.array([et_ns(d, 10, 30 * k) for d in days for k in range(per_session)], dtype=np.int64)
    return days, sessions, ts, ts + horizon_min * MIN


def overlaps_day(ts, label_end, day: dt.date) -> np.ndarray:
    """Independent check: the label window touches the test session's ET calendar day."""
    start = et_ns(day, 0)
    end = et_ns(day + dt.timedelta(days=1), 0)
    return (ts < end) & (label_end >= start)


def test_session_span_is_the_et_calendar_day_dst_aware():
    # Before DST (EST, UTC−5): 00:00 ET = 05:00 UTC. After (EDT, UTC−4): 04:00 UTC.
    start, end = session_span_ns(dt.date(2024, 3, 8))
    assert start == int(dt.datetime(2024, 3, 8, 5, tzinfo=dt.timezone.utc).timestamp()) * S
    assert end - start == 24 * 3600 * S
    start, _ = session_span_ns(dt.date(2024, 3, 11))
    assert start == int(dt.datetime(2024, 3, 11, 4, tzinfo=dt.timezone.utc).timestamp()) * S
    # The DST-change day itself is 23 hours long.
    start, end = session_span_ns(dt.date(2024, 3, 10))
    assert end - start == 23 * 3600 * S


def test_walk_forward_trains_strictly_before_with_an_embargo_gap_and_no_overlap():
    days, sessions, ts, label_end = grid(n_sessions=8)
    # One long label window from the 3rd session reaching into the 5th (a pathological horizon).
    label_end[2 * 3] = et_ns(days[4], 10, 5)
    splits = list(walk_forward_splits(sessions, label_end, min_train_sessions=2, embargo_sessions=1, ts_ns=ts))
    # First test session leaves 2 training sessions after a 1-session embargo: index 3 → 5 folds for 8 sessions.
    assert [s.test_session for s in splits] == days[3:]
    for split in splits:
        test_index = days.index(split.test_session)
        train_days = sessions[split.train_idx].astype(dt.date)
        assert all(d < split.test_session for d in train_days)
        # Embargo gap: the session right before the test session never trains.
        assert split.embargoed_sessions == (days[test_index - 1],)
        assert max(days.index(d) for d in train_days) <= test_index - 2
        assert not overlaps_day(ts[split.train_idx], label_end[split.train_idx], split.test_session).any()
        assert set(split.test_idx) == set(np.flatnonzero(sessions == np.datetime64(split.test_session)))
        assert split.train_idx.size >= 2 * 3 - split.n_purged
    purged = {s.test_session: s.n_purged for s in splits}
    assert purged[days[4]] == 1 and sum(purged.values()) == 1
    # The same episode trains again once its label window is in the past of the test day.
    assert 2 * 3 in splits[-1].train_idx


def test_walk_forward_expands_and_embargo_zero_is_allowed():
    days, sessions, ts, label_end = grid(n_sessions=5)
    splits = list(walk_forward_splits(sessions, label_end, min_train_sessions=1, embargo_sessions=0, ts_ns=ts))
    assert [s.train_idx.size for s in splits] == [3, 6, 9, 12]
    assert all(s.embargoed_sessions == () for s in splits)


def test_leave_one_day_out_purges_a_label_window_that_crosses_midnight_into_the_test_day():
    days, sessions, ts, label_end = grid(n_sessions=6, per_session=2)
    # An evening episode on days[1] at 23:58 ET whose 4-minute label ends 00:02 ET on days[2]:
    # it must not train the model tested on days[2], even with no embargo.
    crossing = 1 * 2 + 1
    ts[crossing] = et_ns(days[1], 23, 58)
    label_end[crossing] = ts[crossing] + 4 * MIN
    assert days[2] == days[1] + dt.timedelta(days=1)
    splits = {s.test_session: s for s in
              leave_one_day_out_splits(sessions, label_end, embargo_sessions=0, ts_ns=ts)}
    assert len(splits) == 6
    assert crossing not in splits[days[2]].train_idx and splits[days[2]].n_purged == 1
    assert crossing in splits[days[3]].train_idx and splits[days[3]].n_purged == 0
    for split in splits.values():
        assert split.test_session not in set(sessions[split.train_idx].astype(dt.date))
        assert not overlaps_day(ts[split.train_idx], label_end[split.train_idx], split.test_session).any()


def test_leave_one_day_out_embargoes_both_sides():
    days, sessions, ts, label_end = grid(n_sessions=7, per_session=2)
    splits = {s.test_session: s for s in
              leave_one_day_out_splits(sessions, label_end, embargo_sessions=1, ts_ns=ts)}
    middle = splits[days[3]]
    assert middle.embargoed_sessions == (days[2], days[4])
    assert set(sessions[middle.train_idx].astype(dt.date)) == {days[0], days[1], days[5], days[6]}
    edge = splits[days[0]]
    assert edge.embargoed_sessions == (days[1],)
    assert set(sessions[edge.train_idx].astype(dt.date)) == set(days[2:])


def test_without_anchor_times_the_window_starts_at_its_own_day():
    # Conservative fallback: only label_end is known, so a window reaching the test day still purges.
    days, sessions, ts, label_end = grid(n_sessions=4, per_session=1)
    label_end[0] = et_ns(days[2], 9, 0)
    split = next(iter(walk_forward_splits(sessions, label_end, min_train_sessions=1, embargo_sessions=1)))
    assert split.test_session == days[2] and split.n_purged == 1 and split.train_idx.size == 0


def test_length_mismatch_is_an_error():
    days, sessions, ts, label_end = grid(n_sessions=3)
    with pytest.raises(ValueError):
        list(walk_forward_splits(sessions, label_end[:-1], min_train_sessions=1))
