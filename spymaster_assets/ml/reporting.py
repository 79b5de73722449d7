"""What every report asset shares: reading a session table whole, publishing JSON + an MLflow run."""

import dagster as dg
import numpy as np
import polars as pl

from ..lake import Lake, write_json_atomic
from ..lib.mlflow_tracking import log_report
from ..partitioned import OWNERS
from ..resources import MlflowResource

REPORT_DEFAULTS = dict(
    group_name="reports",
    kinds={"json", "mlflow"},
    owners=OWNERS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)


def read_table(store: Lake, layer: str, table: str) -> pl.DataFrame:
    frames = [store.read(layer, table, day) for day in store.partitions(layer, table)]
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def publish(context, store: Lake, mlflow: MlflowResource, name: str, report: dict, headline: dict[str, float],
            extra_metadata: dict | None = None):
    path = write_json_atomic(store.root / "reports" / name / "report.json", report)
    run_id = log_report(mlflow.home_path(), name, path, headline)
    context.log.info(f"{name}: {headline}")
    finite = {k: dg.MetadataValue.float(float(v)) for k, v in headline.items() if v is not None and np.isfinite(v)}
    return dg.MaterializeResult(metadata={"report": dg.MetadataValue.path(str(path)), "mlflow_run_id": run_id,
                                          **finite, **(extra_metadata or {})})


def empty(reason: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"computed": False, "reason": reason})
