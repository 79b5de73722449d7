"""Silver: causal bars, levels, anchors, the 30-second state table, and first-crossing labels."""
