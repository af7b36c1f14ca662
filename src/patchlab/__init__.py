"""patchlab: find and measure adversarial patches for PyTorch image classifiers.

Every command is a library function with the same arguments (inputs positional,
then keyword-only `model, weights, device, seed, ...`):
probe, audit, synth, paste, evaluate_patches, atlas, dream, apply_to_files, transfer.
`probe`, `audit`, `atlas` and `evaluate` are also subpackages; each is made
callable (`patchlab.probe("snorkel", "scuba diver")`), so its name means one
thing whatever was imported first.
"""
from __future__ import annotations

import types

__version__ = "0.1.0"


class _CommandModule(types.ModuleType):
    """A module that is also its command: calling it calls `__command__`."""

    def __call__(self, *args, **kwargs):
        return self.__command__(*args, **kwargs)


def _callable(module: types.ModuleType, command) -> types.ModuleType:
    module.__class__ = _CommandModule
    module.__command__ = command
    return module


from . import atlas, audit, evaluate, probe  # noqa: E402
from .errors import UserError  # noqa: E402
from .evaluate.run import evaluate_patches  # noqa: E402
from .models import Classifier, load_classifier  # noqa: E402
from .pairdata import PairData, load_pair  # noqa: E402
from .pipelines.apply import apply_to_files  # noqa: E402
from .pipelines.dream import dream  # noqa: E402
from .pipelines.atlas import atlas as _atlas_command  # noqa: E402
from .pipelines.paste import paste  # noqa: E402
from .pipelines.synth import synth  # noqa: E402
from .pipelines.transfer import transfer  # noqa: E402

_callable(probe, probe.probe)
_callable(audit, audit.audit)
_callable(atlas, _atlas_command)
_callable(evaluate, evaluate.evaluate)

__all__ = [
    "Classifier", "PairData", "UserError", "__version__", "apply_to_files", "atlas", "audit", "dream", "evaluate",
    "evaluate_patches", "load_classifier", "load_pair", "paste", "probe", "synth", "transfer",
]
