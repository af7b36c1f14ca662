"""PatchCleanser double masking (Xiang, Mahloujifar, Mittal, "PatchCleanser: Certifiably Robust
Defense against Adversarial Patches for Any Image Classifier", USENIX Security 2022).

Mask set (the paper's R-covering set, per axis): for an image side n, a patch side p (pixels) and
k masks per axis, stride s = ceil((n - p + 1) / k) and mask side m = p + s - 1, at offsets 0, s,
2s, ... up to n - m, plus n - m itself when the stride does not land on it; every window of p
pixels then lies inside at least one mask. The 2-D set is every (row, column) pair: k*k masks
(fewer when n is small next to p). The patch side is ceil(sqrt(area * H * W)) pixels, so the
certificate covers any patch inside a p x p pixel window: a square of `area` pasted on the pixel
grid (a patch with a sub-pixel offset can blend into one more row or column).

Masked pixels are set to `fill` = 0.5 (mid-gray in [0,1] pixel space; the paper writes 0 in the
normalised input space, which is exactly 0.5 for EfficientNet-Lite's mean/std of 0.5).

Prediction (Algorithm 1, double masking): the k*k one-mask predictions; if they agree, that label
(case I). Otherwise, for each mask whose one-mask label disagrees with the majority (in mask
order), the two-mask predictions with that mask and every other one: if all equal its label, that
label (case II); if no disagreer survives, the majority label (case III).
Certification (the paper's certification procedure): certified iff every one-mask and every
two-mask prediction equals the label; then no patch inside one window of the mask set's patch
size can change the defended label (the paper's Theorem).
Cost: every all-equal check of the second round and of the certificate stops at its first
dissenting two-mask label (`PatchCleanser.all_agree`); the labels and certificates are those of
checking every pair, at a fraction of the forwards on patched images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models import Classifier
from .spec import Defense
from .wrapped import DefendedClassifier

MASKS_PER_AXIS = 6  # k in the paper (36 masks), its default for ImageNet
FILL = 0.5
FIRST_CHUNK = 4  # two-mask predictions per image in the second round's first chunk (see `all_agree`)
OFF_LOGIT = -1e4  # forward's output for every label but the defended one (softmax exactly one-hot)


@dataclass(frozen=True)
class AxisMasks:
    """The masks along one axis: patch side, mask side and stride (pixels), and mask offsets."""

    patch: int
    size: int
    stride: int
    offsets: tuple[int, ...]


def axis_masks(n: int, patch: int, k: int) -> AxisMasks:
    """The R-covering 1-D mask set of the paper for a side of n pixels and a patch of `patch` pixels."""
    patch = min(max(patch, 1), n)
    stride = math.ceil((n - patch + 1) / k)
    size = min(patch + stride - 1, n)
    offsets = list(range(0, n - size + 1, stride))
    if (n - size) % stride:
        offsets.append(n - size)
    return AxisMasks(patch, size, stride, tuple(offsets))


def patch_side_px(area: float, hw: tuple[int, int]) -> int:
    """Side in pixels of the window holding a square patch of `area` (fraction of H*W), rounded up."""
    return math.ceil(math.sqrt(area * hw[0] * hw[1]) - 1e-9)


@dataclass(frozen=True)
class MaskSet:
    """The 2-D mask set for (H, W) images: masks are the (row, column) offset pairs, row-major."""

    hw: tuple[int, int]
    rows: AxisMasks
    cols: AxisMasks

    def __len__(self) -> int:
        return len(self.rows.offsets) * len(self.cols.offsets)

    def masks(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(M,H,W) booleans, True inside each mask (the pixels set to the fill value)."""
        h, w = self.hw
        r = torch.arange(h, device=device)
        c = torch.arange(w, device=device)
        in_rows = torch.stack([(r >= o) & (r < o + self.rows.size) for o in self.rows.offsets])  # (R,H)
        in_cols = torch.stack([(c >= o) & (c < o + self.cols.size) for o in self.cols.offsets])  # (C,W)
        return (in_rows[:, None, :, None] & in_cols[None, :, None, :]).reshape(-1, h, w)


def mask_set(hw: tuple[int, int], area: float, k: int = MASKS_PER_AXIS) -> MaskSet:
    """The paper's mask set for (H, W) images, a square patch of up to `area`, and k masks per axis."""
    p = patch_side_px(area, hw)
    return MaskSet((int(hw[0]), int(hw[1])), axis_masks(hw[0], p, k), axis_masks(hw[1], p, k))


def majority(labels: torch.Tensor) -> torch.Tensor:
    """Most frequent label of each row of (N,M) labels; ties go to the smallest label."""
    counts = (labels[:, :, None] == labels[:, None, :]).sum(-1)  # (N,M): how often each entry's label occurs
    top = counts == counts.max(dim=1, keepdim=True).values
    return torch.where(top, labels, torch.full_like(labels, torch.iinfo(labels.dtype).max)).min(dim=1).values


class PatchCleanser(DefendedClassifier):
    """PatchCleanser around any classifier (see the module docstring).

    area: the largest patch (fraction of the image area) to defend against, (0, 0.5].
    masks_per_axis: k (6 in the paper). batch_size: masked images per forward pass.
    forward(images) returns (N, classes) pseudo-logits: 0 for the defended label and -1e4 for every
    other, so top-1 is the defended label and softmax is its one-hot; no gradient (a decision rule).
    `certify(images)` returns (labels, certified). `forwards` counts the masked images classified so far.

        >>> defended = PatchCleanser(tiny_classifier(), area=0.02)
        >>> labels, certified = defended.certify(images)
    """

    def __init__(
        self, classifier: Classifier | DefendedClassifier, area: float, masks_per_axis: int = MASKS_PER_AXIS,
        fill: float = FILL, batch_size: int = 64,
    ):
        super().__init__(classifier, Defense("patchcleanser", float(area)))
        if masks_per_axis < 1:
            raise ValueError(f"masks_per_axis must be >= 1, got {masks_per_axis}")
        self.area = float(area)
        self.masks_per_axis = int(masks_per_axis)
        self.fill = float(fill)
        self.batch_size = int(batch_size)
        self.forwards = 0
        self._masks: dict[tuple[tuple[int, int], torch.device], torch.Tensor] = {}

    def mask_set(self, hw: tuple[int, int]) -> MaskSet:
        return mask_set(hw, self.area, self.masks_per_axis)

    def masks_for(self, images: torch.Tensor) -> torch.Tensor:
        """(M,H,W) masks for these images' size, on their device (built once per size and device)."""
        key = (tuple(images.shape[-2:]), images.device)
        if key not in self._masks:
            self._masks[key] = self.mask_set(key[0]).masks(images.device)
        return self._masks[key]

    @torch.no_grad()
    def masked_labels(self, images: torch.Tensor, image: torch.Tensor, first: torch.Tensor,
                      second: torch.Tensor) -> torch.Tensor:
        """Top-1 of images[image[j]] with masks first[j] and second[j] applied (pass first == second for
        one mask), for every j, in batches of `batch_size` masked images. Returns (J,) labels."""
        masks = self.masks_for(images)
        out = torch.empty(image.shape[0], dtype=torch.long, device=images.device)
        for s in range(0, image.shape[0], self.batch_size):
            sl = slice(s, s + self.batch_size)
            hidden = (masks[first[sl]] | masks[second[sl]])[:, None]  # (B,1,H,W)
            masked = torch.where(hidden, torch.full_like(images[:1], self.fill), images[image[sl]])
            out[sl] = self.classifier(masked).argmax(dim=-1)
            self.forwards += masked.shape[0]
        return out

    def first_round(self, images: torch.Tensor) -> torch.Tensor:
        """(N,M) one-mask labels."""
        n, m = images.shape[0], len(self.masks_for(images))
        idx = torch.arange(m, device=images.device)
        image = torch.arange(n, device=images.device).repeat_interleave(m)
        return self.masked_labels(images, image, idx.repeat(n), idx.repeat(n)).view(n, m)

    def all_agree(self, images: torch.Tensor, image: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                  expected: torch.Tensor) -> torch.Tensor:
        """Whether every two-mask prediction (first[r, q], second[r, q]) of images[image[r]] equals
        expected[r], for every row r. (R,Q) mask indices; (R,) bool. Exact, with early exit: each row's
        pairs run in chunks of 4, 4, 8, 16, ... (all rows' chunks share forward passes) and a row stops
        at its first disagreeing chunk, so a rejected row costs a few forwards instead of Q."""
        q = first.shape[1]
        agree = torch.ones(first.shape[0], dtype=torch.bool, device=images.device)
        checked = 0  # pairs checked by every row still agreeing (all run in step)
        while checked < q:
            rows = agree.nonzero().flatten()
            if not len(rows):
                break
            cols = torch.arange(checked, min(q, checked + max(FIRST_CHUNK, checked)), device=images.device)
            got = self.masked_labels(images, image[rows].repeat_interleave(len(cols)), first[rows][:, cols].flatten(),
                                     second[rows][:, cols].flatten()).view(len(rows), len(cols))
            agree[rows] = (got == expected[rows, None]).all(dim=1)
            checked += len(cols)
        return agree

    def decide(self, images: torch.Tensor, one_mask: torch.Tensor) -> torch.Tensor:
        """Double-masking labels (N,) from the first-round labels (N,M): second-round masks only for the
        disagreeing masks of images whose first round disagrees, in mask order, stopping per image at
        the first disagreer that every two-mask prediction confirms (`all_agree`: a disagreer fails at
        its first dissenting two-mask label; those whose second mask voted otherwise run first)."""
        m = one_mask.shape[1]
        labels = majority(one_mask)
        disagreer = one_mask != labels[:, None]
        order = torch.arange(m, device=images.device)
        while True:  # `disagreer` holds each image's disagreers not yet tried
            rows = disagreer.any(dim=1).nonzero().flatten()
            if not len(rows):
                return labels
            j = torch.where(disagreer[rows], order, m).min(dim=1).values  # each row's next disagreer
            disagreer[rows, j] = False
            claim = one_mask[rows, j]
            # its partners: every other mask, those whose one-mask label differs from the claim first
            key = (one_mask[rows] == claim[:, None]).long() * m + order
            key[torch.arange(len(rows), device=images.device), j] = 2 * m
            partners = key.argsort(dim=1)[:, : m - 1]
            confirmed = self.all_agree(images, rows, j[:, None].expand_as(partners), partners, claim)
            won = rows[confirmed]
            labels[won] = claim[confirmed]
            disagreer[won] = False  # decided: no further disagreers

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Defended top-1 labels (N,) by double masking."""
        return self.decide(images, self.first_round(images))

    def certify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (N,), certified (N,) bool): certified iff all one-mask predictions agree and every
        two-mask prediction (each unordered pair of distinct masks) equals that label (`all_agree`:
        an image stops at its first dissenting pair)."""
        one_mask = self.first_round(images)
        labels = self.decide(images, one_mask)
        certified = (one_mask == one_mask[:, :1]).all(dim=1)
        rows = certified.nonzero().flatten()
        m = one_mask.shape[1]
        if len(rows) and m > 1:
            a, b = torch.triu_indices(m, m, offset=1, device=images.device)
            certified[rows] = self.all_agree(images, rows, a.expand(len(rows), -1), b.expand(len(rows), -1), labels[rows])
        return labels, certified

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        labels = self.predict(images)
        out = torch.full((images.shape[0], self.num_classes), OFF_LOGIT, device=images.device, dtype=images.dtype)
        out[torch.arange(images.shape[0], device=images.device), labels] = 0.0
        return out
