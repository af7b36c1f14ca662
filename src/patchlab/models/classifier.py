"""The Classifier: any image network as a frozen model on [0,1] RGB images, with its own
preprocessing, class names and the layers atlases and patches hook."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..classes import ClassIndex
from ..errors import UserError


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

    @torch.no_grad()
    def reads_as(self, patches: torch.Tensor) -> list[dict[str, Any]]:
        """What the model calls each patch (N,3,h,w) on its own: top-1 {"index", "name", "prob"}
        (one batched forward, see `ClassIndex.prediction`)."""
        probs = self.logits(patches.to(self.device).float()).softmax(-1)
        return [row[0] for row in self.classes.top(probs)]

    # -- layers and activations -------------------------------------------
    def layers(self) -> dict[str, nn.Module]:
        """Hookable layers by name ('' root excluded)."""
        return {name: m for name, m in self.net.named_modules() if name}

    def layer(self, name: str) -> nn.Module:
        layers = self.layers()
        if name not in layers:
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
