"""patchlab: find and measure adversarial patches for PyTorch image classifiers.

Every command is a plain function with the same arguments as its CLI command
(inputs positional, then keyword-only `model, weights, device, seed, ...`):
probe, audit, atlas, dream, synth, paste, evaluate, apply, transfer; plus
`load_classifier` for the model itself. The building blocks live in the
subpackages (`patchlab.atlases`, `patchlab.evaluation`, `patchlab.patches`,
`patchlab.generators`, `patchlab.library`, ...).
"""
from __future__ import annotations

from .version import __version__  # noqa: E402

from .audits.run import audit  # noqa: E402
from .errors import UserError  # noqa: E402
from .models import Classifier, load_classifier  # noqa: E402
from .pairdata import PairData, load_pair  # noqa: E402
from .pipelines.apply import apply_to_files as apply  # noqa: E402
from .pipelines.atlas import atlas  # noqa: E402
from .pipelines.dream import dream  # noqa: E402
from .pipelines.evaluate import evaluate_patches as evaluate  # noqa: E402
from .pipelines.paste import paste  # noqa: E402
from .pipelines.probe import probe  # noqa: E402
from .pipelines.synth import synth  # noqa: E402
from .pipelines.transfer import transfer  # noqa: E402

__all__ = [
    "Classifier", "PairData", "UserError", "__version__", "apply", "atlas", "audit", "dream", "evaluate",
    "load_classifier", "load_pair", "paste", "probe", "synth", "transfer",
]
