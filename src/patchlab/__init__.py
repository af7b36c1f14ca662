"""patchlab: find and measure adversarial patches for PyTorch image classifiers.

Every command is a library function with the same arguments (inputs positional,
then keyword-only `model, weights, device, seed, ...`):
probe, audit, synth, paste, evaluate_patches, atlas, dream, apply_to_files.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import atlas as _atlas_package  # noqa: E402,F401  (loaded first: the name `atlas` is the pipeline below)
from .audit import audit  # noqa: E402
from .errors import UserError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .evaluate.run import evaluate_patches  # noqa: E402
from .models import Classifier, load_classifier  # noqa: E402
from .pairdata import PairData, load_pair  # noqa: E402
from .pipelines import apply_to_files, atlas, dream  # noqa: E402
from .pipelines.paste import paste  # noqa: E402
from .pipelines.synth import synth  # noqa: E402
from .probe import probe  # noqa: E402

__all__ = [
    "Classifier", "PairData", "UserError", "__version__", "apply_to_files", "atlas", "audit", "dream", "evaluate",
    "evaluate_patches", "load_classifier", "load_pair", "paste", "probe", "synth",
]
