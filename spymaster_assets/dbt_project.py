"""The analyst-marts dbt project (`dbt/`) as Dagster sees it.

`@dbt_assets` reads the project's manifest when definitions are imported, so the manifest must
exist first. It is prepared once, not on every code-location load (`prepare_if_dev()` ran
`dbt parse` + `dbt --version`, ~10 s, in every run worker, `dg` call and webserver reload):
`make setup` runs `dagster-dbt project prepare-and-package --file spymaster_assets/dbt_project.py`,
and the test suite re-parses in `pytest_configure` when a dbt file is newer than the manifest.
After editing dbt models outside the tests, run `make setup` (or that command) again.
"""

from pathlib import Path

from dagster_dbt import DbtProject

dbt_project = DbtProject(project_dir=Path(__file__).resolve().parents[1] / "dbt")
