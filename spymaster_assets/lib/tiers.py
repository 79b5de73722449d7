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


# Futures schemas the pipeline does not read, and the schema whose place each takes when a
# session has it instead: a book or quote feed where the MBP-10 book should be, other bar
# sizes where 1-minute bars should be. Such a file covering a session means the user meant
# that tier; the pipeline must say so rather than quietly run a tier lower.
FUTURES_STAND_INS = {
    "mbo": "mbp-10", "mbp-1": "mbp-10", "tbbo": "mbp-10", "bbo-1s": "mbp-10", "bbo-1m": "mbp-10",
    "cmbp-1": "mbp-10", "cbbo-1s": "mbp-10", "cbbo-1m": "mbp-10", "tcbbo": "mbp-10",
    "ohlcv-1s": "ohlcv-1m", "ohlcv-1h": "ohlcv-1m", "ohlcv-1d": "ohlcv-1m", "ohlcv-eod": "ohlcv-1m",
}


def stand_in_role(venue: str | None, schema: str | None) -> tuple[str, str] | None:
    """The (venue, schema) an unusable file would have supplied, or None when it could not raise the tier.

    A file of a schema the pipeline reads stands for itself; a futures schema it does not read
    stands for the one it replaces (FUTURES_STAND_INS); an unknown venue is taken as futures
    (the venue every tier needs), so a file whose venue cannot be told still counts.
    """
    if schema is None:
        return None
    venue = venue or "futures"
    if venue == "futures":
        schema = FUTURES_STAND_INS.get(schema, schema)
    return (venue, schema)


# (venue, schema) pairs the pipeline reads (sources.base FUTURES_SCHEMAS / OPTIONS_SCHEMAS).
PIPELINE_SCHEMAS = frozenset(
    {("futures", s) for s in ("trades", "mbp-10", "ohlcv-1m", "definition")}
    | {("options", s) for s in ("trades", "mbp-1", "statistics", "definition")}
)


def costs_data(available: set[tuple[str, str]], venue: str | None, schema: str | None) -> bool:
    """Whether an unusable file covering the session takes data from it.

    It does when it claims a schema the pipeline reads (a cut trades file loses trades even if
    another file of the day still gives some), or when it stands in for one the session lacks
    (an MBO file and no MBP-10). An extra feed beside the schema it would replace (an MBO file
    next to a good MBP-10 file) or one nothing reads (status, an options book) costs nothing.
    """
    role = stand_in_role(venue, schema)
    if role is None or role not in PIPELINE_SCHEMAS:
        return False
    return (venue or "futures", schema) in PIPELINE_SCHEMAS or role not in available


def tier_shortfall(available: set[tuple[str, str]], stand_ins: set[tuple[str, str] | None]) -> tuple[str, str]:
    """(tier reached, tier expected): what the usable files give, and what they would give if
    every unusable file covering the session had been the schema it stands for."""
    reached = session_tier(available)
    expected = session_tier(available | {role for role in stand_ins if role is not None})
    return reached, expected if tier_rank(expected) > tier_rank(reached) else reached
