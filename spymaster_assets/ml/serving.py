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


def model_answer(store: Lake, session: dt.date, clock: dt.time, level_kind: str) -> dict | None:
    """D's model on "price touches `level_kind` at `clock`": prediction and drivers (percentiles
    against the episodes of the model's own training window). The model is the one in
    ml/break_model/date=D, trained only on sessions before D, so a past date gets the answer
    that date would have had. None when D has no model partition; a partition without a
    model (not enough history) answers with its reason instead of a number."""
    from ..gold.as_of import setup_at

    summary = read_summary(store, session)
    if summary is None:
        return None
    if summary["status"] == NOT_ENOUGH_HISTORY:
        return {"model_as_of": session.isoformat(), "not_enough_history": summary["note"]}
    loaded = load_model(store, session)
    if loaded is None:
        raise FileNotFoundError(f"ml/break_model/date={session} says {summary['status']} but holds no model files")
    predictor, _, provenance = loaded
    setup, _ = setup_at(store, session, clock, level_kind)
    missing = [n for n in predictor.feature_names if setup[n].is_null().any()]
    if missing:
        raise ValueError(f"the model as of {session} needs dimensions this session's tier lacks, e.g. {missing[:3]}")
    history = read_window(store, [day for day in store.partitions("gold", "episodes")
                                  if provenance["trained_on_first"] <= day <= provenance["trained_on_last"]])
    context = {"session": session.isoformat(), "time_et": clock.strftime("%H:%M"), "level_kind": level_kind,
               "direction": setup["direction"][0], "time_bucket": setup["time_bucket"][0]}
    answer = explain_setups(predictor, setup, history, context)[0]
    return answer | {
        "model_as_of": str(summary["trained_for"]),
        "partition": session.isoformat(),
        "trained_on_first": provenance["trained_on_first"],
        "trained_on_last": provenance["trained_on_last"],
        "model_status": summary["status"],
        "mlflow_run_id": summary["mlflow_run_id"],
    }
