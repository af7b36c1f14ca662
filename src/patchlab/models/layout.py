"""Where a network keeps space: which layer outputs are spatial maps, and the view that lays each one
out as (B,C,H,W) for atlases, library indexes and pair directions.

Three architectures:
- convolutional networks: NCHW maps, used as they are;
- Swin-style networks (Liu et al. 2021) whose stages output NHWC maps: permuted to NCHW;
- vision transformers (Dosovitskiy et al. 2021): a token sequence whose first tokens are the class
  token, DeiT's distillation token (Touvron et al. 2021) and register tokens (Darcet et al. 2024);
  the remaining patch tokens are laid out on their patch grid.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

Layout = Literal["nchw", "nhwc", "tokens"]
Kind = Literal["cnn", "nhwc", "transformer"]


@dataclass(frozen=True)
class MapView:
    """How one layer's output is read as a (B,C,H,W) map, and written back (for hooks that replace it)."""

    layout: Layout
    grid: tuple[int, int] = (0, 0)  # the patch grid of a token layout

    def to_map(self, out: torch.Tensor) -> torch.Tensor:
        """The output as (B,C,H,W); a view of it, so gradients flow."""
        if self.layout == "nhwc":
            return out.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            gh, gw = self.grid
            patches = out[:, out.shape[1] - gh * gw:]
            return patches.reshape(out.shape[0], gh, gw, out.shape[2]).permute(0, 3, 1, 2)
        return out

    def from_map(self, fmap: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`fmap` (B,C,H,W) in the layout of `out`; prefix tokens are taken from `out`."""
        if self.layout == "nhwc":
            return fmap.permute(0, 2, 3, 1)
        if self.layout == "tokens":
            tokens = fmap.permute(0, 2, 3, 1).reshape(fmap.shape[0], -1, fmap.shape[1])
            return torch.cat([out[:, : out.shape[1] - tokens.shape[1]], tokens], 1)
        return fmap

    def map_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C,H,W) of an output of `shape` (batch excluded)."""
        if self.layout == "nhwc":
            return shape[2], shape[0], shape[1]
        if self.layout == "tokens":
            return shape[1], *self.grid
        return shape


@dataclass(frozen=True)
class Architecture:
    """Which of the three layouts a network uses; for transformers, its token grid and blocks."""

    kind: Kind
    grid: tuple[int, int] = (0, 0)
    prefix: int = 0  # class, distillation and register tokens before the patch tokens
    blocks: tuple[str, ...] = ()  # transformer blocks, in order
    pools_class_token: bool = False  # the head reads only the prefix tokens of the last block

    def view(self, shape: tuple[int, ...]) -> MapView | None:
        """The view of an output of `shape` (batch excluded) as a spatial map, or None when it is not one."""
        if len(shape) == 3 and self.kind == "nhwc" and shape[0] == shape[1] > 1:
            return MapView("nhwc")  # (H,W,C); a cube is read in the architecture's own layout
        if len(shape) == 3 and shape[1] > 1 and shape[2] > 1 and (self.kind != "transformer" or shape[1:] == self.grid):
            if self.kind != "nhwc" or shape[1] == shape[2]:
                return MapView("nchw")
        gh, gw = self.grid
        if len(shape) == 2 and self.kind == "transformer" and shape[0] in (gh * gw, gh * gw + self.prefix):
            return MapView("tokens", self.grid)
        return None

    def why_not(self, shape: tuple[int, ...]) -> str:
        """Why an output of `shape` cannot be laid out as a spatial map."""
        gh, gw = self.grid
        needs = {
            "cnn": "a (C,H,W) map with H, W > 1",
            "nhwc": "a (C,H,W) or (H,W,C) map with H, W > 1",
            "transformer": f"{gh * gw} patch tokens (after {self.prefix} class/register tokens) on the {gh}x{gw} "
                           f"patch grid, or a (C,{gh},{gw}) map",
        }[self.kind]
        return f"its output {tuple(shape)} is not a spatial map: it needs {needs}"


def _timm_vit(net: nn.Module) -> Architecture | None:
    """timm's ViT family (ViT, DeiT incl. distilled, register-token variants): `num_prefix_tokens`,
    `patch_embed.grid_size`, `blocks`, `global_pool`."""
    grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
    blocks = getattr(net, "blocks", None)
    if not isinstance(getattr(net, "num_prefix_tokens", None), int) or grid is None or not isinstance(blocks, nn.Sequential):
        return None
    return Architecture("transformer", (int(grid[0]), int(grid[1])), int(net.num_prefix_tokens),
                        tuple(f"blocks.{n}" for n, _ in blocks.named_children()),
                        getattr(net, "global_pool", None) == "token")


def _torchvision_vit(net: nn.Module) -> Architecture | None:
    """torchvision's VisionTransformer: one class token, `image_size // patch_size` grid, `encoder.layers`."""
    layers = getattr(getattr(net, "encoder", None), "layers", None)
    if not isinstance(getattr(net, "class_token", None), nn.Parameter) or not isinstance(layers, nn.Sequential):
        return None
    side = int(net.image_size) // int(net.patch_size)
    return Architecture("transformer", (side, side), 1,
                        tuple(f"encoder.layers.{n}" for n, _ in layers.named_children()), True)


def architecture_of(net: nn.Module) -> Architecture:
    """The network's layout: transformer (timm or torchvision ViT), NHWC stages (timm models with
    `output_fmt == 'NHWC'`, torchvision Swin), or convolutional."""
    found = _timm_vit(net) or _torchvision_vit(net)
    if found is not None:
        return found
    if getattr(net, "output_fmt", None) == "NHWC" or type(net).__module__ == "torchvision.models.swin_transformer":
        return Architecture("nhwc")
    return Architecture("cnn")


class MapTap(nn.Module):
    """A layer seen through its view: forward hooks registered here receive its output as (B,C,H,W),
    and a (B,C,H,W) tensor they return replaces the output (put back in the layer's own layout)."""

    def __init__(self, layer: nn.Module, view: MapView):
        super().__init__()
        self.layer = layer
        self.view = view

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.view.to_map(self.layer(*args, **kwargs))

    def register_forward_hook(self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> RemovableHandle:
        view = self.view

        def viewed(module: nn.Module, *args: Any) -> Any:
            out = args[-1]
            new = hook(module, *args[:-1], view.to_map(out))
            return None if new is None else view.from_map(new, out)

        return self.layer.register_forward_hook(viewed, prepend=prepend, with_kwargs=with_kwargs, always_call=always_call)
