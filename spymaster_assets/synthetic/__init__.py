"""The embedded synthetic ES market: seeded sessions written as genuine Databento DBN files.

See README.md in this package for the model and the planted break formula.
"""

from .config import GENERATOR_VERSION, SCALES, SyntheticConfig
from .ground_truth import formula_text, match_ground_truth, oracle_auc, read_ground_truth
from .market import generate_session, read_manifest, session_dir, session_paths

__all__ = [
    "GENERATOR_VERSION",
    "SCALES",
    "SyntheticConfig",
    "formula_text",
    "generate_session",
    "oracle_auc",
    "match_ground_truth",
    "read_ground_truth",
    "read_manifest",
    "session_dir",
    "session_paths",
]
