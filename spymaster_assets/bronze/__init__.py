"""Bronze: DBN decoded to typed Parquet, full resolution, one front-month contract per session."""

BRONZE_SCHEMA_VERSION = "1"
