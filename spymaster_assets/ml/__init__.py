"""ML: the break model (LightGBM, MLflow), its serving path and driver attribution."""
