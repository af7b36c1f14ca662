"""One registry of model specs (in the spirit of timm's `create_model`): a name (or a
'prefix:' for 'prefix:NAME' specs) -> a builder `fn(spec, weights) -> Classifier`.

The built-in specs are listed here, in the order `patchlab models` shows them, so they are
registered whichever module is imported first; `register` adds more after them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..cpu_memory import keep_freed_memory
from ..devices import resolve_device
from ..errors import UserError
from .classifier import Classifier
from .hub import HUB_SPECS, build_timm, build_torchvision
from .lite import LITE_SPECS, lite_builder
from .testnets import TINY_SPECS, build_tiny, build_tiny48

Builder = Callable[[str, str | None], Classifier]  # (spec, weights file or None) -> Classifier


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    build: Builder


BUILTIN: tuple[ModelEntry, ...] = (
    ModelEntry("efficientnet_lite0", LITE_SPECS["efficientnet_lite0"], lite_builder("efficientnet_lite0")),  # default
    ModelEntry("tiny", TINY_SPECS["tiny"], build_tiny),
    ModelEntry("tiny48", TINY_SPECS["tiny48"], build_tiny48),
    ModelEntry("efficientnet_lite1", LITE_SPECS["efficientnet_lite1"], lite_builder("efficientnet_lite1")),
    ModelEntry("efficientnet_lite2", LITE_SPECS["efficientnet_lite2"], lite_builder("efficientnet_lite2")),
    ModelEntry("timm:", HUB_SPECS["timm:"], build_timm),
    ModelEntry("torchvision:", HUB_SPECS["torchvision:"], build_torchvision),
)
_REGISTRY: dict[str, ModelEntry] = {e.name: e for e in BUILTIN}


def register(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator adding a builder `fn(spec, weights) -> Classifier` under `name`."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = ModelEntry(name, description, fn)
        return fn

    return deco


def available_models() -> list[ModelEntry]:
    return list(_REGISTRY.values())


def spec_key(spec: str) -> str:
    """The registry name a spec is built by: 'timm:' for 'timm:resnet50', the spec itself otherwise."""
    return spec.split(":", 1)[0] + ":" if ":" in spec else spec


def load_classifier(
    spec: str = "efficientnet_lite0", device: str | torch.device = "auto", weights: str | None = None
) -> Classifier:
    """Build the classifier named by `spec`, load its weights, move it to `device`."""
    dev = resolve_device(device)
    key = spec_key(spec)
    if key not in _REGISTRY:
        names = ", ".join(_REGISTRY)
        raise UserError(f"unknown model spec {spec!r}; known: {names} (see `patchlab models`)")
    clf = _REGISTRY[key].build(spec, weights)
    if dev.type == "cpu":
        keep_freed_memory()  # ~2x faster batched CPU passes (no page faults on every large activation)
    return clf.to(dev)
