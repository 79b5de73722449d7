"""Data tiers (SPEC §3): what a session's schemas make available.

T0 bars (ohlcv-1m) < T1 trades < T2 book (mbp-10) < T3 options. Each tier needs the one
below it, except that trades alone already give bars (they are rebuilt from the tape).
A feature its tier cannot supply is null, never 0.
"""

from __future__ import annotations

TIERS = ("T0", "T1", "T2", "T3")
NO_TIER = "NONE"
OPTIONS_NEEDED = frozenset({("options", "definition"), ("options", "trades"), ("options", "statistics")})


def session_tier(available: set[tuple[str, str]]) -> str:
    has_trades = ("futures", "trades") in available
    if not has_trades:
        return "T0" if ("futures", "ohlcv-1m") in available else NO_TIER
    if ("futures", "mbp-10") not in available:
        return "T1"
    return "T3" if OPTIONS_NEEDED <= available else "T2"


def tier_rank(tier: str) -> int:
    return -1 if tier == NO_TIER else int(tier[1:])
