"""DuckDB views over the lake, so analysts can `SELECT` any layer (`<layer>_<table>`).

The views read each table's partitions through a glob, so a partition written after them is in
them at once, and so are new columns (DuckDB binds a view again at every query). They are
re-created only when the *set* of tables changes — the lake's layout — which `warehouse_layout_sensor`
(schedules.py) watches; a session's daily run does not touch them.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from .lake import PART_GLOB, Lake
from .resources import LakeResource

LAKE_VIEWS_KEY = dg.AssetKey(["warehouse", "lake_views"])
VIEWS_QUERYABLE = "VIEWS_QUERYABLE"
LAYOUT_METADATA = "layout"  # the tables the views were made for; warehouse_layout_sensor compares the lake with it


def lake_view_statements(lake: Lake) -> dict[str, str]:
    """`CREATE OR REPLACE VIEW` per lake table that has at least one partition.

    Views read the Hive layout, so new partitions appear without re-creating anything;
    `date` comes from the partition directory. `date=D` is the lake's pointer to the current
    version, so a view reads exactly the current version of each partition and no quarantined one.
    """
    statements = {}
    for table_dir in sorted(p for p in lake.root.glob("*/*") if p.is_dir()):
        if not any(table_dir.glob(f"date=*/{PART_GLOB}")):
            continue
        name = f"{table_dir.parent.name}_{table_dir.name}"
        pattern = (table_dir / "date=*" / PART_GLOB).as_posix().replace("'", "''")
        statements[name] = (
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{pattern}', "
            "hive_partitioning = true, union_by_name = true)"
        )
    return statements


def lake_layout(lake: Lake) -> list[str]:
    """The views the lake calls for: one per table with at least one partition (sorted names)."""
    return sorted(lake_view_statements(lake))


def build_lake_views_asset(upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=LAKE_VIEWS_KEY,
        deps=upstream,
        group_name="warehouse",
        kinds={"duckdb"},
        owners=["team:data-eng"],
        # One writer at a time on warehouse.duckdb, shared with the dbt models (dagster.yaml: pools).
        pool="duckdb",
        # Unpartitioned, but it rides along in range runs that select it (a UI backfill of the whole graph).
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[dg.AssetCheckSpec(VIEWS_QUERYABLE, asset=LAKE_VIEWS_KEY, description="Every view answers SELECT count(*)")],
    )
    def lake_views(lake: LakeResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
        """DuckDB views named `<layer>_<table>` over every table of the Parquet lake. They read the
        partitions in place, so new sessions appear in them without a rebuild; they are rebuilt when
        a table appears (warehouse_layout_sensor) and weekly, not in the daily run."""
        statements = lake_view_statements(lake.lake())
        counts = {}
        with duckdb.get_connection() as con:
            for name, sql in statements.items():
                con.execute(sql)
                counts[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        return dg.MaterializeResult(
            metadata={"views": dg.MetadataValue.json(counts), "view_count": len(counts),
                      LAYOUT_METADATA: dg.MetadataValue.json(sorted(statements))},
            check_results=[dg.AssetCheckResult(check_name=VIEWS_QUERYABLE, passed=bool(counts),
                                               metadata={"views": len(counts)})],
        )

    return lake_views
