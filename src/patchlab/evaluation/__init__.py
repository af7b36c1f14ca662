"""Evaluation of candidate patches: protocols (static, dynamic, random),
controls, and metrics with confidence intervals. See `core.evaluate`
(trials: how patches are placed and run; rows: what the trials come to)."""
from ..protocols import DEFAULT_SIZES, PROTOCOLS
from .controls import CONTROL_NAMES, make_controls
from .core import DEFAULT_POSITIONS, Evaluation, evaluate
from .rows import RESULT_COLUMNS, reads_as

__all__ = [
    "CONTROL_NAMES", "DEFAULT_POSITIONS", "DEFAULT_SIZES", "PROTOCOLS", "RESULT_COLUMNS", "Evaluation", "evaluate",
    "make_controls", "reads_as",
]
