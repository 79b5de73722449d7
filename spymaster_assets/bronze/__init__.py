"""Bronze: DBN decoded to typed Parquet, full resolution, one front-month contract per session."""
