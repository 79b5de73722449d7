"""Anchors: the moments price, having been outside, comes within the touch band of a level.

SPEC §6. The touch band at time t is `|spot − L(t)| ≤ max(floor, frac · atr_t)` (defaults: one
tick, a quarter ATR). The direction is the side price came from: from below → UP (testing
resistance), from above → DOWN. A level re-anchors only after a debounce (5 min) since its
previous anchor. Everything uses data ≤ the anchor time: the level value, the ATR of the
last completed 1-min bar, and the touch history (attempt index, time since last touch).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class TouchConfig:
    band_floor_pt: float = 0.25  # one ES tick: a fixed 1-pt floor would be a whole ATR in quiet regimes
    band_atr_frac: float = 0.25
    debounce_s: float = 300.0


EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.Utf8,
    "session": pl.Date,
    "ts_ns": pl.Int64,
    "level_kind": pl.Utf8,
    "level_price": pl.Float64,
    "direction": pl.Utf8,
    "dir_sign": pl.Int8,
    "spot": pl.Float64,
    "atr": pl.Float64,
    "band_pt": pl.Float64,
    "attempt_index": pl.Int32,
    "time_since_last_touch_s": pl.Float64,
}


def event_id(session: dt.date, level_kind: str, level_price: float, anchor_ts_ns: int, direction: str) -> str:
    return f"{session.isoformat()}_{level_kind}_{int(round(level_price * 100))}_{anchor_ts_ns}_{direction}"


def asof_values(times: np.ndarray, known_at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Value of the last entry with known_at ≤ t for each t (NaN before the first)."""
    idx = np.searchsorted(known_at, times, side="right") - 1
    out = np.full(len(times), np.nan)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def find_anchors(
    session: dt.date,
    spot_ts: np.ndarray,
    spot_px: np.ndarray,
    levels: pl.DataFrame,
    atr_known_at: np.ndarray,
    atr_values: np.ndarray,
    window: tuple[int, int],
    config: TouchConfig = TouchConfig(),
    spot_low: np.ndarray | None = None,
    spot_high: np.ndarray | None = None,
) -> pl.DataFrame:
    """Anchors of every level kind within `window` = [start_ns, end_ns].

    spot_ts/spot_px: the finest causal price series (trades at T1+, 1-min closes stamped at
    bar close at T0), sorted by time. levels: level_kind, price, known_at_ns (a dynamic level
    has one row per update). atr_*: ATR values with the time each became known.
    spot_low/spot_high (T0 bars): a bar touches when its range reaches the band, so a touch
    inside a bar is not missed because the close lies elsewhere.
    """
    rows: list[dict] = []
    in_window = (spot_ts >= window[0]) & (spot_ts <= window[1])
    ts, px = spot_ts[in_window], spot_px[in_window]
    low = px if spot_low is None else spot_low[in_window]
    high = px if spot_high is None else spot_high[in_window]
    if len(ts) == 0:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    atr = asof_values(ts, atr_known_at, atr_values)
    band = np.maximum(config.band_floor_pt, config.band_atr_frac * np.nan_to_num(atr, nan=0.0))
    for kind, level_rows in levels.sort("known_at_ns").group_by("level_kind", maintain_order=True):
        level = asof_values(ts, level_rows["known_at_ns"].to_numpy(), level_rows["price"].to_numpy())
        rows.extend(_anchors_of_level(session, kind[0], ts, px, low, high, level, atr, band, config))
    return pl.DataFrame(rows, schema=EVENT_SCHEMA).sort(["ts_ns", "level_kind"])


def touch_sides(px, low, high, level, band) -> tuple[np.ndarray, np.ndarray]:
    """(inside, came_from) per print of one level.

    inside: the print (or bar range) reaches the touch band. came_from: the side of the most
    recent print *outside* the band at or before it (+1 above, −1 below, 0 none yet) — the
    side an approach comes from, which a print inside the band (even one just past the
    level) does not change."""
    known = ~np.isnan(level)
    inside = known & (low - level <= band) & (level - high <= band)
    outside = known & ~inside
    side_now = np.where(outside, np.sign(px - level), 0.0)
    last_outside = np.maximum.accumulate(np.where(side_now != 0, np.arange(len(px)), -1))
    came_from = np.where(last_outside >= 0, side_now[np.maximum(last_outside, 0)], 0.0)
    return inside, came_from


def approach_sides(
    spot_ts: np.ndarray,
    spot_px: np.ndarray,
    levels: pl.DataFrame,
    atr_known_at: np.ndarray,
    atr_values: np.ndarray,
    window: tuple[int, int],
    times: np.ndarray,
    config: TouchConfig = TouchConfig(),
    spot_low: np.ndarray | None = None,
    spot_high: np.ndarray | None = None,
) -> pl.DataFrame:
    """t_ns, level_kind, approach_sign at each of `times`: the direction an anchor at t would
    have (+1 UP = price came from below, −1 DOWN), by exactly the rule `find_anchors` uses —
    the side of the last print outside the touch band at or before t, over the same window.
    0 when price has not been outside the band of that level yet (the caller decides)."""
    in_window = (spot_ts >= window[0]) & (spot_ts <= window[1])
    ts, px = spot_ts[in_window], spot_px[in_window]
    low = px if spot_low is None else spot_low[in_window]
    high = px if spot_high is None else spot_high[in_window]
    atr = asof_values(ts, atr_known_at, atr_values)
    band = np.maximum(config.band_floor_pt, config.band_atr_frac * np.nan_to_num(atr, nan=0.0))
    last_print = np.searchsorted(ts, times, side="right") - 1
    frames = []
    for kind, level_rows in levels.sort("known_at_ns").group_by("level_kind", maintain_order=True):
        level = asof_values(ts, level_rows["known_at_ns"].to_numpy(), level_rows["price"].to_numpy())
        _, came_from = touch_sides(px, low, high, level, band)
        # An anchor's direction is the side it came from, the opposite of the side it was on.
        sign = np.where(last_print >= 0, -came_from[np.maximum(last_print, 0)], 0.0) if len(ts) else np.zeros(len(times))
        frames.append(pl.DataFrame({"t_ns": np.asarray(times, dtype=np.int64), "level_kind": [kind[0]] * len(times),
                                    "approach_sign": sign.astype(np.int8)}))
    if not frames:
        return pl.DataFrame(schema={"t_ns": pl.Int64, "level_kind": pl.Utf8, "approach_sign": pl.Int8})
    return pl.concat(frames)


def _anchors_of_level(session, kind, ts, px, low, high, level, atr, band, config) -> list[dict]:
    inside, came_from = touch_sides(px, low, high, level, band)
    prev_inside = np.concatenate(([False], inside[:-1]))
    entries = np.flatnonzero(inside & ~prev_inside & (np.concatenate(([0.0], came_from[:-1])) != 0))
    anchors: list[dict] = []
    last_anchor_ns: int | None = None
    debounce_ns = int(config.debounce_s * NS_PER_S)
    for i in entries:  # candidate entries into the band (a few per level), not records
        t = int(ts[i])
        if last_anchor_ns is not None and t - last_anchor_ns < debounce_ns:
            continue
        side = came_from[i - 1]
        direction, dir_sign = ("UP", 1) if side < 0 else ("DOWN", -1)
        anchors.append(
            {
                "event_id": event_id(session, kind, float(level[i]), t, direction),
                "session": session,
                "ts_ns": t,
                "level_kind": kind,
                "level_price": float(level[i]),
                "direction": direction,
                "dir_sign": dir_sign,
                "spot": float(px[i]),
                "atr": float(atr[i]) if not np.isnan(atr[i]) else None,
                "band_pt": float(band[i]),
                "attempt_index": len(anchors) + 1,
                "time_since_last_touch_s": None if last_anchor_ns is None else (t - last_anchor_ns) / NS_PER_S,
            }
        )
        last_anchor_ns = t
    return anchors
