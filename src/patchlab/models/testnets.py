"""A small random-weight CNN with ImageNet's 1000 outputs, for tests and dry runs only."""
from __future__ import annotations

import torch
from torch import nn

from ..classes import ClassIndex, classes_for
from ..weights import load_state_dict_file, load_strict
from .classifier import Classifier

TINY_SPECS = {
    "tiny": "random-weight 2-layer CNN, 32 px, 1000 ImageNet outputs (tests only)",
    "tiny48": "the `tiny` CNN at 48 px input (tests of transfer across input sizes only)",
}


class TinyNet(nn.Module):
    """A two-conv CNN for tests: 'features' is its last spatial map, 'fc' its head."""

    def __init__(self, num_classes: int = 1000, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width // 2, width, 3, stride=2, padding=1)
        self.features = nn.ReLU()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(self.conv2(self.act1(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


def tiny_classifier(
    num_classes: int = 1000, input_size: int = 32, seed: int = 0, classes: ClassIndex | None = None, width: int = 16,
    spec: str = "tiny",
) -> Classifier:
    """Random-weight TinyNet wrapped as a Classifier (deterministic for a seed)."""
    g = torch.Generator().manual_seed(seed)
    net = TinyNet(num_classes, width)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5))
    return Classifier(
        net, spec=spec, classes=classes or classes_for(num_classes), input_size=input_size,
        mean=(0.5,) * 3, std=(0.5,) * 3, feature_layer="features", head=net.fc,
    )


def build_tiny(spec: str, weights: str | None, input_size: int = 32) -> Classifier:
    """The `tiny` spec: tiny_classifier(), or a weights file loaded into it."""
    clf = tiny_classifier(input_size=input_size, spec=spec)
    if weights:
        load_strict(clf.net, load_state_dict_file(weights), weights)
    return clf


def build_tiny48(spec: str, weights: str | None) -> Classifier:
    """The `tiny48` spec: the `tiny` network at 48 px input."""
    return build_tiny(spec, weights, input_size=48)

