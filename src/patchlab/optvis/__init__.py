"""Feature visualization (lucid/lucent's split, batched): parameterizations,
robustness transforms, composable objectives and one render loop."""
from __future__ import annotations

from . import objectives, param, transforms
from .objectives import Context, Objective
from .param import ImageParam, fourier_image, pixel_image
from .render import RenderResult, render

__all__ = [
    "Context", "ImageParam", "Objective", "RenderResult", "fourier_image", "objectives", "param",
    "pixel_image", "render", "transforms",
]
