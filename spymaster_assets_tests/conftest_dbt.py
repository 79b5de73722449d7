"""Test-session hook: the dbt manifest must exist (and be current) before anything imports
`spymaster_assets.marts`, whose `@dbt_assets` reads it at import time.

Enable it from conftest.py with `from spymaster_assets_tests.conftest_dbt import pytest_configure  # noqa: F401`
(or call `prepare_dbt_manifest()` from an existing `pytest_configure`).
"""

import subprocess
import sys
from pathlib import Path

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt"
MANIFEST = DBT_DIR / "target" / "manifest.json"
# The dbt of the interpreter running the tests, so no activated venv (PATH) is needed.
_VENV_DBT = Path(sys.executable).parent / "dbt"
DBT_EXECUTABLE = str(_VENV_DBT) if _VENV_DBT.exists() else "dbt"


def manifest_is_stale() -> bool:
    """No manifest, or a project file (models, macros, tests, yml) newer than it."""
    if not MANIFEST.exists():
        return True
    built = MANIFEST.stat().st_mtime
    sources = [DBT_DIR / "dbt_project.yml", DBT_DIR / "profiles.yml",
               *(p for folder in ("models", "macros", "tests") for p in (DBT_DIR / folder).rglob("*") if p.is_file())]
    return any(p.stat().st_mtime > built for p in sources if p.exists())


def prepare_dbt_manifest() -> None:
    """`dbt parse` into dbt/target when the manifest is missing or stale (what `make setup` does with
    `dagster-dbt project prepare-and-package`)."""
    if not manifest_is_stale():
        return
    result = subprocess.run([DBT_EXECUTABLE, "parse", "--quiet"], cwd=DBT_DIR, capture_output=True, text=True)
    if result.returncode != 0 or not MANIFEST.exists():
        raise RuntimeError(f"dbt parse failed in {DBT_DIR}:\n{result.stdout}\n{result.stderr}")


def pytest_configure(config) -> None:
    # Under pytest-xdist only the controller prepares; workers start after it and find the manifest.
    if not hasattr(config, "workerinput"):
        prepare_dbt_manifest()
