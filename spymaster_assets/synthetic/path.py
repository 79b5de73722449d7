"""The price path of a session and the planted level approaches.

The lead outright's best bid moves by at most one transition per second: a step of ±1 unit
(±2 units in 6% of moves; the unit is 1 tick, 2–3 on very volatile seconds) whose variance is
σ² (σ from the intraday profile, ticks per √s) and whose mean is the planner's drift μ (ticks
per second). Three segments:

1. 18:00 → 09:30 ET, vectorized: a random walk pinned (Brownian-bridge correction) from the
   session's open price to a premarket target; its bars give the overnight warm-up, the ATR
   and the PM_HIGH / PM_LOW levels.
2. 09:30 → 12:30 ET (+ up to 10 min to let the last approach resolve), one Python step per
   second driven by a planner: PAUSE (mean-reverting drift) → APPROACH a level (constant
   speed toward it, a wall planted on the defending side of the book, an order-flow tilt in
   the last 150 s) → on the first print inside the touch band, the precursors are measured
   and the outcome drawn from the planted model (`ground_truth`) → HESITATE (≤ 15 s) →
   DRIVE to L ± U(1.3, 2.0)·ATR within 1–3 min (BREAK beyond, REJECT back; shortened to stop
   before a further level when that still clears 1.15 ATR), or CHOP in [0.35, 0.85] ATR on
   the approach side for 8–12 min → PAUSE … After the touch the path never contradicts the
   drawn outcome (a break does not first fall 0.6 ATR back; a rejection never trades through
   its wall), so the pipeline's first-crossing label agrees with it. Every minute the bar just
   closed is built from the exact trade tape (`tape.build_tape`) and fed to the causal
   `LevelTracker`, so levels, ATR and touches are what the pipeline will compute.
   Pauses and approach legs do not move closer to a level other than the target while within
   its band (+1.5 ticks): most touches are planned ones. An approach whose path another level
   blocks is abandoned and the next one targets that level.
3. 12:30 → close, vectorized: a bridge to the session's closing anchor.

Touches are detected on trade prints exactly like SPEC §6 (band max(0.25, 0.25·ATR), side
of the last print outside the band, 5-min debounce per level), for every level, planned or
not; unplanned touches are recorded too (planned = False) because the pipeline sees them.
The other outright follows the lead (plus the carry basis) on a 10-s sample, and the calendar
spread wanders slowly around the basis difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..lib.calendar import NS_PER_S
from .config import SyntheticConfig
from .contracts import ES_TICK, ROLL_WEEK_SPREAD_ACTIVITY, SPREAD_TICK
from .ground_truth import BREAK, CHOP, CHOP_PROBABILITY, NOISE_SD, REJECT, observable_logit, sigmoid, standardized
from .levels import LevelTracker
from .options import OptionChain, OptionFlow, dealer_gamma_near
from .regime import IntradayProfile, SessionRegime, intraday_profile
from .tape import MAX_STEP_TICKS, Tape, TapeDraws, build_tape, draw_tape, minute_bars

TOUCH_BAND_FLOOR = 0.25
TOUCH_BAND_ATR = 0.25
DEBOUNCE_S = 300
FLOW_WINDOW_S = 120
SPEED_WINDOW_S = 300
FLOW_TILT = 0.32  # max |pi_buy − 0.5| of the planted flow
FLOW_TILT_WINDOW_S = 150
WALL_MEDIAN_LOTS = 700.0
WALL_LOG_SD = 0.8
WALL_REFRESH_S = 5
APPROACH_MIN_ATR = 1.0
PAUSE_REVERSION_S = 240.0  # mean-reversion time of a pause around its centre
CHOP_CENTER_ATR = 0.6
CHOP_HALF_WIDTH_ATR = 0.25
DRIVE_MIN_ATR = 1.15  # drives end beyond the ±1 ATR label barrier
ADVERSE_LIMIT_ATR = 0.6  # after the touch, price stays this far from the opposite label barrier's side
SPEED_MEDIAN_ATR = 0.45  # ATR per minute
LAST_APPROACH_BEFORE_END_S = 8 * 60
RESOLVE_AFTER_END_S = 10 * 60
OTHER_SAMPLE_S = 10


@dataclass
class Wall:
    """Planted resting size at one price on one side of the lead's book, refreshed every
    WALL_REFRESH_S while active and gone for good once traded through. `absorb`: a break;
    the sweep through it prints the wall's size (set in the lead's tape by the simulator)."""

    side: int  # 0 bid, 1 ask
    price: int  # ticks
    size: int
    start_ns: int
    end_ns: int
    absorb: bool = False


@dataclass
class InstrumentPath:
    """Everything the book writer needs for one futures instrument."""

    symbol: str
    tick: float  # points per tick
    bid: np.ndarray  # best bid (ticks) after each second's transition; ask = bid + 1
    draws: TapeDraws
    pi_buy: np.ndarray
    pressure: np.ndarray  # book tilt in [−1, 1] per second: + = bids replenish larger
    tape: Tape
    sweep_prob: float
    depth_scale: float  # resting sizes relative to the lead's profile
    activity_scale: float  # depth-update rate relative to the lead's
    walls: list[Wall] = field(default_factory=list)


@dataclass
class SimulatedSession:
    regime: SessionRegime
    profile: IntradayProfile
    lead: InstrumentPath
    other: InstrumentPath
    spread: InstrumentPath
    approaches: list[dict]


DOUBLE_STEP_SHARE = 0.06  # share of moves that jump two units (a multi-level sweep)
_STEP_VARIANCE_PER_MOVE = 1.0 - DOUBLE_STEP_SHARE + 4.0 * DOUBLE_STEP_SHARE
MAX_MOVE_PROBABILITY = 0.8  # beyond this the step unit grows (1 → 2 → 3 ticks) to carry the variance


def _step_unit(variance):
    """Tick size of one move: 1, or 2–3 on very volatile seconds where one-tick moves every
    second could not carry the variance."""
    per_move = MAX_MOVE_PROBABILITY * _STEP_VARIANCE_PER_MOVE
    return 1 + (variance > per_move) + (variance > 4 * per_move)


def tick_steps(sigma: np.ndarray, mu: np.ndarray, u: np.ndarray, u_size: np.ndarray) -> np.ndarray:
    """Per-second mid steps (ticks) with variance ≈ σ² and mean ≈ μ: ±unit with probabilities
    (p ± μ/unit)/2, doubled in DOUBLE_STEP_SHARE of moves (vectorized form of `tick_step`)."""
    variance = sigma * sigma
    unit = _step_unit(variance)
    drift = mu / unit
    move = np.minimum(np.maximum(variance / (unit * unit * _STEP_VARIANCE_PER_MOVE), np.abs(drift)), 1.0)
    p_up = np.clip((move + drift) / 2.0, 0.0, 1.0)
    p_down = np.clip((move - drift) / 2.0, 0.0, 1.0 - p_up)
    step = np.where(u < p_up, 1, np.where(u >= 1.0 - p_down, -1, 0))
    return step * unit * np.where(u_size < DOUBLE_STEP_SHARE, 2, 1)


def tick_step(sigma: float, mu: float, u: float, u_size: float) -> int:
    variance = sigma * sigma
    unit = _step_unit(variance)
    drift = mu / unit
    move = min(max(variance / (unit * unit * _STEP_VARIANCE_PER_MOVE), abs(drift)), 1.0)
    p_up = min(max((move + drift) / 2.0, 0.0), 1.0)
    p_down = min(max((move - drift) / 2.0, 0.0), 1.0 - p_up)
    step = 1 if u < p_up else (-1 if u >= 1.0 - p_down else 0)
    return step * int(unit) * (2 if u_size < DOUBLE_STEP_SHARE else 1)


def _bridge(start: int, target: int, sigma: np.ndarray, u: np.ndarray, u_size: np.ndarray) -> np.ndarray:
    """Integer-tick random walk of len(sigma) steps from `start`, pinned to end at `target`."""
    steps = tick_steps(sigma, np.zeros(len(sigma)), u, u_size)
    walk = np.cumsum(steps)
    n = len(walk)
    correction = np.rint((np.arange(1, n + 1) / n) * (target - start - walk[-1]))
    return (start + walk + correction).astype(np.int64)


@dataclass
class TouchState:
    """Per level kind: the SPEC §6 anchor rule on trade prints."""

    came_from: float = 0.0  # side (+1 above, −1 below) of the last print outside the band
    prev_inside: bool = False
    last_anchor_ns: int = -(10**18)
    attempts: int = 0

    def observe_far(self, side: float) -> None:
        self.came_from, self.prev_inside = side, False

    def observe(self, price: float, ts_ns: int, level: float, band: float) -> str | None:
        """Feed one print; returns 'UP'/'DOWN' when it anchors a touch."""
        inside = abs(price - level) <= band
        anchored = None
        if inside and not self.prev_inside and self.came_from != 0 and ts_ns - self.last_anchor_ns >= DEBOUNCE_S * NS_PER_S:
            anchored = "UP" if self.came_from < 0 else "DOWN"
            self.last_anchor_ns = ts_ns
            self.attempts += 1
        if not inside:
            self.came_from = 1.0 if price > level else -1.0
        self.prev_inside = inside
        return anchored


@dataclass
class Approach:
    kind: str
    dir_sign: int
    speed_ticks: float  # planned drift toward the level, ticks per second
    flow_tilt: float  # planted N(0,1) order-flow factor
    wall: Wall
    deadline: int  # second after which the approach is abandoned


class LeadSimulator:
    def __init__(self, config: SyntheticConfig, regime: SessionRegime, profile: IntradayProfile,
                 chain: OptionChain | None, flow: OptionFlow | None):
        self.config, self.regime, self.profile = config, regime, profile
        self.chain, self.flow = chain, flow
        w = regime.window
        self.start_ns = w.globex_open_ns
        self.n = regime.n_seconds
        self.s_rth = regime.second_of(w.rth_open_ns)
        self.s_end = regime.second_of(w.analysis_end_ns)
        self.rng = config.rng(regime.session, "path")
        self.plan_rng = config.rng(regime.session, "planner")
        self.outcome_rng = config.rng(regime.session, "outcomes")
        self.u_step = self.rng.random(self.n)
        self.u_size = self.rng.random(self.n)
        self.draws = draw_tape(config.rng(regime.session, "tape:lead"), profile.trade_rate, minute_floor=True)
        self.bid = np.zeros(self.n, dtype=np.int64)
        self.pi_buy = np.full(self.n, 0.5)
        self.pressure = np.zeros(self.n)
        self.tapes: list[Tape] = []
        self.walls: list[Wall] = []
        self.approaches: list[dict] = []
        self.tracker = LevelTracker(
            (regime.second_of(w.premarket_start_ns) // 60, self.s_rth // 60),
            (self.s_rth // 60, regime.second_of(w.opening_range_end_ns) // 60),
        )
        self.touch: dict[str, TouchState] = {}
        self.planned_by_kind: dict[str, int] = {}
        # planner state (RTH loop)
        self.phase, self.phase_end, self.center, self.escaping = "PAUSE", 0, 0.0, False
        self.active: Approach | None = None
        self.absorbing: Wall | None = None  # a break's wall whose sweep is yet to print
        self.levels_now: dict[str, float] = {}
        self.hold_limits: tuple[int, int] = (-(10**9), 10**9)
        self.outcome, self.touch_level, self.touch_atr = None, 0.0, 1.0
        self.drive_target, self.drive_sign = 0.0, 0

    # --- segments ----------------------------------------------------------------------

    def run(self) -> InstrumentPath:
        self._overnight()
        self._rth()
        self._afternoon()
        tape = Tape.concat(self.tapes)
        self._label_outcomes(tape)
        return InstrumentPath(self.regime.contracts.lead.symbol, ES_TICK, self.bid, self.draws, self.pi_buy, self.pressure,
                              tape, sweep_prob=1.0, depth_scale=1.0, activity_scale=1.0, walls=self.walls)

    def _append_tape(self, a: int, b: int, feed_bars: bool) -> None:
        tape = build_tape(self.draws, self.bid, self.pi_buy, a, b, self.start_ns)
        self.tapes.append(tape)
        if feed_bars:
            bars = minute_bars(tape, self.start_ns, ES_TICK)
            for m, h, lo, c in zip(bars["minute"].tolist(), bars["high"].tolist(), bars["low"].tolist(), bars["close"].tolist()):
                self.tracker.add_minute(int(m), h, lo, c)

    def _overnight(self) -> None:
        r = self.regime
        p0, p1 = r.lead_open_ticks, r.lead_close_ticks
        target = int(round(p0 + 0.35 * (p1 - p0) + self.rng.normal(0.0, 6.0 / ES_TICK)))
        a = self.s_rth
        self.bid[:a] = _bridge(p0, target, self.profile.vol_ticks[:a], self.u_step[:a], self.u_size[:a])
        self.bid[0] = p0
        self._append_tape(0, self.s_rth, feed_bars=True)

    def _afternoon(self) -> None:
        a = self.s_loop_end
        if a >= self.n:
            return
        self.bid[a:] = _bridge(int(self.bid[a - 1]), self.regime.lead_close_ticks, self.profile.vol_ticks[a:], self.u_step[a:],
                               self.u_size[a:])
        self._append_tape(a, self.n, feed_bars=False)

    # --- RTH: the planner loop --------------------------------------------------------------

    def _rth(self) -> None:
        self.s_loop_end = min(self.s_end + RESOLVE_AFTER_END_S, self.n)
        vol = self.profile.vol_ticks.tolist()
        u_step, u_size = self.u_step.tolist(), self.u_size.tolist()
        cur = int(self.bid[self.s_rth - 1])
        self._pause(self.s_rth, (cur + 0.5) * ES_TICK, 30)
        levels, atr = self.tracker.levels(), self.tracker.atr
        for s in range(self.s_rth, self.s_loop_end):
            if s % 60 == 0 and s > self.s_rth:
                self._append_tape(s - 60, s, feed_bars=True)
                levels, atr = self.tracker.levels(), self.tracker.atr
            spot = (cur + 0.5) * ES_TICK
            self.levels_now = levels
            mu, sigma_mult, lo, hi = self._drift(s, spot, levels, atr)
            nxt = min(max(cur + tick_step(sigma_mult * vol[s], mu, u_step[s], u_size[s]), lo), hi)
            if self.absorbing is not None and nxt != cur:
                self._print_the_wall(s, cur, nxt)
            if nxt != cur and self.phase in ("PAUSE", "APPROACH") and not self.escaping and \
                    self._enters_other_band(cur, nxt, levels, atr):
                toward_target = self.phase == "APPROACH" and (nxt - cur) * (levels.get(self.active.kind, spot) - spot) > 0
                nxt = cur
                if toward_target:  # another level stands in the way: go for that one next
                    self._abandon(s, spot, pause_s=self.plan_rng.uniform(2, 6))
            self.bid[s] = nxt
            cur = nxt
            if s < self.s_end + 1:
                self._detect_touches(s, cur, levels, atr)
        # the loop's last partial minute
        last_full = (self.s_loop_end // 60) * 60
        if last_full < self.s_loop_end:
            self._append_tape(last_full, self.s_loop_end, feed_bars=False)
        elif self.s_loop_end % 60 == 0:
            self._append_tape(self.s_loop_end - 60, self.s_loop_end, feed_bars=False)

    def _enters_other_band(self, cur: int, nxt: int, levels: dict[str, float], atr: float | None) -> bool:
        """Would this step move the touch closer to a level that is not the current target while
        within its band (plus 1.5 ticks)? Pauses and approach legs avoid that, so that most
        touches the pipeline sees are planned ones; drives may run through levels."""
        margin = self._band(atr) + 1.5 * ES_TICK
        target = levels.get(self.active.kind) if self.phase == "APPROACH" and self.active is not None else None
        now, then = (cur + 0.5) * ES_TICK, (nxt + 0.5) * ES_TICK
        for level in levels.values():
            if target is not None and abs(level - target) <= 2 * margin:
                continue  # the target itself, or a level in confluence with it
            if abs(then - level) <= margin and abs(then - level) < abs(now - level):
                return True
        return False

    def _band(self, atr: float | None) -> float:
        return max(TOUCH_BAND_FLOOR, TOUCH_BAND_ATR * (atr or 0.0))

    def _detect_touches(self, s: int, bid: int, levels: dict[str, float], atr: float | None) -> None:
        band = self._band(atr)
        mid = (bid + 0.5) * ES_TICK
        near = []
        for kind, level in levels.items():
            state = self.touch.setdefault(kind, TouchState())
            if abs(mid - level) <= band + 1.5:
                near.append(kind)
            else:
                state.observe_far(1.0 if mid > level else -1.0)
        if not near:
            return
        prints = build_tape(self.draws, self.bid, self.pi_buy, s, s + 1, self.start_ns)
        end_ns = self.regime.window.analysis_end_ns
        for price_ticks, ts in zip(prints.price.tolist(), prints.ts_ns.tolist()):
            if ts > end_ns:
                break
            price = price_ticks * ES_TICK
            for kind in near:
                direction = self.touch[kind].observe(price, ts, levels[kind], band)
                if direction is not None:
                    self._on_touch(s, ts, kind, levels[kind], direction, price, atr, band)

    # --- planner ------------------------------------------------------------------------------

    def _drift(self, s: int, spot: float, levels: dict[str, float], atr: float | None) -> tuple[float, float, int, int]:
        """(μ ticks/s, σ multiplier, lowest and highest allowed bid) for second s."""
        atr = atr or 1.0
        no_limit = (-(10**9), 10**9)
        self.pi_buy[s], self.pressure[s] = 0.5, 0.0
        if self.phase == "PAUSE":
            if s >= self.phase_end:
                if s < self.s_end - LAST_APPROACH_BEFORE_END_S and self._choose_approach(s, spot, levels, atr):
                    return self._drift(s, spot, levels, atr)
                self._pause(s, spot, 60)
            return -(spot - self.center) / ES_TICK / PAUSE_REVERSION_S, 1.0, *no_limit
        if self.phase == "APPROACH":
            ap = self.active
            level = levels.get(ap.kind)
            if level is None or s > ap.deadline:
                self._abandon(s, spot)
                return 0.0, 0.8, *no_limit
            dist = level - spot
            toward = 1.0 if dist > 0 else -1.0
            remaining_s = abs(dist) / max(ap.speed_ticks * ES_TICK, 1e-6)
            if remaining_s <= FLOW_TILT_WINDOW_S:
                tilt = math.tanh(ap.flow_tilt)
                self.pi_buy[s] = 0.5 + ap.dir_sign * FLOW_TILT * tilt
                self.pressure[s] = ap.dir_sign * 0.8 * tilt
            else:
                self.pi_buy[s] = 0.5 + 0.04 * ap.dir_sign
            band = self._band(atr)
            if abs(dist) <= band + 3 * ES_TICK:  # one tick at a time into the band: no jumping over it
                return toward * max(ap.speed_ticks, 0.2), 0.5, *self._one_tick_limits(spot)
            return toward * ap.speed_ticks, 0.9, *no_limit
        if self.phase == "HESITATE":
            if s >= self.phase_end:
                self._start_resolution(s)
                return self._drift(s, spot, levels, atr)
            return 0.0, 0.5, *self.hold_limits
        if self.phase == "DRIVE":
            gap = self.drive_target - spot
            if gap * self.drive_sign <= 0 or s > self.phase_end + 120:  # at or past the target
                self._finish_drive(s, spot)
                return self._drift(s, spot, levels, atr)
            self.pi_buy[s] = 0.5 + 0.2 * self.drive_sign
            mu = gap / ES_TICK / max(self.phase_end - s, 5)
            return max(-1.2, min(1.2, mu)), 0.8, *self.hold_limits
        if self.phase == "CHOP":
            if s >= self.phase_end:
                self._finish_drive(s, spot)
                return self._drift(s, spot, levels, atr)
            return -(spot - self.center) / ES_TICK / 20.0, 0.6, *self.hold_limits
        raise AssertionError(self.phase)

    @staticmethod
    def _one_tick_limits(spot: float) -> tuple[int, int]:
        bid = int(round(spot / ES_TICK - 0.5))
        return bid - 1, bid + 1

    def _pause(self, s: int, spot: float, seconds: float, center: float | None = None, escaping: bool = False) -> None:
        self.phase, self.phase_end = "PAUSE", s + int(seconds)
        self.center = spot if center is None else center
        self.escaping = escaping

    def _choose_approach(self, s: int, spot: float, levels: dict[str, float], atr: float) -> bool:
        band = self._band(atr)
        above = sorted((lv - spot, k) for k, lv in levels.items() if lv > spot)
        below = sorted((spot - lv, k) for k, lv in levels.items() if lv <= spot)
        shortest = band + 2 * ES_TICK  # clearly outside the band: a real approach
        comfortable = max(1.0, APPROACH_MIN_ATR * atr)
        candidates = []
        for side, ordered in ((1, above), (-1, below)):
            if ordered and ordered[0][0] >= shortest:  # the nearest level that way
                dist, kind = ordered[0]
                weight = math.exp(-dist / (8.0 * atr)) / (1.0 + self.planned_by_kind.get(kind, 0))
                candidates.append((weight * (1.0 if dist >= comfortable else 0.3), side, kind, dist))
        if not candidates:
            # Inside a level's band (or two): move away, allowed to cross, then try again.
            nearest = min(((abs(lv - spot), lv) for lv in levels.values()), default=None)
            if nearest is None:
                return False
            away = 1.0 if spot >= nearest[1] else -1.0
            self._pause(s, spot, self.plan_rng.uniform(60, 120), center=nearest[1] + away * 1.6 * comfortable, escaping=True)
            return True
        weights = np.array([c[0] for c in candidates])
        pick = candidates[int(self.plan_rng.choice(len(candidates), p=weights / weights.sum()))]
        _, dir_sign, kind, dist = pick
        speed_atr = float(np.clip(self.plan_rng.lognormal(math.log(SPEED_MEDIAN_ATR), 0.45), 0.12, 1.5))
        minutes = float(np.clip(dist / (speed_atr * atr), 1.5, 15.0))
        wall_lots = int(np.clip(round(self.plan_rng.lognormal(math.log(WALL_MEDIAN_LOTS), WALL_LOG_SD)), 20, 6000))
        level = levels[kind]
        wall_price = math.ceil(level / ES_TICK - 1e-9) if dir_sign > 0 else math.floor(level / ES_TICK + 1e-9)
        wall = Wall(side=1 if dir_sign > 0 else 0, price=int(wall_price), size=wall_lots,
                    start_ns=self.start_ns + s * NS_PER_S, end_ns=self.start_ns + (s + int(minutes * 60) + 900) * NS_PER_S)
        self.walls.append(wall)
        self.active = Approach(kind, dir_sign, dist / (minutes * 60.0) / ES_TICK, float(self.plan_rng.standard_normal()), wall,
                               deadline=s + int(minutes * 60) + 300)
        self.phase, self.escaping = "APPROACH", False
        return True

    def _abandon(self, s: int, spot: float, pause_s: float = 60.0) -> None:
        if self.active is not None:
            self.active.wall.end_ns = self.start_ns + s * NS_PER_S
        self.active = None
        self._pause(s, spot, pause_s)

    def _on_touch(self, s: int, ts: int, kind: str, level: float, direction: str, price: float, atr: float | None, band: float) -> None:
        dir_sign = 1 if direction == "UP" else -1
        planned = self.phase == "APPROACH" and self.active is not None and self.active.kind == kind
        if planned and self.active.dir_sign != dir_sign:
            self._abandon(s, price)
            planned = False
        row = self._measure(s, ts, kind, level, dir_sign, price, atr, band)
        if planned:
            self._draw_outcome(s, row)
        self.approaches.append(row)

    def _measure(self, s: int, ts: int, kind: str, level: float, dir_sign: int, price: float, atr: float | None, band: float) -> dict:
        """Observable precursors at the touch print, from data at or before it."""
        window = self._recent_prints(s, ts)
        buy = float(window.size[window.side > 0].sum())
        sell = float(window.size[window.side < 0].sum())
        flow_imbalance = dir_sign * (buy - sell) / (buy + sell) if buy + sell > 0 else 0.0
        mid_now = (self.bid[s] + 0.5) * ES_TICK
        mid_then = (self.bid[s - SPEED_WINDOW_S] + 0.5) * ES_TICK
        speed_ptm = dir_sign * (mid_now - mid_then) / (SPEED_WINDOW_S / 60.0)
        atr_v = atr if atr else float("nan")
        gamma = 0.0
        if self.chain is not None and self.flow is not None:
            gamma = dealer_gamma_near(self.chain, self.flow, self.regime.atm_vol, ts, level, mid_now)
        gamma_sign = int(np.sign(gamma))
        attempt = self.touch[kind].attempts
        return {
            "session_date": self.regime.session,
            "touch_ts_event": int(ts),
            "level_kind": kind,
            "level_price": float(level),
            "direction": "UP" if dir_sign > 0 else "DOWN",
            "dir_sign": dir_sign,
            "planned": False,
            "planner_phase": self.phase,
            "attempt": attempt,
            "front_symbol": self.regime.contracts.lead.symbol,
            "spot": price,
            "atr": atr_v,
            "band": band,
            "wall_lots": None,
            "wall_price": None,
            "flow_imbalance": flow_imbalance,
            "approach_speed_ptm": speed_ptm,
            "speed_atr": speed_ptm / atr_v if atr else None,
            "dealer_gamma": gamma,
            "gamma_sign": gamma_sign,
            "dealer_short_gamma": float(-gamma_sign),
        }

    def _recent_prints(self, s: int, ts: int) -> Tape:
        """Lead prints in (ts − 120 s, ts]: closed minutes' tapes plus this minute so far."""
        minute_start = (s // 60) * 60
        parts = [t for t in self.tapes[-3:]]
        parts.append(build_tape(self.draws, self.bid, self.pi_buy, minute_start, s + 1, self.start_ns))
        tape = Tape.concat(parts)
        keep = (tape.ts_ns > ts - FLOW_WINDOW_S * NS_PER_S) & (tape.ts_ns <= ts)
        return Tape(*(getattr(tape, f)[keep] for f in ("ts_ns", "price", "size", "side", "sweep", "second")))

    def _draw_outcome(self, s: int, row: dict) -> None:
        ap = self.active
        raw = {"wall_lots": float(ap.wall.size), "flow_imbalance": row["flow_imbalance"], "speed_atr": row["speed_atr"] or 0.0,
               "attempt": float(row["attempt"]), "dealer_short_gamma": row["dealer_short_gamma"]}
        z = standardized(raw)
        logit = observable_logit(z)
        u_chop, u_break, noise = self.outcome_rng.random(), self.outcome_rng.random(), self.outcome_rng.normal(0.0, NOISE_SD)
        p_break = sigmoid(logit + noise)
        outcome = CHOP if u_chop < CHOP_PROBABILITY else (BREAK if u_break < p_break else REJECT)
        row.update(planned=True, wall_lots=float(ap.wall.size), wall_price=ap.wall.price * ES_TICK, **z,
                   logit_observable=logit, noise=noise, p_break=p_break, p_break_observable=sigmoid(logit), outcome=outcome)
        self.planned_by_kind[ap.kind] = self.planned_by_kind.get(ap.kind, 0) + 1
        self.outcome, self.touch_level, self.touch_atr = outcome, row["level_price"], row["atr"] or 1.0
        self.phase, self.phase_end = "HESITATE", s + int(self.plan_rng.integers(0, 16))
        # After the touch the path never contradicts the drawn outcome: a break does not first
        # fall back 0.6 ATR below the level (UP; mirrored for DOWN), and a rejection or chop
        # may trade at its wall but never through it.
        atr = row["atr"] or 1.0
        level = row["level_price"]
        if outcome == BREAK:
            self.absorbing = ap.wall  # the sweep through the wall will print the wall
            if ap.dir_sign > 0:
                self.hold_limits = (math.ceil((level - ADVERSE_LIMIT_ATR * atr) / ES_TICK), 10**9)
            else:
                self.hold_limits = (-(10**9), math.floor((level + ADVERSE_LIMIT_ATR * atr) / ES_TICK) - 1)
        elif ap.dir_sign > 0:
            self.hold_limits = (-(10**9), ap.wall.price - 1)  # best ask ≤ the ask wall
        else:
            self.hold_limits = (ap.wall.price, 10**9)  # best bid ≥ the bid wall

    def _start_resolution(self, s: int) -> None:
        ap, atr, level = self.active, self.touch_atr, self.touch_level
        if self.outcome == CHOP:
            self.phase, self.phase_end = "CHOP", s + int(self.plan_rng.uniform(480, 720))
            # off the level, outside its touch band, inside the ±1 ATR label barriers
            self.center = level - ap.dir_sign * CHOP_CENTER_ATR * atr
            lo = int(math.ceil((self.center - CHOP_HALF_WIDTH_ATR * atr) / ES_TICK))  # lowest bid
            hi = int(math.floor((self.center + CHOP_HALF_WIDTH_ATR * atr) / ES_TICK)) - 1  # highest bid (ask inside)
            self.hold_limits = (max(lo, self.hold_limits[0]), min(hi, self.hold_limits[1]))
            ap.wall.end_ns = self.start_ns + self.phase_end * NS_PER_S
            return
        sign = ap.dir_sign if self.outcome == BREAK else -ap.dir_sign
        distance = float(self.plan_rng.uniform(1.3, 2.0)) * atr
        # Stop short of the next level on the way when the label barrier (1 ATR) allows it.
        margin = self._band(atr) + 2 * ES_TICK
        ahead = [sign * (lv - level) for lv in self.levels_now.values() if sign * (lv - level) > margin]
        if ahead and min(ahead) - margin < distance:
            distance = max(DRIVE_MIN_ATR * atr + 2 * ES_TICK, min(ahead) - margin)
        self.drive_target, self.drive_sign = level + sign * distance, sign
        self.phase, self.phase_end = "DRIVE", s + int(self.plan_rng.uniform(60, 180))
        if self.outcome == BREAK:
            ap.wall.absorb = True
            ap.wall.end_ns = self.start_ns + self.phase_end * NS_PER_S
        else:
            ap.wall.end_ns = self.start_ns + (self.phase_end + 30) * NS_PER_S

    def _print_the_wall(self, s: int, cur: int, nxt: int) -> None:
        """A break trades the wall: the sweep print at the wall's price carries its size."""
        wall = self.absorbing
        if wall.side == 1 and cur + 1 <= wall.price < nxt + 1:  # asks from cur+1 up to nxt are swept
            level = wall.price - (cur + 1)
        elif wall.side == 0 and nxt < wall.price <= cur:  # bids from cur down to nxt+1 are swept
            level = cur - wall.price
        else:
            return
        self.draws.sweep_size[s, min(level, MAX_STEP_TICKS - 1)] = wall.size
        self.absorbing = None

    def _finish_drive(self, s: int, spot: float) -> None:
        self.active = None
        self.absorbing = None  # a break that never reached its wall prints nothing special
        self._pause(s, spot, self.plan_rng.uniform(45, 180))

    # --- labels ---------------------------------------------------------------------------------

    def _label_outcomes(self, tape: Tape) -> None:
        """First-crossing label (θ = 1·ATR from the level, 4 min) of every touch, on the prints."""
        prices = tape.price * ES_TICK
        for row in self.approaches:
            t0 = row["touch_ts_event"]
            a = np.searchsorted(tape.ts_ns, t0, side="right")
            b = np.searchsorted(tape.ts_ns, t0 + 240 * NS_PER_S, side="right")
            theta = row["atr"] if row["atr"] == row["atr"] else 0.0
            level, sign = row["level_price"], row["dir_sign"]
            rel = (prices[a:b] - level) * sign
            up = np.flatnonzero(rel >= theta)
            down = np.flatnonzero(rel <= -theta)
            first_up = up[0] if len(up) else None
            first_down = down[0] if len(down) else None
            if first_up is None and first_down is None:
                row["label_4m"], row["label_4m_time_s"] = CHOP, None
            elif first_down is None or (first_up is not None and first_up < first_down):
                row["label_4m"], row["label_4m_time_s"] = BREAK, (tape.ts_ns[a + first_up] - t0) / NS_PER_S
            else:
                row["label_4m"], row["label_4m_time_s"] = REJECT, (tape.ts_ns[a + first_down] - t0) / NS_PER_S
            if not row["planned"]:
                row["outcome"] = row["label_4m"]


# --- the other contracts ---------------------------------------------------------------------


def _rth_volume(tape: Tape, regime: SessionRegime, core_multiplier: float) -> float:
    """RTH volume with core (non-sweep) prints counted `core_multiplier` times (expected copies)."""
    w = regime.window
    keep = (tape.ts_ns >= w.rth_open_ns) & (tape.ts_ns < w.close_ns)
    weight = np.where(tape.sweep[keep], 1.0, core_multiplier)
    return float((tape.size[keep] * weight).sum())


def simulate_other(config: SyntheticConfig, regime: SessionRegime, profile: IntradayProfile, lead: InstrumentPath) -> InstrumentPath:
    """The non-lead outright: the lead's path sampled every 10 s plus the basis difference,
    with trades scaled so that its share of RTH volume matches the roll schedule at this
    scale (extra prints multiply core prints only, so the target counts them)."""
    c = regime.contracts
    other = c.other
    basis_ticks = int(round((regime.basis[other.symbol] - regime.basis[c.lead.symbol]) / ES_TICK))
    sample = (np.arange(regime.n_seconds) // OTHER_SAMPLE_S) * OTHER_SAMPLE_S
    bid = lead.bid[sample] + basis_ticks
    share_ratio = (1.0 - c.lead_share) / c.lead_share
    sweep_prob = min(1.0, 1.5 * share_ratio)
    multiplier = 1.0 + config.profile.trade_copies
    target = share_ratio * _rth_volume(lead.tape, regime, multiplier)
    start_ns = regime.window.globex_open_ns
    rate = profile.trade_rate * share_ratio
    draws = draw_tape(config.rng(regime.session, f"tape:{other.symbol}"), rate, minute_floor=False)
    tape = build_tape(draws, bid, lead.pi_buy, 0, regime.n_seconds, start_ns, sweep_prob)
    sweeps_only = _rth_volume(tape, regime, 0.0)
    core = _rth_volume(tape, regime, multiplier) - sweeps_only
    if core > 0:  # second pass at the rate that hits the target share
        rate = rate * max(target - sweeps_only, 0.05 * target) / core
        draws = draw_tape(config.rng(regime.session, f"tape:{other.symbol}:2"), rate, minute_floor=False)
        tape = build_tape(draws, bid, lead.pi_buy, 0, regime.n_seconds, start_ns, sweep_prob)
    return InstrumentPath(other.symbol, ES_TICK, bid, draws, lead.pi_buy, np.zeros(regime.n_seconds), tape, sweep_prob,
                          depth_scale=0.25 + 0.75 * share_ratio, activity_scale=0.15 + 0.85 * share_ratio)


def simulate_spread(config: SyntheticConfig, regime: SessionRegime, profile: IntradayProfile) -> InstrumentPath:
    """The calendar spread (deferred − nearby, 0.05 tick): a slow walk around the basis gap."""
    c = regime.contracts
    rng = config.rng(regime.session, "path:spread")
    n = regime.n_seconds
    center = int(round((regime.basis[c.far.symbol] - regime.basis[c.near.symbol]) / SPREAD_TICK))
    steps = np.where(rng.random(n) < 0.004, rng.choice([-1, 1], n), 0)
    walk = np.cumsum(steps)
    walk -= np.rint(np.linspace(0, 1, n) * walk[-1]).astype(np.int64)  # starts and ends at the gap
    bid = center - 1 + walk
    activity = ROLL_WEEK_SPREAD_ACTIVITY if c.roll_week else 1.0
    rate = profile.trade_rate * 0.01 * activity
    draws = draw_tape(config.rng(regime.session, "tape:spread"), rate, minute_floor=False)
    pi_buy = np.full(n, 0.5)
    tape = build_tape(draws, bid, pi_buy, 0, n, regime.window.globex_open_ns, sweep_prob=0.5)
    return InstrumentPath(c.spread_symbol, SPREAD_TICK, bid, draws, pi_buy, np.zeros(n), tape, 0.5,
                          depth_scale=3.0, activity_scale=0.02 * activity)


def simulate_session(config: SyntheticConfig, regime: SessionRegime, chain: OptionChain | None, flow: OptionFlow | None) -> SimulatedSession:
    profile = intraday_profile(regime.window, regime.vol_mult)
    lead = LeadSimulator(config, regime, profile, chain, flow)
    lead_path = lead.run()
    other = simulate_other(config, regime, profile, lead_path)
    spread = simulate_spread(config, regime, profile)
    return SimulatedSession(regime, profile, lead_path, other, spread, lead.approaches)
