"""First-crossing triple-barrier labels (SPEC §6). Forward-looking by design: never features.

Barriers are measured from the level: θ = k · atr at the anchor (or a fixed number of
points). For UP, BREAK when price reaches L + θ before L − θ within the horizon, REJECT
when L − θ comes first, CHOP when neither; DOWN is mirrored. With trades (T1+) the first
print beyond a barrier decides. With 1-min bars (T0) a bar that reaches both barriers
cannot be ordered: the label is CHOP with `ambiguous = True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

NS_PER_S = 1_000_000_000
BREAK, REJECT, CHOP = "BREAK", "REJECT", "CHOP"


@dataclass(frozen=True)
class LabelConfig:
    horizons_min: tuple[int, ...] = (2, 4, 8)
    primary_horizon_min: int = 4
    threshold_atr: float = 1.0
    threshold_points: float | None = None  # fixed-points mode (e.g. 12.5) when set

    def threshold(self, atr: float) -> float:
        return self.threshold_points if self.threshold_points is not None else self.threshold_atr * atr


@dataclass(frozen=True)
class Barrier:
    label: str
    ambiguous: bool
    time_to_barrier_s: float | None
    end_ns: int
    mfe_atr: float | None
    mae_atr: float | None


def label_from_path(
    anchor_ns: int,
    level: float,
    dir_sign: int,
    atr: float,
    horizon_ns: int,
    path_ts: np.ndarray,
    path_low: np.ndarray,
    path_high: np.ndarray,
    path_end: np.ndarray | None,
    config: LabelConfig,
) -> Barrier:
    """Label one anchor from the price path strictly after it.

    Trades (path_end None): prints with anchor < ts ≤ anchor + horizon; low = high = price.
    Bars (path_ts = bar start, path_end = bar end): bars starting in [anchor, anchor + horizon),
    because a T0 anchor is stamped at the close of the bar that touched.
    """
    theta = config.threshold(atr)
    bars = path_end is not None
    start = np.searchsorted(path_ts, anchor_ns, side="left" if bars else "right")
    stop = np.searchsorted(path_ts, anchor_ns + horizon_ns, side="left" if bars else "right")
    low, high = path_low[start:stop], path_high[start:stop]
    ends = path_ts[start:stop] if path_end is None else path_end[start:stop]
    horizon_end = anchor_ns + horizon_ns
    # Toward-level excursions: for UP, favourable = above the level.
    favourable = (high - level) if dir_sign > 0 else (level - low)
    adverse = (level - low) if dir_sign > 0 else (high - level)
    hit_break = favourable >= theta
    hit_reject = adverse >= theta
    first_break = int(np.argmax(hit_break)) if hit_break.any() else None
    first_reject = int(np.argmax(hit_reject)) if hit_reject.any() else None
    ambiguous = False
    if first_break is None and first_reject is None:
        label, idx = CHOP, None
    elif first_reject is None or (first_break is not None and first_break < first_reject):
        label, idx = BREAK, first_break
    elif first_break is None or first_reject < first_break:
        label, idx = REJECT, first_reject
    else:  # the same bar reached both barriers: the order inside it is unknown
        label, idx, ambiguous = CHOP, first_break, True
    decided_ns = int(ends[idx]) if idx is not None else horizon_end
    scope = slice(0, idx + 1) if idx is not None else slice(None)
    scale = atr if atr and atr > 0 else np.nan
    mfe = float(max(favourable[scope].max(initial=0.0), 0.0) / scale) if len(favourable) else None
    mae = float(max(adverse[scope].max(initial=0.0), 0.0) / scale) if len(adverse) else None
    return Barrier(
        label=label,
        ambiguous=ambiguous,
        time_to_barrier_s=None if label == CHOP else (decided_ns - anchor_ns) / NS_PER_S,
        end_ns=min(decided_ns, horizon_end) if not ambiguous else horizon_end,
        mfe_atr=None if mfe is None or np.isnan(mfe) else mfe,
        mae_atr=None if mae is None or np.isnan(mae) else mae,
    )


def label_events(
    events: pl.DataFrame,
    path_ts: np.ndarray,
    path_low: np.ndarray,
    path_high: np.ndarray,
    path_end: np.ndarray | None = None,
    config: LabelConfig = LabelConfig(),
) -> pl.DataFrame:
    """One row per event with label/ambiguous/time-to-barrier/excursions per horizon and the
    label end time (for purging) of the longest horizon."""
    rows = []
    for event in events.iter_rows(named=True):  # one per anchor (tens a day), never per record
        row = {"event_id": event["event_id"], "threshold_pt": config.threshold(event["atr"] or 0.0)}
        end_ns = event["ts_ns"]
        for minutes in config.horizons_min:
            barrier = label_from_path(
                event["ts_ns"], event["level_price"], event["dir_sign"], event["atr"] or 0.0,
                minutes * 60 * NS_PER_S, path_ts, path_low, path_high, path_end, config,
            )
            row |= {
                f"label_{minutes}m": barrier.label,
                f"ambiguous_{minutes}m": barrier.ambiguous,
                f"time_to_barrier_s_{minutes}m": barrier.time_to_barrier_s,
                f"mfe_atr_{minutes}m": barrier.mfe_atr,
                f"mae_atr_{minutes}m": barrier.mae_atr,
            }
            end_ns = max(end_ns, barrier.end_ns)
        row["label"] = row[f"label_{config.primary_horizon_min}m"]
        row["label_end_ns"] = end_ns
        rows.append(row)
    return pl.DataFrame(rows, schema=label_schema(config))


def label_schema(config: LabelConfig = LabelConfig()) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"event_id": pl.Utf8, "threshold_pt": pl.Float64}
    for minutes in config.horizons_min:
        schema |= {
            f"label_{minutes}m": pl.Utf8,
            f"ambiguous_{minutes}m": pl.Boolean,
            f"time_to_barrier_s_{minutes}m": pl.Float64,
            f"mfe_atr_{minutes}m": pl.Float64,
            f"mae_atr_{minutes}m": pl.Float64,
        }
    return schema | {"label": pl.Utf8, "label_end_ns": pl.Int64}
