"""The model's answer for one setup on session D: D's own model (as of D), its p(BREAK), class mix and drivers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.break_model import BreakPredictor
from ..lib.episodes import vector_layout
from .model_store import NOT_ENOUGH_HISTORY, load_model, read_summary
from .training import read_window


def explain_setups(predictor: BreakPredictor, setups: pl.DataFrame, history: pl.DataFrame, context: dict | None = None) -> list[dict]:
    """A `level_signal`-shaped explanation per setup (rows with the model's vector columns)."""
    names = list(predictor.feature_names)
    layout = {d.name: d for d in vector_layout()}
    sections = {n: layout[n].section for n in names}
    drivers = {n: layout[n].driver for n in names}
    X = setups.select(names).to_numpy().astype(np.float64)
    history_X = history.select(names).to_numpy().astype(np.float64) if history.height else None
    return [predictor.explain(X[i], names, sections, drivers, history_X=history_X, context=context) for i in range(len(X))]


class ServingModel:
    """D's model loaded once for many questions (the live engine asks every 30 s): the predictor,
    its training window's episodes (for driver percentiles) and the partition's summary."""

    def __init__(self, store: Lake, session: dt.date, summary: dict, predictor: BreakPredictor | None = None,
                 provenance: dict | None = None):
        self.session, self.summary, self.predictor, self.provenance = session, summary, predictor, provenance or {}
        self.history = pl.DataFrame()
        if predictor is not None:
            self.history = read_window(store, [day for day in store.partitions("gold", "episodes")
                                               if self.provenance["trained_on_first"] <= day <= self.provenance["trained_on_last"]])

    @classmethod
    def load(cls, store: Lake, session: dt.date) -> ServingModel | None:
        """None when D has no model partition; a partition without a model (not enough history)
        loads without a predictor and answers with its reason."""
        summary = read_summary(store, session)
        if summary is None:
            return None
        if summary["status"] == NOT_ENOUGH_HISTORY:
            return cls(store, session, summary)
        loaded = load_model(store, session)
        if loaded is None:
            raise FileNotFoundError(f"ml/break_model/date={session} says {summary['status']} but holds no model files")
        predictor, _, provenance = loaded
        return cls(store, session, summary, predictor, provenance)

    @property
    def model_as_of(self) -> str:
        return str(self.summary["trained_for"]) if self.predictor is not None else self.session.isoformat()

    def answer(self, setup: pl.DataFrame, clock: dt.time, level_kind: str) -> dict:
        if self.predictor is None:
            return {"model_as_of": self.session.isoformat(), "not_enough_history": self.summary["note"]}
        missing = [n for n in self.predictor.feature_names if setup[n].is_null().any()]
        if missing:
            raise ValueError(f"the model as of {self.session} needs dimensions this session's tier lacks, e.g. {missing[:3]}")
        context = {"session": self.session.isoformat(), "time_et": clock.strftime("%H:%M"), "level_kind": level_kind,
                   "direction": setup["direction"][0], "time_bucket": setup["time_bucket"][0]}
        answer = explain_setups(self.predictor, setup, self.history, context)[0]
        return answer | {
            "model_as_of": self.model_as_of,
            "partition": self.session.isoformat(),
            "trained_on_first": self.provenance["trained_on_first"],
            "trained_on_last": self.provenance["trained_on_last"],
            "model_status": self.summary["status"],
            "mlflow_run_id": self.summary["mlflow_run_id"],
        }


def model_answer(store: Lake, session: dt.date, clock: dt.time, level_kind: str) -> dict | None:
    """D's model on "price touches `level_kind` at `clock`": prediction and drivers (percentiles
    against the episodes of the model's own training window). The model is the one in
    ml/break_model/date=D, trained only on sessions before D, so a past date gets the answer
    that date would have had. None when D has no model partition; a partition without a
    model (not enough history) answers with its reason instead of a number."""
    from ..gold.as_of import setup_at

    model = ServingModel.load(store, session)
    if model is None:
        return None
    if model.predictor is None:
        return model.answer(pl.DataFrame(), clock, level_kind)
    setup, _ = setup_at(store, session, clock, level_kind)
    return model.answer(setup, clock, level_kind)
