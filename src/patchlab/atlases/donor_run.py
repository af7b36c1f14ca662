"""Donor ranking within an atlas run: signal (ii) over all classes picks a shortlist,
signal (i) scores the shortlist's images on the pair view (see `donors`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .collect import Activations
from .config import AtlasRun
from .donors import activation_scores, head_alignment, layer_evidence, rank_donors, shortlist
from .pair import PairView
from .pools import ImagePool, collect_pool, data_records, rendered_pool


@dataclass(frozen=True)
class ClassPair:
    """The pair the donors are ranked for: its classes, its pair view and its images."""

    source: int
    target: int
    view: PairView
    pool: ImagePool


@dataclass
class DonorRun:
    """The ranked donor table (pandas DataFrame, best first) and the donor images' activations and pool (None without images)."""

    table: Any
    acts: Activations | None = None
    pool: ImagePool | None = None


def rank_pair_donors(run: AtlasRun, pair: ClassPair) -> DonorRun:
    """Rank donor classes: signal (ii) over all classes, signal (i) on a shortlist."""
    with run.log.timed("donor_signal_ii"):
        alignment, cands = _shortlist(run, pair)
    with run.log.timed("donor_images"):
        pool, cands = _donor_pool(run, pair, cands)
    if not cands:
        raise UserError("no candidate donor classes: the head is not linear and the data has no other classes")
    evidence, acts = None, None
    if pool is not None:
        with run.log.timed("donor_signal_i"):
            acts = collect_pool(run, pool, "activations-donors", (pair.source, pair.target))
            evidence = activation_scores(acts, pair.view)
    table = rank_donors(cands, alignment, evidence, run.classifier.classes, pair.source, pair.target)
    return DonorRun(table, acts, pool)


def layer_donors(run: AtlasRun, acts: Activations, source: int, target: int) -> DonorRun:
    """Donors of (source, target) from a whole layer's activations (collected with that pair's
    attribution): every labelled class of the data but the pair, ranked by signal (ii) and by
    signal (i) without a pair view (`donors.layer_evidence`); no source or target photo needed."""
    clf = run.classifier
    cands = sorted({int(c) for c in acts.image_labels if c >= 0} - {source, target})
    if not cands:
        raise UserError("the data has no labelled images of classes other than the pair: no donor table")
    alignment = head_alignment(clf.head.weight, source, target) if isinstance(clf.head, nn.Linear) else None
    with run.log.timed("donor_signal_i"):
        evidence = layer_evidence(acts)
    run.log.notes.append(f"donors of {clf.classes.label(source)} -> {clf.classes.label(target)}: "
                         f"{len(cands)} classes of the data, scored on their own activations (no pair view)")
    return DonorRun(rank_donors(cands, alignment, evidence, clf.classes, source, target))


def _shortlist(run: AtlasRun, pair: ClassPair) -> tuple[np.ndarray | None, list[int]]:
    """(signal (ii) per class or None, shortlisted classes): by head alignment, else by mean p on target images."""
    clf, k, exclude = run.classifier, run.config.shortlist_size, (pair.source, pair.target)
    if isinstance(clf.head, nn.Linear):
        alignment = head_alignment(clf.head.weight, pair.source, pair.target)
        return alignment, shortlist(alignment, k, exclude)
    run.log.notes.append("head is not linear: signal (ii) unavailable; shortlist = classes most predicted on target images")
    probs = torch.zeros(clf.num_classes)
    for images, _names, labels in pair.pool.batches(run.config.batch_size):
        keep = torch.tensor([lbl == pair.target for lbl in labels], dtype=torch.bool)
        if keep.any():
            probs += clf.logits(images[keep]).softmax(1).sum(0).cpu()
    return None, shortlist(probs.numpy(), k, exclude)


def _donor_pool(run: AtlasRun, pair: ClassPair, cands: list[int]) -> tuple[ImagePool | None, list[int]]:
    """The shortlisted classes' images: from the data folder (an empty shortlist becomes the folder's
    other classes), else rendered; and the shortlist."""
    clf, cfg = run.classifier, run.config
    if run.folder is None:
        if not cands:
            return None, cands
        pool = rendered_pool(clf, cands, cfg.donor_exemplars, cfg.donor_steps, cfg.generator("donor_render"))
        run.log.notes.append(f"donor images: {cfg.donor_exemplars} per shortlisted class, rendered in one batch (<= {cfg.donor_steps} steps)")
        return pool, cands
    records = data_records(clf, run.folder, cands or None, max(4, cfg.max_images // 10), cfg.generator("donor_images"))
    records = [r for r in records if r.label is not None and r.label not in (pair.source, pair.target)]
    if not cands:
        cands = sorted({int(r.label) for r in records})
    missing = sorted(set(cands) - {int(r.label) for r in records})
    if missing:
        run.log.notes.append(f"{len(missing)} shortlisted classes have no images in the data; signal (i) is missing for them")
    return (ImagePool(clf, records=records) if records else None), cands
