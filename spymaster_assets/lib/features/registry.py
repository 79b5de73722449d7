"""One registry of every state-table feature: name, family, tier, unit, window, meaning.

Each feature-family module declares its `FEATURES` list with `feature(...)`; this module
collects them. Vectors, normalization and trader-facing names (later layers) all read
this registry, so a column is described exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tiers import TIERS

FAMILIES = ("context", "kinematics", "approach", "tape", "order_flow", "liquidity", "dealer", "physics")


@dataclass(frozen=True)
class FeatureDef:
    name: str
    family: str
    tier: str  # lowest tier that can supply it; below that tier the column is null
    unit: str
    window: str  # e.g. "60s", "5min", "-" for instantaneous
    meaning: str  # one line, in a trader's words
    level_relative: bool = False  # depends on the level (distance, defending side, toward-level sign)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: unknown family {self.family!r}")
        if self.tier not in TIERS:
            raise ValueError(f"{self.name}: unknown tier {self.tier!r}")


def feature(name, family, tier, unit, window, meaning, level_relative=False) -> FeatureDef:
    return FeatureDef(name, family, tier, unit, window, meaning, level_relative)


def all_features() -> list[FeatureDef]:
    """Every registered feature, in a stable order (family order, then declaration order)."""
    from . import collect

    defs = collect()
    names = [d.name for d in defs]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ValueError(f"features registered twice: {sorted(duplicated)}")
    return sorted(defs, key=lambda d: FAMILIES.index(d.family))
