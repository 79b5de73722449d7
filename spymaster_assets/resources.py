"""Resources: where the lake lives, where market data comes from, and pipeline settings.

Everything is configured from environment variables so that `dagster dev`, the daemon,
the CLI and the tests see the same project home:

| variable | meaning | default |
|---|---|---|
| SPYMASTER_HOME | project home: lake/, raw/, dagster/, warehouse.duckdb, mlflow.db | `<repo>/.spymaster` |
| SPYMASTER_LAKE_URI | the lake on an object store, `s3://bucket/prefix` (AWS_ENDPOINT_URL etc. say how to reach it) | `<home>/lake` |
| SPYMASTER_SOURCE | synthetic / local / databento | databento if DATABENTO_API_KEY is set, else synthetic |
| SPYMASTER_SYNTHETIC_SCALE | tiny / small / realistic | small |
| SPYMASTER_SYNTHETIC_SEED | simulator seed | 7 |
| SPYMASTER_LOCAL_DBN_DIR | directory of .dbn / .dbn.zst files | — |
| DATABENTO_API_KEY | Databento Historical API key (never logged) | — |
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from .lake import Lake
from .sources.base import MarketDataSource
from .sources.factory import build_source

REPO_ROOT = Path(__file__).resolve().parents[1]


def spymaster_home() -> Path:
    return Path(os.environ.get("SPYMASTER_HOME", REPO_ROOT / ".spymaster")).resolve()


class LakeResource(dg.ConfigurableResource):
    """The Hive-partitioned Parquet lake."""

    root: str = Field(description="Lake root directory, or an object-store URI (s3://bucket/prefix)")
    cache_dir: str | None = Field(default=None, description="Local staging and downloads of an object-store lake")

    def lake(self) -> Lake:
        return Lake.at(self.root, Path(self.cache_dir) if self.cache_dir else None)


class MarketDataResource(dg.ConfigurableResource):
    """Where raw DBN files come from (synthetic simulator, local directory, Databento API)."""

    source: str = "synthetic"
    raw_root: str
    synthetic_seed: int = 7
    synthetic_scale: str = "small"
    synthetic_options: bool = True
    local_dir: str | None = None
    databento_api_key: str | None = None
    max_cost_usd: float = 50.0

    def build(self) -> MarketDataSource:
        return build_source(
            self.source,
            Path(self.raw_root),
            synthetic_seed=self.synthetic_seed,
            synthetic_scale=self.synthetic_scale,
            synthetic_options=self.synthetic_options,
            local_dir=Path(self.local_dir) if self.local_dir else None,
            databento_api_key=self.databento_api_key,
            max_cost_usd=self.max_cost_usd,
        )

    def ground_truth_root(self) -> Path | None:
        """Where the simulator wrote its ground truth (synthetic source only; evaluation reads it,
        the pipeline never does)."""
        return self.build().root if self.source == "synthetic" else None

    def describe(self) -> dict[str, object]:
        """Source settings safe to show in metadata (the API key is never included)."""
        if self.source == "synthetic":
            return {"source": "synthetic", "seed": self.synthetic_seed, "scale": self.synthetic_scale}
        if self.source == "local":
            return {"source": "local", "dir": self.local_dir}
        return {"source": self.source, "max_cost_usd": self.max_cost_usd}


class PipelineSettings(dg.ConfigurableResource):
    """Knobs that change artifacts; their hash is stamped on every partition written."""

    chunk_records: int = 1_000_000
    min_front_month_dominance: float = 0.60
    crossed_book_tolerance: float = 1e-4
    # A session whose files cannot all be used fails, naming them; with this set it runs at the
    # tier its usable files reach instead, recorded by the failed WARN check TIER_AS_EXPECTED
    # and in the manifest. Not hashed: a good session's artifacts do not depend on it.
    allow_tier_downgrade: bool = False

    def config_hash(self) -> str:
        payload = json.dumps(self.model_dump(exclude={"chunk_records", "allow_tier_downgrade"}), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking under the project home: `sqlite:///<home>/mlflow.db`, artifacts beside it."""

    home: str

    def home_path(self) -> Path:
        return Path(self.home)


def resources_from_env(env: dict[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    from .marts import dbt_resource  # local: marts loads the dbt manifest and imports .warehouse → .resources

    env = dict(os.environ if env is None else env)
    home = Path(env.get("SPYMASTER_HOME", REPO_ROOT / ".spymaster")).resolve()
    has_key = bool(env.get("DATABENTO_API_KEY"))
    source = env.get("SPYMASTER_SOURCE", "databento" if has_key else "synthetic")
    market_data = MarketDataResource(
        source=source,
        raw_root=str(home / "raw"),
        synthetic_seed=int(env.get("SPYMASTER_SYNTHETIC_SEED", 7)),
        synthetic_scale=env.get("SPYMASTER_SYNTHETIC_SCALE", "small"),
        local_dir=env.get("SPYMASTER_LOCAL_DBN_DIR"),
        # EnvVar keeps the key out of the run config that Dagster stores and displays.
        databento_api_key=dg.EnvVar("DATABENTO_API_KEY") if has_key else None,
    )
    return {
        "lake": LakeResource(root=env.get("SPYMASTER_LAKE_URI") or str(home / "lake"), cache_dir=str(home / "lake-cache")),
        "market_data": market_data,
        "settings": PipelineSettings(),
        "duckdb": DuckDBResource(database=str(home / "warehouse.duckdb")),
        "mlflow": MlflowResource(home=str(home)),
        "dbt": dbt_resource(home),
    }
