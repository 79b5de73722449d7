"""Gold: episode vectors, trailing normalization, as-of similarity indices and retrieval reports."""
