"""One registry of every state-table feature: name, family, tier, unit, window, meaning, and
when (if ever) its value is legitimately null.

Each feature-family module declares its `FEATURES` list with `feature(...)`; this module
collects them. Vectors, normalization and trader-facing names (later layers) all read
this registry, so a column is described exactly once.

Nulls. A feature of a tier the session has is null only for one of two reasons:
- *no such event* — e.g. no aggressive volume in the window, so no imbalance; no earlier
  touch, so no "time since". That is information, not a gap: the feature declares
  `missing=Missing(when, means)`, and the episode vector encodes the null as `means`, the
  value that says so in the feature's own units (0 imbalance, a long time ago, …);
- *not enough data* — a buffer shorter than the window, an unknown book or ATR. That is bad
  input: it is not declared, stays null, and the blocking NO_NAN_IN_VECTORS check flags the
  partition instead of inventing a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tiers import TIERS

FAMILIES = ("context", "kinematics", "approach", "tape", "order_flow", "liquidity", "dealer", "physics")


@dataclass(frozen=True)
class Missing:
    """Why a feature may be null although its tier is present, and what that null means."""

    when: str  # the no-such-event condition, in a trader's words
    means: float | None  # the encoding in the episode vector (None only for features kept out of it)


@dataclass(frozen=True)
class FeatureDef:
    name: str
    family: str
    tier: str  # lowest tier that can supply it; below that tier the column is null
    unit: str
    window: str  # e.g. "60s", "5min", "-" for instantaneous
    meaning: str  # one line, in a trader's words
    level_relative: bool = False  # depends on the level (distance, defending side, toward-level sign)
    missing: Missing | None = None  # None: never null while its tier is present and the data cover the window

    @property
    def nullable(self) -> bool:
        return self.missing is not None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: unknown family {self.family!r}")
        if self.tier not in TIERS:
            raise ValueError(f"{self.name}: unknown tier {self.tier!r}")


def feature(name, family, tier, unit, window, meaning, level_relative=False, missing: Missing | None = None) -> FeatureDef:
    return FeatureDef(name, family, tier, unit, window, meaning, level_relative, missing)


def missing_means() -> dict[str, float]:
    """The vector encoding of every feature that declares a legitimate null (and has one)."""
    return {f.name: f.missing.means for f in all_features() if f.missing is not None and f.missing.means is not None}


def all_features() -> list[FeatureDef]:
    """Every registered feature, in a stable order (family order, then declaration order)."""
    from . import collect

    defs = collect()
    names = [d.name for d in defs]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ValueError(f"features registered twice: {sorted(duplicated)}")
    return sorted(defs, key=lambda d: FAMILIES.index(d.family))


# Trader-language driver names (SPEC §9 attribution): several features of one idea share a
# name, so attribution speaks of "the wall" rather than of five depth windows. First match wins.
DRIVER_NAMES_EXACT = {"spot": "price", "d": "distance to the level", "atr": "volatility regime"}
DRIVER_NAMES: tuple[tuple[str, str], ...] = (
    ("minutes_since_open", "time of day"),
    ("d_atr_toward", "how far through the level"),
    ("approach_sign", "side of the approach"),
    ("bar_reach_toward", "last bar's reach through the level"),
    ("d_atr", "distance to the level"),
    ("abs_d_atr", "distance to the level"),
    ("attempt_index", "attempt number"),
    ("touches_today", "attempt number"),
    ("time_since_last_touch", "time since the last test"),
    ("level_stacking", "confluence of levels"),
    ("dist_to_other_levels", "confluence of levels"),
    ("velocity", "speed into the level"),
    ("approach", "speed into the level"),
    ("displacement", "speed into the level"),
    ("acceleration", "acceleration into the level"),
    ("jerk", "acceleration into the level"),
    ("sweep", "aggressive sweeps"),
    ("tape_near", "aggression at the level"),
    ("trade_velocity", "tape momentum"),
    ("buy_vol", "aggressive buying"),
    ("sell_vol", "aggressive selling"),
    ("tape_imbalance", "buyer/seller imbalance"),
    ("ofi_near_level", "order flow at the level"),
    ("ofi_accel", "order flow accelerating"),
    ("ofi", "order-flow imbalance"),
    ("defending_depth_chg", "wall thinning or building"),
    ("defending_depth", "defending wall size"),
    ("opposing_depth", "support behind price"),
    ("replenish", "wall replenishment"),
    ("wall_ratio", "wall vs usual depth"),
    ("vacuum", "liquidity vacuum"),
    ("depletion", "liquidity vacuum"),
    ("flow_gex", "dealer gamma from today's options flow"),
    ("gex_asymmetry", "dealer gamma skew around the level"),
    ("net_gex", "dealer gamma regime"),
    ("gex", "dealer gamma at the level"),
    ("tide_calls", "call premium flow"),
    ("tide_puts", "put premium flow"),
    ("physics_force", "flow pushing into the level"),
    ("physics_mass", "defending wall size"),
    ("physics_pressure", "flow per contract defending"),
)


def driver_name(feature_name: str) -> str:
    """The trader-facing name of a feature (or of a vector dimension's source feature)."""
    if feature_name in DRIVER_NAMES_EXACT:
        return DRIVER_NAMES_EXACT[feature_name]
    for prefix, name in DRIVER_NAMES:
        if feature_name.startswith(prefix):
            return name
    raise KeyError(f"no driver name for feature {feature_name!r}; add one to DRIVER_NAMES")
