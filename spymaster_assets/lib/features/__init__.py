"""Silver feature computation: pure, causal functions of events up to each grid time."""

import importlib

# Family modules that declare FEATURES; each is added as it is written.
FAMILY_MODULES: tuple[str, ...] = ("context", "levels", "kinematics", "tape", "order_flow", "liquidity", "dealer")


def collect():
    defs = []
    for module in FAMILY_MODULES:
        defs.extend(importlib.import_module(f"{__name__}.{module}").FEATURES)
    return defs
