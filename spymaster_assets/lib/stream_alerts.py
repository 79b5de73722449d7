"""Alerts and the exit score over Pentaview streams (SPEC §10), plus their realised outcomes.

An alert is a *strength* in [0, 1] computed from one stream row; its condition holds while
strength ≥ its threshold, and it is active under hysteresis: it turns on once the condition
has held ON_BARS consecutive bars and off once it has failed OFF_BARS consecutive bars. Its
confidence is the strength. Each alert also says what it expects price to do next, so the
stream_alerts report can score it against a base rate (the outcome is forward-looking and
lives only in that report, never in a stream).

Frames: streams are in the orientation documented in `lib/streams.py` (σ_M, σ_F, σ_P > 0 =
up; σ_B > 0 = through the level, its price frame is dir_sign·σ_B; σ_D > 0 = fuel).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from .streams import KEY_COLUMNS, STREAMS_SCHEMA_VERSION

ON_BARS = 2
OFF_BARS = 3
SLOPE_REF = 0.05  # a smoothed stream moving 0.05 per 30 s bar is a full-strength trend
APPROACH_ZONE_ATR = 2.0

# What an alert expects price to do within the outcome horizon.
EXPECT_UP, EXPECT_DOWN = "up", "down"
EXPECT_WITH_FLOW, EXPECT_WITH_PRESSURE, EXPECT_AGAINST_PRESSURE = "with_flow", "with_pressure", "against_pressure"
EXPECT_THROUGH, EXPECT_AWAY = "through_level", "away_from_level"
EXPECT_BIG_MOVE, EXPECT_QUIET = "big_move", "quiet"


def _pos(expr: pl.Expr) -> pl.Expr:
    return expr.clip(0.0, 1.0)


def _agree(a: pl.Expr, b: pl.Expr, same_sign: bool) -> pl.Expr:
    """min(|a|, |b|) when a and b have the same (or opposite) sign, else 0."""
    signs = (a * b > 0) if same_sign else (a * b < 0)
    return pl.when(signs).then(pl.min_horizontal(a.abs(), b.abs())).otherwise(0.0)


P, M, F, B, S, D = (pl.col(c) for c in ("sigma_p", "sigma_m", "sigma_f", "sigma_b", "sigma_s", "sigma_d"))
BARRIER_UP = pl.col("dir_sign").cast(pl.Float64) * B  # σ_B in the price frame
P_SMOOTH, P_SLOPE, P_CURV = pl.col("sigma_p_smooth"), pl.col("sigma_p_slope"), pl.col("sigma_p_curvature")
B_SLOPE = pl.col("sigma_b_slope")
NEAR = pl.col("d_atr").abs() <= APPROACH_ZONE_ATR


@dataclass(frozen=True)
class AlertDef:
    name: str
    meaning: str
    strength: pl.Expr  # in [0, 1]; null where a stream it reads is absent
    threshold: float
    expects: str
    scope: pl.Expr = pl.lit(True)  # rows where the alert can fire at all: its base-rate population


ALERTS: tuple[AlertDef, ...] = (
    AlertDef("CONTINUATION_UP", "pressure up and not fading: the up move is likely to continue",
             pl.when(P_SLOPE >= 0).then(_pos(P)).otherwise(0.0), 0.30, EXPECT_UP),
    AlertDef("CONTINUATION_DOWN", "pressure down and not fading: the down move is likely to continue",
             pl.when(P_SLOPE <= 0).then(_pos(-P)).otherwise(0.0), 0.30, EXPECT_DOWN),
    AlertDef("EXHAUSTION_UP", "smoothed pressure still up but decelerating (slope and curvature < 0): the up move tires",
             pl.when((P_SLOPE < 0) & (P_CURV < 0)).then(pl.min_horizontal(_pos(P_SMOOTH), _pos(-P_SLOPE / SLOPE_REF)))
             .otherwise(0.0), 0.20, EXPECT_DOWN),
    AlertDef("EXHAUSTION_DOWN", "smoothed pressure still down but decelerating: the down move tires",
             pl.when((P_SLOPE > 0) & (P_CURV > 0)).then(pl.min_horizontal(_pos(-P_SMOOTH), _pos(P_SLOPE / SLOPE_REF)))
             .otherwise(0.0), 0.20, EXPECT_UP),
    AlertDef("REVERSAL_RISK_UP", "price falling into a book that favours up (thick bids below / thin asks): a turn up",
             pl.min_horizontal(_pos(-M), _pos(BARRIER_UP)), 0.25, EXPECT_UP),
    AlertDef("REVERSAL_RISK_DOWN", "price rising into a book that favours down: a turn down",
             pl.min_horizontal(_pos(M), _pos(-BARRIER_UP)), 0.25, EXPECT_DOWN),
    AlertDef("FLOW_DIVERGENCE", "order flow disagrees with price momentum (absorption): flow tends to lead",
             _agree(F, M, same_sign=False), 0.20, EXPECT_WITH_FLOW),
    AlertDef("FLOW_CONFIRMATION", "order flow agrees with price momentum", _agree(F, M, same_sign=True), 0.25,
             EXPECT_WITH_FLOW),
    AlertDef("BARRIER_SUPPORTS", "the book at the level favours the way pressure pushes", _agree(BARRIER_UP, P, True), 0.20,
             EXPECT_WITH_PRESSURE),
    AlertDef("BARRIER_OPPOSES", "the book at the level stands against the pressure", _agree(BARRIER_UP, P, False), 0.20,
             EXPECT_AGAINST_PRESSURE),
    AlertDef("BARRIER_WEAKENING", "near the level, its defending wall is losing strength quickly",
             pl.when(NEAR).then(_pos(B_SLOPE / SLOPE_REF)).otherwise(0.0), 0.50, EXPECT_THROUGH, NEAR),
    AlertDef("HIGH_QUALITY_SETUP", "near the level: close, clean, fresh, confluent approach (σ_S high)",
             pl.when(NEAR).then(_pos(S)).otherwise(0.0), 0.35, EXPECT_THROUGH, NEAR),
    AlertDef("LOW_QUALITY_SETUP", "near the level: a stale, ragged or distant approach (σ_S low)",
             pl.when(NEAR).then(_pos(-S)).otherwise(0.0), 0.45, EXPECT_AWAY, NEAR),
    AlertDef("FUEL_REGIME", "dealers short gamma: hedging amplifies moves", _pos(D), 0.30, EXPECT_BIG_MOVE),
    AlertDef("PIN_REGIME", "dealers long gamma: hedging dampens moves, price tends to pin", _pos(-D), 0.30, EXPECT_QUIET),
)
ALERT_NAMES = tuple(a.name for a in ALERTS)

ALERTS_SCHEMA: dict[str, pl.DataType] = {
    "session": pl.Date, "t_ns": pl.Int64, "level_kind": pl.Utf8, "level_price": pl.Float64, "dir_sign": pl.Int8,
    "tier": pl.Utf8, "alert": pl.Utf8, "confidence": pl.Float64, "onset": pl.Boolean, "bars_active": pl.Int32,
}
ALERTS_SCHEMA_VERSION = f"{STREAMS_SCHEMA_VERSION}.1"


def with_hysteresis(frame: pl.DataFrame, condition: str, on_bars: int, off_bars: int, by: list[str],
                    out: str = "active") -> pl.DataFrame:
    """Adds `out`: the active state per group `by` (rows already in time order within a group):
    on after `on_bars` consecutive true conditions, off after `off_bars` consecutive false ones,
    otherwise unchanged; every group starts off. A null condition counts as false.

    Vectorized: where the current run of equal conditions is long enough it decides the state;
    elsewhere the last decision is carried forward.
    """
    cond = pl.col(condition).fill_null(False)
    frame = frame.with_columns((cond != cond.shift(1).over(by)).fill_null(True).cum_sum().over(by).alias("_run"))
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1).over([*by, "_run"]).alias("_run_length"))
    decided = (pl.when(cond & (pl.col("_run_length") >= on_bars)).then(True)
               .when(~cond & (pl.col("_run_length") >= off_bars)).then(False))
    frame = frame.with_columns(decided.alias(out))
    return frame.with_columns(pl.col(out).forward_fill().over(by).fill_null(False)).drop("_run", "_run_length")


def hysteresis(conditions: list[bool | None], on_bars: int = ON_BARS, off_bars: int = OFF_BARS) -> list[bool]:
    """The active state of one sequence of conditions (pure; for the live engine and tests)."""
    frame = pl.DataFrame({"g": [0] * len(conditions), "c": pl.Series(conditions, dtype=pl.Boolean)})
    return with_hysteresis(frame, "c", on_bars, off_bars, ["g"], "a")["a"].to_list()


def alert_strengths(streams: pl.DataFrame) -> pl.DataFrame:
    """Long frame: one row per (bar, level, alert) with its strength and raw condition."""
    keys = ["session", "t_ns", "level_kind", "level_price", "dir_sign", "tier"]
    wide = streams.select(*keys, *[a.strength.alias(a.name) for a in ALERTS])
    thresholds = pl.DataFrame({"alert": ALERT_NAMES, "threshold": [a.threshold for a in ALERTS]})
    return (wide.unpivot(index=keys, on=list(ALERT_NAMES), variable_name="alert", value_name="strength")
            .join(thresholds, on="alert")
            .with_columns((pl.col("strength") >= pl.col("threshold")).alias("condition")))


def compute_alerts(streams: pl.DataFrame, on_bars: int = ON_BARS, off_bars: int = OFF_BARS) -> pl.DataFrame:
    """Active alerts per (bar, level): confidence, whether this bar is the onset, bars since onset."""
    if streams.height == 0:
        return pl.DataFrame(schema=ALERTS_SCHEMA)
    by = ["level_kind", "alert"]
    long = alert_strengths(streams).sort([*by, "t_ns"])
    long = with_hysteresis(long, "condition", on_bars, off_bars, by)
    long = long.with_columns(
        (pl.col("active") & ~pl.col("active").shift(1).over(by).fill_null(False)).alias("onset"))
    long = long.with_columns(pl.col("onset").cum_sum().over(by).alias("_spell"))
    long = long.with_columns(pl.int_range(1, pl.len() + 1).over([*by, "_spell"]).cast(pl.Int32).alias("bars_active"))
    active = long.filter("active").with_columns(pl.col("strength").fill_null(0.0).clip(0.0, 1.0).alias("confidence"))
    return active.select(list(ALERTS_SCHEMA)).cast(ALERTS_SCHEMA).sort(["t_ns", "level_kind", "alert"])


# --- exit score ---------------------------------------------------------------------------

EXIT_ACTIONS = ("HOLD_ADD", "HOLD_TRAIL", "REDUCE", "EXIT")
EXIT_THRESHOLDS = (0.45, 0.0, -0.35)  # score ≥ 0.45 HOLD_ADD, ≥ 0 HOLD_TRAIL, ≥ −0.35 REDUCE, else EXIT
EXIT_WEIGHTS = {"pressure": 0.50, "trend": 0.30, "barrier": 0.20}
EXIT_GAIN = 1.5
DEALER_GAIN = 0.25  # fuel (σ_D = +1) magnifies the score by 25 %, a pin (−1) shrinks it by 25 %
SIDES = {"LONG": 1.0, "SHORT": -1.0}


def exit_score_exprs(side: str) -> dict[str, pl.Expr]:
    """Score in [−1, 1] for holding `side` (+ = the streams favour the position) and its action.

    Components in the position's frame: pressure s·σ_P (s·σ_M where σ_P is absent), its trend
    s·slope / SLOPE_REF clipped to ±1, the barrier s·dir_sign·σ_B; a missing component drops out
    and the weights of the others are renormalized. score = tanh(1.5 · weighted mean · (1 + 0.25·σ_D)).
    """
    s = SIDES[side]
    has_p = P.is_not_null()
    pressure = pl.when(has_p).then(P).otherwise(M) * s
    trend = (pl.when(has_p).then(P_SLOPE).otherwise(pl.col("sigma_m_slope")) * s / SLOPE_REF).clip(-1.0, 1.0)
    barrier = BARRIER_UP * s
    parts = {"pressure": pressure, "trend": trend, "barrier": barrier}
    weighted = pl.sum_horizontal([EXIT_WEIGHTS[k] * v for k, v in parts.items()])
    weights = pl.sum_horizontal([pl.when(v.is_not_null()).then(EXIT_WEIGHTS[k]).otherwise(0.0) for k, v in parts.items()])
    dealer = 1.0 + DEALER_GAIN * D.fill_null(0.0)
    score = pl.when(weights > 0).then((EXIT_GAIN * weighted / weights * dealer).tanh())
    hi, mid, lo = EXIT_THRESHOLDS
    action = (pl.when(score >= hi).then(pl.lit("HOLD_ADD")).when(score >= mid).then(pl.lit("HOLD_TRAIL"))
              .when(score >= lo).then(pl.lit("REDUCE")).when(score.is_not_null()).then(pl.lit("EXIT")))
    return {"score": score, "action": action, **parts}


def exit_score(row: dict, side: str) -> dict:
    """The exit decision for one stream row (a dict of a gold/streams row) and a LONG/SHORT position."""
    if side not in SIDES:
        raise ValueError(f"side must be LONG or SHORT, got {side!r}")
    needed = ("sigma_p", "sigma_m", "sigma_b", "sigma_d", "sigma_p_slope", "sigma_m_slope", "dir_sign")
    frame = pl.DataFrame([{c: row.get(c) for c in needed}],
                         schema={c: (pl.Int8 if c == "dir_sign" else pl.Float64) for c in needed})
    exprs = exit_score_exprs(side)
    out = frame.select(*[e.alias(k) for k, e in exprs.items()]).row(0, named=True)
    return {"side": side, "action": out["action"], "score": out["score"],
            "components": {k: out[k] for k in EXIT_WEIGHTS}}


# --- realised outcomes (report only: forward-looking) -------------------------------------

OUTCOME_BARS = 20  # 10 min of 30 s bars
OUTCOME_MOVE_ATR = 0.5


def forward_moves(market: pl.DataFrame, bars: int = OUTCOME_BARS) -> pl.DataFrame:
    """Per (session, t_ns): the largest rise and fall of spot over the next `bars` grid times, in
    ATRs of t, and the return at the horizon; null where fewer than `bars` future bars exist.
    FORWARD-LOOKING: for scoring alerts in a report, never for a stream."""
    m = market.unique(["session", "t_ns"]).sort(["session", "t_ns"])
    ahead_max = pl.col("spot").reverse().rolling_max(bars, min_samples=bars).reverse().shift(-1).over("session")
    ahead_min = pl.col("spot").reverse().rolling_min(bars, min_samples=bars).reverse().shift(-1).over("session")
    ahead_end = pl.col("spot").shift(-bars).over("session")
    return m.select(
        "session", "t_ns",
        ((ahead_max - pl.col("spot")) / pl.col("atr")).alias("rise_atr"),
        ((pl.col("spot") - ahead_min) / pl.col("atr")).alias("fall_atr"),
        ((ahead_end - pl.col("spot")) / pl.col("atr")).alias("return_atr"),
    ).filter(pl.col("rise_atr").is_not_null() & pl.col("return_atr").is_not_null())


def expected_sign(expects: str) -> pl.Expr | None:
    """+1 / −1 price direction an alert expects on a stream row (None for non-directional ones)."""
    signs = {EXPECT_UP: pl.lit(1.0), EXPECT_DOWN: pl.lit(-1.0), EXPECT_WITH_FLOW: F.sign(),
             EXPECT_WITH_PRESSURE: P.sign(), EXPECT_AGAINST_PRESSURE: -P.sign(),
             EXPECT_THROUGH: pl.col("dir_sign").cast(pl.Float64), EXPECT_AWAY: -pl.col("dir_sign").cast(pl.Float64)}
    return signs.get(expects)


def hit_expr(expects: str, move_atr: float = OUTCOME_MOVE_ATR) -> pl.Expr:
    """Whether the realised forward move is what the alert expected (needs rise/fall columns)."""
    if expects == EXPECT_BIG_MOVE:
        return (pl.col("rise_atr") >= move_atr) | (pl.col("fall_atr") >= move_atr)
    if expects == EXPECT_QUIET:
        return (pl.col("rise_atr") < move_atr) & (pl.col("fall_atr") < move_atr)
    sign = expected_sign(expects)
    return (pl.when(sign > 0).then(pl.col("rise_atr") >= move_atr)
            .when(sign < 0).then(pl.col("fall_atr") >= move_atr).otherwise(False))


def _one_per_moment(frame: pl.DataFrame, expects: str) -> pl.DataFrame:
    """One row per (session, t_ns, expected direction): six levels sharing a price-wide signal at
    the same bar are one observation of the market, not six."""
    sign = expected_sign(expects)
    keyed = frame.with_columns((sign if sign is not None else pl.lit(0.0)).alias("_expected"))
    return keyed.unique(["session", "t_ns", "_expected"], keep="first", maintain_order=True)


def alert_hit_rates(streams: pl.DataFrame, alerts: pl.DataFrame, moves: pl.DataFrame) -> list[dict]:
    """Per alert type: at its onsets, how often price moved ≥ 0.5 ATR the expected way within
    10 min, against the same outcome's rate over every bar where the alert could fire (its streams
    present, within its scope: near the level for the setup and barrier-weakening alerts).
    The sample unit is the onset (a spell of an active alert counts once), and onsets at one bar
    expecting the same direction count once whatever the number of levels."""
    rows = streams.join(moves, on=["session", "t_ns"], how="inner")
    onsets = alerts.filter("onset").join(rows, on=["session", "t_ns", "level_kind"], how="inner", suffix="_s")
    report = []
    for alert in ALERTS:
        hit = hit_expr(alert.expects)
        fired = _one_per_moment(onsets.filter(pl.col("alert") == alert.name), alert.expects)
        eligible = _one_per_moment(rows.filter(alert.strength.is_not_null() & alert.scope), alert.expects)
        n, n_base = fired.height, eligible.height
        rate = fired.select(hit.mean()).item() if n else None
        base = eligible.select(hit.mean()).item() if n_base else None
        report.append({
            "alert": alert.name, "meaning": alert.meaning, "expects": alert.expects, "n_onsets": n,
            "sessions": fired["session"].n_unique() if n else 0, "hit_rate": rate, "base_rate": base,
            "edge": None if rate is None or base is None else rate - base, "n_base_bars": n_base,
            "mean_confidence": fired["confidence"].mean() if n else None,
            "statement": (f"when {alert.name} fired, price moved ≥ {OUTCOME_MOVE_ATR} ATR {alert.expects.replace('_', ' ')} "
                          f"within {OUTCOME_BARS // 2} min {rate:.0%} of {n} times, base rate {base:.0%}"
                          if n and base is not None else f"{alert.name} never fired with a complete outcome window"),
        })
    return report


def exit_action_outcomes(streams: pl.DataFrame, moves: pl.DataFrame) -> list[dict]:
    """Per side and action, at the bars where a level's action changed to it: the position's
    return 10 min later (ATR) and how often it went ≥ 0.5 ATR against the position first-or-anyway."""
    rows = streams.join(moves, on=["session", "t_ns"], how="inner").sort(["session", "level_kind", "t_ns"])
    out = []
    for side, s in SIDES.items():
        exprs = exit_score_exprs(side)
        scored = rows.with_columns(exprs["action"].alias("action"), exprs["score"].alias("score")).filter(
            pl.col("action").is_not_null())
        scored = scored.filter(pl.col("action") != pl.col("action").shift(1).over(["session", "level_kind"]).fill_null(""))
        scored = scored.unique(["session", "t_ns", "action"], keep="first", maintain_order=True)  # one per bar, not per level
        adverse = pl.col("fall_atr") if s > 0 else pl.col("rise_atr")
        favourable = pl.col("rise_atr") if s > 0 else pl.col("fall_atr")
        summary = scored.group_by("action").agg(
            pl.len().alias("n"), (pl.col("return_atr") * s).mean().alias("mean_return_atr"),
            (adverse >= OUTCOME_MOVE_ATR).mean().alias("adverse_rate"),
            (favourable >= OUTCOME_MOVE_ATR).mean().alias("favourable_rate"), pl.col("score").mean().alias("mean_score"))
        order = {a: i for i, a in enumerate(EXIT_ACTIONS)}
        for row in sorted(summary.iter_rows(named=True), key=lambda r: order[r["action"]]):
            out.append({"side": side, **row})
    return out


def stream_rows_up_to(streams: pl.DataFrame, level_kind: str, at_ns: int | None, last: int) -> pl.DataFrame:
    """The last `last` stream rows of one level at or before `at_ns` (for the CLI and the live engine)."""
    rows = streams.filter(pl.col("level_kind") == level_kind)
    if at_ns is not None:
        rows = rows.filter(pl.col("t_ns") <= at_ns)
    return rows.sort("t_ns").tail(last)


__all__ = ["ALERTS", "ALERT_NAMES", "ALERTS_SCHEMA", "KEY_COLUMNS", "compute_alerts", "exit_score", "hysteresis"]
