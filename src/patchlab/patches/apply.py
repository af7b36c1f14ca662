"""Batched, differentiable patch compositing (one function for every generator
and for evaluation).

A placement is an area (fraction of the image AREA), a center (x, y in [0,1]
of the image width/height) and a rotation angle (radians). All placements of a
batch are applied at once with an affine sampling grid (`F.affine_grid` +
`F.grid_sample`), so gradients flow to the patch and there is no per-image loop.
Method: the expectation-over-transformation compositing of Brown et al. 2017,
"Adversarial Patch".
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
CORNERS = POSITIONS[:4]


def side_fraction(area: torch.Tensor | float) -> torch.Tensor | float:
    """Side of a square patch as a fraction of the image side, for a fraction of its area."""
    return area.sqrt() if isinstance(area, torch.Tensor) else math.sqrt(area)


def _half_extent(area: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the patch side as a fraction of the image width and of its height."""
    h, w = hw
    side_px = torch.sqrt(area * h * w)
    return side_px / (2 * w), side_px / (2 * h)


def named_centers(position: str, area: torch.Tensor, hw: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Centers (N,2) in [0,1] that put an unrotated patch flush in a corner or at the center.
    `hw` is the image (height, width), needed for non-square images."""
    hx, hy = _half_extent(area, hw)
    mid = torch.full_like(hx, 0.5)
    table = {
        "top-left": (hx, hy), "top-right": (1 - hx, hy), "bottom-left": (hx, 1 - hy), "bottom-right": (1 - hx, 1 - hy),
        "center": (mid, mid),
    }
    if position not in table:
        raise ValueError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)} or random")
    x, y = table[position]
    return torch.stack([x, y], dim=-1)


def random_centers(
    area: torch.Tensor, hw: tuple[int, int] = (1, 1), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform centers (N,2) keeping the unrotated patch inside the image."""
    half = torch.stack(_half_extent(area, hw), dim=-1)
    u = torch.rand(area.shape[0], 2, generator=generator, device=area.device if generator is None else generator.device)
    return half + u.to(area.device) * (1 - 2 * half)


def centers_for(
    position: str, area: torch.Tensor, hw: tuple[int, int] = (1, 1), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Centers (N,2) for a named position or 'random'."""
    return random_centers(area, hw, generator) if position == "random" else named_centers(position, area, hw)


def circle_mask(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1,size,size) disc mask with a one-pixel soft edge."""
    r = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 - 1
    d = torch.sqrt(r[None, :] ** 2 + r[:, None] ** 2)
    return (1 - (d - 1) * size / 2).clamp(0, 1)[None]


def apply_patch(
    images: torch.Tensor,
    patch: torch.Tensor,
    area: torch.Tensor | float,
    centers: torch.Tensor,
    angle: torch.Tensor | float = 0.0,
    shape: str = "square",
) -> torch.Tensor:
    """Paste `patch` on every image.

    images: (N,3,H,W) in [0,1]. patch: (3,h,w) shared, or (N,3,h,w) one per image.
    area: scalar or (N,) fraction of the image area covered by the (square) patch.
    centers: (N,2) patch centers, x and y in [0,1]. angle: scalar or (N,) radians
    (positive turns the patch clockwise on screen).
    shape: 'square' or 'circle' (a disc inscribed in the square).
    Returns (N,3,H,W); differentiable w.r.t. `patch` (and not w.r.t. images' masking).
    """
    n, _, h, w = images.shape
    grid, half_px = patch_grid(n, (h, w), area, centers, angle, images.device, images.dtype)
    return composite(images, patch, grid, half_px, shape)


def patch_grid(
    n: int, hw: tuple[int, int], area: torch.Tensor | float, centers: torch.Tensor, angle: torch.Tensor | float = 0.0,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling grid of `apply_patch` over the whole (H, W) image, (N,H,W,2) patch
    coordinates (inside the patch in [-1, 1]), and the patch's half side in pixels (N,)."""
    h, w = hw
    area = torch.as_tensor(area, device=device, dtype=dtype).expand(n)
    angle = torch.as_tensor(angle, device=device, dtype=dtype).expand(n)
    side_px = torch.sqrt(area * h * w)  # patch side in pixels (square)
    cx, cy = centers[:, 0].to(dtype) * 2 - 1, centers[:, 1].to(dtype) * 2 - 1
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Inverse map from output normalized coords to patch normalized coords: offset
    # from the center in pixels, rotate by -angle, divide by the half side.
    theta = torch.empty(n, 2, 3, device=device, dtype=dtype)
    theta[:, 0, 0] = cos * w / side_px
    theta[:, 0, 1] = sin * h / side_px
    theta[:, 1, 0] = -sin * w / side_px
    theta[:, 1, 1] = cos * h / side_px
    theta[:, 0, 2] = -(theta[:, 0, 0] * cx + theta[:, 0, 1] * cy)
    theta[:, 1, 2] = -(theta[:, 1, 0] * cx + theta[:, 1, 1] * cy)
    return F.affine_grid(theta, [n, 1, h, w], align_corners=False), side_px / 2


def composite(images: torch.Tensor, patch: torch.Tensor, grid: torch.Tensor, half_px: torch.Tensor,
              shape: str = "square") -> torch.Tensor:
    """Blend the patch into `images` (N,3,h,w) along `grid` (N,h,w,2) from `patch_grid`, or a
    window of it (then `images` is the same window of the images)."""
    if shape not in ("square", "circle"):
        raise ValueError(f"unknown patch shape {shape!r}; use square or circle")
    n = images.shape[0]
    # Coverage (alpha) from the patch coordinates, with a one-output-pixel linear edge: exact 0/1
    # away from the border, so nothing bleeds outside the patch and the circle's corners stay clear.
    half_px = half_px.view(n, 1, 1)
    if shape == "square":  # product of the two edge ramps: exact area for axis-aligned patches
        alpha = ((1 - grid.abs()) * half_px[..., None] + 0.5).clamp(0, 1).prod(dim=-1)
    else:
        alpha = ((1 - grid.square().sum(dim=-1).sqrt()) * half_px + 0.5).clamp(0, 1)
    alpha = alpha.unsqueeze(1)  # (N,1,H,W), no gradient
    dtype = images.dtype
    src = patch.to(dtype).expand(n, *patch.shape[-3:]) if patch.dim() == 3 else patch.to(dtype)
    # Colors with border padding, so the outermost patch pixels keep their value up to the edge.
    color = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return images * (1 - alpha) + color * alpha


def apply_at(
    images: torch.Tensor,
    patch: torch.Tensor,
    area: float,
    position: str,
    angle: float = 0.0,
    shape: str = "square",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """apply_patch with a named position ('top-left', ..., 'center', 'random') for all images."""
    a = torch.full((images.shape[0],), float(area), device=images.device)
    return apply_patch(images, patch, a, centers_for(position, a, images.shape[-2:], generator), angle, shape)


def placement_grid(
    n_images: int, areas: Sequence[float], positions: Sequence[str], hw: tuple[int, int],
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (area, position, image) combination, area-major: returns image index (M,),
    area (M,), centers (M,2) with M = len(areas) * len(positions) * n_images."""
    a = torch.tensor(areas, dtype=torch.float32, device=device).repeat_interleave(len(positions) * n_images)
    idx = torch.arange(n_images, device=device).repeat(len(areas) * len(positions))
    centers = torch.empty(a.shape[0], 2, device=device)
    block = n_images
    for k in range(len(areas) * len(positions)):  # one tensor op per (area, position) block
        sl = slice(k * block, (k + 1) * block)
        centers[sl] = centers_for(positions[k % len(positions)], a[sl], hw, generator)
    return idx, a, centers
