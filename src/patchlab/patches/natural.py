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
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .apply import CORNERS
from .candidate import Candidate, reads_as
from .crops import CropSet, cut_crops, direction_maps, distinct_top, propose_crops, score_crops, with_box
from .direction import pair_direction

if TYPE_CHECKING:
    from .registry import GeneratorJob

log = logging.getLogger("patchlab")


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
            got = load_images(picked, classifier.input_size, classifier.crop_pct, interpolation=classifier.preprocessing.interpolation)
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
