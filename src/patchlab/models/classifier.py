"""The Classifier: any image network as a frozen model on [0,1] RGB images, with its own
preprocessing, class names and the layers atlases and patches hook."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..classes import ClassIndex
from ..errors import UserError
from .layout import Architecture, MapTap, MapView, architecture_of
from .preprocessing import Preprocessing


class Classifier(nn.Module):
    """A frozen classifier taking float RGB images in [0,1], shape (N,3,H,W).

    It owns its preprocessing (`preprocessing`: resize to `input_size`, then mean/std
    normalization), so patches and images everywhere else live in pixel space.
    `feature_layer` names the last spatial feature map before pooling (for atlases, library
    indexes and pair directions; see `layer_choices`) and `head` is the final linear layer on
    pooled features when there is one. Layers whose outputs are NHWC maps or transformer tokens
    are captured as (B,C,H,W) maps (see `patchlab.models.layout`).
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
        interpolation: str = "bicubic",
        feature_layer: str | None = None,
        head: nn.Linear | None = None,
    ):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.classes = classes
        self.preprocessing = Preprocessing(input_size, tuple(mean), tuple(std), crop_pct, interpolation)
        self.default_preprocessing = self.preprocessing  # as built, before any override
        self.register_buffer("mean", torch.tensor(self.preprocessing.mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(self.preprocessing.std, dtype=torch.float32).view(3, 1, 1))
        self.architecture: Architecture = architecture_of(self.net)
        self._order: list[tuple[str, tuple[int, ...]]] | None = None  # see _execution_order
        self._feature_layer = feature_layer
        self._layer_chosen = False  # True once a caller picked the feature layer (set_feature_layer)
        self.head = head if head is not None else self._find_head()
        self.channels_last = True  # input laid out channels-last (see `check_channels_last`)

    # -- basics -----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    @property
    def crop_pct(self) -> float:
        return self.preprocessing.crop_pct

    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Use other preprocessing (e.g. `self.preprocessing.with_overrides({...})`)."""
        self.preprocessing = preprocessing
        with torch.no_grad():
            self.mean.copy_(torch.tensor(preprocessing.mean).view(3, 1, 1))
            self.std.copy_(torch.tensor(preprocessing.std).view(3, 1, 1))
        self._order = None

    def train(self, mode: bool = True) -> "Classifier":  # always inference mode
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0,1]; other sizes are resized (bilinear, antialiased)."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(
                images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True
            )
        # channels-last input: ~1.5x faster convolutions on CPU, same logits within 2e-5 (weights keep their
        # layout, so state dicts still save); plain layout for a network that needs it (`check_channels_last`)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return self.net(((images - self.mean) / self.std).contiguous(memory_format=layout))

    @torch.no_grad()
    def check_channels_last(self) -> bool:
        """Keep channels-last input only where the network runs it and gives the logits it gives on
        plain input (a network that `.view`s its maps fails on it; a custom op that ignores strides
        would give other numbers): else it gets plain input, so its results are those of the plain
        path. Run once the preprocessing is final, before any hook; returns `channels_last`."""
        s = self.input_size
        x = (torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0)).to(self.device) - self.mean) / self.std
        with torch.autocast(self.device.type, enabled=False):
            try:
                plain = self.net(x.contiguous())
            except Exception:  # the network fails on plain input too: its own error shows on first use
                return self.channels_last
            try:
                fast = self.net(x.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                fast = None
        same = isinstance(plain, torch.Tensor) and isinstance(fast, torch.Tensor) and fast.shape == plain.shape and bool(
            (fast.float() - plain.float()).abs().max() <= 1e-3 * (1 + plain.float().abs().max()))
        self.channels_last = same
        return same

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
        """The named layer; for an NHWC or token output, a `MapTap` whose forward hooks see (B,C,H,W)."""
        layers = self.layers()
        if name not in layers:
            close = difflib.get_close_matches(name, list(layers), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"model {self.spec} has no layer {name!r}{hint} (see `patchlab layers`)")
        view = self._view(name)
        return layers[name] if view is None or view.layout == "nchw" else MapTap(layers[name], view)

    @contextmanager
    def capture(self, names: Iterable[str]) -> Iterator[dict[str, torch.Tensor]]:
        """Record the outputs of the named layers during forward passes: yields a dict
        (spatial maps as (B,C,H,W), other outputs as they are). A viewed map is written back as the
        layer's output, so the logits depend on it as on any captured activation (exactly the same values)."""
        store: dict[str, torch.Tensor] = {}
        handles = []
        for name in names:
            def hook(_m, _i, out, name=name):
                store[name] = out
                return out
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

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape (without batch) of every layer for one input image, as `capture` records it."""
        shapes = {}
        for name, shape in self._layer_shapes().items():
            view = self.architecture.view(shape)
            shapes[name] = shape if view is None else view.map_shape(shape)
        return shapes

    # -- which layer each use reads -----------------------------------------
    @property
    def feature_layer(self) -> str:
        """The last spatial map before pooling: a CNN's last NCHW map, a Swin's last NHWC stage map, a
        vision transformer's final token output on its patch grid (found on first use)."""
        if self._feature_layer is None:
            self._feature_layer = self._find_feature_layer()
        return self._feature_layer

    def set_feature_layer(self, name: str) -> None:
        """Read `name` as the feature layer; UserError for an unknown layer (with close names) or one whose
        output is not a spatial map (saying why)."""
        self.layer(name)
        shape = self._layer_shapes().get(name)
        if shape is None:
            raise UserError(f"layer {name!r} of model {self.spec} does not run in a forward pass")
        if self.architecture.view(shape) is None:
            raise UserError(f"layer {name!r} of model {self.spec} cannot be the feature layer: "
                            f"{self.architecture.why_not(shape)} (see `patchlab layers`)")
        self._feature_layer, self._layer_chosen = name, True

    @property
    def atlas_layer(self) -> str:
        """The layer an atlas attributes at: the feature layer, except for a transformer whose head reads
        only its class token: the last block's patch tokens never reach that head (zero gradient), so
        the block before the last, whose patch tokens the class token attends to."""
        arch = self.architecture
        if self._layer_chosen or not arch.pools_class_token or len(arch.blocks) < 2:
            return self.feature_layer
        return arch.blocks[-2]

    @property
    def direction_head(self) -> nn.Linear | None:
        """The linear head when it reads the feature layer's channels, so that the pair direction is its
        w_target - w_source there (Carter et al. 2019); None without a head, or for a head that reads
        something else (MobileNetV3's two-layer head, a feature layer before the last stage)."""
        if self.head is None or self.layer_shapes()[self.feature_layer][0] != self.head.in_features:
            return None
        return self.head

    def layer_choices(self) -> dict[str, str]:
        """Which layer each use reads: {"atlas", "library index", "pair direction"} -> layer name."""
        return {"atlas": self.atlas_layer, "library index": self.feature_layer, "pair direction": self.feature_layer}

    # -- internals ----------------------------------------------------------
    def _view(self, name: str) -> MapView | None:
        """How layer `name`'s output reads as a map (None: not a map, or a CNN, whose maps need no view)."""
        if self.architecture.kind == "cnn":
            return None
        shape = self._layer_shapes().get(name)
        return None if shape is None else self.architecture.view(shape)

    def _execution_order(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, output shape without batch) of each layer call in one forward pass of a blank image,
        kept until the preprocessing changes."""
        if self._order is None:
            order: list[tuple[str, tuple[int, ...]]] = []
            handles = [
                m.register_forward_hook(
                    lambda _m, _i, o, n=n: order.append((n, tuple(o.shape[1:]))) if isinstance(o, torch.Tensor) else None)
                for n, m in self.layers().items()
            ]
            try:
                with torch.no_grad():
                    self(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device))
            finally:
                for h in handles:
                    h.remove()
            self._order = order
        return self._order

    def _layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Raw output shape of each layer (at its last call)."""
        return dict(self._execution_order())

    def _find_feature_layer(self) -> str:
        """Last layer (in execution order) whose output the architecture lays out as a spatial map."""
        spatial = [n for n, s in self._execution_order() if self.architecture.view(s) is not None]
        if not spatial:
            raise UserError(f"model {self.spec} has no spatial feature map to hook")
        return spatial[-1]

    def _find_head(self) -> nn.Linear | None:
        linears = [m for m in self.net.modules() if isinstance(m, nn.Linear) and m.out_features == self.num_classes]
        return linears[-1] if linears else None
