"""ES contracts of a session: quarterly outrights, the calendar spread, the 0DTE options, and ids.

- Outrights ES{H,M,U,Z}{year digit} expire on the third Friday of Mar/Jun/Sep/Dec (final
  settlement at the 09:30 ET open); a contract is listed in the sessions before that date.
- Roll date: the Thursday eight calendar days before expiry (CME's convention). Volume
  migrates to the deferred contract over the days around it (`FAR_SHARE_BY_ROLL_OFFSET`);
  on the session before the roll and on the roll day itself neither contract has 60% of
  outright volume, and the lead (highest-volume) contract switches on the roll day.
- Calendar spread `ESZ4-ESH5`: CME equity convention, priced as deferred minus nearby (≈ the
  carry basis, positive in contango), tick 0.05.
- 0DTE options: a daily product expiring at the session's close, named like CME's weekly
  families (Mon E{w}A, Tue E{w}B, Wed E{w}C, Thu E{w}D, Fri EW{w}; w = week of month), raw
  symbol "E2CZ4 C6050". Consumers must read strike/right/expiry from the definitions.
- Instrument ids are a deterministic function of the raw symbol (CRC-32 based), so the same
  contract keeps its id across sessions.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass

import numpy as np

from ..lib.calendar import CALENDAR_END, et_to_ns, trading_sessions
from ..lib.front_month import third_friday

MONTH_CODES = "FGHJKMNQUVXZ"
ES_TICK = 0.25
SPREAD_TICK = 0.05
ROLL_DAYS_BEFORE_EXPIRY = 8

# Share of RTH outright volume traded in the deferred ("far") contract, by trading-session
# offset from the roll date (0 = roll Thursday). Offsets beyond the table use its ends.
FAR_SHARE_BY_ROLL_OFFSET = {-4: 0.02, -3: 0.05, -2: 0.15, -1: 0.45, 0: 0.56, 1: 0.78, 2: 0.88, 3: 0.93, 4: 0.96}
# Calendar-spread activity multiplier in roll week (spreads are how the roll is traded).
ROLL_WEEK_SPREAD_ACTIVITY = 25.0


@dataclass(frozen=True)
class QuarterlyContract:
    year: int
    month: int

    @property
    def symbol(self) -> str:
        return f"ES{MONTH_CODES[self.month - 1]}{self.year % 10}"

    @property
    def expiry_date(self) -> dt.date:
        return third_friday(self.year, self.month)

    @property
    def expiration_ns(self) -> int:
        return et_to_ns(self.expiry_date, dt.time(9, 30))

    @property
    def roll_date(self) -> dt.date:
        return self.expiry_date - dt.timedelta(days=ROLL_DAYS_BEFORE_EXPIRY)

    def next(self) -> QuarterlyContract:
        return QuarterlyContract(self.year + 1, 3) if self.month == 12 else QuarterlyContract(self.year, self.month + 3)


def nearby_contract(session: dt.date) -> QuarterlyContract:
    """The nearest quarterly still trading in this session (expiry after the session date)."""
    contract = QuarterlyContract(session.year, ((session.month - 1) // 3 + 1) * 3)
    while contract.expiry_date <= session:
        contract = contract.next()
    return contract


def _sessions_in(first: dt.date, last: dt.date) -> int:
    """Trading sessions in [first, last); beyond the exchange calendar, weekdays count."""
    if last <= first:
        return 0
    inside = len(trading_sessions(first, min(last - dt.timedelta(days=1), CALENDAR_END)))
    beyond_from = max(first, CALENDAR_END + dt.timedelta(days=1))
    return inside + (int(np.busday_count(beyond_from, last)) if last > beyond_from else 0)


def roll_offset(session: dt.date, contract: QuarterlyContract) -> int:
    """Trading sessions from the contract's roll date to `session` (0 on the roll date; a
    roll date that is a holiday counts from the next session)."""
    roll = contract.roll_date
    return _sessions_in(roll, session) if session >= roll else -_sessions_in(session, roll)


@dataclass(frozen=True)
class SessionContracts:
    near: QuarterlyContract
    far: QuarterlyContract
    far_share: float  # planned share of RTH outright volume in the far contract

    @property
    def lead(self) -> QuarterlyContract:
        """The contract with most volume: the one the planted price path is simulated on."""
        return self.far if self.far_share >= 0.5 else self.near

    @property
    def other(self) -> QuarterlyContract:
        return self.near if self.lead == self.far else self.far

    @property
    def lead_share(self) -> float:
        return max(self.far_share, 1.0 - self.far_share)

    @property
    def spread_symbol(self) -> str:
        return f"{self.near.symbol}-{self.far.symbol}"

    @property
    def roll_week(self) -> bool:
        return 0.05 <= self.far_share <= 0.9


def session_contracts(session: dt.date) -> SessionContracts:
    near = nearby_contract(session)
    offset = roll_offset(session, near)
    lo, hi = min(FAR_SHARE_BY_ROLL_OFFSET), max(FAR_SHARE_BY_ROLL_OFFSET)
    share = FAR_SHARE_BY_ROLL_OFFSET[min(max(offset, lo), hi)]
    return SessionContracts(near=near, far=near.next(), far_share=share)


def carry_basis(spot: float, expiry: dt.date, session: dt.date, carry_rate: float) -> float:
    """Futures premium over the spot-like anchor: spot · carry · days to expiry / 365."""
    return spot * carry_rate * max((expiry - session).days, 0) / 365.0


# --- options -------------------------------------------------------------------------------

DAILY_OPTION_LETTERS = {0: "A", 1: "B", 2: "C", 3: "D"}


def daily_option_root(session: dt.date) -> str:
    """CME-style weekly family code of the option expiring on `session`."""
    week = (session.day - 1) // 7 + 1
    if session.weekday() == 4:
        return f"EW{week}"
    return f"E{week}{DAILY_OPTION_LETTERS[session.weekday()]}"


def option_symbol(session: dt.date, right: str, strike: float) -> str:
    root = daily_option_root(session)
    return f"{root}{MONTH_CODES[session.month - 1]}{session.year % 10} {right}{int(round(strike))}"


# --- instrument ids ------------------------------------------------------------------------

ID_SPACE = 40_000_000
ID_BASE = 1_000


def instrument_id(symbol: str) -> int:
    return ID_BASE + zlib.crc32(symbol.encode("ascii")) % ID_SPACE


def assign_instrument_ids(symbols: list[str], taken: set[int] | None = None) -> dict[str, int]:
    """Deterministic ids; a (very rare) CRC collision within a session (or with `taken`, the
    futures' ids when options are assigned) is resolved by probing upward in sorted-symbol
    order, which keeps the assignment a pure function of the symbol sets."""
    taken = set(taken or ())
    out: dict[str, int] = {}
    for symbol in sorted(set(symbols)):
        candidate = instrument_id(symbol)
        while candidate in taken:
            candidate = ID_BASE + (candidate - ID_BASE + 1) % ID_SPACE
        taken.add(candidate)
        out[symbol] = candidate
    return out

