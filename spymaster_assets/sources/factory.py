"""Build the configured market-data source."""

from __future__ import annotations

from pathlib import Path

from .base import MarketDataSource

SOURCE_KINDS = ("synthetic", "local", "databento")


def build_source(
    kind: str,
    raw_root: Path,
    *,
    synthetic_seed: int = 7,
    synthetic_scale: str = "small",
    synthetic_options: bool = True,
    local_dir: Path | None = None,
    databento_api_key: str | None = None,
    max_cost_usd: float = 50.0,
) -> MarketDataSource:
    if kind == "synthetic":
        from ..synthetic import SyntheticConfig
        from .synthetic import SyntheticSource

        config = SyntheticConfig(seed=synthetic_seed, scale=synthetic_scale, options=synthetic_options)
        return SyntheticSource(raw_root / "synthetic" / f"seed{synthetic_seed}-{synthetic_scale}", config)
    if kind == "local":
        from .local import LocalDbnSource

        if local_dir is None:
            raise ValueError("source 'local' needs SPYMASTER_LOCAL_DBN_DIR (a directory of .dbn/.dbn.zst files)")
        return LocalDbnSource(Path(local_dir))
    if kind == "databento":
        from .databento_api import DatabentoSource

        if not databento_api_key:
            raise ValueError("source 'databento' needs DATABENTO_API_KEY")
        return DatabentoSource(databento_api_key, raw_root / "databento", max_cost_usd=max_cost_usd)
    raise ValueError(f"unknown market-data source {kind!r}; expected one of {SOURCE_KINDS}")
