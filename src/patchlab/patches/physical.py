"""Physical-world transforms of a pasted patch: print, place in perspective, light, photograph.

One draw per trial, applied to a whole batch at once (`apply_physical`), in this order:
1. print the patch: each channel mapped into a printer's gamut [ink black, paper white], which also
   lowers its contrast and casts its colour (Sharif et al. 2016, "Accessorize to a Crime";
   Eykholt et al. 2018, RP2, "Robust Physical-World Attacks on Deep Learning Visual Classification");
2. place it on the scene with a random scale, rotation (Brown et al. 2017, "Adversarial Patch") and
   perspective: each corner moved by up to `corner_jitter` of the side (a homography; RP2's
   viewing angles, Athalye et al. 2018's EOT "Synthesizing Robust Adversarial Examples");
3. light the scene: contrast, brightness (EOT's lighten/darken), gamma;
4. photograph it: Gaussian camera blur, Gaussian sensor noise (EOT), JPEG of the whole image.
The JPEG step is a real codec (no gradient); it passes gradients straight through (BPDA, Athalye,
Carlini, Wagner 2018), so `apply_physical` is differentiable w.r.t. the patch at every step.

`non_printability` is Sharif et al. 2016's non-printability score against a printable palette.
"""
from __future__ import annotations

import math
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..defenses.transforms import jpeg_roundtrip, straight_through
from ..errors import UserError
from .apply import composite

Range = tuple[float, float]
OUTSIDE = 10.0  # patch coordinate given to pixels beyond the homography's horizon (no coverage)


@dataclass(frozen=True)
class PhysicalRanges:
    """Ranges of one physical trial (uniform unless said otherwise); `neutral()` leaves images as
    plain compositing does.

    ink_black, paper_white: per channel, the darkest and lightest printable level; the printed
      patch is black + (white - black) * patch (our values: a laser print on office paper
      photographed in daylight spans roughly 0.02..0.98, RP2 and Sharif et al. measure gamut
      loss but give no single range).
    scale: patch side relative to the requested placement (EOT's 2-D scale range is 0.9..1.4 for a
      free-floating image; around a chosen placement we keep +-10 %).
    rotation_deg: +- degrees (Brown et al. 2017 and EOT: 22.5).
    corner_jitter: each corner moves independently by up to this fraction of the side along x and
      y (perspective; RP2 photographs from varied angles; our value, below 0.25 keeps it convex).
    brightness: additive, on the whole image (EOT lighten/darken: +-0.05 in 2-D; +-0.1 here for
      real lighting). contrast: multiplicative about mid-gray. gamma: log-uniform exponent.
    blur_sigma: Gaussian camera blur in pixels (our value: up to 1 px of defocus at 224 px).
    noise_std: Gaussian sensor noise (EOT draws up to 0.1; a camera in daylight is nearer 0.02).
    jpeg_quality: integer range of the camera's JPEG quality, or None for no JPEG.
    """

    ink_black: Range = (0.02, 0.10)
    paper_white: Range = (0.90, 0.98)
    scale: Range = (0.9, 1.1)
    rotation_deg: float = 22.5
    corner_jitter: float = 0.08
    brightness: Range = (-0.1, 0.1)
    contrast: Range = (0.8, 1.2)
    gamma: Range = (0.8, 1.25)
    blur_sigma: Range = (0.0, 1.0)
    noise_std: Range = (0.0, 0.02)
    jpeg_quality: tuple[int, int] | None = (70, 95)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and (len(value) != 2 or not value[0] <= value[1]):
                raise ValueError(f"{f.name} range must be (low, high) with low <= high, got {value}")
        if not (0 <= self.ink_black[0] and self.ink_black[1] <= self.paper_white[0] and self.paper_white[1] <= 1):
            raise ValueError(f"need 0 <= ink_black <= paper_white <= 1, got {self.ink_black} and {self.paper_white}")
        if self.scale[0] <= 0 or self.contrast[0] < 0 or self.gamma[0] <= 0 or self.blur_sigma[0] < 0 or self.noise_std[0] < 0:
            raise ValueError("scale and gamma must be > 0; contrast, blur_sigma and noise_std >= 0")
        if self.rotation_deg < 0 or not 0 <= self.corner_jitter < 0.25:
            raise ValueError("rotation_deg must be >= 0 and corner_jitter in [0, 0.25)")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must lie in 1..100, got {self.jpeg_quality}")

    def as_dict(self) -> dict[str, Any]:
        """The ranges as JSON-ready lists and numbers (what a run records and `read_ranges` reads)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def neutral(cls) -> PhysicalRanges:
        """Every range at its neutral value: apply_physical then equals apply_patch."""
        return cls(ink_black=(0.0, 0.0), paper_white=(1.0, 1.0), scale=(1.0, 1.0), rotation_deg=0.0,
                   corner_jitter=0.0, brightness=(0.0, 0.0), contrast=(1.0, 1.0), gamma=(1.0, 1.0),
                   blur_sigma=(0.0, 0.0), noise_std=(0.0, 0.0), jpeg_quality=None)


def read_ranges(path: str | Path) -> PhysicalRanges:
    """PhysicalRanges from a JSON object of some of its fields (the rest keep their defaults), e.g.
    {"rotation_deg": 10, "jpeg_quality": null, "noise_std": [0, 0.05]}; UserError (one line) for an
    unreadable file, an unknown field or a bad range."""
    try:
        given = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the physical ranges {path}: {exc}") from None
    if not isinstance(given, dict):
        raise UserError(f"{path}: physical ranges must be a JSON object of PhysicalRanges fields")
    known = {f.name for f in fields(PhysicalRanges)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UserError(f"{path}: unknown physical range {', '.join(unknown)}; use {', '.join(sorted(known))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    try:
        return PhysicalRanges(**values)
    except (TypeError, ValueError, IndexError) as exc:
        raise UserError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class PhysicalDraw:
    """One physical trial per image (all CPU tensors): ink_black, paper_white (n,3); scale, angle
    (radians), brightness, contrast, gamma, blur_sigma, noise_std (n,); corners (n,4,2) corner
    offsets as fractions of the side, for the corners (-1,-1), (1,-1), (1,1), (-1,1) of the patch;
    noise_seed for the sensor noise; jpeg_quality (n,) integers or None."""

    ink_black: torch.Tensor
    paper_white: torch.Tensor
    scale: torch.Tensor
    angle: torch.Tensor
    corners: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    gamma: torch.Tensor
    blur_sigma: torch.Tensor
    noise_std: torch.Tensor
    noise_seed: int
    jpeg_quality: torch.Tensor | None

    def __len__(self) -> int:
        return self.scale.shape[0]

    def take(self, rows: slice) -> PhysicalDraw:
        """The trials `rows` (a slice) as a draw of their own. Its sensor noise is seeded by the draw's
        seed plus the slice's start, so a batch at the same rows always gets the same noise (every patch
        measured on a table of trials sees the same noise: common random numbers)."""
        def cut(t: torch.Tensor) -> torch.Tensor:
            return t[rows]

        quality = None if self.jpeg_quality is None else cut(self.jpeg_quality)
        return PhysicalDraw(cut(self.ink_black), cut(self.paper_white), cut(self.scale), cut(self.angle),
                            cut(self.corners), cut(self.brightness), cut(self.contrast), cut(self.gamma),
                            cut(self.blur_sigma), cut(self.noise_std), self.noise_seed + (rows.start or 0), quality)


def _uniform(shape: tuple[int, ...], bounds: Range, generator: torch.Generator | None) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=generator)


def sample_physical(n: int, ranges: PhysicalRanges = PhysicalRanges(), generator: torch.Generator | None = None) -> PhysicalDraw:
    """`n` physical trials from a (seeded, CPU) generator; the same generator state gives the same draw."""
    rot = math.radians(ranges.rotation_deg)
    log_gamma = (math.log(ranges.gamma[0]), math.log(ranges.gamma[1]))
    ink = _uniform((n, 3), ranges.ink_black, generator)
    paper = _uniform((n, 3), ranges.paper_white, generator)
    scale = _uniform((n,), ranges.scale, generator)
    angle = _uniform((n,), (-rot, rot), generator)
    corners = _uniform((n, 4, 2), (-ranges.corner_jitter, ranges.corner_jitter), generator)
    brightness = _uniform((n,), ranges.brightness, generator)
    contrast = _uniform((n,), ranges.contrast, generator)
    gamma = _uniform((n,), log_gamma, generator).exp()
    blur = _uniform((n,), ranges.blur_sigma, generator)
    noise = _uniform((n,), ranges.noise_std, generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    quality = None
    if ranges.jpeg_quality is not None:
        lo, hi = ranges.jpeg_quality
        quality = torch.randint(lo, hi + 1, (n,), generator=generator)
    return PhysicalDraw(ink, paper, scale, angle, corners, brightness, contrast, gamma, blur, noise, seed, quality)


def print_patch(patches: torch.Tensor, draw: PhysicalDraw) -> torch.Tensor:
    """(3,h,w) or (n,3,h,w) patches -> (n,3,h,w) as printed: each channel into [ink black, paper white]."""
    black = draw.ink_black.to(patches.device, patches.dtype)[:, :, None, None]
    white = draw.paper_white.to(patches.device, patches.dtype)[:, :, None, None]
    return black + (white - black) * patches


PATCH_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))


def perspective_grid(
    hw: tuple[int, int], area: torch.Tensor, centers: torch.Tensor, angle: torch.Tensor, corners: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling grid of `composite` (N,H,W,2: each pixel's patch coordinates, inside the patch in
    [-1,1]) for a square patch of `area` at `centers`, turned by `angle`, with its corners moved by
    `corners` (N,4,2, fractions of the side): the homography taking the moved corners back to the
    patch's corners, solved per image. With no corner offsets it equals `patch_grid`'s affine map.
    Also returns the patch's half side in pixels (N,)."""
    h, w = hw
    n = area.shape[0]
    dev = area.device
    area64, ang = area.double(), angle.double().to(dev)
    side = torch.sqrt(area64 * h * w)  # pixels
    uv = torch.tensor(PATCH_CORNERS, dtype=torch.float64, device=dev).expand(n, 4, 2)
    moved = uv + 2 * corners.double().to(dev)  # the side spans 2 patch units
    cos, sin = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
    dx = side[:, None] / 2 * (cos * moved[..., 0] - sin * moved[..., 1])  # pixel offsets from the center
    dy = side[:, None] / 2 * (sin * moved[..., 0] + cos * moved[..., 1])
    c = centers.double().to(dev) * 2 - 1
    x = c[:, :1] + dx * 2 / w  # corners in normalised image coordinates (-1..1, align_corners=False)
    y = c[:, 1:] + dy * 2 / h
    u, v = uv[..., 0], uv[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (N,8,8)
    hom = torch.cat([torch.linalg.solve(a, torch.cat([u, v], dim=1)), torch.ones(n, 1, dtype=torch.float64, device=dev)], 1)
    xs = (torch.arange(w, dtype=torch.float64, device=dev) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float64, device=dev) * 2 + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3)
    mapped = pts @ hom.view(n, 3, 3).transpose(1, 2)  # (N,HW,3)
    depth = mapped[..., 2:]
    grid = torch.where(depth > 0, mapped[..., :2] / depth.clamp_min(1e-12), torch.full_like(mapped[..., :2], OUTSIDE))
    return grid.view(n, h, w, 2).to(centers.dtype), (side / 2).to(centers.dtype)


def light(images: torch.Tensor, draw: PhysicalDraw) -> torch.Tensor:
    """Contrast about mid-gray, then brightness, then gamma, on whole images; kept in [0,1]."""
    def per_image(t: torch.Tensor) -> torch.Tensor:
        return t.to(images.device, images.dtype).view(-1, 1, 1, 1)

    lit = ((images - 0.5) * per_image(draw.contrast) + 0.5 + per_image(draw.brightness)).clamp(0, 1)
    return lit.clamp_min(1e-6).pow(per_image(draw.gamma))  # the floor keeps gamma's gradient finite at 0


def blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with one sigma (pixels) per image: separable grouped convolutions, reflect padding."""
    n, ch, h, w = images.shape
    sigma = sigma.to(images.device, images.dtype)
    radius = math.ceil(3 * float(sigma.max())) if n else 0
    if radius == 0:
        return images
    t = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    weights = torch.exp(-(t[None] ** 2) / (2 * s**2))
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(ch, dim=0)  # (N*C,K)
    flat = F.pad(images.reshape(1, n * ch, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, weights[:, None, None, :], groups=n * ch)
    flat = F.conv2d(flat, weights[:, None, :, None], groups=n * ch)
    return flat.view(n, ch, h, w)


def sensor_noise(images: torch.Tensor, draw: PhysicalDraw) -> torch.Tensor:
    """Gaussian noise of each image's std, from the draw's noise seed; kept in [0,1]."""
    g = torch.Generator().manual_seed(draw.noise_seed)
    noise = torch.randn(images.shape, generator=g).to(images.device, images.dtype)
    return (images + noise * draw.noise_std.to(images.device, images.dtype).view(-1, 1, 1, 1)).clamp(0, 1)


def apply_physical(
    images: torch.Tensor, patches: torch.Tensor, draw: PhysicalDraw, area: torch.Tensor | float,
    center: torch.Tensor, shape: str = "square",
) -> torch.Tensor:
    """Paste `patches` ((3,h,w) shared or (N,3,h,w)) on `images` (N,3,H,W) in [0,1] at `area`
    (scalar or (N,)) and `center` ((N,2) or (2,), x and y in [0,1]) through one physical trial per
    image (`draw`, of length N): print, place (scale, rotation, perspective), light, blur, noise,
    JPEG. Returns (N,3,H,W) in [0,1], differentiable w.r.t. the patches (JPEG straight through)."""
    n, _, h, w = images.shape
    if len(draw) != n:
        raise ValueError(f"a draw of {len(draw)} trials for {n} images")
    area = torch.as_tensor(area, device=images.device, dtype=images.dtype).expand(n)
    centers = torch.as_tensor(center, device=images.device, dtype=images.dtype).expand(n, 2)
    scaled = area * draw.scale.to(images.device, images.dtype) ** 2
    grid, half = perspective_grid((h, w), scaled, centers, draw.angle, draw.corners)
    out = composite(images, print_patch(patches, draw), grid, half, shape)
    out = sensor_noise(blur(light(out, draw), draw.blur_sigma), draw)
    if draw.jpeg_quality is not None:
        out = straight_through(out, jpeg_roundtrip(out, draw.jpeg_quality.tolist())).clamp(0, 1)
    return out


PRINTABLE_LEVELS = (0.1, 0.5, 0.9)


def printable_palette(levels: tuple[float, ...] = PRINTABLE_LEVELS) -> torch.Tensor:
    """(L**3, 3) colours: every combination of `levels` per channel. The default 3x3x3 grid at
    0.1 / 0.5 / 0.9 lies inside the gamut of PhysicalRanges' default printer (0.10..0.90 always
    printable), a coarse stand-in for Sharif et al.'s 30 colours measured from a real printer."""
    grid = torch.tensor(levels, dtype=torch.float32)
    return torch.cartesian_prod(grid, grid, grid)


def non_printability_loss(patch: torch.Tensor, palette: torch.Tensor | None = None) -> torch.Tensor:
    """Sharif et al. 2016's non-printability score, differentiable: for each pixel of `patch` (3,h,w)
    or (N,3,h,w), the product over the palette of its Euclidean RGB distance to each colour, averaged
    over pixels (Sharif et al. sum; the mean does not grow with the patch's size)."""
    pal = (printable_palette() if palette is None else palette).to(patch.device, patch.dtype)
    pixels = patch.movedim(-3, -1).reshape(-1, 1, 3)
    dist = ((pixels - pal[None]) ** 2).sum(-1).add(1e-12).sqrt()  # (P, colours); eps: finite gradient at 0
    return dist.prod(dim=-1).mean()


def non_printability(patch: torch.Tensor, palette: torch.Tensor | None = None) -> float:
    """`non_printability_loss` as a float (0 for a patch made only of palette colours)."""
    with torch.no_grad():
        return float(non_printability_loss(patch, palette))
