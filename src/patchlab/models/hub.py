"""timm and torchvision architectures (pretrained download, or a weights file), with one-line
errors that call a failure 'offline?' only when a download failed."""
from __future__ import annotations

import difflib
import socket
import urllib.error
from urllib.parse import urlparse

import torch
from torch import nn

from ..classes import classes_for
from ..errors import UserError
from ..weights import load_state_dict_file, load_strict
from .classifier import Classifier

try:  # timm's download client (a dependency of timm, not of patchlab)
    from huggingface_hub import constants as hub_constants
except ImportError:  # pragma: no cover - timm cannot be installed without it
    hub_constants = None

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_SPECS = {
    "timm:": "timm:NAME, any timm architecture (pretrained download, or --weights FILE)",
    "torchvision:": "torchvision:NAME, any torchvision classifier (pretrained download, or --weights FILE)",
}
NETWORK_ERRORS = (ConnectionError, TimeoutError)  # OSError subclasses a failed download raises


def _is_network_error(exc: BaseException) -> bool:
    """True for failures to reach a download host (socket, urllib, requests and hub errors)."""
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


def hub_reachable() -> bool:
    """True when the Hugging Face hub's host resolves (so a download can be tried)."""
    if hub_constants is None:
        raise ImportError("timm's pretrained downloads need the huggingface_hub package")
    try:
        socket.getaddrinfo(urlparse(hub_constants.ENDPOINT).hostname, 443)
        return True
    except OSError:
        return False


def build_timm(spec: str, weights: str | None) -> Classifier:
    """The `timm:NAME` spec: timm.create_model(NAME), pretrained unless a weights file is given."""
    import timm

    name = spec.split(":", 1)[1]
    known = timm.list_models()
    if name.split(".")[0] not in known:  # exact architecture name (a pattern like 'resnet*' is not a model)
        close = difflib.get_close_matches(name.split(".")[0], known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"timm has no model {name!r}{hint} (list them with timm.list_models())")
    try:
        if weights is None and not hub_reachable():
            raise ConnectionError("hub not reachable")
        net = timm.create_model(name, pretrained=weights is None)
    except Exception as exc:
        raise _build_error(spec, exc, weights) from exc
    if weights:
        load_strict(net, load_state_dict_file(weights), weights)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return Classifier(
        net, spec=spec, classes=classes_for(net.num_classes), input_size=size,
        mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD), crop_pct=cfg.get("crop_pct", 0.875),
        head=net.get_classifier() if isinstance(net.get_classifier(), nn.Linear) else None,
    )


def build_torchvision(spec: str, weights: str | None) -> Classifier:
    """The `torchvision:NAME` spec: torchvision.models.get_model(NAME), DEFAULT weights unless a file is given."""
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
        net, spec=spec, classes=classes_for(outs[-1] if outs else 1000), input_size=size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )
