"""Causal level state inside the simulator, computed exactly as SPEC §6 defines it.

The simulator builds its 1-min bars from its own trade tape as the session unfolds and feeds
them here; the values at time t use only bars closed by t, like the pipeline:
- ATR: simple mean of the last 14 one-minute true ranges (first bar: high − low).
- PM_HIGH / PM_LOW from bars starting in [04:00, 09:30) ET, known at 09:30;
  OR_HIGH / OR_LOW from [09:30, 09:45) ET, known at 09:45.
- SMA_90 and EMA_20 (α = 2/21, seeded with the mean of the first 20 closes) of 2-min closes;
  a 2-min bar is the pair of minutes [2k, 2k+1] counted from the 18:00 ET open (the clock's
  even minutes). The session's own overnight supplies the warm-up (≥ 465 closes by 09:30), so
  the values agree with a pipeline that also feeds the previous session's bars: SMA_90 only
  looks back 180 minutes and the EMA seed has decayed by (19/21)^445 ≈ 1e-19.
"""

from __future__ import annotations

from collections import deque

LEVEL_KINDS = ("PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20")
ATR_PERIOD = 14
SMA_PERIOD = 90
EMA_PERIOD = 20


class LevelTracker:
    def __init__(self, premarket_minutes: tuple[int, int], opening_range_minutes: tuple[int, int]):
        self.pm_window = premarket_minutes  # [first, last) minute index since the Globex open
        self.or_window = opening_range_minutes
        self._true_ranges: deque[float] = deque(maxlen=ATR_PERIOD)
        self._prev_close: float | None = None
        self._closes_2m: deque[float] = deque(maxlen=SMA_PERIOD)
        self._ema_seed: list[float] = []
        self._ema: float | None = None
        self._pending_2m_close: float | None = None
        self.minutes_done = 0
        self.pm_high = self.pm_low = self.or_high = self.or_low = None
        self._pm = [float("-inf"), float("inf")]
        self._or = [float("-inf"), float("inf")]

    def add_minute(self, minute: int, high: float, low: float, close: float) -> None:
        """The bar of `minute` (closed). Minutes must arrive in order; every minute has a bar."""
        tr = high - low if self._prev_close is None else max(high - low, abs(high - self._prev_close), abs(low - self._prev_close))
        self._true_ranges.append(tr)
        self._prev_close = close
        if self.pm_window[0] <= minute < self.pm_window[1]:
            self._pm = [max(self._pm[0], high), min(self._pm[1], low)]
        if self.or_window[0] <= minute < self.or_window[1]:
            self._or = [max(self._or[0], high), min(self._or[1], low)]
        if minute + 1 == self.pm_window[1] and self._pm[0] > float("-inf"):
            self.pm_high, self.pm_low = self._pm
        if minute + 1 == self.or_window[1] and self._or[0] > float("-inf"):
            self.or_high, self.or_low = self._or
        if minute % 2 == 1:  # the second minute of a 2-min bar closes it
            self._add_2m_close(close)
        self.minutes_done = minute + 1

    def _add_2m_close(self, close: float) -> None:
        self._closes_2m.append(close)
        alpha = 2.0 / (EMA_PERIOD + 1)
        if self._ema is None:
            self._ema_seed.append(close)
            if len(self._ema_seed) == EMA_PERIOD:
                self._ema = sum(self._ema_seed) / EMA_PERIOD
        else:
            self._ema = alpha * close + (1.0 - alpha) * self._ema

    @property
    def atr(self) -> float | None:
        if len(self._true_ranges) < ATR_PERIOD:
            return None
        return sum(self._true_ranges) / ATR_PERIOD

    def levels(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.pm_high is not None:
            out["PM_HIGH"], out["PM_LOW"] = self.pm_high, self.pm_low
        if self.or_high is not None:
            out["OR_HIGH"], out["OR_LOW"] = self.or_high, self.or_low
        if len(self._closes_2m) == SMA_PERIOD:
            out["SMA_90"] = sum(self._closes_2m) / SMA_PERIOD
        if self._ema is not None:
            out["EMA_20"] = self._ema
        return out
