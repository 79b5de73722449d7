"""The trailing buffers of the live engine, sized from the feature kernels' own look-backs.

The live engine computes a state row at grid time t by calling the batch kernels (`build_state`)
on its buffered inputs with queries for t only. The kernels are causal (a value at t reads data
≤ t), so the row equals the batch row as long as every buffer still holds all the data the
kernels read for t:

- trades (futures and options), 1-min bars, anchors: the whole session prefix. Bars, ATR,
  levels, the EMA/SMA, touch history and the dealers' cumulative positions are recursive
  over the session; these tables are small enough to keep whole.
- the MBP-10 book: the trailing window [t − BOOK_WINDOW, t] plus the last update before it
  (the book state at the window's first sample, and the previous state a per-update OFI
  difference needs). BOOK_WINDOW is the longest look-back of any book-reading feature: the
  registry's declared windows of the order-flow, liquidity and physics families and the
  liquidity kernel's exact oldest sample (`liquidity.max_lookback_s`: 30-min wall ratio,
  vacuum and replenishment latency reach 1811 s), rounded up to the grid step.
- option quotes (MBP-1): the same window plus each instrument's last quote before it (the
  dealer kernel prices an option off its latest quote at or before t, however old).
"""

from __future__ import annotations

import math
import re

import polars as pl

from .features import liquidity, registry

BOOK_FAMILIES = ("order_flow", "liquidity", "physics")
GRID_STEP_S = 30


def window_seconds(window: str) -> float | None:
    """Seconds of a registry window string ("60s", "5min", "14 x 1min"); None for "-" / "session"."""
    match = re.fullmatch(r"(?:(\d+)\s*x\s*)?(\d+(?:\.\d+)?)\s*(s|min)", window.strip())
    if match is None:
        return None
    count = int(match.group(1) or 1)
    return count * float(match.group(2)) * (60.0 if match.group(3) == "min" else 1.0)


def book_window_s() -> int:
    """Seconds of book history before t that any book-reading feature may read (see the module doc)."""
    declared = [window_seconds(d.window) for d in registry.all_features() if d.family in BOOK_FAMILIES]
    longest = max([w for w in declared if w is not None] + [liquidity.max_lookback_s()])
    return int(math.ceil(longest / GRID_STEP_S) * GRID_STEP_S)


def trailing(frame: pl.DataFrame, since_ns: int, by: str | None = None, time_column: str = "ts_event") -> pl.DataFrame:
    """Rows with time ≥ since_ns plus the last row before it (per `by` group when given): what a
    kernel reading state "as of" any instant in the window needs. `frame` is sorted by time."""
    if frame.height == 0:
        return frame
    ts = frame[time_column]
    first_inside = int(ts.search_sorted(since_ns, side="left"))
    if first_inside == 0:
        return frame
    if by is None:
        return frame.slice(first_inside - 1)
    before = frame.slice(0, first_inside).unique(by, keep="last", maintain_order=True).sort(time_column, maintain_order=True)
    return pl.concat([before, frame.slice(first_inside)])
