"""`defend(classifier, "jpeg:75")`: a classifier behind one defence (see `spec` for the names)."""
from __future__ import annotations

from ..models import Classifier
from .patchcleanser import MASKS_PER_AXIS, PatchCleanser
from .spec import Defense, parse_defense
from .transforms import input_transform
from .wrapped import DefendedClassifier, InputTransformDefense


def defend(
    classifier: Classifier | DefendedClassifier, defense: str | Defense, *, masks_per_axis: int = MASKS_PER_AXIS,
    batch_size: int = 64,
) -> DefendedClassifier:
    """`classifier` behind `defense` (a spec such as 'median:3' or a Defense). masks_per_axis and
    batch_size (masked images per forward pass) apply to patchcleanser only."""
    d = parse_defense(defense) if isinstance(defense, str) else defense
    if d.name == "patchcleanser":
        return PatchCleanser(classifier, float(d.value), masks_per_axis=masks_per_axis, batch_size=batch_size)
    return InputTransformDefense(classifier, d, input_transform(d))
