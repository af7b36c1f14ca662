"""One registry of model specs (in the spirit of timm's `create_model`): a name (or a
'prefix:' for 'prefix:NAME' specs) -> a builder `fn(spec, weights, **options) -> Classifier`.

The built-in specs are listed here, in the order `patchlab models` shows them, so they are
registered whichever module is imported first; `register` adds more after them. A spec is
looked up as a name first, then by its 'prefix:' (so `timm:NAME` is never read as code), then
as your own code (`FILE.py:FUNCTION`, `package.module:FUNCTION`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cpu_memory import keep_freed_memory
from ..devices import resolve_device
from ..errors import UserError
from ..labels import named_classes
from .classifier import Classifier
from .hub import HUB_SPECS, build_timm, build_torchvision
from .lite import LITE_SPECS, lite_builder
from .testnets import TINY_SPECS, build_tiny, build_tiny48
from .usercode import CODE_DESCRIPTION, CODE_SPEC, build_from_code, is_code_spec

Builder = Callable[..., Classifier]  # (spec, weights file or None, **options) -> Classifier


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    build: Builder
    options: bool = False  # the builder takes model options (keyword arguments for the architecture)
    preprocessing: bool = False  # the builder takes the preprocessing overrides (to run the network at its final size)


BUILTIN: tuple[ModelEntry, ...] = (
    ModelEntry("efficientnet_lite0", LITE_SPECS["efficientnet_lite0"], lite_builder("efficientnet_lite0")),  # default
    ModelEntry("tiny", TINY_SPECS["tiny"], build_tiny),
    ModelEntry("tiny48", TINY_SPECS["tiny48"], build_tiny48),
    ModelEntry("efficientnet_lite1", LITE_SPECS["efficientnet_lite1"], lite_builder("efficientnet_lite1")),
    ModelEntry("efficientnet_lite2", LITE_SPECS["efficientnet_lite2"], lite_builder("efficientnet_lite2")),
    ModelEntry("timm:", HUB_SPECS["timm:"], build_timm, options=True),
    ModelEntry("torchvision:", HUB_SPECS["torchvision:"], build_torchvision, options=True),
    ModelEntry(CODE_SPEC, CODE_DESCRIPTION, build_from_code, options=True, preprocessing=True),
)
_REGISTRY: dict[str, ModelEntry] = {e.name: e for e in BUILTIN}


def register(name: str, description: str, *, options: bool = False) -> Callable[[Builder], Builder]:
    """Decorator adding a builder `fn(spec, weights) -> Classifier` under `name` (a spec, or a 'prefix:');
    with options=True it is called as `fn(spec, weights, **options)`."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = ModelEntry(name, description, fn, options)
        return fn

    return deco


def available_models() -> list[ModelEntry]:
    return list(_REGISTRY.values())


def spec_key(spec: str) -> str:
    """The registry name a spec is built by: the spec itself when registered, then its 'prefix:'
    ('timm:' for 'timm:resnet50'), then FILE.py:FUNCTION for your own code."""
    if spec in _REGISTRY:
        return spec
    prefix = spec.split(":", 1)[0] + ":"
    if ":" in spec and prefix in _REGISTRY:
        return prefix
    return CODE_SPEC if is_code_spec(spec) else spec


def load_classifier(
    spec: str = "efficientnet_lite0",
    device: str | torch.device = "auto",
    weights: str | None = None,
    *,
    labels: str | Path | None = None,
    layer: str | None = None,
    preprocessing_overrides: Mapping[str, Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> Classifier:
    """Build the classifier named by `spec`, load its weights, move it to `device`.

    labels: a labels file naming the head's outputs (see `patchlab.labels`); without one, a head that is
    not 1000 wide gets class_0, class_1, ... and a warning. layer: the feature layer (validated; default:
    the last spatial map before pooling). preprocessing_overrides: fields of `Preprocessing` to replace
    (input_size, mean, std, crop_pct, interpolation). model_options: keyword arguments for the
    architecture (timm/torchvision/your function; e.g. img_size, num_classes)."""
    dev = resolve_device(device)
    key = spec_key(spec)
    if key not in _REGISTRY:
        names = ", ".join(_REGISTRY)
        raise UserError(f"unknown model spec {spec!r}; known: {names} (see `patchlab models`)")
    entry = _REGISTRY[key]
    if model_options and not entry.options:
        raise UserError(f"model {spec} takes no model options (got {', '.join(model_options)})")
    prep = {"preprocessing_overrides": preprocessing_overrides} if entry.preprocessing else {}
    clf = entry.build(spec, weights, **prep, **(model_options or {}))
    if preprocessing_overrides:
        clf.set_preprocessing(clf.preprocessing.with_overrides(preprocessing_overrides))
    clf.classes = named_classes(clf.classes, labels, spec)
    clf.check_channels_last()
    if layer is not None:
        clf.set_feature_layer(layer)
    if dev.type == "cpu":
        keep_freed_memory()  # ~2x faster batched CPU passes (no page faults on every large activation)
    return clf.to(dev)
