"""Pure computation: no Dagster, no I/O beyond what a function's arguments name."""
