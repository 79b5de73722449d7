"""Analyst marts: the dbt project over the lake, as Dagster assets (group "marts").

Every model is a DuckDB view (staging and marts): it reads the lake's partitions when queried,
so session D's rows are in the marts as soon as D's daily run has written its partitions, and
the daily run builds nothing here. The views are re-created only when a lake table appears (a
staging model reads a table without partitions as an empty relation) or the dbt code changes —
`warehouse_layout_sensor` launches `warehouse_job` then — and weekly, with the dbt tests, after
the reports (`weekly_reports_job`).

`dbt build` runs models and tests together; every dbt test becomes an asset check on the model
it tests (blocking when its severity is error). Sources are the lake tables, keyed to the assets
that write them (`meta.dagster.asset_key` in dbt/models/sources.yml). dbt writes the same DuckDB
file as `warehouse/lake_views`, and DuckDB admits one writer: the staging models therefore depend
on `warehouse/lake_views`, so in a run that has both, dbt starts after the views are written and
their connection is closed.
"""

import importlib.metadata
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, DbtProject, dbt_assets
from packaging import version
from pydantic import Field

from .dbt_project import dbt_project
from .partitioned import OWNERS
from .warehouse import LAKE_VIEWS_KEY

MARTS_GROUP = "marts"

# dbt runs as a subprocess: use the dbt of this interpreter's environment, so a service or test
# that did not activate the venv (no `.venv/bin` on PATH) still finds it.
_VENV_DBT = Path(sys.executable).parent / "dbt"
DBT_EXECUTABLE = str(_VENV_DBT) if _VENV_DBT.exists() else "dbt"
# dbt's parse state of the last build in a home (see SpymasterDbtResource.keep_parse_state).
PARTIAL_PARSE_FILE = "dbt_partial_parse.msgpack"


class MartsTranslator(DagsterDbtTranslator):
    """dbt models are keyed `[schema, model]` (`["marts", "daily_level_stats"]`, `["staging", "stg_events"]`),
    all in group "marts"; models that read the lake directly also wait for `warehouse/lake_views`."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] != "model":
            return spec
        spec = spec.replace_attributes(group_name=MARTS_GROUP, owners=OWNERS)
        if spec.code_version:  # a change of materialization (view ↔ table) changes the relation too
            spec = spec.replace_attributes(code_version=f"{spec.code_version}:{props['config']['materialized']}")
        reads_lake = any(node.startswith("source.") for node in props.get("depends_on", {}).get("nodes", []))
        return spec.merge_attributes(deps=[LAKE_VIEWS_KEY]) if reads_lake else spec


class SpymasterDbtResource(DbtCliResource):
    """`DbtCliResource` bound to one project home: dbt reads `<home>/lake` and writes
    `<home>/warehouse.duckdb` (dbt/profiles.yml and sources.yml take both from SPYMASTER_HOME).

    Three fixed costs of every invocation are removed (measured ~3 s, ~5–20 s and ~1–4 s on this
    machine, depending on its load):
    - `dbt --version` in a subprocess, which DbtCliResource runs to learn the version: the dbt
      of this environment is the installed dbt-core package, whose version is metadata;
    - an in-process dbt adapter, opened only for optional metadata queries we do not make;
    - a full `dbt parse`: each invocation writes into a fresh target directory, so dbt never finds
      its partial-parse state. The state of the home's last build is kept in the home
      (`keep_parse_state`) and handed to the next (DBT_PARTIAL_PARSE_FILE_PATH); dbt itself checks
      that it still matches the project files, the profile and the env vars, and parses in full
      when not.
    """

    spymaster_home: str = Field(description="Project home whose lake dbt reads and whose warehouse.duckdb it writes")

    @cached_property
    def _cli_version(self) -> version.Version:
        if self.dbt_executable == str(_VENV_DBT):
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args):
        # DbtCliResource opens a dbt adapter in this process (seconds: dbt's config, profile and macros)
        # only for `fetch_row_counts` / `fetch_column_metadata`, which the marts do not use; dbt itself
        # runs in its own process either way. (dagster-dbt accepts no adapter: the Fusion path.)
        return None

    @property
    def parse_state(self) -> Path:
        return Path(self.spymaster_home) / PARTIAL_PARSE_FILE

    def cli(self, args: list[str], **kwargs: Any):
        # DbtCliResource hands dbt a copy of os.environ taken inside cli(); set these only for that copy.
        env = {"SPYMASTER_HOME": self.spymaster_home}
        if self.parse_state.is_file():
            env["DBT_PARTIAL_PARSE_FILE_PATH"] = str(self.parse_state)
        with _environ(**env):
            return super().cli(args, **kwargs)

    def keep_parse_state(self, invocation: DbtCliInvocation) -> None:
        """After a finished invocation that parsed the project in full (there was no state, or dbt
        could not use it): its partial-parse state becomes the home's (atomic replace). A state
        dbt could use stays: a state re-written by a partial parse fails dbt's own profile check
        on the next run (seen with dbt-core 1.11), which would make every other run a full parse."""
        written = Path(invocation.target_path) / "partial_parse.msgpack"
        log = Path(invocation.target_path) / "dbt.log"
        reparsed = not self.parse_state.is_file() or (log.is_file() and "UnableToPartialParse" in log.read_text())
        if reparsed and invocation.is_successful() and written.is_file():
            staged = self.parse_state.with_suffix(f".{os.getpid()}.tmp")
            staged.write_bytes(written.read_bytes())
            os.replace(staged, self.parse_state)


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
    # Unpartitioned, but it rides along in range runs that select it (a UI backfill of the whole graph).
    backfill_policy=dg.BackfillPolicy.single_run(),
    # One writer at a time on warehouse.duckdb across runs (instance concurrency pool).
    pool="duckdb",
)
def marts_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """`dbt build` of the analyst marts, all views over the lake: staging, then daily_level_stats,
    outcomes_by_segment, retrieval_calibration and model_performance_by_fold, each followed by its
    tests. Views read the lake when queried: new sessions need no rebuild (see the module docstring)."""
    invocation = dbt.cli(["build"], context=context)
    yield from invocation.stream()
    if isinstance(dbt, SpymasterDbtResource):
        dbt.keep_parse_state(invocation)


marts_assets = [marts_dbt]
