import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("POLARS_MAX_THREADS", "2")

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
