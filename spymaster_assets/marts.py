"""Analyst marts: the dbt project over the lake, as Dagster assets (group "marts").

`dbt build` runs models and tests together; every dbt test becomes an asset check on the model
it tests (blocking when its severity is error). Sources are the lake tables, keyed to the assets
that write them (`meta.dagster.asset_key` in dbt/models/sources.yml). dbt writes the same DuckDB
file as `warehouse/lake_views`, and DuckDB admits one writer: the staging models therefore depend
on `warehouse/lake_views`, so in a run that has both, dbt starts after the views are written and
their connection is closed.
"""

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from .dbt_project import dbt_project
from .partitioned import OWNERS
from .warehouse import LAKE_VIEWS_KEY

MARTS_GROUP = "marts"

# dbt runs as a subprocess: use the dbt of this interpreter's environment, so a service or test
# that did not activate the venv (no `.venv/bin` on PATH) still finds it.
_VENV_DBT = Path(sys.executable).parent / "dbt"
DBT_EXECUTABLE = str(_VENV_DBT) if _VENV_DBT.exists() else "dbt"


class MartsTranslator(DagsterDbtTranslator):
    """dbt models are keyed `[schema, model]` (`["marts", "daily_level_stats"]`, `["staging", "stg_events"]`),
    all in group "marts"; models that read the lake directly also wait for `warehouse/lake_views`."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] != "model":
            return spec
        spec = spec.replace_attributes(group_name=MARTS_GROUP, owners=OWNERS)
        reads_lake = any(node.startswith("source.") for node in props.get("depends_on", {}).get("nodes", []))
        return spec.merge_attributes(deps=[LAKE_VIEWS_KEY]) if reads_lake else spec


class SpymasterDbtResource(DbtCliResource):
    """`DbtCliResource` bound to one project home: dbt reads `<home>/lake` and writes
    `<home>/warehouse.duckdb` (dbt/profiles.yml and sources.yml take both from SPYMASTER_HOME)."""

    spymaster_home: str = Field(description="Project home whose lake dbt reads and whose warehouse.duckdb it writes")

    def cli(self, args: list[str], **kwargs: Any):
        # DbtCliResource hands dbt a copy of os.environ taken inside cli(); set the home only for that copy.
        with _environ(SPYMASTER_HOME=self.spymaster_home):
            return super().cli(args, **kwargs)


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def dbt_resource(home: Path | str) -> SpymasterDbtResource:
    """The `dbt` resource for a project home (used by `resources_from_env` and the tests)."""
    return SpymasterDbtResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE,
                                spymaster_home=str(Path(home).resolve()))


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=MartsTranslator(),
    name="marts_dbt",
    # Unpartitioned, but it rides along in range runs of the daily job (like warehouse/lake_views).
    backfill_policy=dg.BackfillPolicy.single_run(),
    # One writer at a time on warehouse.duckdb across runs (instance concurrency pool).
    pool="duckdb",
)
def marts_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """`dbt build` of the analyst marts: staging views over the lake, then daily_level_stats,
    outcomes_by_segment, retrieval_calibration and model_performance_by_fold, each followed by its tests."""
    yield from dbt.cli(["build"], context=context).stream()


marts_assets = [marts_dbt]
