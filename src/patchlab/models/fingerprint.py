"""A model's identity for cache keys: its spec plus a hash of its weights (and of its preprocessing when
that was changed from the model's own)."""
from __future__ import annotations

import hashlib
import json
import weakref

import torch

from .classifier import Classifier

_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def model_fingerprint(classifier: Classifier) -> str:
    """Spec plus a hash of all parameters and buffers (so --weights files get their own cache entries).
    The hash of the weights is remembered per classifier: a model whose weights are changed in place
    after the first call (batch norms folded) keeps the fingerprint of the weights as loaded. A model
    whose preprocessing differs from the one it was built with gets that preprocessing hashed in too."""
    if classifier not in _FINGERPRINTS:
        h = hashlib.sha256(classifier.spec.encode())
        for name, t in classifier.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        _FINGERPRINTS[classifier] = f"{classifier.spec}@{h.hexdigest()[:16]}"
    weights = _FINGERPRINTS[classifier]
    if classifier.preprocessing == classifier.default_preprocessing:
        return weights
    changed = json.dumps(classifier.preprocessing.as_dict(), sort_keys=True)
    return f"{classifier.spec}@{hashlib.sha256((weights + changed).encode()).hexdigest()[:16]}"
