"""Pentaview streams (SPEC §10): per (30 s bar, level), five canonical streams in [−1, 1].

THE registry of stream weights lives here: every stream is `tanh(Σ wᵢ · oᵢ · fᵢ)` where fᵢ is
a state feature squashed to [−1, 1] (`tanh(clip(z, ±4) / 2)` of its robust z), oᵢ turns the
feature's own sign convention into the stream's orientation, and wᵢ its weight. Each stream
states what > 0 means; `tests/test_streams.py` pins every orientation on hand-made rows.

Orientation (chosen per stream, and never mixed inside one):
- σ_M momentum, σ_F flow, σ_P pressure: > 0 favours price moving UP (price frame).
- σ_B barrier, σ_R structure: > 0 favours price going THROUGH the level (level frame): the
  defending wall is thin, thinning, not refilling; σ_R adds a good setup to that. For an UP
  approach (dir_sign +1) through = up, for DOWN through = down: the price frame is dir_sign·σ_B.
- σ_D dealer: > 0 dealer hedging amplifies moves (dealers short gamma near the level), < 0
  dealers long gamma: hedging dampens moves and pins price. Not directional.
- σ_S setup: > 0 a clean, close, fresh, confluent approach (the quality that, in the seeds'
  research, distinguishes breaks from rejections). Not directional.

A stream whose inputs need a tier the session lacks is null, never 0 (σ_F and σ_B need the book,
T2; σ_D the options, T3), and so is a stream none of whose inputs has a reading (or has stats:
the first session of a lake has no earlier sessions to normalize with); a single reading missing
at a row of a sufficient tier (a 30-min wall ratio before 30 min of book exists, say) counts as
typical (squashed value 0).

Normalization: robust z stats (median, 1.4826·MAD) per input feature and time bucket, fitted on
trailing sessions strictly before the date; a bucket with fewer than MIN_STRATUM_SAMPLES values
uses the all-bucket stats. A signed feature whose 0 means "neutral" (flow, velocity, dealer
gamma) is scaled but not centred: centring on the history's median would make a flat market
look bearish after a rally, and turn dealers' long gamma into "short" merely because it is
below its usual size.

Derivatives: the EWM (α = EWM_ALPHA, causal by construction) of σ_P, σ_M, σ_F, σ_B per level in
time order, and its backward differences per bar: slope_t = s_t − s_{t−1}, curvature_t =
slope_t − slope_{t−1}, jerk_t = curvature_t − curvature_{t−1}. A value at t reads rows ≤ t only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .features import registry
from .features.context import TIME_BUCKETS
from .tiers import TIERS, tier_rank

STREAMS_SCHEMA_VERSION = "1"
NORMALIZATION_SESSIONS = 20  # trailing window of silver/state sessions, strictly before the date
MIN_STRATUM_SAMPLES = 30
MAD_TO_SIGMA = 1.4826
Z_CLIP = 4.0
SQUASH = 2.0  # f = tanh(z / SQUASH): z = ±2 → ±0.76
EWM_ALPHA = 0.3  # half-life ≈ 2 bars (1 min)
GLOBAL_STRATUM = "ALL"

# How a feature's sign maps onto its stream's orientation.
ORIENT_AS_IS = "as_is"  # already in the stream's frame (price-up flow, dealer gamma, ...)
ORIENT_TOWARD = "toward_to_up"  # toward-the-level feature; × dir_sign is the price frame
ORIENT_FLIP = "negated"  # the feature says the opposite of the stream (strong wall vs σ_B)


@dataclass(frozen=True)
class StreamInput:
    feature: str  # silver/state column
    weight: float
    orient: str
    centered: bool
    why: str


@dataclass(frozen=True)
class StreamDef:
    name: str
    title: str
    positive_means: str
    inputs: tuple[StreamInput, ...]

    @property
    def tier(self) -> str:
        """The lowest session tier that supplies every input."""
        tiers = {d.name: d.tier for d in registry.all_features()}
        return max((tiers[i.feature] for i in self.inputs), key=tier_rank)


MOMENTUM = StreamDef("sigma_m", "momentum", "price is moving up (velocity and acceleration, 3–10 min)", (
    StreamInput("velocity_3min", 0.45, ORIENT_TOWARD, False, "speed over 3 min"),
    StreamInput("velocity_5min", 0.35, ORIENT_TOWARD, False, "speed over 5 min"),
    StreamInput("velocity_10min", 0.25, ORIENT_TOWARD, False, "speed over 10 min"),
    StreamInput("acceleration_3min", 0.25, ORIENT_TOWARD, False, "the move speeding up"),
    StreamInput("acceleration_5min", 0.20, ORIENT_TOWARD, False, "the move speeding up, slower"),
))
FLOW = StreamDef("sigma_f", "flow", "aggressive buying and bid-side order flow dominate", (
    StreamInput("ofi_60s", 0.40, ORIENT_AS_IS, False, "order-flow imbalance, last minute"),
    StreamInput("ofi_300s", 0.25, ORIENT_AS_IS, False, "order-flow imbalance, last 5 min"),
    StreamInput("ofi_accel_60s", 0.20, ORIENT_AS_IS, False, "buying pressure building"),
    StreamInput("tape_imbalance_60s", 0.35, ORIENT_AS_IS, False, "buyers lifting offers"),
    StreamInput("ofi_near_level_60s", 0.30, ORIENT_TOWARD, False, "order flow at the level"),
))
BARRIER = StreamDef("sigma_b", "barrier", "the defending wall lets price through the level (thin, thinning, not refilling)", (
    StreamInput("wall_ratio_30min", 0.45, ORIENT_FLIP, True, "a wall above its usual size holds price"),
    StreamInput("defending_depth_chg_2min", 0.35, ORIENT_FLIP, False, "the wall building (+) or thinning (−)"),
    StreamInput("replenish_share_2min", 0.30, ORIENT_FLIP, True, "the wall refills what is taken"),
    StreamInput("vacuum_duration_s", 0.40, ORIENT_AS_IS, True, "a liquidity vacuum at the level"),
))
DEALER = StreamDef("sigma_d", "dealer", "dealer hedging amplifies moves (dealers short gamma); < 0 pins price", (
    StreamInput("gex_band_2", 0.60, ORIENT_FLIP, False, "dealer gamma near the level (− = short gamma)"),
    StreamInput("gex_band_1", 0.30, ORIENT_FLIP, False, "dealer gamma at the level's strike"),
    StreamInput("net_gex", 0.60, ORIENT_FLIP, False, "dealer gamma across all strikes"),
))
WEIGHTED_STREAMS = (MOMENTUM, FLOW, BARRIER, DEALER)


@dataclass(frozen=True)
class SetupComponent:
    name: str
    weight: float
    why: str


# σ_S = tanh(Σ w·(2c − 1)) over components c ∈ [0, 1] (approach speed is already in [−1, 1]).
SETUP_COMPONENTS = (
    SetupComponent("proximity", 0.50, "exp(−|d_atr| / 1.5): how close price is"),
    SetupComponent("approach_speed", 0.25, "squashed robust z of approach_velocity (toward the level)"),
    SetupComponent("freshness", 0.30, "1.0 for attempts 1–2, 0.6 for 3–4, 0.3 later"),
    SetupComponent("confluence", 0.20, "(levels within 5 pt + within 10 pt) / 12, at most 1"),
    SetupComponent("recency", 0.10, "exp(−time since the last touch / 900 s); 0 if never touched"),
    SetupComponent("cleanness", 0.15, "approach_bars / 10: consecutive 1-min closes nearer the level"),
)
SETUP = "sigma_s"
SETUP_TIER = "T0"
SETUP_NORMALIZED = ("approach_velocity",)
PROXIMITY_SCALE_ATR = 1.5
RECENCY_SCALE_S = 900.0

MERGED = {
    "sigma_p": ("pressure", "price is pushed up by momentum and flow", {"sigma_m": 0.55, "sigma_f": 0.45}),
    "sigma_r": ("structure", "the structure favours going through the level (thin barrier, good setup)",
                {"sigma_b": 0.70, "sigma_s": 0.30}),
}
COMPOSITES = {
    "alignment": "mean of the price-frame directional streams (σ_M, σ_F, dir_sign·σ_B): + = all agree on up",
    "divergence": "(σ_F − σ_M) / 2: + = flow more bullish than price momentum (buying absorbed), − = the reverse",
    "alignment_dealer": "alignment × (2 + σ_D) / 3: fuel (σ_D > 0) keeps it, a pin (σ_D < 0) shrinks it to a third",
}
DERIVED_STREAMS = ("sigma_p", "sigma_m", "sigma_f", "sigma_b")
DERIVATIVES = ("slope", "curvature", "jerk")
CANONICAL = ("sigma_m", "sigma_f", "sigma_b", "sigma_d", "sigma_s")
STREAM_COLUMNS = (*CANONICAL, *MERGED, *COMPOSITES)
KEY_COLUMNS = ("session", "t_ns", "level_kind", "level_price", "dir_sign", "time_bucket", "tier", "in_approach",
               "spot", "atr", "d_atr")


def stream_tiers() -> dict[str, str]:
    tiers = {s.name: s.tier for s in WEIGHTED_STREAMS} | {SETUP: SETUP_TIER}
    for name, (_, _, parts) in MERGED.items():
        tiers[name] = max((tiers[p] for p in parts), key=tier_rank)
    tiers["alignment"] = tiers["divergence"] = max((tiers[s] for s in ("sigma_m", "sigma_f", "sigma_b")), key=tier_rank)
    tiers["alignment_dealer"] = max((tiers["alignment"], tiers["sigma_d"]), key=tier_rank)
    return tiers


def normalized_features() -> list[str]:
    """Every state column the streams z-score, in registry order."""
    names = [i.feature for s in WEIGHTED_STREAMS for i in s.inputs] + list(SETUP_NORMALIZED)
    return list(dict.fromkeys(names))


def streams_schema() -> dict[str, pl.DataType]:
    keys = {"session": pl.Date, "t_ns": pl.Int64, "level_kind": pl.Utf8, "level_price": pl.Float64, "dir_sign": pl.Int8,
            "time_bucket": pl.Utf8, "tier": pl.Utf8, "in_approach": pl.Boolean, "spot": pl.Float64, "atr": pl.Float64,
            "d_atr": pl.Float64}
    values = {name: pl.Float64 for name in STREAM_COLUMNS}
    derivs = {f"{s}_{d}": pl.Float64 for s in DERIVED_STREAMS for d in ("smooth", *DERIVATIVES)}
    return keys | values | derivs


# --- normalization -----------------------------------------------------------------------

STREAM_STATS_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.Utf8,
    "stratum": pl.Utf8,  # a time bucket, or GLOBAL_STRATUM
    "median": pl.Float64,
    "scale": pl.Float64,
    "scale_source": pl.Utf8,
    "n": pl.Int64,
}


def fit_stream_stats(history: pl.DataFrame, features: list[str] | None = None) -> pl.DataFrame:
    """Median and 1.4826·MAD per (feature, time bucket) and per feature over all buckets.

    A bucket with fewer than MIN_STRATUM_SAMPLES values is not written: `apply` then uses the
    global row. Zero MAD falls back to the standard deviation, then to 1 (never divide by 0).
    """
    features = features or normalized_features()
    present = [f for f in features if f in history.columns]
    rows = []
    if history.height and present:
        long = (history.select("time_bucket", *present)
                .unpivot(index="time_bucket", on=present, variable_name="feature", value_name="x")
                .filter(pl.col("x").is_not_null() & pl.col("x").is_not_nan()))
        by_bucket = long.group_by("feature", "time_bucket")
        everywhere = long.with_columns(pl.lit(GLOBAL_STRATUM).alias("time_bucket")).group_by("feature", "time_bucket")
        for grouped in (by_bucket, everywhere):
            rows.append(grouped.agg(
                pl.col("x").median().alias("median"),
                ((pl.col("x") - pl.col("x").median()).abs().median() * MAD_TO_SIGMA).alias("mad"),
                pl.col("x").std(ddof=0).alias("std"),
                pl.len().cast(pl.Int64).alias("n"),
            ))
    fitted = (pl.concat(rows) if rows else pl.DataFrame(schema={"feature": pl.Utf8, "time_bucket": pl.Utf8, "median": pl.Float64,
                                                                "mad": pl.Float64, "std": pl.Float64, "n": pl.Int64}))
    fitted = (fitted.rename({"time_bucket": "stratum"})
              .filter((pl.col("stratum") == GLOBAL_STRATUM) | (pl.col("n") >= MIN_STRATUM_SAMPLES))
              .with_columns(
                  pl.when(pl.col("mad") > 0).then(pl.lit("mad")).when(pl.col("std") > 0).then(pl.lit("std"))
                  .otherwise(pl.lit("constant")).alias("scale_source"),
                  pl.when(pl.col("mad") > 0).then("mad").when(pl.col("std") > 0).then("std").otherwise(1.0).alias("scale")))
    no_data = [f for f in features if f not in set(fitted.filter(pl.col("stratum") == GLOBAL_STRATUM)["feature"].to_list())]
    placeholder = pl.DataFrame({"feature": no_data, "stratum": [GLOBAL_STRATUM] * len(no_data), "median": [0.0] * len(no_data),
                                "scale": [1.0] * len(no_data), "scale_source": ["no_data"] * len(no_data),
                                "n": [0] * len(no_data)}, schema=STREAM_STATS_SCHEMA)
    bucket_order = {name: i for i, (name, _, _) in enumerate(TIME_BUCKETS)} | {GLOBAL_STRATUM: len(TIME_BUCKETS)}
    order = {f: i for i, f in enumerate(features)}
    return (pl.concat([fitted.select(list(STREAM_STATS_SCHEMA)).cast(STREAM_STATS_SCHEMA), placeholder])
            .sort(pl.col("feature").replace_strict(order, default=len(order)),
                  pl.col("stratum").replace_strict(bucket_order, default=len(bucket_order))))


def squashed_features(state: pl.DataFrame, stats: pl.DataFrame) -> pl.DataFrame:
    """`f_<feature>` = tanh(clip(z, ±4) / 2) per normalized feature, z from the row's bucket stats
    (or the global ones); null where the reading is null."""
    features = [f for f in normalized_features() if f in state.columns]
    centered = {i.feature: i.centered for s in WEIGHTED_STREAMS for i in s.inputs} | {f: False for f in SETUP_NORMALIZED}
    glob = stats.filter(pl.col("stratum") == GLOBAL_STRATUM)
    lacking = sorted(set(features) - set(glob["feature"].to_list()))
    if lacking:
        raise ValueError(f"stream normalization stats lack the global rows of {lacking}")
    # One row per time bucket of the state, every feature's (median, scale): the bucket's own, else global.
    buckets = state.select(pl.col("time_bucket").unique())
    per_bucket = (buckets.join(glob.select("feature"), how="cross")
                  .join(stats.rename({"stratum": "time_bucket"}), on=["feature", "time_bucket"], how="left")
                  .join(glob.select("feature", pl.col("median").alias("g_m"), pl.col("scale").alias("g_s")), on="feature")
                  .with_columns(pl.col("median").fill_null(pl.col("g_m")), pl.col("scale").fill_null(pl.col("g_s"))))
    wide = per_bucket.pivot(on="feature", index="time_bucket", values=["median", "scale"], separator="|")
    frame = state.join(wide, on="time_bucket", how="left", maintain_order="left")
    # A feature never seen in the window (the first session of a lake, say) has no scale: its
    # squashed value is null rather than a z against made-up stats.
    unfitted = set(glob.filter(pl.col("scale_source") == "no_data")["feature"].to_list())
    squashed = [pl.lit(None, dtype=pl.Float64).alias(f"f_{f}") for f in normalized_features() if f in unfitted or f not in features]
    for feature in [f for f in features if f not in unfitted]:
        center = pl.col(f"median|{feature}") if centered[feature] else pl.lit(0.0)
        z = ((pl.col(feature) - center) / pl.col(f"scale|{feature}")).clip(-Z_CLIP, Z_CLIP)
        squashed.append((z / SQUASH).tanh().alias(f"f_{feature}"))
    return frame.with_columns(squashed).drop(*[c for c in wide.columns if c != "time_bucket"])


def _orient(inp: StreamInput) -> pl.Expr:
    f = pl.col(f"f_{inp.feature}").fill_null(0.0)
    if inp.orient == ORIENT_TOWARD:
        return f * pl.col("dir_sign").cast(pl.Float64)
    if inp.orient == ORIENT_FLIP:
        return -f
    if inp.orient == ORIENT_AS_IS:
        return f
    raise ValueError(f"{inp.feature}: unknown orientation {inp.orient!r}")


def _tier_present(stream_tier: str) -> pl.Expr:
    enough = [t for t in TIERS if tier_rank(t) >= tier_rank(stream_tier)]
    return pl.col("tier").is_in(enough)


def weighted_stream(stream: StreamDef) -> pl.Expr:
    """tanh(Σ w·o·f); null at an absent tier, and where no input has a reading at all."""
    total = pl.sum_horizontal([inp.weight * _orient(inp) for inp in stream.inputs])
    any_reading = pl.any_horizontal([pl.col(f"f_{inp.feature}").is_not_null() for inp in stream.inputs])
    return pl.when(_tier_present(stream.tier) & any_reading).then(total.tanh()).otherwise(None).alias(stream.name)


def setup_components() -> dict[str, pl.Expr]:
    """Each setup component in [0, 1] (approach speed in [−1, 1]), named as in SETUP_COMPONENTS."""
    stacking = (pl.col("level_stacking_5pt") + pl.col("level_stacking_10pt")) / 12.0
    return {
        "proximity": (-pl.col("d_atr").abs() / PROXIMITY_SCALE_ATR).exp(),
        "approach_speed": pl.col("f_approach_velocity").fill_null(0.0),
        "freshness": pl.when(pl.col("attempt_index") <= 2).then(1.0).when(pl.col("attempt_index") <= 4).then(0.6)
        .otherwise(0.3),
        "confluence": stacking.clip(0.0, 1.0),
        "recency": (-pl.col("time_since_last_touch_s") / RECENCY_SCALE_S).exp().fill_null(0.0),
        "cleanness": (pl.col("approach_bars") / 10.0).clip(0.0, 1.0),
    }


def setup_stream() -> pl.Expr:
    parts = setup_components()
    terms = [c.weight * (parts[c.name] if c.name == "approach_speed" else 2.0 * parts[c.name] - 1.0) for c in SETUP_COMPONENTS]
    # Proximity is the one component without a neutral default: no distance, no setup (null).
    known = _tier_present(SETUP_TIER) & parts["proximity"].is_not_null()
    return pl.when(known).then(pl.sum_horizontal(terms).tanh()).otherwise(None).alias(SETUP)


def merged_streams() -> list[pl.Expr]:
    out = []
    for name, (_, _, parts) in MERGED.items():
        total = None
        for part, weight in parts.items():
            term = weight * pl.col(part)  # null if a part is null: the merged stream needs both
            total = term if total is None else total + term
        out.append(total.tanh().alias(name))
    return out


def composite_streams() -> list[pl.Expr]:
    barrier_up = pl.col("dir_sign").cast(pl.Float64) * pl.col("sigma_b")
    alignment = (pl.col("sigma_m") + pl.col("sigma_f") + barrier_up) / 3.0
    return [
        alignment.alias("alignment"),
        ((pl.col("sigma_f") - pl.col("sigma_m")) / 2.0).alias("divergence"),
        (alignment * (2.0 + pl.col("sigma_d")) / 3.0).alias("alignment_dealer"),
    ]


def derivative_columns(streams: pl.DataFrame) -> pl.DataFrame:
    """EWM-smoothed σ_P, σ_M, σ_F, σ_B per level in time order and their backward differences."""
    ordered = streams.sort(["level_kind", "t_ns"])
    smooth = [pl.col(s).ewm_mean(alpha=EWM_ALPHA, adjust=False, ignore_nulls=True).over("level_kind").alias(f"{s}_smooth")
              for s in DERIVED_STREAMS]
    ordered = ordered.with_columns(smooth)
    for name, source in zip(DERIVATIVES, ("smooth", *DERIVATIVES[:-1])):
        ordered = ordered.with_columns(
            [pl.col(f"{s}_{source}").diff().over("level_kind").alias(f"{s}_{name}") for s in DERIVED_STREAMS])
    return ordered.sort(["t_ns", "level_kind"])


def compute_streams(state: pl.DataFrame, stats: pl.DataFrame) -> pl.DataFrame:
    """Every stream, composite and derivative per (30 s bar, level) of one session's state."""
    if state.height == 0:
        return pl.DataFrame(schema=streams_schema())
    missing = [c for c in ("t_ns", "level_kind", "dir_sign", "time_bucket", "tier") if c not in state.columns]
    if missing:
        raise ValueError(f"silver/state lacks the key columns {missing}")
    frame = squashed_features(state, stats)
    frame = frame.with_columns([weighted_stream(s) for s in WEIGHTED_STREAMS] + [setup_stream()])
    frame = frame.with_columns(merged_streams()).with_columns(composite_streams())
    frame = derivative_columns(frame)
    schema = streams_schema()
    return frame.select(list(schema)).cast(schema)


def stream_registry() -> list[dict]:
    """The registry as rows (for reports, the CLI and docs): stream, orientation, tier, inputs."""
    tiers = stream_tiers()
    rows = [{"stream": s.name, "title": s.title, "positive_means": s.positive_means, "tier": tiers[s.name],
             "inputs": [{"feature": i.feature, "weight": i.weight, "orient": i.orient, "centered": i.centered, "why": i.why}
                        for i in s.inputs]} for s in WEIGHTED_STREAMS]
    rows.append({"stream": SETUP, "title": "setup", "tier": SETUP_TIER,
                 "positive_means": "a clean, close, fresh, confluent approach to the level",
                 "inputs": [{"component": c.name, "weight": c.weight, "why": c.why} for c in SETUP_COMPONENTS]})
    rows += [{"stream": name, "title": title, "positive_means": means, "tier": tiers[name], "inputs": parts}
             for name, (title, means, parts) in MERGED.items()]
    rows += [{"stream": name, "positive_means": means, "tier": tiers[name]} for name, means in COMPOSITES.items()]
    return rows


def squash(z: float) -> float:
    """The scalar squashing (for hand checks): tanh(clip(z, ±4) / 2)."""
    return float(np.tanh(np.clip(z, -Z_CLIP, Z_CLIP) / SQUASH))
