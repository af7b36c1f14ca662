"""Random placements for expectation over transformation (EOT).

Brown et al. 2017, "Adversarial Patch" (and Athalye et al. 2018, "Synthesizing
Robust Adversarial Examples"): a patch is optimized for the average loss over
random transformations, here a random area within a range (fraction of the
image AREA), a random rotation within +-`rotation_deg`, and a random location
keeping the patch inside the image. One draw covers a whole batch; the
compositing itself is the shared batched `apply_patch`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .apply import POSITIONS, apply_patch, named_centers, random_centers

AREA_SAMPLING = ("uniform", "log")


@dataclass(frozen=True)
class EOT:
    """The transformation ranges: area (lo, hi) fraction of the image area, drawn uniformly
    (area_sampling 'uniform') or log-uniformly ('log': as many small patches as large ones);
    rotation uniform in +-rotation_deg degrees; shape 'square' or 'circle'. fixed_fraction:
    the share of placements put unrotated at one of the evaluator's fixed positions (four
    corners flush, or the centre), the rest anywhere inside the image."""

    area: tuple[float, float] = (0.05, 0.25)
    rotation_deg: float = 20.0
    shape: str = "square"
    area_sampling: str = "uniform"
    fixed_fraction: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.area
        if not 0 < lo <= hi < 1:
            raise ValueError(f"area range must satisfy 0 < lo <= hi < 1, got {self.area}")
        if self.rotation_deg < 0:
            raise ValueError("rotation_deg must be >= 0")
        if self.shape not in ("square", "circle"):
            raise ValueError(f"unknown patch shape {self.shape!r}; use square or circle")
        if not 0 <= self.fixed_fraction <= 1:
            raise ValueError(f"fixed_fraction must be in [0, 1], got {self.fixed_fraction}")
        if self.area_sampling not in AREA_SAMPLING:
            raise ValueError(f"unknown area sampling {self.area_sampling!r}; use {' or '.join(AREA_SAMPLING)}")


@dataclass
class Placements:
    """One placement per image: area (N,), centers (N,2) x,y in [0,1], angle (N,) radians."""

    area: torch.Tensor
    centers: torch.Tensor
    angle: torch.Tensor


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device).to(device)
    return lo + (hi - lo) * u


def sample_placements(
    n: int, hw: tuple[int, int], eot: EOT = EOT(), generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Placements:
    """Draw `n` random placements (area, location, rotation) for images of size `hw` = (H, W)."""
    device = torch.device(device)
    lo, hi = eot.area
    if eot.area_sampling == "log":
        area = _uniform(n, math.log(lo), math.log(hi), generator, device).exp()
    else:
        area = _uniform(n, lo, hi, generator, device)
    rot = math.radians(eot.rotation_deg)
    angle = _uniform(n, -rot, rot, generator, device)
    centers = random_centers(area, tuple(hw), generator).to(device)
    if eot.fixed_fraction > 0:  # extra draws only here: without it the random stream is unchanged
        gen_device = generator.device if generator is not None else device
        fixed = (torch.rand(n, generator=generator, device=gen_device) < eot.fixed_fraction).to(device)
        which = torch.randint(len(POSITIONS), (n,), generator=generator, device=gen_device).to(device)
        table = torch.stack([named_centers(p, area, tuple(hw)) for p in POSITIONS])  # (P,N,2)
        at = table[which, torch.arange(n, device=device)]
        centers = torch.where(fixed[:, None], at, centers)
        angle = torch.where(fixed, torch.zeros_like(angle), angle)
    return Placements(area, centers, angle)


def apply_random(
    images: torch.Tensor, patch: torch.Tensor, eot: EOT = EOT(), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Paste `patch` ((3,h,w) or (N,3,h,w)) on every image at an independent random placement
    (one batched `apply_patch` call); differentiable w.r.t. the patch."""
    p = sample_placements(images.shape[0], tuple(images.shape[-2:]), eot, generator, images.device)
    return apply_patch(images, patch, p.area, p.centers, p.angle, eot.shape)
