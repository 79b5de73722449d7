"""The analyst-marts dbt project (`dbt/`) as Dagster sees it.

`@dbt_assets` reads the project's manifest when definitions are imported, so the manifest must
exist first: `make setup` runs `dagster-dbt project prepare-and-package --file
spymaster_assets/dbt_project.py`, `dagster dev` re-parses on every code-location load
(`prepare_if_dev`), and the test suite prepares it in `pytest_configure`.
"""

from pathlib import Path

from dagster_dbt import DbtProject

dbt_project = DbtProject(project_dir=Path(__file__).resolve().parents[1] / "dbt")
dbt_project.prepare_if_dev()
