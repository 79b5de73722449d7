"""Configuration of the synthetic ES market: the seed, the scale, and what scales with it.

A session is a pure function of (config, session date): every random draw comes from a
generator seeded by `SeedSequence([seed, date ordinal, stream name hash])`, so sessions can be
generated alone, in any order, in parallel. Streams are separated by purpose ("path",
"book:ESZ4", "options", ...) so that a scale-dependent stream (book update intensity) never
shifts the draws of a scale-independent one (the price path and the planted approaches):
the same seed gives the same path and the same ground truth at every scale.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zlib
from dataclasses import asdict, dataclass

import numpy as np

GENERATOR_NAME = "spymaster-synthetic"
GENERATOR_VERSION = "1.0.0"
SCALES = ("tiny", "small", "realistic")


@dataclass(frozen=True)
class ScaleProfile:
    """What grows with the scale. The price path, the trades that shape the bars, the levels
    and the planted approaches do not depend on it."""

    book_updates_per_s: float  # mean A/C/M depth updates per second for the lead outright (session average)
    trade_copies: float  # mean extra prints per path trade (same second, price and side: bars unchanged)
    option_quote_grid_s: int  # seconds between option fair-value evaluations (a quote record when it changes)
    option_extra_trades: float  # expected option trades beyond the planted customer flow, in net-zero buy/sell pairs


SCALE_PROFILES: dict[str, ScaleProfile] = {
    "tiny": ScaleProfile(book_updates_per_s=0.03, trade_copies=0.0, option_quote_grid_s=300, option_extra_trades=0.0),
    "small": ScaleProfile(book_updates_per_s=4.0, trade_copies=0.5, option_quote_grid_s=15, option_extra_trades=2_000.0),
    "realistic": ScaleProfile(book_updates_per_s=60.0, trade_copies=30.0, option_quote_grid_s=2, option_extra_trades=20_000.0),
}


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 7
    scale: str = "tiny"
    start_price: float = 6000.0  # level of the daily anchor walk (spot-like index, points)
    options: bool = True  # write the options venue (definitions, mbp-1, trades, statistics)

    def __post_init__(self) -> None:
        if self.scale not in SCALE_PROFILES:
            raise ValueError(f"unknown synthetic scale {self.scale!r}; expected one of {SCALES}")
        if not self.start_price > 100:
            raise ValueError(f"start_price must be a plausible ES level, got {self.start_price}")

    @property
    def profile(self) -> ScaleProfile:
        return SCALE_PROFILES[self.scale]

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        payload = json.dumps({"generator_version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def rng(self, session: dt.date | None, stream: str) -> np.random.Generator:
        """An independent generator per (seed, session, purpose)."""
        day = session.toordinal() if session is not None else 0
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, day, zlib.crc32(stream.encode())])))
