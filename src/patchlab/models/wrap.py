"""Your own network as a Classifier: any nn.Module mapping normalised images to logits."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..classes import classes_for
from ..errors import UserError, first_line
from ..labels import named_classes
from .classifier import Classifier
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


@torch.no_grad()
def output_width(module: nn.Module, input_size: int, spec: str) -> int:
    """Number of logits the network gives for one blank (1,3,S,S) image; UserError when it fails or
    does not return a (1,K) tensor."""
    device = next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))
    try:
        out = module.eval()(torch.zeros(1, 3, input_size, input_size, device=device))
    except Exception as exc:  # the user's code: any failure is a problem with the network or its input size
        raise UserError(f"model {spec} fails on a 1x3x{input_size}x{input_size} image: {type(exc).__name__}: "
                        f"{first_line(exc)} (is input_size right?)") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model {spec} returns {got} for one image; a classifier returns logits (1, classes)")
    return int(out.shape[1])


def classifier_for(module: nn.Module, preprocessing: Preprocessing, spec: str) -> Classifier:
    """A Classifier over `module` with placeholder class names for a head that is not ImageNet's 1000."""
    width = output_width(module, preprocessing.input_size, spec)
    return Classifier(module, spec=spec, classes=classes_for(width), **preprocessing.as_dict())


def wrap(
    module: nn.Module,
    *,
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    labels: str | Path | None = None,
    layer: str | None = None,
    spec: str = "custom",
) -> Classifier:
    """Any network `module` (normalised (N,3,S,S) images -> (N,K) logits) as a frozen Classifier on [0,1]
    images: its preprocessing, class names from a labels file (else ImageNet's for 1000 outputs, else
    class_0.. with a warning) and, optionally, the feature layer (validated; default: found).

    >>> clf = wrap(torchvision.models.resnet18(num_classes=10), labels="classes.txt")
    """
    clf = classifier_for(module, Preprocessing(input_size, tuple(mean), tuple(std), crop_pct, interpolation), spec)
    clf.classes = named_classes(clf.classes, labels, spec)
    clf.check_channels_last()
    if layer is not None:
        clf.set_feature_layer(layer)
    return clf
