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

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .apply import CORNERS
from .candidate import Candidate
from .crops import CropSet, cut_crops, direction_maps, distinct_top, propose_crops, score_crops


@dataclass(frozen=True)
class DonorCropSettings:
    """Knobs of the donor-crop search: `top_k` candidates kept; crops `patch_px` square at
    `scales` of the donor image, `guided_per_image` along the direction and `random_per_image`
    at random per donor image; coarse round on `coarse_images` train images at `coarse_areas`,
    the best `fine_keep` re-scored on every train image at `fine_areas` (x 4 corners each);
    `collage`: also a 2x2 collage of the four best."""

    top_k: int = 6
    patch_px: int = 96
    scales: tuple[float, ...] = (0.35, 0.5, 0.7)
    guided_per_image: int = 3
    random_per_image: int = 1
    coarse_images: int = 4
    coarse_areas: tuple[float, ...] = (0.2,)
    fine_areas: tuple[float, ...] = (0.15, 0.25)
    fine_keep: int = 24
    collage: bool = True
    batch_size: int = 64


def natural_patches(
    classifier,
    source: int,
    target: int,
    train_images: torch.Tensor,
    donor_images: torch.Tensor,
    donor_labels: torch.Tensor,
    direction: torch.Tensor,
    settings: DonorCropSettings = DonorCropSettings(),
    *,
    donor_names: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[list[Candidate], dict]:
    """Search donor crops and return the top-k distinct natural candidates plus search stats.

    donor_images (D,3,S,S) in [0,1] with class indices donor_labels (D,); direction (C,)
    at the classifier's feature layer. Two rounds (see DonorCropSettings): every crop is
    scored on a few training images at the coarse areas x 4 corners; the best are
    re-scored on all training images at the fine areas x 4 corners.
    """
    cfg = settings
    t0 = time.perf_counter()
    maps = direction_maps(classifier, donor_images, direction)
    crops = propose_crops(maps, donor_images.shape[-1], cfg.scales, cfg.guided_per_image, cfg.random_per_image,
                          generator)
    pixels = cut_crops(donor_images.to(classifier.device), crops, cfg.patch_px)
    coarse, _ = score_crops(classifier, pixels, train_images[: cfg.coarse_images], source, target, cfg.coarse_areas,
                            CORNERS, cfg.batch_size)
    t_coarse = time.perf_counter() - t0
    short = coarse.argsort(descending=True)[: cfg.fine_keep]
    fine, wins = score_crops(classifier, pixels[short], train_images, source, target, cfg.fine_areas, CORNERS,
                             cfg.batch_size)
    sub = CropSet(crops.image_index[short.cpu()], crops.boxes[short.cpu()], crops.guided[short.cpu()])
    keep = distinct_top(fine.cpu(), sub, cfg.top_k)
    labels = donor_labels.cpu()
    alone = classifier.reads_as(pixels[short[keep]])
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
    if cfg.collage and len(cands) >= 4:
        tiles = torch.stack([c.patch for c in cands[:4]])
        half = F.interpolate(tiles, size=(cfg.patch_px // 2, cfg.patch_px // 2), mode="bilinear", antialias=True,
                             align_corners=False)
        grid = torch.cat([torch.cat([half[0], half[1]], 2), torch.cat([half[2], half[3]], 2)], 1)
        g, w = score_crops(classifier, grid[None], train_images, source, target, cfg.fine_areas, CORNERS, cfg.batch_size)
        cands.append(Candidate(
            grid, "natural", "natural-collage",
            provenance={"method": "2x2 collage of the four best crops", "parts": [c.name for c in cands[:4]],
                        "donor_class": cands[0].provenance["donor_class"], "donor_name": cands[0].provenance["donor_name"],
                        "score_gain_logodds": round(float(g[0]), 4), "train_success": round(float(w[0]), 4)},
            score=float(g[0]), reads_as=classifier.reads_as(grid[None])[0],
        ))
    guided = crops.guided.cpu()
    stats = {
        "crops_scored": int(len(pixels)),
        "crops_per_s_coarse": round(len(pixels) / max(t_coarse, 1e-9), 2),
        "coarse_rows": int(len(pixels) * min(cfg.coarse_images, len(train_images)) * len(cfg.coarse_areas) * 4),
        "mean_coarse_gain_guided": round(float(coarse[guided.to(coarse.device)].mean()), 4) if guided.any() else None,
        "mean_coarse_gain_random": round(float(coarse[~guided.to(coarse.device)].mean()), 4) if (~guided).any() else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return cands, stats
