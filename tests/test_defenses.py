"""Defences (patchlab.defenses): the spec parser, the input transforms (what they do to pixels and
that they keep the class of clean images), the wrapper's Classifier-like attributes, and PatchCleanser:
its mask set, its decisions against a literal transcription of the paper's Algorithm 1, and the
soundness of its certificate under an exhaustive patch search."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from patchlab.classes import generic_classes, imagenet_classes
from patchlab.data import discover, load_images
from patchlab.defenses import (
    DefendedClassifier, Defense, PatchCleanser, bit_depth, defend, jpeg_roundtrip, mask_set, median_filter,
    parse_defense,
)
from patchlab.defenses.patchcleanser import OFF_LOGIT, axis_masks, majority, patch_side_px
from patchlab.defenses.transforms import jpeg_bytes
from patchlab.errors import UserError
from patchlab.models import Classifier, tiny_classifier

PHOTOS = Path("/work/shared/realphotos")
TOY_SIZE, TOY_AREA = 16, 0.09  # a 5 px patch on 16 px images: k = 6 gives the paper's 36 masks
ATTACK_STEPS = 10


def toy_classifier(seed: int) -> Classifier:
    """A small random CNN over 10 classes whose prediction depends on where things are (pooled, then
    a linear map of a 4x4 grid of features): masks and patches can change it, unlike a model whose
    top-1 is one class everywhere."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(6 * (TOY_SIZE // 4) ** 2, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
        net[-1].bias.zero_()
    return Classifier(net, spec="toy", classes=generic_classes(10), input_size=TOY_SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Low-frequency colour images (4x4 random colours upsampled): the toy model is fairly stable on them."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bicubic", align_corners=False).clamp(0, 1)


# -- parsing -----------------------------------------------------------------------
@pytest.mark.parametrize("text,name,value,spec", [
    ("jpeg:75", "jpeg", 75, "jpeg:75"), (" JPEG : 10 ", "jpeg", 10, "jpeg:10"), ("median:3", "median", 3, "median:3"),
    ("bitdepth:1", "bitdepth", 1, "bitdepth:1"), ("bitdepth:8", "bitdepth", 8, "bitdepth:8"),
    ("patchcleanser:0.02", "patchcleanser", 0.02, "patchcleanser:0.02"),
    ("patchcleanser:.5", "patchcleanser", 0.5, "patchcleanser:0.5"),
])
def test_parse_defense(text, name, value, spec):
    d = parse_defense(text)
    assert (d.name, d.value, str(d)) == (name, value, spec)
    assert parse_defense(str(d)) == d


@pytest.mark.parametrize("text", [
    "gaussian:3", "", "jpeg", "jpeg:", "jpeg:abc", "jpeg:0", "jpeg:101", "jpeg:75.5", "median:1", "median:2",
    "median:4", "median:x", "bitdepth:0", "bitdepth:9", "bitdepth:2.0", "patchcleanser", "patchcleanser:0",
    "patchcleanser:0.51", "patchcleanser:-0.1", "patchcleanser:nan", "patchcleanser:inf", "patchcleanser:big",
    "jpeg:7\n5",
])
def test_bad_defences_are_one_line_user_errors(text):
    with pytest.raises(UserError) as err:
        parse_defense(text)
    msg = str(err.value)
    assert msg and "\n" not in msg
    with pytest.raises(UserError):
        defend(tiny_classifier(), text)


def test_defense_checks_values_given_directly():
    with pytest.raises(UserError, match="odd"):
        Defense("median", 4)
    with pytest.raises(UserError, match="patchcleanser area"):
        PatchCleanser(tiny_classifier(), 0.7)
    with pytest.raises(UserError, match="unknown defence"):
        Defense("blur", 3)


# -- input transforms --------------------------------------------------------------
def test_bitdepth_quantises_to_its_levels():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert set(bit_depth(x, 1).unique().tolist()) == {0.0, 1.0}
    three = bit_depth(x, 3)
    assert len(three.unique()) <= 8 and (three - x).abs().max() <= 0.5 / 7 + 1e-6
    as_uint8 = (x * 255).round() / 255
    assert torch.allclose(bit_depth(as_uint8, 8), as_uint8, atol=1e-7)  # 8 bits: already on the grid


def test_median_removes_salt_and_pepper_noise_and_matches_a_reference():
    g = torch.Generator().manual_seed(1)
    clean = smooth_images(2, 32, seed=1)
    noisy = clean.clone()
    hits = torch.rand(2, 1, 32, 32, generator=g) < 0.05
    salt = torch.rand(2, 1, 32, 32, generator=g) < 0.5
    noisy = torch.where(hits, salt.float().expand(2, 3, 32, 32), noisy)
    cleaned = median_filter(noisy, 3)
    assert (noisy - clean).abs().mean() > 0.015
    assert (cleaned - clean).abs().mean() < 0.25 * (noisy - clean).abs().mean()
    # reference: numpy's median over each 3x3 (and 5x5) reflect-padded window
    for k in (3, 5):
        arr = np.pad(noisy[0].numpy(), ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), mode="reflect")
        ref = np.empty(noisy[0].shape, dtype=np.float32)
        for i in range(32):
            for j in range(32):
                ref[:, i, j] = np.median(arr[:, i : i + k, j : j + k].reshape(3, -1), axis=1)
        assert np.allclose(median_filter(noisy[:1], k)[0].numpy(), ref)


def test_median_kernel_too_large_for_the_images_is_a_user_error():
    with pytest.raises(UserError, match="too large"):
        median_filter(torch.rand(1, 3, 4, 4), 9)


def test_jpeg_is_a_real_jpeg_roundtrip():
    x = smooth_images(3, 48, seed=2) * 0.8 + 0.1 * torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    out = jpeg_roundtrip(x, 75)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)  # decoded 8-bit pixels
    assert (out - x).abs().mean() > 1e-3  # it changed the pixels
    files = jpeg_bytes(x, 75)
    for i, data in enumerate(files):
        raw = bytes(data.tolist())
        assert raw[:2] == b"\xff\xd8" and raw[-2:] == b"\xff\xd9"  # SOI ... EOI
        img = Image.open(io.BytesIO(raw))
        assert img.format == "JPEG" and img.size == (48, 48)
        by_pil = torch.from_numpy(np.asarray(img.convert("RGB"))).permute(2, 0, 1).float() / 255
        assert (by_pil - out[i]).abs().max() <= 2 / 255  # another decoder of the same file
    worse, better = (jpeg_roundtrip(x, q) for q in (10, 95))
    assert (better - x).abs().mean() < (out - x).abs().mean() < (worse - x).abs().mean()
    per_image = jpeg_roundtrip(x, [10, 95, 75])
    assert torch.equal(per_image[0], worse[0]) and torch.equal(per_image[1], better[1]) and torch.equal(per_image[2], out[2])


@pytest.mark.parametrize("spec", ["jpeg:75", "median:3", "bitdepth:4"])
def test_defended_classifier_stands_in_for_the_classifier(spec):
    clf = tiny_classifier()
    d = defend(clf, spec)
    assert isinstance(d, DefendedClassifier) and d.is_defended and not getattr(clf, "is_defended", False)
    assert d.spec == f"tiny+{spec}" and d.classes is clf.classes and d.input_size == clf.input_size
    assert d.device == clf.device and d.num_classes == clf.num_classes and d.crop_pct == clf.crop_pct
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    want = clf.logits(d.transform(x))
    assert torch.allclose(d.logits(x, batch_size=2), want, atol=1e-6)
    assert not torch.allclose(want, clf.logits(x), atol=1e-4)  # the transform did something
    xg = x.clone().requires_grad_(True)
    d(xg).sum().backward()  # gradients pass the transform (straight through where it is not differentiable)
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert not d.train().training


def test_input_transforms_keep_the_class_of_a_stable_clean_image():
    clf = toy_classifier(3)
    images = smooth_images(32, 64, seed=3)
    probs = clf.logits(images).softmax(-1)
    top2 = probs.topk(2, dim=-1).values
    stable = images[(top2[:, 0] - top2[:, 1]).argmax()][None]  # the image the model is most sure of
    label = int(clf.logits(stable).argmax())
    assert len(clf.logits(images).argmax(-1).unique()) > 1  # the model does tell images apart
    for spec in ("jpeg:75", "median:3", "bitdepth:5"):
        assert int(defend(clf, spec).logits(stable).argmax()) == label, spec


@pytest.mark.integration
@pytest.mark.skipif(not PHOTOS.is_dir(), reason="no real photos at /work/shared/realphotos")
def test_input_transforms_keep_the_class_of_confidently_classified_photos(default_model):
    records = [r for r in discover(PHOTOS, imagenet_classes()) if r.label is not None][:12]
    batch = load_images(records, default_model.input_size, default_model.crop_pct)
    probs = default_model.logits(batch.images).softmax(-1)
    sure = (probs.argmax(-1) == batch.labels) & (probs.max(-1).values > 0.8)
    assert sure.sum() >= 3
    for spec in ("jpeg:75", "median:3", "bitdepth:5"):
        got = defend(default_model, spec).logits(batch.images[sure]).argmax(-1)
        assert torch.equal(got, batch.labels[sure]), spec


# -- PatchCleanser: mask set -------------------------------------------------------------
def test_mask_set_follows_the_paper_for_imagenet():
    ms = mask_set((224, 224), 0.02)
    assert patch_side_px(0.02, (224, 224)) == 32 and len(ms) == 36
    assert (ms.rows.patch, ms.rows.stride, ms.rows.size) == (32, 33, 64)  # s = ceil(193/6), m = p + s - 1
    assert ms.rows.offsets == (0, 33, 66, 99, 132, 160)
    masks = ms.masks()
    assert masks.shape == (36, 224, 224) and (masks.sum(dim=(1, 2)) == 64 * 64).all()
    assert len({tuple(m.nonzero()[0].tolist()) for m in masks}) == 36  # distinct
    assert mask_set((200, 300), 0.05).masks().shape[1:] == (200, 300)


@pytest.mark.parametrize("k", [1, 2, 3, 6, 8])
def test_every_patch_window_lies_inside_a_mask(k):
    """R-covering: for every side, patch size and window position, some mask holds the whole window."""
    for n in (5, 16, 31, 32, 57, 224):
        for p in range(1, n + 1):
            ax = axis_masks(n, p, k)
            start = torch.arange(n - p + 1)[:, None]
            off = torch.tensor(ax.offsets)[None]
            inside = (off <= start) & (start + p <= off + ax.size)
            assert inside.any(dim=1).all(), (n, p, k)
            assert len(ax.offsets) <= k and max(ax.offsets) + ax.size == n


def test_two_d_masks_cover_every_window_on_a_small_image():
    ms = mask_set((TOY_SIZE, TOY_SIZE), TOY_AREA)
    p, masks = patch_side_px(TOY_AREA, (TOY_SIZE, TOY_SIZE)), ms.masks()
    assert p == 5 and len(ms) == 36
    for r in range(TOY_SIZE - p + 1):
        for c in range(TOY_SIZE - p + 1):
            assert masks[:, r : r + p, c : c + p].all(dim=(1, 2)).any()


def test_majority_breaks_ties_toward_the_smallest_label():
    labels = torch.tensor([[3, 3, 1, 1, 2], [5, 5, 5, 0, 0], [7, 7, 7, 7, 7]])
    assert majority(labels).tolist() == [1, 5, 7]


# -- PatchCleanser: decisions -----------------------------------------------------------
def reference_double_masking(clf: Classifier, images: torch.Tensor, masks: torch.Tensor) -> tuple[list[int], list[bool]]:
    """Algorithm 1 of the paper and its certification check, one image at a time, in the paper's
    order (first-round masks; each disagreer against every mask; all pairs for the certificate)."""
    def labels_under(x: torch.Tensor, hidden: torch.Tensor) -> list[int]:
        return clf.logits(torch.where(hidden[:, None], torch.full_like(x, 0.5), x), 1024).argmax(-1).tolist()

    out_labels, out_certified = [], []
    m = len(masks)
    pairs = [(i, j) for i in range(m) for j in range(i, m)]
    for x in images:
        one = labels_under(x, masks)
        values, counts = np.unique(one, return_counts=True)
        label = int(values[counts == counts.max()].min())  # majority (ties: smallest label)
        if len(values) > 1:
            for i in range(m):
                if one[i] != label and all(y == one[i] for y in labels_under(x, masks[i] | masks)):
                    label = one[i]
                    break
        two = labels_under(x, torch.stack([masks[i] | masks[j] for i, j in pairs]))
        out_labels.append(label)
        out_certified.append(all(y == label for y in two))
    return out_labels, out_certified


@pytest.fixture(scope="module")
def toy_defended():
    """The toy model, PatchCleanser at TOY_AREA, 24 smooth images and their certificates."""
    clf = toy_classifier(3)
    pc = PatchCleanser(clf, TOY_AREA, batch_size=2048)
    images = smooth_images(24, TOY_SIZE, seed=1)
    labels, certified = pc.certify(images)
    return clf, pc, images, labels, certified


@pytest.fixture(scope="module")
def toy_attacks(toy_defended) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """`attack_everywhere` on the first three certified and the first three uncertified images."""
    clf, _, images, labels, certified = toy_defended
    p = patch_side_px(TOY_AREA, (TOY_SIZE, TOY_SIZE))
    return {name: [(i, attack_everywhere(clf, images[i], int(labels[i]), p, seed=i)) for i in rows.nonzero().flatten()[:3].tolist()]
            for name, rows in (("certified", certified), ("uncertified", ~certified))}


def test_predict_and_certify_follow_the_papers_algorithm(toy_defended, toy_attacks):
    clf, pc, images, _, _ = toy_defended
    positions = (TOY_SIZE - patch_side_px(TOY_AREA, (TOY_SIZE, TOY_SIZE)) + 1) ** 2
    # optimised patches give every case: the masks over the patch disagree with the others
    pool = torch.cat([toy_attacks[name][0][1][:positions] for name in ("certified", "uncertified")])
    one = pc.first_round(pool)
    decided = pc.decide(pool, one)
    agreed = (one == one[:, :1]).all(dim=1)
    case_two = ~agreed & (decided != majority(one))  # a disagreer confirmed by the second round
    case_three = ~agreed & (decided == majority(one))  # no disagreer survives: the majority
    picks = [c.nonzero().flatten()[:3] for c in (agreed, case_two, case_three)]
    assert all(len(c) == 3 for c in picks)  # every branch is exercised
    chosen = torch.cat([images[:3], pool[torch.cat(picks)]])
    got_labels, got_certified = pc.certify(chosen)
    want_labels, want_certified = reference_double_masking(clf, chosen, pc.masks_for(chosen))
    assert got_labels.tolist() == want_labels and got_certified.tolist() == want_certified
    assert torch.equal(pc.predict(chosen), got_labels) and any(want_certified) and not all(want_certified)


def test_the_second_round_stops_at_the_first_dissenting_pair(toy_defended, toy_attacks):
    _, pc, _, _, _ = toy_defended
    pool = torch.cat([toy_attacks[name][0][1][:200] for name in ("certified", "uncertified")])
    one = pc.first_round(pool)
    m = one.shape[1]
    disagreers = int((one != majority(one)[:, None]).sum())
    before = pc.forwards
    pc.decide(pool, one)
    spent = pc.forwards - before
    assert disagreers > len(pool) and 0 < spent < disagreers * (m - 1) / 2  # checking every pair costs (m-1) each


def test_forward_returns_the_defended_label_as_one_hot_logits(toy_defended):
    _, pc, images, labels, _ = toy_defended
    out = pc(images)
    assert out.shape == (24, 10) and torch.equal(out.argmax(-1), labels) and not out.requires_grad
    assert torch.equal(out.softmax(-1), F.one_hot(labels, 10).float()) and out.min() == OFF_LOGIT
    assert torch.equal(pc.logits(images, batch_size=5), out)
    assert pc.spec == "toy+patchcleanser:0.09" and pc.is_defended and len(pc.masks_for(images)) == 36
    assert isinstance(defend(pc.classifier, "patchcleanser:0.09"), PatchCleanser)


# -- PatchCleanser: soundness -----------------------------------------------------------
def paste_everywhere(image: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """image (3,n,n), patches (P,3,p,p) with P = (n-p+1)**2: patch k pasted pixel-aligned at the k-th
    window (row-major). Differentiable w.r.t. the patches."""
    n, p = image.shape[-1], patches.shape[-1]
    start = torch.arange(n - p + 1)
    top, left = (t.flatten() for t in torch.meshgrid(start, start, indexing="ij"))
    ar = torch.arange(n)
    rows = (ar >= top[:, None]) & (ar < top[:, None] + p)  # (P,n)
    cols = (ar >= left[:, None]) & (ar < left[:, None] + p)
    inside = (rows[:, :, None] & cols[:, None, :])[:, None].expand(-1, 3, -1, -1)
    spread = torch.zeros(inside.shape).masked_scatter(inside, patches)  # fills each window in row-major order
    return torch.where(inside, spread, image[None])


def attack_everywhere(clf: Classifier, image: torch.Tensor, label: int, p: int, seed: int) -> torch.Tensor:
    """Patched copies of `image` at every pixel position (P of them) with four contents, in this order:
    one optimised per position against the undefended model (ATTACK_STEPS Adam steps on the margin of
    `label` over the best other class), random, black and white. Returns (4P,3,n,n)."""
    g = torch.Generator().manual_seed(seed)
    positions = (image.shape[-1] - p + 1) ** 2
    patches = torch.rand(positions, 3, p, p, generator=g).requires_grad_(True)
    opt = torch.optim.Adam([patches], lr=0.1)
    for _ in range(ATTACK_STEPS):
        logits = clf(paste_everywhere(image, patches.clamp(0, 1)))
        others = logits.detach().clone()
        others[:, label] = -torch.inf
        margin = logits[:, label] - logits.gather(1, others.argmax(-1, keepdim=True))[:, 0]
        opt.zero_grad()
        margin.sum().backward()
        opt.step()
    contents = (patches.detach().clamp(0, 1), torch.rand(positions, 3, p, p, generator=g),
                torch.zeros(positions, 3, p, p), torch.ones(positions, 3, p, p))
    return torch.cat([paste_everywhere(image, c) for c in contents])


def test_no_patch_flips_a_certified_image(toy_defended, toy_attacks):
    """The certificate's promise, checked exhaustively: every pixel position of a 5 px patch on 16 px
    images, with optimised, random and constant contents, never changes a certified label; the same
    patches do flip the undefended model (so the search is not toothless)."""
    clf, pc, _, labels, _ = toy_defended
    assert len(toy_attacks["certified"]) == 3
    undefended_flips = 0
    for i, attacked in toy_attacks["certified"]:
        undefended_flips += int((clf.logits(attacked, 4096).argmax(-1) != labels[i]).sum())
        assert (pc.predict(attacked) == labels[i]).all()
    assert undefended_flips > 50


def test_an_uncertified_image_can_be_flipped(toy_defended, toy_attacks):
    _, pc, _, labels, _ = toy_defended
    assert any((pc.predict(attacked) != labels[i]).any() for i, attacked in toy_attacks["uncertified"])
