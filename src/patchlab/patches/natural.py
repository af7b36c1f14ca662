"""Natural patches: copy/paste search over crops of donor images.

The automated form of the Activation Atlas article's hand-picked patches
(Carter et al. 2019: a train photo on a snorkel -> "scuba diver") and of the
copy/paste search of Casper et al. 2022 ("SNAFUE"). Crops are proposed where a
donor image's spatial features point along the pair's separating direction
(target minus source at the feature layer), plus random crops as a baseline,
then scored exactly: each crop is pasted on a few source training images at
several sizes and corners, and ranked by the mean gain in
log p(target) - log p(source). Every step is batched on the device.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, roi_align

from .apply import CORNERS, apply_at
from .candidate import Candidate, reads_as
from .feature import pair_direction
from .region_forward import paste_forward

if TYPE_CHECKING:
    from .registry import GeneratorJob

log = logging.getLogger("patchlab")


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


@torch.no_grad()
def score_crops_by_setting(
    classifier, crops: torch.Tensor, images: torch.Tensor, source: int, target: int,
    areas: Sequence[float], positions: Sequence[str] = CORNERS, batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per crop and setting (area, position): the mean gain in log p(target) - log p(source)
    over the images, and the targeted success rate: two (K, len(areas), len(positions)) tensors.

    Each batch holds one setting, so on EfficientNet-Lite only the cells the patch
    changes are recomputed (`region_forward`); other models paste and run in full."""
    dev = classifier.device
    images = images.to(dev)
    m = len(images)
    fast = paste_forward(classifier, images, batch_size=batch_size)
    clean = (fast.clean if fast is not None else classifier.logits(images, batch_size)).log_softmax(-1)
    base = (clean[:, target] - clean[:, source]).mean()
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
                gains[i : i + c, ai, pi] = (logp[:, target] - logp[:, source]).view(c, m).mean(1) - base
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


def natural_patches(
    classifier,
    source: int,
    target: int,
    train_images: torch.Tensor,
    donor_images: torch.Tensor,
    donor_labels: torch.Tensor,
    direction: torch.Tensor,
    donor_names: Sequence[str] | None = None,
    top_k: int = 6,
    patch_px: int = 96,
    scales: Sequence[float] = (0.35, 0.5, 0.7),
    guided_per_image: int = 3,
    random_per_image: int = 1,
    coarse_images: int = 4,
    coarse_areas: Sequence[float] = (0.2,),
    fine_areas: Sequence[float] = (0.15, 0.25),
    fine_keep: int = 24,
    collage: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> tuple[list[Candidate], dict]:
    """Search donor crops and return the top-k distinct natural candidates plus search stats.

    donor_images (D,3,S,S) in [0,1] with class indices donor_labels (D,); direction (C,)
    at the classifier's feature layer. Two rounds: every crop is scored on
    `coarse_images` training images at `coarse_areas` x 4 corners; the best
    `fine_keep` are re-scored on all training images at `fine_areas` x 4 corners.
    """
    import time

    t0 = time.perf_counter()
    maps = direction_maps(classifier, donor_images, direction)
    crops = propose_crops(maps, donor_images.shape[-1], scales, guided_per_image, random_per_image, generator)
    pixels = cut_crops(donor_images.to(classifier.device), crops, patch_px)
    coarse, _ = score_crops(classifier, pixels, train_images[:coarse_images], source, target, coarse_areas, CORNERS, batch_size)
    t_coarse = time.perf_counter() - t0
    short = coarse.argsort(descending=True)[:fine_keep]
    fine, wins = score_crops(classifier, pixels[short], train_images, source, target, fine_areas, CORNERS, batch_size)
    sub = CropSet(crops.image_index[short.cpu()], crops.boxes[short.cpu()], crops.guided[short.cpu()])
    keep = distinct_top(fine.cpu(), sub, top_k)
    labels = donor_labels.cpu()
    alone = reads_as(classifier, pixels[short[keep]])
    cands = []
    for rank, (j, ra) in enumerate(zip(keep, alone)):
        img = int(sub.image_index[j])
        donor = int(labels[img])
        cands.append(Candidate(
            pixels[short[j]].cpu(), "natural", f"natural-{rank + 1}",
            provenance={
                "method": "donor crop, direction-guided" if bool(sub.guided[j]) else "donor crop, random",
                "donor_class": donor, "donor_name": classifier.classes.label(donor),
                "donor_image": (donor_names[img] if donor_names else img),
                "box_xyxy": [round(float(v), 1) for v in sub.boxes[j]],
                "scale": round(float(sub.boxes[j, 2] - sub.boxes[j, 0]) / donor_images.shape[-1], 3),
                "score_gain_logodds": round(float(fine[j]), 4), "train_success": round(float(wins[j]), 4),
            },
            score=float(fine[j]), reads_as=ra,
        ))
    if collage and len(cands) >= 4:
        tiles = torch.stack([c.patch for c in cands[:4]])
        half = F.interpolate(tiles, size=(patch_px // 2, patch_px // 2), mode="bilinear", antialias=True, align_corners=False)
        grid = torch.cat([torch.cat([half[0], half[1]], 2), torch.cat([half[2], half[3]], 2)], 1)
        g, w = score_crops(classifier, grid[None], train_images, source, target, fine_areas, CORNERS, batch_size)
        cands.append(Candidate(
            grid, "natural", "natural-collage",
            provenance={"method": "2x2 collage of the four best crops", "parts": [c.name for c in cands[:4]],
                        "donor_class": cands[0].provenance["donor_class"], "donor_name": cands[0].provenance["donor_name"],
                        "score_gain_logodds": round(float(g[0]), 4), "train_success": round(float(w[0]), 4)},
            score=float(g[0]), reads_as=reads_as(classifier, grid[None])[0],
        ))
    guided = crops.guided.cpu()
    stats = {
        "crops_scored": int(len(pixels)),
        "crops_per_s_coarse": round(len(pixels) / max(t_coarse, 1e-9), 2),
        "coarse_rows": int(len(pixels) * min(coarse_images, len(train_images)) * len(coarse_areas) * 4),
        "mean_coarse_gain_guided": round(float(coarse[guided.to(coarse.device)].mean()), 4) if guided.any() else None,
        "mean_coarse_gain_random": round(float(coarse[~guided.to(coarse.device)].mean()), 4) if (~guided).any() else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return cands, stats


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


def donor_images(classifier, donors: Sequence[int], per_class: int, seed: int, donor_data: str | Path | None):
    """(images, labels, names, source) of the donor classes: real photos from donor_data, else
    exemplars; `source` says which the report shows (exemplars also when donor_data has no
    photo of a donor class)."""
    if donor_data is not None:
        from ..data import discover, load_images

        records = [r for r in discover(donor_data, classifier.classes) if r.label in set(donors)]
        picked = []
        for d in donors:
            picked += [r for r in records if r.label == d][: per_class * 4]
        if picked:
            got = load_images(picked, classifier.input_size, classifier.crop_pct)
            return got.images, got.labels, got.paths, "donor photos"
        log.warning("no images of the donor classes in %s: using synthesized donor exemplars", donor_data)
        source = f"donor exemplars (no photo of a donor class in --donor-data {donor_data})"
    else:
        source = "donor exemplars (no photo library given)"
    from ..exemplars import exemplars

    imgs, labels, names = [], [], []
    for d in donors:
        ex = exemplars(classifier, d, per_class, seed=seed + d)
        imgs.append(ex.images.cpu())
        labels += [d] * len(ex.images)
        names += [f"exemplar {classifier.classes.label(d)} #{i}" for i in range(len(ex.images))]
    return torch.cat(imgs), torch.tensor(labels), names, source


def propose(job: "GeneratorJob") -> list[Candidate]:
    """Registry entry: natural patches. With a photo library, the library search
    (`patchlab.library`); else crops of donor images (photos from donor_data, or
    exemplars of the atlas's top donors), ranked by measured gain."""
    clf, pair, b = job.classifier, job.pair, job.budget
    if clf.head is None:
        job.notes["skipped"] = (f"{clf.spec} has no linear head, so there is no pair direction to guide "
                                "the crop search: no natural candidates")
        return []
    if job.library is not None:
        from ..library import index_library, search_library

        index = index_library(clf, job.library, progress=job.progress)
        cands, stats = search_library(clf, index, pair.train, pair.source, pair.target, top_k=b.natural_top,
                                      sizes=b.sizes, generator=job.generator, progress=job.progress,
                                      **b.library_search)
        photos = index.load_photos([c.provenance["library_row"] for c in cands]) if cands else []
        for cand, photo in zip(cands, photos):
            cand.source_view = with_box(photo, cand.provenance["box_xyxy"])
        job.notes.update(source=f"photo library {job.library} ({len(index.paths)} photos)", search=stats)
        return cands
    ids = job.donors[: b.n_donors_used]
    d_imgs, d_labels, d_names, source = donor_images(clf, ids, b.donor_images, job.seed, job.donor_data)
    cands, stats = natural_patches(clf, pair.source, pair.target, pair.train, d_imgs, d_labels,
                                   pair_direction(clf, pair.source, pair.target), donor_names=[str(n) for n in d_names],
                                   top_k=b.natural_top, generator=job.generator, **b.natural)
    job.notes.update(source=source, search=stats)
    return cands
