"""How a model wants its photos: input size, normalisation, eval crop and resize filter, read from the
model's own metadata (timm's `pretrained_cfg`, torchvision's weights `transforms()`) and overridable."""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MIN_INPUT_SIZE = 16


def _three_floats(key: str, value: Any) -> tuple[float, float, float]:
    """Three finite numbers from a sequence or a text like '0.5,0.5,0.5'; UserError otherwise."""
    items = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else value
    try:
        numbers = tuple(float(v) for v in items) if isinstance(items, Sequence) else ()
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise UserError(f"preprocessing {key} must be 3 numbers (one per RGB channel), got {value!r}")
    return numbers[0], numbers[1], numbers[2]


@dataclass(frozen=True)
class Preprocessing:
    """A model's eval preprocessing: resize the short side to input_size / crop_pct with `interpolation`,
    centre-crop input_size x input_size, then (x - mean) / std per channel on [0,1] RGB."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, int | float) or size != int(size) or size < MIN_INPUT_SIZE:
            raise UserError(f"preprocessing input_size must be a whole number of pixels >= {MIN_INPUT_SIZE}, got {size!r}")
        object.__setattr__(self, "input_size", int(size))
        object.__setattr__(self, "mean", _three_floats("mean", self.mean))
        object.__setattr__(self, "std", _three_floats("std", self.std))
        if min(self.std) <= 0:
            raise UserError(f"preprocessing std must be > 0 for every channel, got {list(self.std)}")
        try:
            crop = float(self.crop_pct)
        except (TypeError, ValueError):
            crop = math.nan
        if not 0 < crop <= 1:
            raise UserError(f"preprocessing crop_pct must be in (0, 1], got {self.crop_pct!r}")
        object.__setattr__(self, "crop_pct", crop)
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"preprocessing interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                            f"got {self.interpolation!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what a manifest records; also the Classifier's keyword arguments)."""
        d = asdict(self)
        return {**d, "mean": list(self.mean), "std": list(self.std)}

    def with_overrides(self, overrides: Mapping[str, Any]) -> Preprocessing:
        """A copy with some fields replaced (validated); UserError naming an unknown field."""
        names = [f.name for f in fields(self)]
        for key in overrides:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(names)}"
                raise UserError(f"unknown preprocessing setting {key!r}{hint}")
        return replace(self, **overrides)

    @classmethod
    def from_timm_cfg(cls, cfg: Mapping[str, Any], img_size: int | Sequence[int] | None = None) -> Preprocessing:
        """From a timm `pretrained_cfg`; `img_size` (the size a model was built for) wins over the cfg's."""
        size = img_size if img_size is not None else cfg.get("input_size", (3, 224, 224))
        return cls(int(size if isinstance(size, int) else size[-1]), cfg.get("mean", IMAGENET_MEAN),
                   cfg.get("std", IMAGENET_STD), cfg.get("crop_pct", 0.875), cfg.get("interpolation") or "bicubic")

    @classmethod
    def from_torchvision_transforms(cls, transforms: Any, image_size: int | None = None) -> Preprocessing:
        """From torchvision's `ImageClassification` eval transforms (crop_size, resize_size, mean, std,
        interpolation); `image_size` (the size a model was built for) wins over the crop size."""
        crop, resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
        return cls(image_size or crop, transforms.mean, transforms.std, min(1.0, crop / resize),
                   transforms.interpolation.value)

