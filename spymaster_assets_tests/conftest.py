import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("POLARS_MAX_THREADS", "2")

from spymaster_assets_tests.conftest_dbt import pytest_configure  # noqa: F401  (dbt manifest before imports)

REPO_ROOT = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    return Path(os.environ.get("SPYMASTER_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    root = fixtures_root()
    if not root.is_dir():
        pytest.skip(f"real-data fixtures not found at {root} (set SPYMASTER_FIXTURES)")
    return root


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """A throwaway SPYMASTER_HOME so no test touches the developer's lake."""
    monkeypatch.setenv("SPYMASTER_HOME", str(tmp_path))
    return tmp_path


SYNTHETIC_SESSIONS = ("2024-12-09", "2024-12-10")


@pytest.fixture(scope="session")
def synthetic_home(tmp_path_factory) -> Path:
    """Two tiny synthetic sessions materialized through the whole graph once per test run (the daily
    job over both, then the warehouse views and marts)."""
    import dagster as dg

    from spymaster_assets_tests.helpers import build_warehouse, run_range, resources_for
    from spymaster_assets.definitions import build_definitions

    home = tmp_path_factory.mktemp("synthetic_home")
    defs = build_definitions(resources_for(home, source="synthetic", synthetic_scale="tiny"))
    with dg.instance_for_test() as instance:
        result = run_range(defs, SYNTHETIC_SESSIONS[0], SYNTHETIC_SESSIONS[-1], instance)
        failures = [e.message for e in result.all_events if e.is_failure]
        assert result.success, failures
        build_warehouse(defs, instance)
        home.joinpath("check_failures.txt").write_text(
            "\n".join(f"{e.asset_key.to_user_string()} {e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed)
        )
    return home
