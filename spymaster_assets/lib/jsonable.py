"""Plain-JSON values from what reports and answers hold (dates, numpy scalars, NaN)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np


def jsonable(value):
    """Dates as ISO strings, numpy scalars as Python numbers, NaN/inf as null (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value
