"""A model's identity for cache keys: its spec plus a hash of its weights."""
from __future__ import annotations

import hashlib
import weakref

import torch

from .classifier import Classifier

_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def model_fingerprint(classifier: Classifier) -> str:
    """Spec plus a hash of all parameters and buffers (so --weights files get their own cache entries).
    Remembered per classifier: a model whose weights are changed in place after the first call
    (batch norms folded) keeps the fingerprint of the weights as loaded."""
    if classifier not in _FINGERPRINTS:
        h = hashlib.sha256(classifier.spec.encode())
        for name, t in classifier.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        _FINGERPRINTS[classifier] = f"{classifier.spec}@{h.hexdigest()[:16]}"
    return _FINGERPRINTS[classifier]
