"""patchlab: find and measure adversarial patches for PyTorch image classifiers."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402
from .models import Classifier, load_classifier  # noqa: E402

__all__ = ["Classifier", "UserError", "load_classifier", "__version__"]
