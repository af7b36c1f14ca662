"""Crops of images as patch candidates: propose boxes along a direction map, cut them
in one roi_align call, score them pasted on source images, keep the distinct best.

The building blocks of copy/paste search (Casper et al. 2022, "SNAFUE"; Carter et
al. 2019): the natural generator and the photo-library search both use them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou, roi_align

from .apply import CORNERS, apply_at
from .region_forward import paste_forward

@dataclass
class CropSet:
    """Proposed crops: boxes (K,4) x1,y1,x2,y2 in pixels of image `image_index` (K,)."""

    image_index: torch.Tensor
    boxes: torch.Tensor
    guided: torch.Tensor  # (K,) bool: chosen by the separating direction (else random)


@torch.no_grad()
def direction_maps(classifier, images: torch.Tensor, direction: torch.Tensor, layer: str | None = None,
                   batch_size: int = 32) -> torch.Tensor:
    """Projection of each spatial activation on `direction`: (N,h,w)."""
    layer = layer or classifier.feature_layer
    d = direction.to(classifier.device)
    maps = []
    for i in range(0, len(images), batch_size):
        _, acts = classifier.run(images[i : i + batch_size].to(classifier.device), [layer])
        maps.append(torch.einsum("nchw,c->nhw", acts[layer].float(), d))
    return torch.cat(maps)


def propose_crops(
    maps: torch.Tensor, image_size: int, scales: Sequence[float], per_image: int, n_random: int,
    generator: torch.Generator | None = None,
) -> CropSet:
    """Direction-guided crops (centered on the `per_image` highest cells of each map,
    at each scale) plus `n_random` random crops per image and scale."""
    n, h, w = maps.shape
    dev = maps.device
    k = min(per_image, h * w)
    top = maps.flatten(1).topk(k, dim=1).indices  # (N,k)
    cy = (top // w).float().add(0.5) / h
    cx = (top % w).float().add(0.5) / w
    rnd = torch.rand(n, n_random, 2, generator=generator, device=generator.device if generator else dev).to(dev)
    cx = torch.cat([cx, rnd[..., 0]], dim=1)
    cy = torch.cat([cy, rnd[..., 1]], dim=1)
    guided = torch.cat([torch.ones(n, k, dtype=torch.bool, device=dev), torch.zeros(n, n_random, dtype=torch.bool, device=dev)], 1)
    idx, boxes, flags = [], [], []
    for s in scales:  # a handful of scales: one tensor op each
        half = s * image_size / 2
        x = (cx * image_size).clamp(half, image_size - half)
        y = (cy * image_size).clamp(half, image_size - half)
        boxes.append(torch.stack([x - half, y - half, x + half, y + half], dim=-1).reshape(-1, 4))
        idx.append(torch.arange(n, device=dev).repeat_interleave(cx.shape[1]))
        flags.append(guided.reshape(-1))
    return CropSet(torch.cat(idx), torch.cat(boxes), torch.cat(flags))


def cut_crops(images: torch.Tensor, crops: CropSet, px: int) -> torch.Tensor:
    """All crops resampled to px x px in one roi_align call: (K,3,px,px)."""
    rois = torch.cat([crops.image_index[:, None].float(), crops.boxes.float()], dim=1).to(images.device)
    return roi_align(images, rois, output_size=(px, px), spatial_scale=1.0, sampling_ratio=2, aligned=True).clamp(0, 1)


OBJECTIVES = ("log_ratio", "margin")


def target_score(logp: torch.Tensor, source: int, target: int, objective: str = "log_ratio") -> torch.Tensor:
    """(N,) how far log-probabilities (N, classes) lean to the target: "log_ratio" is log p(target) -
    log p(source); "margin" is log p(target) - the largest other log p (Carlini & Wagner 2017), which
    a patch raises only by making the target win, not by drowning the source in a third class."""
    if objective == "log_ratio":
        return logp[:, target] - logp[:, source]
    others = logp.clone()
    others[:, target] = float("-inf")
    return logp[:, target] - others.max(-1).values


@torch.no_grad()
def score_crops_by_setting(
    classifier, crops: torch.Tensor, images: torch.Tensor, source: int, target: int,
    areas: Sequence[float], positions: Sequence[str] = CORNERS, batch_size: int = 64, objective: str = "log_ratio",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per crop and setting (area, position): the mean gain in `target_score` (default log p(target) -
    log p(source)) over the images, and the targeted success rate: two (K, len(areas), len(positions)) tensors.

    Each batch holds one setting, so on EfficientNet-Lite only the cells the patch
    changes are recomputed (`region_forward`); other models paste and run in full."""
    dev = classifier.device
    images = images.to(dev)
    m = len(images)
    fast = paste_forward(classifier, images, batch_size=batch_size)
    clean = (fast.clean if fast is not None else classifier.logits(images, batch_size)).log_softmax(-1)
    base = target_score(clean, source, target, objective).mean()
    per_chunk = max(1, batch_size // m)
    gains = torch.empty(len(crops), len(areas), len(positions), device=dev)
    wins = torch.empty_like(gains)
    for ai, area in enumerate(areas):
        for pi, pos in enumerate(positions):
            for i in range(0, len(crops), per_chunk):
                chunk = crops[i : i + per_chunk].to(dev)
                c = len(chunk)
                rows, patches = torch.arange(m, device=dev).repeat(c), chunk.repeat_interleave(m, 0)
                if fast is not None:
                    logits = fast.logits(rows, patches, float(area), pos)
                else:
                    logits = classifier(apply_at(images[rows], patches, float(area), pos))
                logp = logits.log_softmax(-1)
                gains[i : i + c, ai, pi] = target_score(logp, source, target, objective).view(c, m).mean(1) - base
                wins[i : i + c, ai, pi] = (logp.argmax(-1) == target).float().view(c, m).mean(1)
    return gains, wins


def score_crops(
    classifier, crops: torch.Tensor, images: torch.Tensor, source: int, target: int,
    areas: Sequence[float], positions: Sequence[str] = CORNERS, batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean gain in log p(target) - log p(source) over images x areas x positions
    for each crop, and its targeted success rate: two (K,) tensors."""
    gain, win = score_crops_by_setting(classifier, crops, images, source, target, areas, positions, batch_size)
    return gain.flatten(1).mean(1), win.flatten(1).mean(1)


def distinct_top(scores: torch.Tensor, crops: CropSet, k: int, iou: float = 0.3) -> list[int]:
    """Indices of the k best crops, skipping crops overlapping a better one of the same image."""
    order = scores.argsort(descending=True).tolist()
    kept: list[int] = []
    for i in order:
        same = [j for j in kept if crops.image_index[j] == crops.image_index[i]]
        if same and box_iou(crops.boxes[i : i + 1], crops.boxes[same]).max() > iou:
            continue
        kept.append(i)
        if len(kept) == k:
            break
    return kept


def with_box(photo: torch.Tensor, box_xyxy: Sequence[float], width: int = 3) -> torch.Tensor:
    """A copy of a (3,H,W) photo with the box x1,y1,x2,y2 (pixels) outlined in red."""
    out = photo.detach().cpu().clone()
    h, w = out.shape[-2:]
    x1, y1, x2, y2 = (int(round(v)) for v in box_xyxy)
    x1, x2 = max(0, min(x1, w - 1)), max(1, min(x2, w))
    y1, y2 = max(0, min(y1, h - 1)), max(1, min(y2, h))
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    for ys, xs in ((slice(y1, y1 + width), slice(x1, x2)), (slice(y2 - width, y2), slice(x1, x2)),
                   (slice(y1, y2), slice(x1, x1 + width)), (slice(y1, y2), slice(x2 - width, x2))):
        out[:, ys, xs] = red
    return out
