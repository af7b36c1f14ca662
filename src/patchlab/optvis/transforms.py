"""Transformation robustness for feature visualization (Olah et al. 2017;
Carter et al. 2019 used pad, jitter, scale ~0.9-1.05, rotation +-20 deg).

Every transform is an `Affine`: it draws one (N,2,3) matrix batch per call
and applies it with ONE `affine_grid` + `grid_sample` over the whole batch
(no per-image loop). `compose` multiplies the matrices, so a chain of
transforms still resamples the images only once. Shapes (N,3,H,W) and the
[0,1] range are kept (`crop` may change H,W to a fixed output size).
Matrices map output coordinates to input coordinates in [-1,1] units.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..devices import gen_device


class Affine:
    """A random affine transform; subclasses implement `matrices`."""

    out_size: int | None = None  # None keeps H,W

    def matrices(self, n: int, size: int, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
        """(n,3,3) homogeneous matrices, output coords -> input coords (normalized [-1,1])."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return warp(images, self.matrices(images.shape[0], images.shape[-1], generator, images.device, images.dtype),
                    self.out_size)


def _eye(n: int, device, dtype) -> torch.Tensor:
    return torch.eye(3, device=device, dtype=dtype).expand(n, 3, 3).clone()


def _uniform(n: int, lo: float, hi: float, generator, device, dtype) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=gen_device(generator, device), dtype=dtype).to(device) * (hi - lo) + lo


def warp(images: torch.Tensor, mats: torch.Tensor, out_size: int | None = None, padding_mode: str = "reflection") -> torch.Tensor:
    """Resample (N,3,H,W) with (N,3,3) output->input matrices in one grid_sample."""
    n, c, h, w = images.shape
    oh = ow = out_size if out_size is not None else None
    if oh is None:
        oh, ow = h, w
    grid = F.affine_grid(mats[:, :2, :], [n, c, oh, ow], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False).clamp(0, 1)


class _Pad(Affine):
    def __init__(self, pixels: int):
        self.pixels = int(pixels)

    def matrices(self, n, size, generator, device, dtype):
        # Padding by p px then resizing back to `size` = zooming out by (size + 2p) / size.
        m = _eye(n, device, dtype)
        s = (size + 2 * self.pixels) / size
        m[:, 0, 0] = s
        m[:, 1, 1] = s
        return m


class _Jitter(Affine):
    def __init__(self, pixels: int):
        self.pixels = int(pixels)

    def matrices(self, n, size, generator, device, dtype):
        m = _eye(n, device, dtype)
        shift = torch.randint(-self.pixels, self.pixels + 1, (n, 2), generator=generator,
                              device=gen_device(generator, device)).to(device=device, dtype=dtype)
        m[:, :2, 2] = shift * (2.0 / size)
        return m


class _Scale(Affine):
    def __init__(self, scales: Sequence[float] | tuple[float, float]):
        self.lo, self.hi = float(min(scales)), float(max(scales))

    def matrices(self, n, size, generator, device, dtype):
        s = _uniform(n, self.lo, self.hi, generator, device, dtype)
        m = _eye(n, device, dtype)
        m[:, 0, 0] = 1.0 / s  # content scaled by s
        m[:, 1, 1] = 1.0 / s
        return m


class _Rotate(Affine):
    def __init__(self, degrees: float):
        self.degrees = float(degrees)

    def matrices(self, n, size, generator, device, dtype):
        a = _uniform(n, -self.degrees, self.degrees, generator, device, dtype) * (math.pi / 180.0)
        m = _eye(n, device, dtype)
        m[:, 0, 0], m[:, 0, 1] = torch.cos(a), -torch.sin(a)
        m[:, 1, 0], m[:, 1, 1] = torch.sin(a), torch.cos(a)
        return m


class _Crop(Affine):
    """Random (or centered) square crop of `size` px from a larger image, in the same resample."""

    def __init__(self, size: int, random: bool = True):
        self.out_size, self.random = int(size), random

    def matrices(self, n, size, generator, device, dtype):
        frac = self.out_size / size
        m = _eye(n, device, dtype)
        m[:, 0, 0] = frac
        m[:, 1, 1] = frac
        if self.random:
            room = 1.0 - frac  # max center offset in normalized units
            u = torch.rand(n, 2, generator=generator, device=gen_device(generator, device), dtype=dtype).to(device)
            m[:, :2, 2] = (u * 2 - 1) * room
        return m


class Compose(Affine):
    """Several affine transforms fused into one matrix and one resample."""

    def __init__(self, transforms: Sequence[Affine]):
        self.transforms = list(transforms)
        outs = [t.out_size for t in self.transforms if t.out_size is not None]
        self.out_size = outs[-1] if outs else None

    def matrices(self, n, size, generator, device, dtype):
        m = _eye(n, device, dtype)
        cur = size
        # Output->input maps chain in reverse order: x_in = M1 M2 ... Mk x_out.
        # A crop changes the working size for the transforms after it; scale by size ratio is
        # already encoded in normalized coordinates, so pixel-based transforms use the current size.
        for t in self.transforms:
            m = m @ t.matrices(n, cur, generator, device, dtype)
            if t.out_size is not None:
                cur = t.out_size
        return m


def pad(pixels: int = 12) -> Affine:
    """Pad by `pixels` (reflection) and resize back, i.e. zoom out slightly."""
    return _Pad(pixels)


def jitter(pixels: int = 8) -> Affine:
    """Random integer translation by up to +-pixels."""
    return _Jitter(pixels)


def random_scale(scales: Sequence[float] = (0.9, 1.05)) -> Affine:
    """Random zoom with a factor drawn uniformly from [min(scales), max(scales)]."""
    return _Scale(scales)


def random_rotate(degrees: float = 20.0) -> Affine:
    """Random rotation by up to +-degrees."""
    return _Rotate(degrees)


def crop(size: int, random: bool = True) -> Affine:
    """Square crop to `size` px (random position, or centered)."""
    return _Crop(size, random)


def compose(*transforms: Affine) -> Compose:
    """Fuse transforms (applied first to last) into one batched resample."""
    flat: list[Affine] = []
    for t in transforms:
        flat.extend(t.transforms if isinstance(t, Compose) else [t])
    return Compose(flat)


def standard_transforms(pad_px: int = 12, jitter_px: int = 8, scales: Sequence[float] = (0.9, 1.05),
                        degrees: float = 20.0) -> Compose:
    """lucid's standard robustness chain: pad, jitter, random scale, random rotate, small jitter."""
    return compose(pad(pad_px), jitter(jitter_px), random_scale(scales), random_rotate(degrees), jitter(max(1, jitter_px // 2)))
