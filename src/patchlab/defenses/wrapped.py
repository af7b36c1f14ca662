"""Defended classifiers: a Classifier behind a defence, usable wherever a Classifier is.

A `DefendedClassifier` has the Classifier's attributes that evaluation reads (classes,
device, input_size, crop_pct, num_classes, spec, logits(), forward) and `is_defended = True`,
so code with shortcuts that read the bare network (cached features, region-only forwards)
can tell that it must call the wrapper's forward instead.
"""
from __future__ import annotations

import torch
from torch import nn

from ..classes import ClassIndex
from ..models import Classifier
from .spec import Defense
from .transforms import Transform


class DefendedClassifier(nn.Module):
    """Base of every defence wrapper: holds the classifier and the defence, delegates the
    Classifier's descriptive attributes, and batches `logits`. Subclasses define forward."""

    is_defended = True

    def __init__(self, classifier: Classifier | DefendedClassifier, defense: Defense):
        super().__init__()
        self.classifier = classifier
        self.defense = defense

    @property
    def spec(self) -> str:
        """The classifier's spec and the defence, e.g. 'efficientnet_lite0+jpeg:75'."""
        return f"{self.classifier.spec}+{self.defense}"

    @property
    def classes(self) -> ClassIndex:
        return self.classifier.classes

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def input_size(self) -> int:
        return self.classifier.input_size

    @property
    def crop_pct(self) -> float:
        return self.classifier.crop_pct

    @property
    def device(self) -> torch.device:
        return self.classifier.device

    def train(self, mode: bool = True) -> DefendedClassifier:  # always inference mode, like the Classifier
        return super().train(False)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Defended outputs in batches (no gradient), on the classifier's device."""
        outs = [self(images[i : i + batch_size].to(self.device)) for i in range(0, len(images), batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, self.num_classes, device=self.device)


class InputTransformDefense(DefendedClassifier):
    """The classifier applied after an input transform (JPEG, median filter, bit depth) of the images
    as given, before the classifier's own resizing. Forward returns the classifier's logits; gradients
    pass the transform (straight through where it is not differentiable)."""

    def __init__(self, classifier: Classifier | DefendedClassifier, defense: Defense, transform: Transform):
        super().__init__(classifier, defense)
        self.transform = transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform(images))
