"""Episode vectors: one versioned layout for "what the setup looked like when price touched".

An episode is an anchor (silver events) described by the state of its level at the touch
itself (silver/anchor_state: every feature evaluated at the anchor's time, from data at or
before the anchoring print — never after it, because the outcome can unfold within seconds of
the touch), and by the level's 30 s grid rows up to the last one at or before the touch for
its micro-history and trajectory. (Reading the grid row alone left the features up to 30 s
old: on the planted market that is a quarter of the 2-minute flow window and the last
stretch of the approach.) A query without anchor rows ("what if price touched now" at a grid
time) reads the grid row. The layout is a registry of dimensions (name, section,
tier, normalization, how a legitimately-missing value is encoded); a session of tier T
supplies the dimensions of tiers ≤ T and the others are absent (null in storage, dropped
from that feature set, never zero-filled).

Sections (SPEC §7): context, kinematics, order flow, liquidity, dealer, micro-history (the
key series at the last 5 grid rows) and trajectory (orthonormal DCT-II, first 8
coefficients, of the key series over the last 40 grid rows = 20 minutes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.fft import dct

from .features import registry
from .features.context import time_bucket_expr
from .tiers import tier_rank

VECTOR_SCHEMA_VERSION = "4"  # 2: touch history before the anchor; approach_sign, d_atr_toward, bar_reach_toward_atr
# 3: features read at the anchor's own time (silver/anchor_state); flow_gex_band_2, tape_imbalance_toward_120s
# 4: displacement_5min_toward_atr (the last 5 min of the approach, read at the touch)
SECTIONS = ("context", "kinematics", "order_flow", "liquidity", "dealer", "micro_history", "trajectory")
MICRO_ROWS = 5
TRAJECTORY_ROWS = 40
TRAJECTORY_COEFFICIENTS = 8
NS_PER_S = 1_000_000_000
MINUTES_NS = 60 * NS_PER_S
GRID_NS = 30 * NS_PER_S

# The four series whose recent shape describes an approach (tier of each comes from the registry).
KEY_SERIES = ("d_atr", "tape_imbalance_60s", "ofi_60s", "defending_depth_chg_1min")

# Feature family → vector section. Physics proxies are liquidity-scaled order flow: they sit
# with liquidity because they need the book.
FAMILY_SECTION = {
    "context": "context",
    "kinematics": "kinematics",
    "approach": "kinematics",
    "tape": "order_flow",
    "order_flow": "order_flow",
    "liquidity": "liquidity",
    "physics": "liquidity",
    "dealer": "dealer",
}

# State columns that are not part of the vector: raw prices (not comparable across years),
# the ratio replaced by its bounded twin, and the boolean duplicated by replenish_latency_s.
EXCLUDED = frozenset({"spot", "d", "abs_d_atr", "replenish_ratio_2min", "replenishing_now"})

# A null in a supplied tier means "no such event", not "unknown": each feature that can be
# null declares (registry `missing`) the value that says so in its own units. Nulls of any
# other feature are gaps in the data and stay NaN, for the NO_NAN_IN_VECTORS check to flag.
MISSING_MEANS: dict[str, float] = registry.missing_means()

# Durations that run on between the anchor's grid row and the anchor itself: the episode reads
# them at the anchor (row value + elapsed time, in the feature's unit), so a touch 20 s after
# the grid time is described at its own time. Exact because no touch of the same level can
# fall within one grid step (StateConfig enforces debounce ≥ grid step).
AGES_WITH_CLOCK = {"time_since_last_touch_s": NS_PER_S, "minutes_since_open": MINUTES_NS}

# Heavy-tailed positive durations are compared on a log scale.
LOG1P = frozenset({"time_since_last_touch_s", "vacuum_duration_s", "replenish_latency_s", "depletion_age_s"})


@dataclass(frozen=True)
class VectorDim:
    name: str  # column name in gold_episodes
    section: str
    tier: str
    source: str  # state column it is computed from
    normalization: str  # "robust_z" (all today; the field makes a future exception explicit)
    meaning: str
    driver: str  # trader-language name used by attribution (several dimensions may share one)


def _feature_dims() -> list[VectorDim]:
    dims = []
    for f in registry.all_features():
        if f.name in EXCLUDED:
            continue
        meaning = f.meaning + (" (log1p)" if f.name in LOG1P else "")
        dims.append(VectorDim(f.name, FAMILY_SECTION[f.family], f.tier, f.name, "robust_z", meaning,
                              registry.driver_name(f.name)))
    return dims


def _history_dims() -> list[VectorDim]:
    tiers = {f.name: f.tier for f in registry.all_features()}
    dims = []
    for series in KEY_SERIES:
        for lag in range(MICRO_ROWS):
            dims.append(VectorDim(f"micro_{series}_lag{lag}", "micro_history", tiers[series], series, "robust_z",
                                  f"{series} {lag * 30} s before the touch's grid time",
                                  f"{registry.driver_name(series)} (last 2 min)"))
    for series in KEY_SERIES:
        for k in range(TRAJECTORY_COEFFICIENTS):
            dims.append(VectorDim(f"traj_{series}_c{k}", "trajectory", tiers[series], series, "robust_z",
                                  f"DCT-II coefficient {k} of {series} over the last 20 min",
                                  f"{registry.driver_name(series)} (20-min path)"))
    return dims


def vector_layout() -> list[VectorDim]:
    """Every dimension, in stored order: features by section, then micro-history, then trajectory."""
    features = sorted(_feature_dims(), key=lambda d: SECTIONS.index(d.section))
    return features + _history_dims()


def feature_set(tier: str) -> list[VectorDim]:
    """The dimensions a session of `tier` supplies (absent tiers' sections are dropped)."""
    return [d for d in vector_layout() if tier_rank(d.tier) <= tier_rank(tier)]


def layout_frame() -> pl.DataFrame:
    return pl.DataFrame([d.__dict__ for d in vector_layout()]).with_row_index("index")


METADATA_SCHEMA: dict[str, pl.DataType] = {
    "episode_id": pl.Utf8,
    "session": pl.Date,
    "ts_ns": pl.Int64,
    "state_t_ns": pl.Int64,
    "level_kind": pl.Utf8,
    "level_price": pl.Float64,
    "direction": pl.Utf8,
    "dir_sign": pl.Int8,
    "time_bucket": pl.Utf8,
    "tier": pl.Utf8,
    "anchor_atr": pl.Float64,
    "label": pl.Utf8,
    "label_2m": pl.Utf8,
    "label_4m": pl.Utf8,
    "label_8m": pl.Utf8,
    "ambiguous": pl.Boolean,
    "time_to_barrier_s": pl.Float64,
    "mfe_atr": pl.Float64,
    "mae_atr": pl.Float64,
    "label_end_ns": pl.Int64,
}
LABEL_COLUMNS = ("label", "label_2m", "label_4m", "label_8m", "ambiguous", "time_to_barrier_s", "mfe_atr", "mae_atr",
                 "label_end_ns")


def episode_schema() -> dict[str, pl.DataType]:
    """Metadata, then every dimension (attempt_index is both: it is a context dimension)."""
    return METADATA_SCHEMA | {d.name: pl.Float64 for d in vector_layout()}


def _encoded(series: pl.Series, column: str) -> np.ndarray:
    """Values of a state column as the vector sees them: declared nulls encoded, durations on log scale."""
    series = series.cast(pl.Float64)
    if column in MISSING_MEANS:
        series = series.fill_null(MISSING_MEANS[column])
    values = series.to_numpy().astype(np.float64)
    return np.log1p(np.maximum(values, 0.0)) if column in LOG1P else values


def _at_anchor(state: pl.DataFrame, column: str, rows: np.ndarray, elapsed_ns: np.ndarray) -> pl.Series:
    """A state column at each anchor: its grid row's value, aged to the anchor for running durations."""
    values = state[column].cast(pl.Float64).gather(rows)
    if column in AGES_WITH_CLOCK:
        values = values + pl.Series(elapsed_ns / AGES_WITH_CLOCK[column])
    return values


ANCHOR_COLUMNS = ("event_id", "session", "ts_ns", "level_kind", "level_price", "direction", "dir_sign", "atr")


def describe_setups(state: pl.DataFrame, anchors: pl.DataFrame, rth_open_ns: int,
                    anchor_state: pl.DataFrame | None = None) -> pl.DataFrame:
    """The raw vector of each anchor (silver event, or a query "what if price touched now").

    With `anchor_state` (event_id + state columns at each anchor's own time, `state.anchor_state`)
    the feature dimensions are read there; an anchor missing from it is an error (it would be
    described by an older row without saying so). The micro-history and trajectory always come
    from the grid rows.

    The anchor's row is the state of its level at the last grid time ≤ its time; histories
    gather that level's earlier grid rows. A level younger than the window (e.g. OR levels at
    09:45) has its first row repeated backwards — edge padding, so a short history reads as
    "flat before it existed" rather than as zeros. An anchor with no state row at or before it
    cannot be described and is dropped (callers report how many).

    The context is the anchor's own: the row's touch history counts touches strictly before
    its grid time, so an anchor stamped on the grid (every T0 anchor) is not its own history
    and attempt_index equals the anchor's; running durations are aged to the anchor's time
    (AGES_WITH_CLOCK). approach_sign and d_atr_toward take the anchor's dir_sign (a query
    passes the row's, so it reads the state exactly); the row's own dir_sign — the anchors'
    side rule — equals it at T0 and almost always at T1+.
    """
    schema = {k: v for k, v in episode_schema().items() if k not in LABEL_COLUMNS} | {"episode_id": pl.Utf8}
    if anchors.height == 0 or state.height == 0:
        return pl.DataFrame(schema=schema)
    tier = state["tier"][0]
    state = state.sort(["level_kind", "t_ns"])
    kinds = state["level_kind"].to_numpy()
    t_ns = state["t_ns"].to_numpy()
    # Row ranges of each level's block in the sorted table.
    block_start = {k: int(i) for k, i in zip(*np.unique(kinds, return_index=True))}
    block_end = {k: block_start[k] + int(n) for k, n in zip(*np.unique(kinds, return_counts=True))}

    ev = anchors.select(ANCHOR_COLUMNS).sort("ts_ns", "level_kind")
    rows = np.full(ev.height, -1, dtype=np.int64)
    for kind in ev["level_kind"].unique().to_list():  # ≤ 6 levels
        if kind not in block_start:
            continue
        mask = (ev["level_kind"] == kind).to_numpy()
        lo, hi = block_start[kind], block_end[kind]
        pos = np.searchsorted(t_ns[lo:hi], ev["ts_ns"].to_numpy()[mask], side="right") - 1
        rows[mask] = np.where(pos >= 0, lo + pos, -1)
    keep = rows >= 0
    ev, rows = ev.filter(pl.Series(keep)), rows[keep]
    if ev.height == 0:
        return pl.DataFrame(schema=schema)
    starts = np.array([block_start[k] for k in ev["level_kind"].to_list()], dtype=np.int64)
    elapsed_ns = ev["ts_ns"].to_numpy() - t_ns[rows]

    supplied = {d.name for d in feature_set(tier)}
    if anchor_state is not None:
        at_anchor = ev.select("event_id").join(anchor_state, on="event_id", how="left", maintain_order="left")
        absent = ev["event_id"].filter(~ev["event_id"].is_in(anchor_state["event_id"].implode())).to_list()
        if absent:
            raise ValueError(f"{len(absent)} anchor(s) without a row in anchor_state, e.g. {absent[0]}")

        def value(column: str) -> pl.Series:
            return at_anchor[column].cast(pl.Float64)
    else:
        def value(column: str) -> pl.Series:
            return _at_anchor(state, column, rows, elapsed_ns)
    vector: dict[str, np.ndarray] = {}
    for d in vector_layout():
        if d.name not in supplied:
            vector[d.name] = np.full(ev.height, np.nan)
        elif d.section not in ("micro_history", "trajectory"):
            vector[d.name] = _encoded(value(d.source), d.source)
    # The anchor's own direction signs the distance: the label is measured in it. At T0 it is the
    # row's dir_sign anyway; at T1+ the row can precede the touch by up to 30 s, in which price
    # may have crossed the level and come back from the other side.
    anchor_sign = ev["dir_sign"].cast(pl.Float64).to_numpy()
    if "approach_sign" in supplied:
        vector["approach_sign"] = anchor_sign
        vector["d_atr_toward"] = _encoded(value("d_atr"), "d_atr") * anchor_sign
    window = _window_rows(rows, starts, TRAJECTORY_ROWS)  # (n, 40) row indices, oldest first
    for series in KEY_SERIES:
        if f"micro_{series}_lag0" not in supplied:
            continue
        history = _forward_filled(state, series)[window]
        for lag in range(MICRO_ROWS):
            vector[f"micro_{series}_lag{lag}"] = history[:, -1 - lag]
        coefficients = dct(history, type=2, norm="ortho", axis=1)[:, :TRAJECTORY_COEFFICIENTS]
        for k in range(TRAJECTORY_COEFFICIENTS):
            vector[f"traj_{series}_c{k}"] = coefficients[:, k]

    minutes = (pl.col("ts_ns") - rth_open_ns) / MINUTES_NS
    meta = ev.rename({"event_id": "episode_id", "atr": "anchor_atr"}).with_columns(
        pl.Series("state_t_ns", t_ns[rows]),
        time_bucket_expr(minutes).alias("time_bucket"),
        pl.lit(tier).alias("tier"),
    )
    vectors = pl.DataFrame(vector).with_columns(pl.all().fill_nan(None))
    return pl.concat([meta, vectors], how="horizontal").select(list(schema)).cast(schema)


def build_episodes(state: pl.DataFrame, events: pl.DataFrame, labels: pl.DataFrame, rth_open_ns: int,
                   primary_horizon_min: int = 4, anchor_state: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per silver anchor: metadata, the raw vector of its tier (read at the anchor
    itself when `anchor_state` is given), and its labels."""
    h = primary_horizon_min
    outcomes = labels.select(
        pl.col("event_id").alias("episode_id"),
        "label", "label_2m", "label_4m", "label_8m",
        pl.col(f"ambiguous_{h}m").alias("ambiguous"),
        pl.col(f"time_to_barrier_s_{h}m").alias("time_to_barrier_s"),
        pl.col(f"mfe_atr_{h}m").alias("mfe_atr"),
        pl.col(f"mae_atr_{h}m").alias("mae_atr"),
        "label_end_ns",
    )
    setups = describe_setups(state, events, rth_open_ns, anchor_state)
    schema = episode_schema()
    return setups.join(outcomes, on="episode_id", how="left", maintain_order="left").select(list(schema)).cast(schema)


def _forward_filled(state: pl.DataFrame, column: str) -> np.ndarray:
    """The series within each level's block, gaps carried forward (then the first value back); a
    block that never has a value gets the declared no-event value, or stays NaN (a data gap)."""
    filled = state.select(
        pl.col(column).cast(pl.Float64).fill_nan(None).forward_fill().backward_fill().over("level_kind")
    ).to_series()
    if column in MISSING_MEANS:
        filled = filled.fill_null(MISSING_MEANS[column])
    return filled.to_numpy().astype(np.float64)


def _window_rows(rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Row indices of the `length` grid rows ending at each anchor row, clipped to the level's block."""
    offsets = np.arange(-length + 1, 1)
    return np.maximum(rows[:, None] + offsets[None, :], starts[:, None])


def vector_matrix(episodes: pl.DataFrame, dims: list[VectorDim]) -> np.ndarray:
    """The episodes' raw vectors for one feature set, float64 (n × len(dims))."""
    return episodes.select([d.name for d in dims]).to_numpy().astype(np.float64)


def missing_vector_values(episodes: pl.DataFrame) -> dict[str, int]:
    """Null/NaN counts in the dimensions each episode's own tier supplies (empty dict = clean)."""
    problems: dict[str, int] = {}
    for tier, group in episodes.group_by("tier"):
        for d in feature_set(tier[0]):
            bad = int(group[d.name].is_null().sum() + group[d.name].is_nan().sum())
            if bad:
                problems[f"{tier[0]}:{d.name}"] = problems.get(f"{tier[0]}:{d.name}", 0) + bad
    return problems
