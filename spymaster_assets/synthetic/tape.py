"""The trade tape of a futures instrument, derived from its per-second best bid.

Book model shared by the path simulator (which needs the exact trades to build the bars the
levels come from) and the MBP-10 writer (which turns the same events into book records):

- The spread is always one tick: ask = bid + 1 (in the instrument's ticks).
- The BBO changes at most once per second, at `tau` within the second. A move of k ticks up
  removes the k ask levels between the old and the new touch and then adds k bid levels;
  a move down mirrors it. Each removed level on the side the mid moved toward is a *sweep*:
  an aggressive print at that level (buyer 'B' for up moves) — with probability
  `sweep_prob` for the lead (1.0) and much less for thinner contracts, whose touches mostly
  move by cancel/replace (spreaders), not by trades.
- Core trades of second s print after the transition, at the touch: buyer-initiated at the
  ask, seller-initiated at the bid; the buyer probability of second s is `pi_buy[s]`.

All draws are made up front per second (`TapeDraws`), so the tape of any span of seconds is
a pure function of the draws, the bid path and `pi_buy` over that span — computing one
second alone gives the same prints as computing its whole minute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS_PER_S = 1_000_000_000
MAX_STEP_TICKS = 3
TAU_MAX_NS = 200_000_000  # a transition happens in the first 200 ms of its second
CORE_AFTER_TAU_NS = 1_000_000  # core prints of a transition second start 1 ms after it


@dataclass(frozen=True)
class TapeDraws:
    n_core: np.ndarray  # core trades per second (int64)
    core_start: np.ndarray  # offsets into the flat core arrays (len n_seconds + 1)
    core_second: np.ndarray  # flat: second of each core trade
    core_frac: np.ndarray  # flat: position within its free part of the second, sorted per second
    core_side_u: np.ndarray  # flat: uniform compared with pi_buy
    core_size: np.ndarray  # flat: lots
    tau_ns: np.ndarray  # per second: transition offset within the second
    sweep_size: np.ndarray  # per second × MAX_STEP_TICKS: lots of each swept level
    sweep_u: np.ndarray  # per second: uniform compared with sweep_prob


def trade_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """ES-like print sizes: mostly 1–3 lots with a heavy tail."""
    return np.minimum(np.ceil(rng.lognormal(0.15, 0.95, n)), 250).astype(np.int64)


def draw_tape(rng: np.random.Generator, rate: np.ndarray, minute_floor: bool) -> TapeDraws:
    """Draw everything random about an instrument's tape for a session of len(rate) seconds.

    minute_floor: guarantee one core trade in every minute (second 59) that would otherwise
    have none, so the instrument has a 1-min bar every minute (ATR and SMA see no gaps).
    """
    n = len(rate)
    n_core = rng.poisson(rate).astype(np.int64)
    if minute_floor:
        per_minute = np.add.reduceat(n_core, np.arange(0, n, 60))
        empty = np.flatnonzero(per_minute == 0) * 60 + 59
        n_core[empty[empty < n]] = 1
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_core, out=start[1:])
    total = int(start[-1])
    second = np.repeat(np.arange(n, dtype=np.int64), n_core)
    frac = rng.random(total)
    frac = np.sort(frac + second) - second  # sorted within each second
    return TapeDraws(
        n_core=n_core,
        core_start=start,
        core_second=second,
        core_frac=frac,
        core_side_u=rng.random(total),
        core_size=trade_sizes(rng, total),
        tau_ns=rng.integers(0, TAU_MAX_NS, n),
        sweep_size=trade_sizes(rng, n * MAX_STEP_TICKS).reshape(n, MAX_STEP_TICKS),
        sweep_u=rng.random(n),
    )


@dataclass
class Tape:
    """Prints in time order. Prices in instrument ticks; side +1 buyer-, −1 seller-initiated."""

    ts_ns: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray
    sweep: np.ndarray
    second: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_ns)

    @staticmethod
    def concat(parts: list[Tape]) -> Tape:
        return Tape(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ts_ns", "price", "size", "side", "sweep", "second")))


def previous_bids(bid: np.ndarray, a: int, b: int) -> np.ndarray:
    first = bid[a - 1] if a > 0 else bid[0]
    return np.concatenate(([first], bid[a : b - 1]))


def build_tape(draws: TapeDraws, bid: np.ndarray, pi_buy: np.ndarray, a: int, b: int, start_ns: int, sweep_prob: float = 1.0) -> Tape:
    """The prints of seconds [a, b)."""
    secs = np.arange(a, b, dtype=np.int64)
    prev = previous_bids(bid, a, b)
    delta = bid[a:b] - prev
    steps = np.abs(delta)
    swept = (steps > 0) & (draws.sweep_u[a:b] < sweep_prob)
    n_sweep = np.where(swept, steps, 0)
    sw_sec = np.repeat(secs, n_sweep)
    offsets = np.cumsum(n_sweep) - n_sweep
    j = np.arange(len(sw_sec)) - np.repeat(offsets, n_sweep)
    up = np.repeat(delta > 0, n_sweep)
    sw_prev = np.repeat(prev, n_sweep)
    sw_price = np.where(up, sw_prev + 1 + j, sw_prev - j)
    sw_size = draws.sweep_size[sw_sec, np.minimum(j, MAX_STEP_TICKS - 1)]
    sw_ts = start_ns + sw_sec * NS_PER_S + draws.tau_ns[sw_sec]

    c0, c1 = draws.core_start[a], draws.core_start[b]
    c_sec = draws.core_second[c0:c1]
    moved = delta[c_sec - a] != 0
    lo = np.where(moved, draws.tau_ns[c_sec] + CORE_AFTER_TAU_NS, 0)
    c_ts = start_ns + c_sec * NS_PER_S + lo + (draws.core_frac[c0:c1] * (NS_PER_S - 1 - lo)).astype(np.int64)
    c_side = np.where(draws.core_side_u[c0:c1] < pi_buy[c_sec], 1, -1).astype(np.int8)
    c_price = bid[c_sec] + (c_side > 0)

    ts = np.concatenate((sw_ts, c_ts))
    order = np.argsort(ts, kind="stable")
    return Tape(
        ts_ns=ts[order],
        price=np.concatenate((sw_price, c_price))[order],
        size=np.concatenate((sw_size, draws.core_size[c0:c1]))[order],
        side=np.concatenate((np.where(up, 1, -1).astype(np.int8), c_side))[order],
        sweep=np.concatenate((np.ones(len(sw_ts), bool), np.zeros(len(c_ts), bool)))[order],
        second=np.concatenate((sw_sec, c_sec))[order],
    )


def minute_bars(tape: Tape, start_ns: int, tick: float) -> dict[str, np.ndarray]:
    """1-min OHLCV (prices in points) of a time-ordered tape, one row per minute with prints."""
    minute = (tape.ts_ns - start_ns) // (60 * NS_PER_S)
    if len(minute) == 0:
        return {k: np.empty(0) for k in ("minute", "open", "high", "low", "close", "volume")}
    starts = np.flatnonzero(np.concatenate(([True], minute[1:] != minute[:-1])))
    ends = np.concatenate((starts[1:], [len(minute)])) - 1
    price = tape.price * tick
    return {
        "minute": minute[starts],
        "open": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts),
        "close": price[ends],
        "volume": np.add.reduceat(tape.size, starts),
    }
