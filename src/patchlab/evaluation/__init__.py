"""Evaluation of candidate patches: protocols (static, dynamic, random),
controls, and metrics with confidence intervals. See `core.evaluate`."""
from .controls import CONTROL_NAMES, make_controls
from .core import DEFAULT_POSITIONS, DEFAULT_SIZES, PROTOCOLS, RESULT_COLUMNS, Evaluation, evaluate, reads_as

__all__ = [
    "CONTROL_NAMES", "DEFAULT_POSITIONS", "DEFAULT_SIZES", "PROTOCOLS", "RESULT_COLUMNS", "Evaluation", "evaluate",
    "make_controls", "reads_as",
]
