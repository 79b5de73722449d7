"""Session-grouped, purged and embargoed splits for episode models (SPEC §9 honesty rule).

Episodes of one session share the day's regime, so a split never puts one session on
both sides: the unit held out is a whole session. Two further leaks are closed:

- **Purge.** A label looks forward (up to the barrier horizon). A training episode whose
  label window `[ts_ns, label_end_ns]` overlaps the test session's time span knows
  something about the test day's prices, so it is dropped. The test session's span is its
  ET calendar day, `[00:00 ET on the session date, 00:00 ET the next day)` (DST-aware):
  it covers the RTH analysis window and the late-evening Globex start of the next
  session, and it is a fixed, data-independent boundary, so the purge does not depend on
  which episodes happened to occur. Overlap is `ts_ns < span_end and label_end_ns ≥ span_start`.
- **Embargo.** Features are built from trailing windows (up to 20 minutes, plus
  normalization stats) and consecutive sessions share overnight positioning, so the
  `embargo_sessions` sessions adjacent to the test session are left out of training
  altogether. "Adjacent" counts sessions present in the data (not calendar days), so a
  holiday does not silently shrink the embargo.

Walk-forward (expanding window) is the forecast-honest estimate: train strictly before
the test session. Leave-one-day-out also trains on later sessions; it uses more data per
fold and is reported separately, never as a forecast.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterator
from zoneinfo import ZoneInfo

import numpy as np

ET = ZoneInfo("America/New_York")
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Split:
    """One fold: integer row indices into the episode arrays, and what was removed and why."""

    fold: int
    test_session: dt.date
    train_idx: np.ndarray
    test_idx: np.ndarray
    n_purged: int  # training-eligible episodes dropped because their label window reaches the test day
    embargoed_sessions: tuple[dt.date, ...]  # sessions dropped from training for adjacency


def session_span_ns(session: dt.date) -> tuple[int, int]:
    """[00:00 ET of the session date, 00:00 ET of the next calendar day) as int64 ns UTC."""
    start = dt.datetime.combine(session, dt.time(0, 0), tzinfo=ET)
    end = dt.datetime.combine(session + dt.timedelta(days=1), dt.time(0, 0), tzinfo=ET)
    return int(start.timestamp()) * NS_PER_S, int(end.timestamp()) * NS_PER_S


def as_session_days(sessions) -> np.ndarray:
    """Session dates (dates, datetime64, a polars/pandas Series) as a datetime64[D] array."""
    values = sessions.to_numpy() if hasattr(sessions, "to_numpy") else sessions
    return np.asarray(values).astype("datetime64[D]")


def _to_date(day: np.datetime64) -> dt.date:
    return day.astype("datetime64[D]").astype(dt.date)


@dataclass(frozen=True)
class _Episodes:
    """Per-episode arrays resolved once: session code, label window, and each session's span."""

    days: np.ndarray  # unique sessions, ascending (datetime64[D])
    code: np.ndarray  # episode → index into days
    window_start: np.ndarray
    window_end: np.ndarray
    span_start: np.ndarray  # per unique session
    span_end: np.ndarray

    @classmethod
    def resolve(cls, sessions, label_end_ns, ts_ns) -> _Episodes:
        days_per_episode = as_session_days(sessions)
        days, code = np.unique(days_per_episode, return_inverse=True)
        spans = np.array([session_span_ns(_to_date(d)) for d in days], dtype=np.int64).reshape(-1, 2)
        window_end = np.asarray(label_end_ns, dtype=np.int64).ravel()
        if window_end.size != code.size:
            raise ValueError(f"{code.size} sessions but {window_end.size} label_end_ns values")
        # Without anchor times, an episode's label window is taken to start at its own day's
        # start: conservative (it can only purge more), exact for the walk-forward case.
        window_start = (np.asarray(ts_ns, dtype=np.int64).ravel() if ts_ns is not None
                        else spans[code, 0])
        if window_start.size != code.size:
            raise ValueError(f"{code.size} sessions but {window_start.size} ts_ns values")
        return cls(days, code, window_start, window_end, spans[:, 0], spans[:, 1])

    def overlaps(self, test: int) -> np.ndarray:
        return (self.window_start < self.span_end[test]) & (self.window_end >= self.span_start[test])

    def split(self, fold: int, test: int, eligible: np.ndarray, embargoed: np.ndarray) -> Split:
        overlapping = self.overlaps(test)
        return Split(
            fold=fold,
            test_session=_to_date(self.days[test]),
            train_idx=np.flatnonzero(eligible & ~overlapping),
            test_idx=np.flatnonzero(self.code == test),
            n_purged=int(np.count_nonzero(eligible & overlapping)),
            embargoed_sessions=tuple(_to_date(self.days[s]) for s in embargoed),
        )


def walk_forward_splits(sessions, label_end_ns, min_train_sessions: int, embargo_sessions: int = 1,
                        ts_ns=None) -> Iterator[Split]:
    """Expanding-window folds, one per test session, in session order.

    For test session number k (0-based among the distinct sessions), training candidates
    are the episodes of sessions 0 … k − embargo_sessions − 1; the `embargo_sessions`
    sessions immediately before k are embargoed; candidates whose label window overlaps
    session k's ET day are purged. The first test session is the first one that leaves
    `min_train_sessions` sessions for training after the embargo.
    """
    if min_train_sessions < 1 or embargo_sessions < 0:
        raise ValueError("min_train_sessions must be ≥ 1 and embargo_sessions ≥ 0")
    episodes = _Episodes.resolve(sessions, label_end_ns, ts_ns)
    for fold, test in enumerate(range(min_train_sessions + embargo_sessions, episodes.days.size)):
        last_train = test - embargo_sessions  # exclusive
        eligible = episodes.code < last_train
        yield episodes.split(fold, test, eligible, np.arange(last_train, test))


def leave_one_day_out_splits(sessions, label_end_ns, embargo_sessions: int = 1, ts_ns=None,
                             min_train_sessions: int = 1) -> Iterator[Split]:
    """One fold per session: train on every other session except `embargo_sessions` on each side, purged.

    Folds that would train on fewer than `min_train_sessions` sessions are skipped.
    """
    if embargo_sessions < 0:
        raise ValueError("embargo_sessions must be ≥ 0")
    episodes = _Episodes.resolve(sessions, label_end_ns, ts_ns)
    session_numbers = np.arange(episodes.days.size)
    fold = 0
    for test in session_numbers:
        far_enough = np.abs(session_numbers - test) > embargo_sessions
        if np.count_nonzero(far_enough) < min_train_sessions:
            continue
        embargoed = np.flatnonzero(~far_enough & (session_numbers != test))
        yield episodes.split(fold, int(test), far_enough[episodes.code], embargoed)
        fold += 1
