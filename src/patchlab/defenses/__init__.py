"""Defences as classifier wrappers: `defend(classifier, "jpeg:75")` -> a DefendedClassifier.

Input transforms (jpeg, median, bitdepth) and PatchCleanser (Xiang et al. 2022); see `spec` for
the names and parameters, `transforms` and `patchcleanser` for the methods and their papers, and
`check` for a model's clean and certified top-1 behind each defence on labelled photos.
"""
from __future__ import annotations

from .check import check_defenses
from .factory import defend
from .patchcleanser import MASKS_PER_AXIS, MaskSet, PatchCleanser, mask_set
from .spec import DEFENSES, Defense, parse_defense
from .transforms import bit_depth, input_transform, jpeg_roundtrip, median_filter
from .wrapped import DefendedClassifier, InputTransformDefense

__all__ = [
    "DEFENSES", "MASKS_PER_AXIS", "DefendedClassifier", "Defense", "InputTransformDefense", "MaskSet", "PatchCleanser",
    "bit_depth", "check_defenses", "defend", "input_transform", "jpeg_roundtrip", "mask_set", "median_filter",
    "parse_defense",
]
