"""Physical-world transforms (patches.physical): seeded draws, value ranges, gradients, the neutral
draw equal to plain compositing, geometry of the perspective step, and the non-printability score."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from patchlab.defenses.transforms import jpeg_roundtrip
from patchlab.patches.apply import apply_patch
from patchlab.patches.physical import (
    PhysicalRanges, apply_physical, blur, non_printability, non_printability_loss, perspective_grid,
    printable_palette, sample_physical,
)

N, SIZE = 4, 32
CENTERS = torch.tensor([[0.3, 0.4], [0.5, 0.5], [0.7, 0.25], [0.28, 0.72]])


@pytest.fixture
def scene() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 3, SIZE, SIZE, generator=g), torch.rand(3, 8, 8, generator=g)


def draws_equal(a, b) -> bool:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor) and not torch.equal(x, y) or not isinstance(x, torch.Tensor) and x != y:
            return False
    return True


def test_same_seed_same_draw_and_another_seed_another():
    a = sample_physical(8, PhysicalRanges(), torch.Generator().manual_seed(3))
    b = sample_physical(8, PhysicalRanges(), torch.Generator().manual_seed(3))
    c = sample_physical(8, PhysicalRanges(), torch.Generator().manual_seed(4))
    assert draws_equal(a, b) and not draws_equal(a, c)
    assert len(a) == 8 and a.jpeg_quality is not None and a.jpeg_quality.dtype == torch.int64


def test_draws_stay_inside_their_ranges():
    r = PhysicalRanges()
    d = sample_physical(2000, r, torch.Generator().manual_seed(0))
    assert r.ink_black[0] <= d.ink_black.min() and d.ink_black.max() <= r.ink_black[1]
    assert r.paper_white[0] <= d.paper_white.min() and d.paper_white.max() <= r.paper_white[1]
    assert d.angle.abs().max() <= torch.deg2rad(torch.tensor(r.rotation_deg)) + 1e-6
    assert d.corners.abs().max() <= r.corner_jitter
    assert r.gamma[0] - 1e-6 <= d.gamma.min() and d.gamma.max() <= r.gamma[1] + 1e-6
    assert r.jpeg_quality[0] <= int(d.jpeg_quality.min()) and int(d.jpeg_quality.max()) <= r.jpeg_quality[1]
    assert d.gamma.std() > 0 and d.blur_sigma.std() > 0  # really random


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError):
        PhysicalRanges(ink_black=(0.0, 0.95), paper_white=(0.9, 1.0))  # black above white
    with pytest.raises(ValueError):
        PhysicalRanges(corner_jitter=0.3)
    with pytest.raises(ValueError):
        PhysicalRanges(jpeg_quality=(50, 120))
    with pytest.raises(ValueError):
        PhysicalRanges(scale=(1.2, 1.0))


def test_neutral_draw_equals_plain_compositing(scene):
    images, patch = scene
    d = sample_physical(N, PhysicalRanges.neutral(), torch.Generator().manual_seed(0))
    for area in (0.05, 0.2):
        got = apply_physical(images, patch, d, area, CENTERS)
        assert (got - apply_patch(images, patch, area, CENTERS)).abs().max() < 1e-5


def test_rotation_and_scale_follow_apply_patch_conventions(scene):
    images, patch = scene
    d = sample_physical(N, PhysicalRanges.neutral(), torch.Generator().manual_seed(0))
    d = dataclasses.replace(d, angle=torch.tensor([0.3, -0.5, 1.0, 0.0]), scale=torch.tensor([1.2, 0.8, 1.0, 1.1]))
    got = apply_physical(images, patch, d, 0.1, CENTERS)
    want = apply_patch(images, patch, 0.1 * d.scale**2, CENTERS, d.angle)
    assert (got - want).abs().max() < 1e-5


def coverage(grid: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Patch coverage (pixels) of each image from its sampling grid, as `composite` computes alpha."""
    return ((1 - grid.abs()) * half.view(-1, 1, 1, 1) + 0.5).clamp(0, 1).prod(-1).sum(dim=(1, 2))


def test_corner_offsets_move_the_corners_in_patch_coordinates():
    area = torch.full((3,), 0.1)
    centers = torch.full((3, 2), 0.5)
    angle = torch.tensor([0.0, 0.0, 0.7])
    inward = torch.tensor([[0.1, 0.1], [-0.1, 0.1], [-0.1, -0.1], [0.1, -0.1]])  # each corner 10 % toward the center
    corners = torch.stack([torch.zeros(4, 2), -inward, inward])  # none, outward, inward (turned patch)
    grid, half = perspective_grid((64, 64), area, centers, angle, corners)
    cov = coverage(grid, half)
    full = 0.1 * 64 * 64
    assert abs(cov[0] - full) / full < 0.02
    assert abs(cov[1] - 1.2**2 * full) / full < 0.05  # outward: side 1.2x
    assert abs(cov[2] - 0.8**2 * full) / full < 0.05  # inward: side 0.8x, whatever the rotation
    one_corner = torch.zeros(1, 4, 2)
    one_corner[0, 2] = torch.tensor([0.2, 0.2])  # the bottom-right corner pulled out: a kite, larger
    g1, h1 = perspective_grid((64, 64), area[:1], centers[:1], angle[:1], one_corner)
    assert coverage(g1, h1) > cov[0] * 1.05
    assert torch.isfinite(g1).all()


def test_default_trials_keep_values_in_range_and_change_the_scene(scene):
    images, patch = scene
    d = sample_physical(N, PhysicalRanges(), torch.Generator().manual_seed(1))
    out = apply_physical(images, patch, d, 0.1, CENTERS)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert (out - apply_patch(images, patch, 0.1, CENTERS)).abs().mean() > 0.01
    # the last step is a real JPEG: the output is a decoded JPEG (multiples of 1/255, a fixed point up
    # to the codec's rounding when encoded again at the same quality)
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-3)
    again = jpeg_roundtrip(out, d.jpeg_quality.tolist())
    assert (again - out).abs().mean() < (out - apply_patch(images, patch, 0.1, CENTERS)).abs().mean()
    extreme = PhysicalRanges(brightness=(0.4, 0.5), contrast=(1.8, 2.0), gamma=(0.3, 0.4), noise_std=(0.2, 0.3),
                             blur_sigma=(2.0, 2.5), corner_jitter=0.2, scale=(1.5, 2.0))
    out = apply_physical(images, patch, sample_physical(N, extreme, torch.Generator().manual_seed(2)), 0.2, CENTERS)
    assert out.min() >= 0 and out.max() <= 1


def test_gradients_reach_the_patch_through_every_step(scene):
    images, patch = scene
    d = sample_physical(N, PhysicalRanges(), torch.Generator().manual_seed(5))
    for patches in (patch.clone().requires_grad_(True), patch.expand(N, 3, 8, 8).clone().requires_grad_(True)):
        out = apply_physical(images, patches, d, 0.1, CENTERS)
        out.mean().backward()
        assert patches.grad is not None and torch.isfinite(patches.grad).all() and patches.grad.abs().sum() > 0


def test_blur_keeps_flat_images_and_softens_edges():
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(blur(flat, torch.tensor([0.0, 1.5])), flat, atol=1e-6)
    edge = torch.zeros(2, 3, 16, 16)
    edge[..., 8:] = 1
    out = blur(edge, torch.tensor([0.0, 1.5]))
    assert torch.equal(out[0], edge[0])  # sigma 0: untouched
    assert 0.05 < out[1, 0, 0, 7] < 0.5 < out[1, 0, 0, 8] < 0.95  # a ramp across the edge
    assert torch.allclose(out[1].mean(), edge[1].mean(), atol=1e-5)


def test_non_printability_is_zero_on_the_palette_and_larger_outside_the_gamut():
    palette = printable_palette()
    assert palette.shape == (27, 3) and palette.min() >= 0.1 and palette.max() <= 0.9
    on_palette = palette[:16].T.reshape(3, 4, 4)  # a patch made only of palette colours
    assert non_printability(on_palette) < 1e-6
    saturated = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 4, 4)
    assert non_printability(saturated) > 1e-3 > 1e3 * non_printability(on_palette)
    half = torch.cat([on_palette[:, :2], saturated[:, :2]], dim=1)  # the mean over pixels
    assert abs(non_printability(half) - non_printability(saturated) / 2) < 1e-6
    # one gradient step on the loss moves a saturated patch toward printable colours
    p = saturated.clone().requires_grad_(True)
    non_printability_loss(p).backward()
    assert non_printability((p - 0.5 * p.grad / p.grad.abs().max()).detach()) < non_printability(saturated)
