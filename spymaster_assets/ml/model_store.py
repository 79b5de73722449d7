"""The as-of break model in the lake: `ml/break_model/date=D/` holds everything serving D needs.

Files of a partition (published atomically through the Lake's staging_dir/publish_dir):
- `part-0.parquet`: one summary row (status, as-of dates, training range, base rates, MLflow run);
- `binary.txt`, `multiclass.txt`: the LightGBM boosters as model text (exact round trip);
- `predictor.json`: calibrators, base rates, class order, feature layout and the single-feature
  baseline, as plain numbers.
A "not enough history" partition has the summary row only: no model, so no predictions.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ..lake import Lake
from ..lib.baselines import SingleFeatureBaseline
from ..lib.break_model import BreakPredictor

LAYER, TABLE = "ml", "break_model"
MODEL_FILES = ("binary.txt", "multiclass.txt", "predictor.json")
SCHEMA_VERSION = "as-of-1"
TRAINED, REUSED, NOT_ENOUGH_HISTORY = "trained", "reused", "not_enough_history"

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "as_of": pl.Date,  # the partition: the session this model serves
    "status": pl.Utf8,  # trained | reused | not_enough_history
    "trained_for": pl.Date,  # the retrain session whose window it was fitted on (≤ as_of)
    "reused_from": pl.Date,  # the partition it was copied from, when reused
    "trained_on_first": pl.Date,
    "trained_on_last": pl.Date,
    "n_sessions": pl.Int64,
    "n_episodes": pl.Int64,
    "n_decisive": pl.Int64,
    "n_incomplete": pl.Int64,  # window episodes left out for a NaN in a dimension their tier supplies
    "tier": pl.Utf8,
    "base_break": pl.Float64,  # BREAK share of all window episodes
    "base_reject": pl.Float64,
    "base_chop": pl.Float64,
    "base_break_decisive": pl.Float64,  # BREAK share of decisive window episodes
    "calibration": pl.Utf8,
    "class_calibration": pl.Utf8,
    "held_out_auc_decisive": pl.Float64,
    "class_share_gap": pl.Float64,  # max |mean calibrated held-out class share − window base rate|
    "class_share_gap_raw": pl.Float64,  # the same before the multiclass calibrator
    "class_share_tolerance": pl.Float64,  # the gap CLASS_SHARES_MATCH_BASE_RATES allows (ml/assets.class_share_tolerance)
    "baseline_feature": pl.Utf8,
    "baseline_window_auc": pl.Float64,
    "mlflow_run_id": pl.Utf8,
    "note": pl.Utf8,
}


def model_dir(store: Lake, session: dt.date | str) -> Path:
    return store.partition_dir(LAYER, TABLE, session)


def write_model_files(directory: Path, predictor: BreakPredictor, baseline: SingleFeatureBaseline | None,
                      provenance: dict) -> None:
    predictor.binary_booster.save_model(str(directory / "binary.txt"))
    predictor.multiclass_booster.save_model(str(directory / "multiclass.txt"))
    payload = predictor.metadata() | {"baseline": baseline.to_dict() if baseline else None, "provenance": provenance}
    (directory / "predictor.json").write_text(json.dumps(payload, indent=1, sort_keys=True))


def copy_model_files(source: Path, directory: Path) -> None:
    for name in MODEL_FILES:
        shutil.copyfile(source / name, directory / name)


def write_summary(directory: Path, row: dict, metadata: dict[str, str]) -> None:
    """The partition's one-row summary table, in the staged version `directory`."""
    frame = pl.DataFrame([{k: row.get(k) for k in SUMMARY_SCHEMA}], schema=SUMMARY_SCHEMA)
    table = frame.to_arrow()
    table = table.replace_schema_metadata({k: str(v) for k, v in sorted(metadata.items())})
    pq.write_table(table, Lake.staged_data_file(directory), compression="zstd")


def read_summary(store: Lake, session: dt.date | str) -> dict | None:
    if not store.has_partition(LAYER, TABLE, session):
        return None
    return store.read(LAYER, TABLE, session).row(0, named=True)


def has_model(directory: Path) -> bool:
    return all((directory / name).is_file() for name in MODEL_FILES)


def load_model(store: Lake, session: dt.date | str) -> tuple[BreakPredictor, SingleFeatureBaseline | None, dict] | None:
    """D's predictor, baseline and provenance, or None when D's partition holds no model.
    Cached per partition folder and modification time (a rebuilt partition is reloaded)."""
    directory = model_dir(store, session)
    if not has_model(directory):
        return None
    return _load_model_files(directory, (directory / "predictor.json").stat().st_mtime_ns)


# A server answering for many dates keeps the most recent ones loaded, not every date it ever served.
@functools.lru_cache(maxsize=32)
def _load_model_files(directory: Path, modified_ns: int) -> tuple[BreakPredictor, SingleFeatureBaseline | None, dict]:
    import lightgbm as lgb  # here, not at module level: see lib/break_model.py

    meta = json.loads((directory / "predictor.json").read_text())
    predictor = BreakPredictor.from_parts(lgb.Booster(model_file=str(directory / "binary.txt")),
                                          lgb.Booster(model_file=str(directory / "multiclass.txt")), meta)
    baseline = SingleFeatureBaseline.from_dict(meta["baseline"]) if meta.get("baseline") else None
    return predictor, baseline, meta.get("provenance", {})
