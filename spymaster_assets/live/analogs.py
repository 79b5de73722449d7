"""What the live engine answers from, all as of the session, and the approach signal it builds.

`SessionArtifacts.load(store, D)` reads D's own partitions only — each fitted or built on
sessions strictly before D: gold/stream_normalization and ml/projection_models (streams),
gold/similarity_index via `AsOf` (retrieval), ml/break_model via `ServingModel` (probability and
drivers), earlier sessions' silver/bars_1m (the analogs' price paths) and earlier sessions'
ml/break_predictions (the trust block: how often answers in this probability bucket came true).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..gold.as_of import AsOf, setup_from_state
from ..lake import Lake
from ..lib.calendar import ns_to_et, sessions_before, session_window
from ..lib.retrieval import OutcomeSmoother, RetrievalResult
from ..lib.stream_projections import ProjectionModels
from ..ml.projections import LAYER as PROJECTION_LAYER, MODELS_TABLE as PROJECTION_MODELS, load_projectors, read_meta
from ..ml.serving import ServingModel
from . import messages as m

NS_PER_S = 1_000_000_000
ANALOGS_SHOWN = 8
PATH_STEP_S = 60  # 1-min bars: every tier has them
PATH_BEFORE_S = 600  # the path shown from 10 min before the touch ...
PATH_AFTER_S = 600  # ... to 10 min after it
TRUST_SESSIONS = 250  # the index's window: earlier answers as old as the oldest neighbour
BUCKET_WIDTH = 0.1


def bucket_of(p: float) -> tuple[float, str]:
    low = round(float(min(np.floor(p / BUCKET_WIDTH) * BUCKET_WIDTH, 1.0 - BUCKET_WIDTH)), 6)
    return low, f"{low:.1f}–{low + BUCKET_WIDTH:.1f}"


def analog_path(bars_1m: pl.DataFrame, touch_ns: int, level_price: float, dir_sign: int) -> tuple[list[float | None], float | None]:
    """Closes of the 1-min bars around a past touch, (close − level)/ATR × dir_sign at the touch's
    ATR (> 0 = through the level the way the approach went), one point per minute; None where no
    bar had closed. Forward-looking by design: this is what happened after a *past* touch."""
    offsets = np.arange(-PATH_BEFORE_S, PATH_AFTER_S + 1, PATH_STEP_S, dtype=np.int64) * NS_PER_S
    ends = bars_1m["bar_end_ns"].to_numpy()
    idx = np.searchsorted(ends, touch_ns + offsets, side="right") - 1
    at_touch = np.searchsorted(ends, touch_ns, side="right") - 1
    atr = bars_1m["atr"].to_numpy()[at_touch] if at_touch >= 0 else np.nan
    if not np.isfinite(atr) or atr <= 0:
        return [None] * len(offsets), None
    close = bars_1m["close"].to_numpy()
    path = np.where(idx >= 0, (close[np.maximum(idx, 0)] - level_price) / atr * dir_sign, np.nan)
    return [None if np.isnan(v) else float(v) for v in path], float(atr)


@dataclass
class TrustTable:
    """Realised BREAK share of the as-of model's earlier decisive answers, per p(BREAK) bucket."""

    hits: dict[float, tuple[float, int]]

    @classmethod
    def load(cls, store: Lake, session: dt.date) -> TrustTable:
        days = [d for d in sessions_before(session, TRUST_SESSIONS) if store.has_partition("ml", "break_predictions", d)]
        frames = [store.read("ml", "break_predictions", d, columns=["label", "p_break_decisive"]) for d in days]
        scored = pl.concat(frames) if frames else pl.DataFrame(schema={"label": pl.Utf8, "p_break_decisive": pl.Float64})
        decided = scored.filter(pl.col("label").is_in(["BREAK", "REJECT"]) & pl.col("p_break_decisive").is_not_null())
        low = (pl.col("p_break_decisive") / BUCKET_WIDTH).floor().clip(0, 1 / BUCKET_WIDTH - 1) * BUCKET_WIDTH
        table = decided.group_by(low.round(6).alias("low")).agg((pl.col("label") == "BREAK").mean().alias("hit"), pl.len().alias("n"))
        return cls({round(r["low"], 6): (r["hit"], r["n"]) for r in table.iter_rows(named=True)})

    def trust(self, p_break: float | None, index_as_of, model_as_of) -> m.Trust:
        if p_break is None:
            return m.Trust(index_as_of=index_as_of, model_as_of=model_as_of, bucket="n/a", bucket_hit_rate=None, bucket_n=0)
        low, label = bucket_of(p_break)
        hit, n = self.hits.get(low, (None, 0))
        return m.Trust(index_as_of=index_as_of, model_as_of=model_as_of, bucket=label, bucket_hit_rate=hit, bucket_n=n)


@dataclass
class SessionArtifacts:
    store: Lake
    session: dt.date
    stream_stats: pl.DataFrame
    projectors: ProjectionModels
    projection_as_of: dt.date | None
    as_of: AsOf | None
    model: ServingModel | None
    trust_table: TrustTable
    _bars: dict[str, pl.DataFrame] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Lake, session: dt.date) -> SessionArtifacts:
        if not store.has_partition("gold", "stream_normalization", session):
            raise FileNotFoundError(f"no gold/stream_normalization for {session}: materialize the session's as-of assets first")
        projectors, projection_as_of = ProjectionModels(), None
        if store.has_partition(PROJECTION_LAYER, PROJECTION_MODELS, session):
            projectors = load_projectors(store, session)
            projection_as_of = dt.date.fromisoformat(read_meta(store, session)["trained_for"]) if projectors else None
        as_of = AsOf(store, session) if store.has_partition("gold", "normalization_stats", session) else None
        return cls(store, session, store.read("gold", "stream_normalization", session), projectors, projection_as_of,
                   as_of, ServingModel.load(store, session), TrustTable.load(store, session))

    @property
    def index_as_of(self) -> dt.date | None:
        if self.as_of is None or self.as_of.stored is None:
            return None
        latest = self.as_of.stored.manifest()["latest_indexed_session"]
        return None if latest is None else dt.date.fromisoformat(latest)

    def bars_1m(self, session: dt.date) -> pl.DataFrame:
        key = str(session)
        if session >= self.session:
            raise ValueError(f"an analog of {self.session} from {session} would not be as of the session")
        if key not in self._bars:
            self._bars[key] = self.store.read("silver", "bars_1m", key, columns=["bar_end_ns", "close", "atr"])
        return self._bars[key]

    # -- the answer for one approaching level -------------------------------------------------------------------

    def retrieval(self, setup: pl.DataFrame) -> RetrievalResult | None:
        return None if self.as_of is None or self.as_of.stored is None else self.as_of.answer(setup)[0]

    def model_answer(self, setup: pl.DataFrame, clock: dt.time, level_kind: str) -> dict | None:
        return None if self.model is None else self.model.answer(setup, clock, level_kind)

    def signal(self, state: pl.DataFrame, row: dict, approach_id: str, smoother: OutcomeSmoother, frame: dict) -> m.LevelSignal:
        t_ns, kind = frame["ts_ns"], row["level_kind"]
        clock = ns_to_et(t_ns).time()
        setup, _ = setup_from_state(state, self.session, t_ns, kind)
        result = self.retrieval(setup)
        model = self.model_answer(setup, clock, kind)
        retrieval = None if result is None else retrieval_answer(result)
        smoothed = None if result is None else smoother.update(approach_id, result.probabilities)
        model_msg, drivers = None, {"break": [], "reject": []}
        if model is not None and "prediction" in model:
            p = model["prediction"]
            model_msg = m.ModelAnswer(p_break=p["p_break"], p_chop=p["p_chop"], base_rate=p["base_rate"], edge=p["edge"],
                                      model_as_of=dt.date.fromisoformat(model["model_as_of"]))
            drivers = {side: [m.Driver(name=d["name"], edge=d["edge"], percentile=d["percentile"]) for d in entries]
                       for side, entries in model["drivers"].items()}
        direction = setup["direction"][0]
        d_atr = row["d_atr"]
        return m.LevelSignal(
            **frame, approach_id=approach_id, approach_state="active",
            level=m.LevelInfo(kind=kind, price=row["level_price"], direction=direction,
                              distance_atr=float(d_atr) if d_atr is not None else float("nan")),
            retrieval=retrieval, model=model_msg, smoothed=smoothed, drivers=drivers,
            analogs=self.analogs(result), context={
                "time_bucket": setup["time_bucket"][0], "attempt_index": _int(row.get("attempt_index")),
                "touches_today": _int(row.get("touches_today")), "tier": row["tier"],
                "minutes_since_open": row.get("minutes_since_open")},
            trust=self.trust_table.trust(model_msg.p_break if model_msg else None, self.index_as_of,
                                         model_msg.model_as_of if model_msg else None))

    def analogs(self, result: RetrievalResult | None) -> list[m.Analog]:
        if result is None or result.n_neighbours == 0:
            return []
        out = []
        # A neighbour without excursions (never expected of a labelled episode) is not drawn rather than drawn wrong.
        shown = result.neighbours.filter(pl.col("mfe_atr").is_not_null() & pl.col("mae_atr").is_not_null())
        for n in shown.head(ANALOGS_SHOWN).iter_rows(named=True):
            dir_sign = 1 if n["direction"] == "UP" else -1
            path, _ = analog_path(self.bars_1m(n["session"]), n["ts_ns"], n["level_price"], dir_sign)
            out.append(m.Analog(session=n["session"], level_kind=n["level_kind"], direction=n["direction"],
                                similarity=n["similarity"], weight=n["weight"], outcome=n["label"],
                                mfe_atr=n["mfe_atr"], mae_atr=n["mae_atr"], path_step_s=PATH_STEP_S,
                                path_start_s=-PATH_BEFORE_S, path_atr=path))
        return out


def _int(value) -> int | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(value)


def retrieval_answer(result: RetrievalResult) -> m.RetrievalAnswer:
    quantiles = result.similarity_p10_median_p90
    return m.RetrievalAnswer(
        probabilities=result.probabilities, p_break_interval=result.p_break_interval,
        credible_level=result.credible_level, effective_n=result.effective_n, n_neighbours=result.n_neighbours,
        base_rates=result.base_rates, edge=result.probabilities["BREAK"] - result.base_rates["BREAK"],
        insufficient_history=result.insufficient_history, median_similarity=None if quantiles is None else quantiles[1])
