"""0DTE ES options: the chain, the customer flow that plants dealer gamma, quotes and trades.

- Chain: calls and puts on the lead future, strikes every 5 points within ±50 points of the
  listing centre (the lead's price at the Globex open, rounded to 5), expiring at the
  session's close — the same chain at every scale.
- Fair value: Black-76 (r = 0) with spot = the lead's mid and a smile
  σ(K) = σ_atm · (1 − 8·m + 400·m²), m = ln(K/F), clipped to [0.6, 2]·σ_atm.
- Quotes (mbp-1): evaluated on a grid (`option_quote_grid_s`); bid/ask straddle the fair
  value by max(½ tick, 1%) on ES option ticks (0.05 below 5.00, 0.25 above), never below
  0.05; sizes refresh at random. A record is written only when the top of book changes.
- Customer flow (the gamma plant): each 20-point strike region gets a customer bias of +1
  (customers net buyers) or −1 (net sellers) for the session; a trade is a customer buy with
  probability 0.5 + 0.3·bias, printed at the ask with aggressor 'B' (a customer sale at the
  bid, 'A'). Dealers are assumed short what customers buy, so a region customers buy leaves
  dealers short gamma. This planted flow (PLANTED_OPTION_TRADES per session) is the same at
  every scale; larger scales add extra trades in net-zero pairs (a customer buy and a sale
  of the same size 1 ms apart), so the signed flow of every option — and the dealer gamma
  the simulator planted — is identical at every scale. Trade times, sides and sizes are drawn
  *before* the price path (they do not depend on it), which lets the path simulator compute
  the dealer gamma near a level from the flow printed before each touch; prices are filled in
  from the quotes afterwards.
- Statistics per option: SETTLEMENT_PRICE (prior day, at the open of the window),
  CLEARED_VOLUME (06:00 ET) and OPEN_INTEREST (06:30 ET, i.e. before the RTH open).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ..lib.calendar import NS_PER_S, et_to_ns
from .config import SyntheticConfig
from .contracts import ES_TICK, daily_option_root, option_symbol
from .regime import SessionRegime, intraday_profile

OPTION_MULTIPLIER = 50
STRIKE_STEP = 5.0
STRIKE_HALF_WIDTH = 50.0
PLANTED_OPTION_TRADES = 400.0  # expected planted customer trades per session (every scale)
REGION_WIDTH = 20.0  # points of strikes sharing one customer bias
CUSTOMER_BIAS_STRENGTH = 0.3
GAMMA_BAND_PT = 10.0  # strikes within ± this of a level count as "near the level"
YEAR_NS = 365.25 * 86_400 * NS_PER_S
PRICE_UNIT = 0.05  # option prices are handled as integer multiples of 0.05
MIN_T_YEARS = 60 * NS_PER_S / YEAR_NS  # fair values are evaluated at least a minute before expiry


@dataclass(frozen=True)
class OptionChain:
    symbols: tuple[str, ...]
    is_call: np.ndarray
    strikes: np.ndarray
    expiration_ns: int
    underlying: str
    root: str
    center: float

    def __len__(self) -> int:
        return len(self.symbols)


def build_chain(regime: SessionRegime) -> OptionChain:
    lead_open = regime.lead_open_ticks * ES_TICK
    center = round(lead_open / STRIKE_STEP) * STRIKE_STEP
    half = int(STRIKE_HALF_WIDTH // STRIKE_STEP)
    strikes = center + STRIKE_STEP * np.arange(-half, half + 1)
    is_call = np.concatenate((np.ones(len(strikes), bool), np.zeros(len(strikes), bool)))
    all_strikes = np.concatenate((strikes, strikes))
    symbols = tuple(option_symbol(regime.session, "C" if c else "P", k) for c, k in zip(is_call, all_strikes))
    return OptionChain(symbols, is_call, all_strikes, regime.window.close_ns, regime.contracts.lead.symbol,
                       daily_option_root(regime.session), center)


def smile_vol(atm_vol: float, strike: np.ndarray, forward: np.ndarray) -> np.ndarray:
    m = np.log(strike / forward)
    return atm_vol * np.clip(1.0 - 8.0 * m + 400.0 * m * m, 0.6, 2.0)


def black76(forward, strike, t_years, sigma, is_call):
    """Price and gamma (per point of the future) of European options on a future, r = 0."""
    forward, strike, t_years, sigma = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (forward, strike, t_years, sigma)))
    vol_sqrt_t = sigma * np.sqrt(t_years)
    d1 = (np.log(forward / strike) + 0.5 * vol_sqrt_t**2) / vol_sqrt_t
    d2 = d1 - vol_sqrt_t
    call = forward * ndtr(d1) - strike * ndtr(d2)
    put = strike * ndtr(-d2) - forward * ndtr(-d1)
    gamma = np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi) / (forward * vol_sqrt_t)
    return np.where(is_call, call, put), gamma


def years_to_expiry(chain: OptionChain, ts_ns) -> np.ndarray:
    return np.maximum((chain.expiration_ns - np.asarray(ts_ns, dtype=np.float64)) / YEAR_NS, MIN_T_YEARS)


@dataclass(frozen=True)
class OptionFlow:
    """Customer option trades of the session in time order (prices come later, from quotes)."""

    ts_ns: np.ndarray
    option: np.ndarray  # index into the chain
    side: np.ndarray  # +1 customer buy (aggressor 'B' at the ask), −1 customer sale
    size: np.ndarray
    planted: np.ndarray  # True: the planted customer flow; False: a scale's net-zero extra pair
    region_bias: np.ndarray  # per option: +1 customers net buyers in its region, −1 net sellers


def _draw_trades(rng: np.random.Generator, regime: SessionRegime, chain: OptionChain, expected: float):
    """Times (ns), options and sizes of `expected` trades, busier in RTH and near the money."""
    n = int(rng.poisson(expected))
    intensity = intraday_profile(regime.window, 1.0).trade_rate[:-1]
    seconds = rng.choice(len(intensity) - 1, size=n, p=intensity[1:] / intensity[1:].sum()) + 1
    weight = np.exp(-np.abs(chain.strikes - chain.center) / 20.0)
    option = rng.choice(len(chain), size=n, p=weight / weight.sum())
    size = np.minimum(np.ceil(rng.lognormal(0.7, 0.9, n)), 500).astype(np.int64)
    ts = regime.window.globex_open_ns + seconds * NS_PER_S + rng.integers(0, NS_PER_S - 2_000_000, n)
    return ts, option, size


def draw_option_flow(config: SyntheticConfig, regime: SessionRegime, chain: OptionChain) -> OptionFlow:
    rng = config.rng(regime.session, "options:flow")  # scale-independent: the planted flow
    region = np.floor((chain.strikes - chain.strikes.min()) / REGION_WIDTH).astype(np.int64)
    bias = rng.choice([-1, 1], size=int(region.max()) + 1)[region]
    ts, option, size = _draw_trades(rng, regime, chain, PLANTED_OPTION_TRADES)
    side = np.where(rng.random(len(ts)) < 0.5 + CUSTOMER_BIAS_STRENGTH * bias[option], 1, -1).astype(np.int8)
    extra = config.rng(regime.session, "options:flow:extra")
    x_ts, x_option, x_size = _draw_trades(extra, regime, chain, config.profile.option_extra_trades / 2)
    first = np.where(extra.random(len(x_ts)) < 0.5, 1, -1).astype(np.int8)
    ts = np.concatenate((ts, x_ts, x_ts + 1_000_000))
    option = np.concatenate((option, x_option, x_option))
    side = np.concatenate((side, first, -first))
    size = np.concatenate((size, x_size, x_size))
    planted = np.concatenate((np.ones(len(side) - 2 * len(x_ts), bool), np.zeros(2 * len(x_ts), bool)))
    order = np.argsort(ts, kind="stable")
    return OptionFlow(ts[order], option[order], side[order], size[order], planted[order], bias)


def dealer_gamma_near(chain: OptionChain, flow: OptionFlow, atm_vol: float, t_ns: int, level: float, forward: float) -> float:
    """Dealer gamma (contracts × points⁻¹ × multiplier) from options within ±10 pt of `level`,
    using only customer trades printed at or before t_ns. Dealers take the other side of
    customers: customer buys make dealers short gamma (negative)."""
    near = np.abs(chain.strikes - level) <= GAMMA_BAND_PT
    if not near.any():
        return 0.0
    upto = np.searchsorted(flow.ts_ns, t_ns, side="right")
    planted = flow.planted[:upto]  # the extra pairs net to zero (but for one straddling t by < 1 ms)
    net = np.bincount(flow.option[:upto][planted], weights=(flow.side[:upto] * flow.size[:upto])[planted], minlength=len(chain))
    if not np.any(net[near]):
        return 0.0
    t_years = years_to_expiry(chain, t_ns)
    sigma = smile_vol(atm_vol, chain.strikes[near], np.full(near.sum(), forward))
    _, gamma = black76(forward, chain.strikes[near], t_years, sigma, chain.is_call[near])
    return float(-(net[near] * gamma).sum() * OPTION_MULTIPLIER)


# --- quotes, trades and statistics after the path -------------------------------------------


@dataclass
class OptionBook:
    """mbp-1 rows (all options, ts order) with their post-event top of book; prices in 0.05 units."""

    ts_ns: np.ndarray
    option: np.ndarray
    action: np.ndarray  # b'A', b'C', b'M', b'T'
    side: np.ndarray  # b'B', b'A'
    price_u: np.ndarray
    size: np.ndarray
    bid_u: np.ndarray
    bid_sz: np.ndarray
    ask_u: np.ndarray
    ask_sz: np.ndarray


def _quote_units(theo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bid/ask in 0.05 units around the fair value on the ES option tick ladder."""
    tick_u = np.where(theo < 5.0, 1, 5)
    half = np.maximum(0.5 * tick_u * PRICE_UNIT, 0.01 * theo)
    bid_u = np.floor((theo - half) / (tick_u * PRICE_UNIT)) * tick_u
    ask_u = np.ceil((theo + half) / (tick_u * PRICE_UNIT)) * tick_u
    bid_u = np.maximum(bid_u, 1).astype(np.int64)
    ask_u = np.maximum(ask_u, bid_u + np.where(bid_u < 100, 1, 5)).astype(np.int64)
    return bid_u, ask_u


UNSET = -1  # a side with no quote yet: written as Databento's UNDEF price with size 0


def _forward_fill(writes: np.ndarray, values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """values[last row ≤ i that writes, within row i's group] for each row i (UNSET before)."""
    idx = np.where(writes, np.arange(len(writes)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= group_start, values[np.maximum(idx, 0)], UNSET)


def build_option_book(config: SyntheticConfig, regime: SessionRegime, chain: OptionChain, flow: OptionFlow,
                      lead_bid: np.ndarray) -> OptionBook:
    """Quote changes on the grid plus the customer trades, as mbp-1 events with their book."""
    rng = config.rng(regime.session, "options:book")
    grid_s = config.profile.option_quote_grid_s
    open_ns = regime.window.globex_open_ns
    grid = np.arange(0, regime.n_seconds, grid_s)
    n_grid, n_opt = len(grid), len(chain)
    forward = (lead_bid[grid] + 0.5) * ES_TICK
    t_years = years_to_expiry(chain, open_ns + grid * NS_PER_S)
    sigma = smile_vol(regime.atm_vol, chain.strikes[None, :], forward[:, None])
    theo, _ = black76(forward[:, None], chain.strikes[None, :], t_years[:, None], sigma, chain.is_call[None, :])
    quote_u = _quote_units(theo)  # (bid, ask)

    def displayed_sizes() -> np.ndarray:  # redrawn at ~30% of grid points, otherwise carried
        fresh = np.ceil(rng.lognormal(3.2, 0.7, (n_grid, n_opt))).astype(np.int64)
        redraw = rng.random((n_grid, n_opt)) >= 0.7
        redraw[0] = True
        idx = np.where(redraw, np.arange(n_grid)[:, None], 0)
        np.maximum.accumulate(idx, axis=0, out=idx)
        return np.take_along_axis(fresh, idx, axis=0)

    quote_sz = (displayed_sizes(), displayed_sizes())
    rising = theo >= np.concatenate((theo[:1], theo[:-1]))
    rising[0] = False  # the opening quote writes its bid first (the ask side is still empty)
    q_parts = []
    for book_side in (0, 1):  # 0 bid, 1 ask
        px, sz = quote_u[book_side], quote_sz[book_side]
        changed = np.ones_like(px, dtype=bool)
        changed[1:] = (px[1:] != px[:-1]) | (sz[1:] != sz[:-1])
        g, o = np.nonzero(changed)
        # A rising quote moves its ask first (and a falling one its bid) so it never crosses.
        second = (rising[g, o] == (book_side == 0)).astype(np.int64)
        ts = open_ns + grid[g] * NS_PER_S + 1_000_000 + o * 20_000 + second * 3_000
        q_parts.append((ts, o, np.full(len(g), book_side), px[g, o], sz[g, o]))
    n_t = len(flow.ts_ns)
    resting = np.where(flow.side > 0, 1, 0)  # a customer buy lifts the ask
    refreshed = np.ceil(rng.lognormal(3.2, 0.7, n_t)).astype(np.int64)

    ts = np.concatenate([p[0] for p in q_parts] + [flow.ts_ns, flow.ts_ns])
    option = np.concatenate([p[1] for p in q_parts] + [flow.option, flow.option])
    book_side = np.concatenate([p[2] for p in q_parts] + [resting, resting])
    value_u = np.concatenate([p[3] for p in q_parts] + [np.zeros(2 * n_t, np.int64)])
    size = np.concatenate([p[4] for p in q_parts] + [flow.size, refreshed])
    n_q = len(ts) - 2 * n_t
    kind = np.concatenate((np.zeros(n_q, np.int8), np.ones(n_t, np.int8), np.full(n_t, 2, np.int8)))  # quote, T, M
    aggressor = np.concatenate((np.full(n_q, b"N"), np.where(flow.side > 0, b"B", b"A"), np.where(flow.side > 0, b"B", b"A")))

    order = np.lexsort((np.arange(len(ts)), ts, option))  # per option, in time order
    ts, option, book_side, value_u, size, kind, aggressor = (a[order] for a in (ts, option, book_side, value_u, size, kind, aggressor))
    is_quote, is_trade, is_refresh = kind == 0, kind == 1, kind == 2
    on_bid, on_ask = book_side == 0, book_side == 1
    # Per-option state: prices come from quotes, sizes from quotes and post-trade refreshes.
    first_of_option = np.concatenate(([True], option[1:] != option[:-1]))
    group_start = np.maximum.accumulate(np.where(first_of_option, np.arange(len(option)), 0))
    bid_u = _forward_fill(is_quote & on_bid, value_u, group_start)
    ask_u = _forward_fill(is_quote & on_ask, value_u, group_start)
    bid_sz = np.maximum(_forward_fill(~is_trade & on_bid, size, group_start), 0)
    ask_sz = np.maximum(_forward_fill(~is_trade & on_ask, size, group_start), 0)

    def before(state: np.ndarray) -> np.ndarray:
        out = np.concatenate(([UNSET], state[:-1]))
        out[first_of_option] = UNSET
        return out

    side_px = np.where(on_bid, bid_u, ask_u)
    side_sz = np.where(on_bid, bid_sz, ask_sz)
    old_px = np.where(on_bid, before(bid_u), before(ask_u))
    old_sz = np.maximum(np.where(on_bid, before(bid_sz), before(ask_sz)), 0)
    moved = side_px != old_px
    action = np.where(is_trade, b"T", np.where(is_refresh, b"M", np.where(moved | (side_sz > old_sz), b"A", b"C")))
    event_size = np.where(is_quote & ~moved, np.abs(side_sz - old_sz), size)
    event_side = np.where(is_trade, aggressor, np.where(on_bid, b"B", b"A"))
    keep = ~(is_quote & ~moved & (side_sz == old_sz))
    by_time = np.lexsort((np.arange(len(ts)), ts))
    by_time = by_time[keep[by_time]]
    return OptionBook(
        ts_ns=ts[by_time], option=option[by_time], action=action[by_time].astype("S1"), side=event_side[by_time].astype("S1"),
        price_u=side_px[by_time], size=event_size[by_time], bid_u=bid_u[by_time], bid_sz=bid_sz[by_time],
        ask_u=ask_u[by_time], ask_sz=ask_sz[by_time],
    )


@dataclass(frozen=True)
class OptionStatistic:
    option: int
    stat_type: int
    ts_event: int
    ts_ref: int
    price: float | None
    quantity: int | None


STAT_SETTLEMENT_PRICE = 3
STAT_CLEARED_VOLUME = 6
STAT_OPEN_INTEREST = 9


def option_statistics(config: SyntheticConfig, regime: SessionRegime, chain: OptionChain, book: OptionBook) -> list[OptionStatistic]:
    rng = config.rng(regime.session, "options:stats")
    w = regime.window
    weight = np.exp(-np.abs(chain.strikes - chain.center) / 30.0)
    open_interest = np.ceil(rng.lognormal(np.log(800.0 * weight + 20.0), 0.6)).astype(np.int64)
    cleared = rng.poisson(open_interest * 0.3)
    # Prior settlement: the first quote's mid of each option.
    first = np.unique(book.option, return_index=True)
    settle = np.zeros(len(chain))
    settle[first[0]] = (book.bid_u[first[1]] + book.ask_u[first[1]]) * 0.5 * PRICE_UNIT
    settle = np.round(settle / PRICE_UNIT) * PRICE_UNIT
    prior_close = w.globex_open_ns - 2 * 3600 * NS_PER_S
    cleared_ns = et_to_ns(regime.session, dt.time(6, 0))
    oi_ns = et_to_ns(regime.session, dt.time(6, 30))
    stats: list[OptionStatistic] = []
    for i in range(len(chain)):  # three records per option: a few hundred at most
        stats.append(OptionStatistic(i, STAT_SETTLEMENT_PRICE, w.globex_open_ns + 2 * NS_PER_S + i * 1_000_000, prior_close, float(settle[i]), None))
        stats.append(OptionStatistic(i, STAT_CLEARED_VOLUME, cleared_ns + i * 1_000_000, prior_close, None, int(cleared[i])))
        stats.append(OptionStatistic(i, STAT_OPEN_INTEREST, oi_ns + i * 1_000_000, prior_close, None, int(open_interest[i])))
    return sorted(stats, key=lambda s: (s.ts_event, s.option))
