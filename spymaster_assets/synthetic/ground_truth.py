"""The planted break model, the ground-truth sidecar, and the simulator's own (oracle) AUC.

At every *planned* approach the simulator measures five precursors at the touch, from data it
has already written (nothing after the touch), standardizes them with fixed constants, and
draws the outcome:

    logit p_break = β0 + Σ_k β_k · z_k + ε,      ε ~ N(0, NOISE_SD²)
    outcome = CHOP with probability CHOP_PROBABILITY (independent of the precursors),
              otherwise BREAK with probability p_break, else REJECT.

| k | raw precursor (column) | how it is observable in the files | z_k | β_k |
|---|---|---|---|---|
| wall | `wall_lots`: resting size planted at the level on the defending side (asks for UP, bids for DOWN) from the start of the approach | MBP-10 depth within ±2 pt of the level | (ln W − ln 700) / 0.8 | −0.9 |
| flow | `flow_imbalance`: dir_sign · (buy − sell)/(buy + sell) aggressor volume of the lead's trades in (t − 120 s, t] | trades (and the OFI they cause in MBP-10) | (x − 0.12) / 0.19 | +0.8 |
| speed | `speed_atr`: dir_sign · (mid_t − mid_{t−300 s}) / 5 min / ATR_t | trades / bars | (x − 0.35) / 0.35 | +0.6 |
| attempt | `attempt`: 1 + earlier anchors of this level today (5-min debounce, SPEC §6) | trades | (min(x, 6) − 3.3) / 1.85 | +0.5 |
| gamma | `gamma_sign`: sign of dealer gamma within ±10 pt of the level; dealers are short what customers buy, so dealer gamma = −Σ customer signed option volume · Black-76 gamma | options trades (aggressor side) + definitions | −gamma_sign (+1 = dealers short gamma) | +0.6 |

β0 = +0.1 (about half of the planned approaches break). `p_break` (with ε) is the true
probability the outcome was drawn from; `p_break_observable` = σ(β0 + Σ β_k z_k) is the best
any model of the observables can do (same ranking as the Bayes-optimal score). `oracle_auc`
is the ROC-AUC of a score against BREAK (1) vs REJECT (0) on planned approaches.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..lib.metrics import roc_auc

INTERCEPT = 0.1
NOISE_SD = 0.5
CHOP_PROBABILITY = 0.08
BREAK, REJECT, CHOP = "BREAK", "REJECT", "CHOP"


@dataclass(frozen=True)
class Precursor:
    name: str
    raw_column: str
    center: float
    scale: float
    beta: float
    log: bool = False
    cap: float | None = None

    def standardize(self, raw: float) -> float:
        x = float(raw)
        if self.log:
            x = math.log(max(x, 1.0))
        if self.cap is not None:
            x = min(x, self.cap)
        return (x - self.center) / self.scale


PRECURSORS: tuple[Precursor, ...] = (
    Precursor("wall", "wall_lots", center=math.log(700.0), scale=0.8, beta=-0.9, log=True),
    Precursor("flow", "flow_imbalance", center=0.12, scale=0.19, beta=0.8),
    Precursor("speed", "speed_atr", center=0.35, scale=0.35, beta=0.6),
    Precursor("attempt", "attempt", center=3.3, scale=1.85, beta=0.5, cap=6.0),
    Precursor("gamma", "dealer_short_gamma", center=0.0, scale=1.0, beta=0.6),
)


def standardized(raw: dict[str, float]) -> dict[str, float]:
    return {f"z_{p.name}": p.standardize(raw[p.raw_column]) for p in PRECURSORS}


def observable_logit(z: dict[str, float]) -> float:
    return INTERCEPT + sum(p.beta * z[f"z_{p.name}"] for p in PRECURSORS)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def formula_text() -> str:
    terms = " ".join(f"{'+' if p.beta >= 0 else '−'} {abs(p.beta):.2f}·z_{p.name}" for p in PRECURSORS)
    return f"logit p_break = {INTERCEPT:+.2f} {terms} + ε, ε ~ N(0, {NOISE_SD}²); P(CHOP) = {CHOP_PROBABILITY}"


# --- the sidecar ---------------------------------------------------------------------------

GROUND_TRUTH_SCHEMA: dict[str, pl.DataType] = {
    "session_date": pl.Date,
    "touch_ts_event": pl.Int64,
    "level_kind": pl.Utf8,
    "level_price": pl.Float64,
    "direction": pl.Utf8,
    "dir_sign": pl.Int8,
    "planned": pl.Boolean,
    "planner_phase": pl.Utf8,  # what the simulator was doing when the touch happened
    "attempt": pl.Int32,
    "front_symbol": pl.Utf8,
    "spot": pl.Float64,
    "atr": pl.Float64,
    "band": pl.Float64,
    "wall_lots": pl.Float64,
    "wall_price": pl.Float64,
    "flow_imbalance": pl.Float64,
    "approach_speed_ptm": pl.Float64,
    "speed_atr": pl.Float64,
    "dealer_gamma": pl.Float64,
    "gamma_sign": pl.Int8,
    "dealer_short_gamma": pl.Float64,
    **{f"z_{p.name}": pl.Float64 for p in PRECURSORS},
    "logit_observable": pl.Float64,
    "noise": pl.Float64,
    "p_break": pl.Float64,
    "p_break_observable": pl.Float64,
    "outcome": pl.Utf8,
    "label_4m": pl.Utf8,
    "label_4m_time_s": pl.Float64,
}
GROUND_TRUTH_FILE = "approaches.parquet"


def ground_truth_frame(rows: list[dict]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=GROUND_TRUTH_SCHEMA)
    return pl.DataFrame([{k: r.get(k) for k in GROUND_TRUTH_SCHEMA} for r in rows], schema=GROUND_TRUTH_SCHEMA).sort(
        "touch_ts_event", "level_kind"
    )


def ground_truth_dir(root: Path, session: dt.date) -> Path:
    return Path(root) / "ground_truth" / f"date={session.isoformat()}"


def write_ground_truth(frame: pl.DataFrame, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / GROUND_TRUTH_FILE
    frame.write_parquet(path, compression="zstd", statistics=False)
    return path


def read_ground_truth(root: Path, sessions: list[dt.date] | None = None) -> pl.DataFrame:
    """Ground-truth approaches of the generated sessions under `root` (all, or `sessions`)."""
    base = Path(root) / "ground_truth"
    if sessions is None:
        paths = sorted(base.glob(f"date=*/{GROUND_TRUTH_FILE}"))
    else:
        paths = [ground_truth_dir(root, d) / GROUND_TRUTH_FILE for d in sessions]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"no ground truth for {len(missing)} session(s), e.g. {missing[0]}")
    if not paths:
        return pl.DataFrame(schema=GROUND_TRUTH_SCHEMA)
    return pl.concat([pl.read_parquet(p) for p in paths]).sort("touch_ts_event", "level_kind")


def oracle_auc(ground_truth: pl.DataFrame, score: str = "p_break", outcome: str = "outcome") -> float:
    """ROC-AUC of `score` against BREAK vs REJECT on planned approaches (CHOPs left out).

    With the defaults this is the simulator's own Bayes-optimal AUC: the true probability
    each outcome was drawn from. `score="p_break_observable"` gives the ceiling for a model
    of the observable precursors; `outcome="label_4m"` scores against the pipeline-style
    first-crossing label instead of the drawn outcome."""
    rows = ground_truth.filter(pl.col("planned") & pl.col(outcome).is_in([BREAK, REJECT]) & pl.col(score).is_not_null())
    return roc_auc((rows[outcome] == BREAK).to_numpy(), rows[score].to_numpy())


def match_ground_truth(episodes: pl.DataFrame, ground_truth: pl.DataFrame, tolerance_s: float = 2.0) -> pl.DataFrame:
    """Each episode (or anchor) with the simulator's touch of the same level kind and direction
    nearest in time within `tolerance_s`, if any (columns `gt_*`; null when unmatched).

    `episodes` needs `ts_ns`, `level_kind`, `direction`. For evaluation only: the pipeline
    never reads ground truth."""
    truth = ground_truth.select(
        pl.col("touch_ts_event").alias("gt_ts_ns"),
        "level_kind",
        "direction",
        pl.col("planned").alias("gt_planned"),
        pl.col("p_break").alias("gt_p_break"),
        pl.col("outcome").alias("gt_outcome"),
    ).sort("gt_ts_ns")
    matched = episodes.with_row_index("_order").sort("ts_ns").join_asof(
        truth, left_on="ts_ns", right_on="gt_ts_ns", by=["level_kind", "direction"], strategy="nearest",
        tolerance=int(tolerance_s * 1e9), check_sortedness=False,  # both sides sorted by time just above
    )
    return matched.sort("_order").drop("_order")
