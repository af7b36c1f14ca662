"""timm and torchvision architectures (pretrained download, or a weights file), with one-line
errors that call a failure 'offline?' only when a download failed."""
from __future__ import annotations

import difflib
import socket
import urllib.error
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from ..classes import classes_for
from ..errors import UserError
from ..weights import load_state_dict_file, load_strict
from .classifier import Classifier
from .preprocessing import Preprocessing

try:  # timm's download client (a dependency of timm, not of patchlab)
    from huggingface_hub import constants as hub_constants
except ImportError:  # pragma: no cover - timm cannot be installed without it
    hub_constants = None

HUB_SPECS = {
    "timm:": "timm:NAME, any timm architecture (pretrained download, or --weights FILE; its head width is read "
             "from the file)",
    "torchvision:": "torchvision:NAME, any torchvision classifier (pretrained download, or --weights FILE; its head "
                    "width is read from the file)",
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


def head_width(net: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The number of outputs a weights file gives the network's last linear layer, when it differs
    from the network's own (a head fine-tuned to other classes); None otherwise."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    weight = state.get(f"{names[-1]}.weight") if names else None
    own = net.get_submodule(names[-1]).out_features if names else None
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 and weight.shape[0] != own else None


def _create(spec: str, make: Callable[..., nn.Module], weights: str | None, options: dict[str, Any]) -> nn.Module:
    """Build with `make(pretrained, **options)`; with a weights file, a head of the file's width is built
    (unless options give num_classes) and the file is loaded strictly."""
    if weights is None and "num_classes" in options:
        raise UserError(f"{spec} with num_classes={options['num_classes']} needs the weights file of that head "
                        "(pretrained weights would leave it random)")
    state = load_state_dict_file(weights) if weights else None
    try:
        net = make(weights is None, **options)
        width = head_width(net, state) if state is not None and "num_classes" not in options else None
        if width is not None:
            net = make(False, **options, num_classes=width)
    except Exception as exc:
        raise _build_error(spec, exc, weights) from exc
    if state is not None:
        load_strict(net, state, str(weights))
    return net


def build_timm(spec: str, weights: str | None, **options: Any) -> Classifier:
    """The `timm:NAME` spec: timm.create_model(NAME, **options), pretrained unless a weights file is
    given; preprocessing from the model's `pretrained_cfg` (an `img_size` option sets the input size)."""
    import timm

    name = spec.split(":", 1)[1]
    known = timm.list_models()
    if name.split(".")[0] not in known:  # exact architecture name (a pattern like 'resnet*' is not a model)
        close = difflib.get_close_matches(name.split(".")[0], known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"timm has no model {name!r}{hint} (list them with timm.list_models())")

    def make(pretrained: bool, **kw: Any) -> nn.Module:
        if pretrained and not hub_reachable():
            raise ConnectionError("hub not reachable")
        return timm.create_model(name, pretrained=pretrained, **kw)

    net = _create(spec, make, weights, options)
    prep = Preprocessing.from_timm_cfg(getattr(net, "pretrained_cfg", {}) or {}, options.get("img_size"))
    return Classifier(
        net, spec=spec, classes=classes_for(net.num_classes), **prep.as_dict(),
        head=net.get_classifier() if isinstance(net.get_classifier(), nn.Linear) else None,
    )


def torchvision_preprocessing(name: str, image_size: int | None = None) -> Preprocessing:
    """The eval preprocessing of a torchvision architecture's DEFAULT weights (from its metadata, no
    download); `image_size` (an option the model was built with) sets the input size."""
    import torchvision

    return Preprocessing.from_torchvision_transforms(torchvision.models.get_model_weights(name).DEFAULT.transforms(),
                                                     image_size)


def build_torchvision(spec: str, weights: str | None, **options: Any) -> Classifier:
    """The `torchvision:NAME` spec: torchvision.models.get_model(NAME, **options), DEFAULT weights unless a
    file is given; preprocessing from the DEFAULT weights' transforms."""
    import torchvision

    name = spec.split(":", 1)[1]
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"torchvision has no classification model {name!r}")

    def make(pretrained: bool, **kw: Any) -> nn.Module:
        return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, **kw)

    net = _create(spec, make, weights, options)
    outs = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    prep = torchvision_preprocessing(name, options.get("image_size"))
    return Classifier(net, spec=spec, classes=classes_for(outs[-1] if outs else 1000), **prep.as_dict())
