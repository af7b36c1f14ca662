"""apply(): placement, area, masks, rotation and gradients (pixel checks on non-square images)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from patchlab.models import tiny_classifier
from patchlab.patches.apply import POSITIONS, apply_at, apply_patch, placement_grid
from patchlab.patches.eot import EOT, apply_random, sample_placements

H, W = 40, 60          # non-square image
SIDE = 20              # patch side in pixels -> area = 400 / 2400
AREA = SIDE * SIDE / (H * W)

# expected (top, left) corner of the SIDE x SIDE square for each named position
EXPECTED = {
    "top-left": (0, 0), "top-right": (0, W - SIDE), "bottom-left": (H - SIDE, 0),
    "bottom-right": (H - SIDE, W - SIDE), "center": ((H - SIDE) // 2, (W - SIDE) // 2),
}


def _coverage(position: str, shape: str = "square", angle: float = 0.0) -> torch.Tensor:
    """(H,W) fraction of each pixel replaced by a white patch on a black image."""
    img = torch.zeros(1, 3, H, W)
    return apply_at(img, torch.ones(3, 8, 8), AREA, position, angle, shape)[0, 0]


@pytest.mark.parametrize("position", POSITIONS)
def test_patch_lands_where_asked_at_the_area_asked(position):
    cov = _coverage(position)
    top, left = EXPECTED[position]
    expected = torch.zeros(H, W)
    expected[top:top + SIDE, left:left + SIDE] = 1
    assert torch.allclose(cov, expected, atol=1e-4), f"{position}: patch not at rows {top}.., cols {left}.."
    assert cov.sum().item() == pytest.approx(AREA * H * W, rel=1e-3)


def test_area_is_fraction_of_image_area_for_many_sizes():
    img = torch.zeros(4, 3, 90, 160)
    areas = torch.tensor([0.02, 0.1, 0.25, 0.4])
    centers = torch.full((4, 2), 0.5)
    cov = apply_patch(img, torch.ones(3, 16, 16), areas, centers)[:, 0]
    assert torch.allclose(cov.sum((1, 2)) / (90 * 160), areas, rtol=0.02)


def test_patch_content_is_not_flipped_or_transposed():
    patch = torch.zeros(3, 8, 8)
    patch[0, :4, :4] = 1  # red top-left quadrant
    patch[1, :4, 4:] = 1  # green top-right quadrant
    out = apply_at(torch.zeros(1, 3, H, W), patch, AREA, "top-left")[0]
    q = SIDE // 2  # bilinear upsampling blends about one patch pixel (2.5 px) around the middle
    assert out[0, :q - 2, :q - 2].min() > 0.99 and out[0, q + 2:SIDE, :].max() < 1e-4
    assert out[1, :q - 2, q + 2:SIDE].min() > 0.99 and out[1, :, :q - 2].max() < 1e-4


def test_circle_mask_covers_a_disc_and_leaves_the_corners():
    cov = _coverage("center", "circle")
    top, left = EXPECTED["center"]
    assert cov.sum().item() == pytest.approx(math.pi / 4 * SIDE * SIDE, rel=0.02)
    assert cov[top + SIDE // 2, left + SIDE // 2] == pytest.approx(1.0)
    for r, c in [(top, left), (top, left + SIDE - 1), (top + SIDE - 1, left), (top + SIDE - 1, left + SIDE - 1)]:
        assert cov[r, c] == 0, "circle corners must keep the image"
    # a circle is invariant under rotation about its center
    assert torch.allclose(cov, _coverage("center", "circle", angle=0.7), atol=2e-2)


def test_rotation_keeps_area_and_turns_the_content_clockwise():
    angle = math.radians(45)
    cov = _coverage("center", angle=angle)
    assert cov.sum().item() == pytest.approx(SIDE * SIDE, rel=0.02)
    cy, cx = H / 2, W / 2
    reach = SIDE / math.sqrt(2)  # a diamond: corners along the axes
    assert cov[int(cy), int(cx + reach - 2)] == pytest.approx(1.0)
    assert cov[int(cy - SIDE / 2 - 1), int(cx - SIDE / 2 - 1)] == 0  # unrotated corner now empty
    # +90 degrees: the patch's left half becomes the top half (clockwise on screen)
    patch = torch.zeros(3, 8, 8)
    patch[:, :, :4] = 1
    out = apply_at(torch.zeros(1, 3, H, W), patch, AREA, "center", math.pi / 2)[0, 0]
    top, left = EXPECTED["center"]
    block = out[top:top + SIDE, left:left + SIDE]
    assert block[: SIDE // 2 - 1].min() > 0.99 and block[SIDE // 2 + 1:].max() < 1e-3


def test_per_image_patches_areas_and_angles_are_vectorized():
    imgs = torch.zeros(3, 3, H, W)
    patches = torch.stack([torch.full((3, 8, 8), v) for v in (0.2, 0.5, 1.0)])
    areas = torch.tensor([0.05, 0.1, 0.2])
    centers = torch.tensor([[0.3, 0.4], [0.5, 0.5], [0.6, 0.5]])
    out = apply_patch(imgs, patches, areas, centers, torch.tensor([0.0, 0.3, -0.3]))
    for k in range(3):
        assert out[k, 0].max().item() == pytest.approx(patches[k, 0, 0, 0].item(), abs=1e-4)
        covered = out[k, 0].sum().item() / patches[k, 0, 0, 0].item()
        assert covered == pytest.approx(areas[k].item() * H * W, rel=0.02)


def test_random_positions_and_eot_placements_stay_inside():
    g = torch.Generator().manual_seed(0)
    cov = apply_at(torch.zeros(64, 3, H, W), torch.ones(3, 4, 4), AREA, "random", generator=g)[:, 0]
    assert torch.allclose(cov.sum((1, 2)), torch.full((64,), AREA * H * W), rtol=1e-3)
    p = sample_placements(256, (H, W), EOT((0.05, 0.25), 20.0), torch.Generator().manual_seed(1))
    assert p.area.min() >= 0.05 and p.area.max() <= 0.25
    assert p.angle.abs().max() <= math.radians(20.0) + 1e-6
    assert p.centers.min() > 0 and p.centers.max() < 1
    a = apply_random(torch.zeros(4, 3, H, W), torch.ones(3, 4, 4), generator=torch.Generator().manual_seed(2))
    b = apply_random(torch.zeros(4, 3, H, W), torch.ones(3, 4, 4), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b), "same seed, same placements"


def test_eot_log_uniform_areas():
    n = 4000
    uni = sample_placements(n, (H, W), EOT((0.04, 0.36)), torch.Generator().manual_seed(3))
    log = sample_placements(n, (H, W), EOT((0.04, 0.36), area_sampling="log"), torch.Generator().manual_seed(3))
    assert log.area.min() >= 0.04 - 1e-6 and log.area.max() <= 0.36 + 1e-6
    # log-uniform: half of the draws below the geometric mean 0.12; uniform: a quarter
    assert abs(float((log.area < 0.12).float().mean()) - 0.5) < 0.05
    assert abs(float((uni.area < 0.12).float().mean()) - 0.25) < 0.05
    with pytest.raises(ValueError):
        EOT(area_sampling="cubic")


def test_eot_fixed_fraction_puts_unrotated_patches_at_the_evaluator_positions():
    from patchlab.patches.apply import named_centers

    area = torch.full((400,), 0.1)
    table = torch.stack([named_centers(p, area, (224, 224)) for p in POSITIONS])  # (5,400,2)
    fixed = sample_placements(400, (224, 224), EOT((0.1, 0.1), fixed_fraction=1.0), torch.Generator().manual_seed(0))
    hit = (fixed.centers[None] - table).abs().amax(-1) < 1e-6  # (5,400)
    assert hit.any(0).all() and hit.any(1).all() and (fixed.angle == 0).all()  # every draw at one, every one drawn
    half = sample_placements(400, (224, 224), EOT((0.1, 0.1), fixed_fraction=0.5), torch.Generator().manual_seed(0))
    share = ((half.centers[None] - table).abs().amax(-1) < 1e-6).any(0).float().mean()
    assert 0.35 < share < 0.65
    plain = sample_placements(8, (224, 224), EOT(), torch.Generator().manual_seed(1))
    zero = sample_placements(8, (224, 224), EOT(fixed_fraction=0.0), torch.Generator().manual_seed(1))
    assert torch.equal(plain.centers, zero.centers)  # no extra draws when it is off
    with pytest.raises(ValueError):
        EOT(fixed_fraction=1.5)


def test_placement_grid_enumerates_every_combination():
    idx, areas, centers = placement_grid(3, [0.1, 0.2], POSITIONS, (H, W))
    assert len(idx) == len(areas) == len(centers) == 3 * 2 * len(POSITIONS)
    assert torch.equal(areas[:15], torch.full((15,), 0.1))


def test_gradients_reach_only_the_patch():
    clf = tiny_classifier(num_classes=10, input_size=32)
    images = torch.rand(4, 3, 32, 32)
    patch = torch.rand(3, 8, 8, requires_grad=True)
    out = apply_at(images, patch, 0.2, "center", angle=0.3)
    clf(out)[:, 3].sum().backward()
    assert patch.grad is not None and patch.grad.abs().sum() > 0
    assert images.grad is None
    assert all(p.grad is None and not p.requires_grad for p in clf.parameters())
    # pixels fully under the patch get no gradient even when the images ask for one
    images.requires_grad_(True)
    out = apply_at(images, patch.detach(), AREA, "top-left")
    out.sum().backward()
    assert images.grad[:, :, 2:10, 2:10].abs().max() == 0
    assert images.grad[:, :, -5:, -5:].abs().min() > 0


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError):
        apply_at(torch.zeros(1, 3, 8, 8), torch.ones(3, 2, 2), 0.1, "center", shape="star")
    with pytest.raises(ValueError):
        apply_at(torch.zeros(1, 3, 8, 8), torch.ones(3, 2, 2), 0.1, "middle")


def test_apply_command_writes_patched_pngs_and_skips_bad_files(tmp_path):
    from PIL import Image

    from patchlab.cli import app, load_commands
    from patchlab.runio import save_png

    load_commands()
    src = tmp_path / "imgs"
    src.mkdir()
    for k in range(3):
        Image.new("RGB", (50 + 10 * k, 40), (30 * k, 60, 90)).save(src / f"im{k}.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    save_png(tmp_path / "patch.png", torch.ones(3, 8, 8))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["apply", str(tmp_path / "patch.png"), str(src), "--area", "0.25", "--position",
                                   "bottom-right", "--out", str(out), "--model", "tiny", "--json"])
    assert res.exit_code == 0, res.output
    import json

    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert len(data["images"]) == 3 and len(data["skipped"]) == 1 and "broken.jpg" in data["skipped"][0]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["im0.png", "im1.png", "im2.png"]
    arr = torch.tensor(__import__("numpy").asarray(Image.open(out / "im0.png"))).float() / 255
    assert arr.shape[:2] == (32, 32)
    assert arr[-15:, -15:].min() > 0.99 and arr[:10, :10].max() < 0.5  # white patch bottom-right only
    assert {"before", "after", "changed"} <= set(data["images"][0])


def test_apply_never_overwrites_and_refuses_bad_patches(tmp_path):
    from PIL import Image

    from patchlab.errors import UserError
    from patchlab.patches.candidate import load_patch
    from patchlab.pipelines.apply import apply_to_files
    from patchlab.runio import save_png

    src, out = tmp_path / "imgs", tmp_path / "out"
    src.mkdir()
    Image.new("RGB", (40, 40), (10, 60, 90)).save(src / "im0.png")
    save_png(tmp_path / "patch.png", torch.ones(3, 8, 8))
    original = (src / "im0.png").read_bytes()
    with pytest.raises(UserError, match="holds input images"):
        apply_to_files(tmp_path / "patch.png", [src], out=src, model="tiny")
    with pytest.raises(UserError, match="finite"):
        apply_to_files(tmp_path / "patch.png", [src], out=out, model="tiny", angle_deg=float("nan"))
    assert (src / "im0.png").read_bytes() == original and not out.exists()
    first = apply_to_files(tmp_path / "patch.png", [src], out=out, model="tiny")
    second = apply_to_files(tmp_path / "patch.png", [src], out=out, model="tiny")
    assert [Path(r["out"]).name for r in first["images"] + second["images"]] == ["im0.png", "im0-1.png"]
    (tmp_path / "zero.pt").write_bytes(b"")
    torch.save(torch.zeros(3, 0, 5), tmp_path / "empty.pt")
    torch.save(torch.full((3, 4, 4), float("nan")), tmp_path / "nan.pt")
    for name, needle in (("zero.pt", "cannot read patch tensor"), ("empty.pt", "h, w >= 1"), ("nan.pt", "not finite")):
        with pytest.raises(UserError, match=needle):
            load_patch(tmp_path / name)
