"""Session-level state: the daily anchor walk, the session's volatility regime, and the clock.

Chaining without sequential generation: the spot-like index follows a mean-reverting daily
log walk over *all* calendar sessions, drawn once per seed (`daily_anchors`). Session d opens
at the anchor of the previous session and closes at its own anchor, so consecutive sessions
chain (one session's close ≈ the next one's open) while any session can be generated alone.
Futures prices are anchor + carry basis of their contract.

Intraday seasonality (`IntradayProfile`) is a set of piecewise-linear curves over the ET clock:
per-second volatility of the mid (in ticks), core trade rate and depth-update activity, with
the open spike, the lunch lull and a quiet overnight.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..lib.calendar import CALENDAR_END, CALENDAR_START, NS_PER_S, SessionWindow, previous_session, session_window, trading_sessions
from .config import SyntheticConfig
from .contracts import ES_TICK, SessionContracts, carry_basis, session_contracts

DAILY_LOG_VOL = 0.009  # ~0.9% per session
DAILY_MEAN_REVERSION = 0.995  # AR(1) on log(anchor / start_price): stationary sd ≈ 9%
CARRY_RATE = 0.035  # futures premium per year over the anchor (rates − dividends)


@lru_cache(maxsize=8)
def daily_anchors(seed: int, start_price: float) -> dict[dt.date, float]:
    """The spot-like index at each calendar session's close (a pure function of the seed)."""
    sessions = trading_sessions(CALENDAR_START, CALENDAR_END)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xA11C])))
    shocks = rng.standard_normal(len(sessions)) * DAILY_LOG_VOL
    log_level = np.empty(len(sessions))
    x = 0.0
    for i, shock in enumerate(shocks):  # one step per session (~5,300): sequential by nature
        x = DAILY_MEAN_REVERSION * x + shock
        log_level[i] = x
    return dict(zip(sessions, (start_price * np.exp(log_level)).tolist()))


def anchor_close(config: SyntheticConfig, session: dt.date) -> float:
    return daily_anchors(config.seed, float(config.start_price))[session]


def anchor_open(config: SyntheticConfig, session: dt.date) -> float:
    try:
        return anchor_close(config, previous_session(session))
    except (ValueError, KeyError):
        return float(config.start_price)


# --- intraday clock ------------------------------------------------------------------------

# Knots on the ET clock (hour, value); the session runs 18:00 (previous evening) → 16:00.
_VOL_KNOTS = [(18.0, 0.30), (19.0, 0.27), (21.0, 0.24), (2.0, 0.24), (3.0, 0.32), (5.0, 0.30), (8.0, 0.33), (8.5, 0.42),
              (9.49, 0.40), (9.5, 0.98), (10.0, 0.90), (10.5, 0.80), (11.5, 0.71), (12.5, 0.64), (13.5, 0.66), (14.5, 0.71),
              (15.5, 0.78), (16.0, 0.82)]
_TRADE_KNOTS = [(18.0, 0.03), (19.0, 0.02), (2.0, 0.02), (3.0, 0.04), (8.0, 0.05), (8.5, 0.09), (9.49, 0.08), (9.5, 0.36),
                (10.0, 0.28), (10.5, 0.21), (11.5, 0.15), (12.5, 0.12), (13.5, 0.13), (14.5, 0.16), (15.5, 0.22), (16.0, 0.28)]
_ACTIVITY_KNOTS = [(18.0, 0.25), (19.0, 0.18), (2.0, 0.18), (3.0, 0.35), (8.0, 0.40), (8.5, 0.65), (9.49, 0.65), (9.5, 2.6),
                   (10.0, 2.2), (10.5, 1.9), (11.5, 1.5), (12.5, 1.3), (13.5, 1.4), (14.5, 1.6), (15.5, 2.0), (16.0, 2.2)]
_DEPTH_KNOTS = [(18.0, 10.0), (21.0, 9.0), (2.0, 9.0), (3.0, 14.0), (8.0, 16.0), (9.49, 18.0), (9.5, 34.0), (11.5, 30.0),
                (13.0, 26.0), (16.0, 34.0)]


def _session_hours(knots: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Knots converted to hours since 18:00 ET (the session's first second)."""
    hours = np.array([(h - 18.0) % 24.0 for h, _ in knots])
    values = np.array([v for _, v in knots])
    return hours, values


@dataclass(frozen=True)
class IntradayProfile:
    """Per-second curves of one session (index s = seconds since the Globex open)."""

    vol_ticks: np.ndarray  # sd of the per-second mid step, in ticks (variance of the ±1/±2 tick step)
    trade_rate: np.ndarray  # core (path) trades per second of the lead outright
    activity: np.ndarray  # relative depth-update activity, mean 1 over the session
    depth_lots: np.ndarray  # typical resting size of a near-touch level of the lead


def intraday_profile(window: SessionWindow, vol_mult: float) -> IntradayProfile:
    n = (window.close_ns - window.globex_open_ns) // NS_PER_S
    hours = np.arange(n) / 3600.0
    curves = []
    for knots in (_VOL_KNOTS, _TRADE_KNOTS, _ACTIVITY_KNOTS, _DEPTH_KNOTS):
        kh, kv = _session_hours(knots)
        curves.append(np.interp(hours, kh, kv))
    vol, rate, activity, depth = curves
    return IntradayProfile(
        vol_ticks=vol * vol_mult,
        trade_rate=rate * np.sqrt(vol_mult),
        activity=activity / activity.mean(),
        depth_lots=depth,
    )


@dataclass(frozen=True)
class SessionRegime:
    session: dt.date
    window: SessionWindow
    contracts: SessionContracts
    vol_mult: float  # session volatility multiplier (busy vs quiet days)
    atm_vol: float  # 0DTE at-the-money implied vol (annualized)
    anchor_open: float
    anchor_close: float
    basis: dict[str, float]  # carry premium of each outright over the anchor (points)

    @property
    def n_seconds(self) -> int:
        return (self.window.close_ns - self.window.globex_open_ns) // NS_PER_S

    def second_of(self, ts_ns: int) -> int:
        return (ts_ns - self.window.globex_open_ns) // NS_PER_S

    def lead_price(self, anchor: float) -> float:
        return anchor + self.basis[self.contracts.lead.symbol]

    @property
    def lead_open_ticks(self) -> int:
        return int(round(self.lead_price(self.anchor_open) / ES_TICK))

    @property
    def lead_close_ticks(self) -> int:
        return int(round(self.lead_price(self.anchor_close) / ES_TICK))


def session_regime(config: SyntheticConfig, session: dt.date) -> SessionRegime:
    window = session_window(session)  # raises ValueError on a non-trading day
    contracts = session_contracts(session)
    rng = config.rng(session, "regime")
    vol_mult = float(np.clip(np.exp(rng.normal(0.0, 0.25)), 0.6, 1.9))
    atm_vol = float(np.clip(0.15 * np.sqrt(vol_mult) + rng.normal(0.0, 0.01), 0.11, 0.22))
    a_open, a_close = anchor_open(config, session), anchor_close(config, session)
    basis = {c.symbol: carry_basis(a_open, c.expiry_date, session, CARRY_RATE) for c in (contracts.near, contracts.far)}
    return SessionRegime(session, window, contracts, vol_mult, atm_vol, a_open, a_close, basis)
