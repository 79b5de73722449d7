"""The serving model's answer for one setup: calibrated p(BREAK), the class mix, and its drivers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from ..lake import Lake
from ..lib.break_model import BreakPredictor
from ..lib.episodes import vector_layout
from ..lib.mlflow_tracking import load_break_model, run_params, serving_run_id, tracking_db
from .training import labelled_episodes


_LOADED: dict[tuple[Path, str], tuple[str, BreakPredictor, str]] = {}


def serving_model(home: Path) -> tuple[str, BreakPredictor, str] | None:
    """The promoted model (MLflow alias `serving`) under `home` and the last session it was
    trained on. The alias is looked up on every call (a promotion takes effect at once); each
    run's model is loaded once per process."""
    if not tracking_db(home).exists():  # nothing was ever trained here: don't create a store to find that out
        return None
    run_id = serving_run_id(home)
    if run_id is None:
        return None
    if (home, run_id) not in _LOADED:
        trained_through = run_params(home, run_id).get("data.last_session", "")
        _LOADED[(home, run_id)] = (run_id, load_break_model(run_id, home), trained_through)
    return _LOADED[(home, run_id)]


def explain_setups(predictor: BreakPredictor, setups: pl.DataFrame, history: pl.DataFrame, context: dict | None = None) -> list[dict]:
    """A `level_signal`-shaped explanation per setup (rows with the model's vector columns)."""
    names = list(predictor.feature_names)
    layout = {d.name: d for d in vector_layout()}
    sections = {n: layout[n].section for n in names}
    drivers = {n: layout[n].driver for n in names}
    X = setups.select(names).to_numpy().astype(np.float64)
    history_X = history.select(names).to_numpy().astype(np.float64) if history.height else None
    return [predictor.explain(X[i], names, sections, drivers, history_X=history_X, context=context) for i in range(len(X))]


def model_answer(store: Lake, session: dt.date, clock: dt.time, level_kind: str, home: Path | None = None) -> dict | None:
    """The serving model on "price touches `level_kind` at `clock`": prediction and drivers
    (percentiles against the episodes of sessions before `session`). None when no model is serving."""
    from ..gold.as_of import setup_at

    home = home or store.root.parent
    served = serving_model(Path(home))
    if served is None:
        return None
    run_id, predictor, trained_through = served
    setup, _ = setup_at(store, session, clock, level_kind)
    missing = [n for n in predictor.feature_names if setup[n].is_null().any()]
    if missing:
        raise ValueError(f"the serving model needs dimensions this session's tier lacks, e.g. {missing[:3]}")
    history = labelled_episodes(store, before=session)
    context = {"session": session.isoformat(), "time_et": clock.strftime("%H:%M"), "level_kind": level_kind,
               "direction": setup["direction"][0], "time_bucket": setup["time_bucket"][0]}
    answer = explain_setups(predictor, setup, history, context)[0]
    # A historical query inside the training range is in-sample: say so rather than pass it off as a forecast.
    return answer | {"model_run_id": run_id, "trained_through": trained_through,
                     "in_sample": session.isoformat() <= trained_through}
