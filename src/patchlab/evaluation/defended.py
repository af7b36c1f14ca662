"""Defended re-count: every patch's trials run again through a defended classifier
(`patchlab.defenses`: JPEG, median filter, bit depth, PatchCleanser), and what the defence costs.

- Trials: the very trials of the undefended count (same images, placements and physical draws:
  common random numbers), for the headline protocols only (`defended_protocols`: the primary
  protocol and physical when measured); static and dynamic would multiply PatchCleanser's
  hundreds of forwards per image by every size x position.
- Denominator: the images both the bare and the defended model classify as the source when clean
  (source None: that the defended model does not call the target); chosen on selection and
  counted on confirmation like the undefended rows (`summary`).
- Cost, on every image of the split given: clean accuracy of the defended model (top-1 = source;
  source None: agreement with the bare model's top-1) and, for PatchCleanser (Xiang et al. 2022),
  the share it certifies against any patch up to its area, with the seconds spent.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..defenses import DefendedClassifier, PatchCleanser
from ..patches.candidate import Candidate
from ..protocols import PHYSICAL
from ..stats import wilson_interval
from .rows import Clean, count_patches
from .trials import ImageTrials


def defended_protocols(protocols: Sequence[str], primary: str) -> tuple[str, ...]:
    """The protocols a defended model is measured under: the primary one and physical (when measured)."""
    return tuple(p for p in protocols if p in (primary, PHYSICAL))


@dataclass(frozen=True)
class CleanPass:
    """A defended model on clean images: top-1 (N,), p(target) (N,), and PatchCleanser's certificate
    (N,) bool (None for the other defences)."""

    labels: torch.Tensor
    p_target: torch.Tensor
    certified: torch.Tensor | None


@torch.no_grad()
def clean_pass(defended: DefendedClassifier, images: torch.Tensor, target: int, batch_size: int) -> CleanPass:
    """Top-1 and p(target) of the defended model on `images`; PatchCleanser also certifies each image
    (its certificate includes its double-masking label, so this costs no extra prediction)."""
    if isinstance(defended, PatchCleanser):
        labels, certified = [], []
        for i in range(0, len(images), batch_size):
            lab, cert = defended.certify(images[i : i + batch_size].to(defended.device))
            labels.append(lab)
            certified.append(cert)
        lab = torch.cat(labels)
        return CleanPass(lab, (lab == target).float(), torch.cat(certified))
    logits = defended.logits(images, batch_size).float()
    return CleanPass(logits.argmax(-1), logits.softmax(-1)[:, target], None)


@dataclass(frozen=True)
class DefenceCost:
    """What one defence costs on the clean images of the splits counted: images, those it classifies
    correctly, those PatchCleanser certifies (and certifies correctly; None for other defences), the
    images counted for its rates, and seconds (clean pass and every patch's trials)."""

    defense: str
    n_images: int
    correct: int
    certified: int | None
    certified_correct: int | None
    denominator: int
    seconds: float

    def __add__(self, other: DefenceCost) -> DefenceCost:
        def both(a: int | None, b: int | None) -> int | None:
            return None if a is None or b is None else a + b

        return DefenceCost(self.defense, self.n_images + other.n_images, self.correct + other.correct,
                           both(self.certified, other.certified), both(self.certified_correct, other.certified_correct),
                           self.denominator + other.denominator, self.seconds + other.seconds)

    def as_dict(self, source_given: bool) -> dict[str, Any]:
        """{defense, clean_accuracy, certified, certified_and_correct ({rate, ci, n, successes} or None),
        accuracy_means, denominator, seconds}."""
        def share(k: int | None) -> dict[str, Any] | None:
            if k is None or not self.n_images:
                return None
            lo, hi = wilson_interval(k, self.n_images)
            return {"rate": k / self.n_images, "ci": [lo, hi], "n": self.n_images, "successes": k}

        means = ("top-1 is the source class" if source_given
                 else "top-1 agrees with the undefended model's (no source class to be right about)")
        return {"defense": self.defense, "clean_accuracy": share(self.correct), "accuracy_means": means,
                "certified": share(self.certified), "certified_and_correct": share(self.certified_correct),
                "denominator": self.denominator, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class DefendedSplit:
    """One defence on one split: its results rows, its cost, and which of the bare model's counted
    images it counts (`counted`, a mask over them) with their clean pass (None when it counts none)."""

    rows: list[dict]
    cost: DefenceCost
    counted: torch.Tensor
    clean: Clean | None


def measure_defended(defended: DefendedClassifier, trials: ImageTrials, images: torch.Tensor, keep: torch.Tensor,
                     bare_top1: torch.Tensor, patches: Sequence[Candidate], source: int | None, target: int,
                     protocols: Sequence[str], progress: Any = None) -> DefendedSplit:
    """Re-count `patches` on `trials` (laid out on images[keep], the images the bare model counts)
    through `defended`, for `protocols`. images: every image of the split (N,3,H,W); bare_top1: the
    bare model's clean top-1 of each (N,)."""
    t0 = time.perf_counter()
    clean = clean_pass(defended, images, target, trials.settings.batch_size)
    labels = clean.labels.to(bare_top1.device)
    correct = labels == source if source is not None else labels == bare_top1
    certified = None if clean.certified is None else clean.certified.to(labels.device)
    still = (labels == source if source is not None else labels != target)[keep]  # over the bare model's kept images
    n = int(still.sum())
    rows: list[dict] = []
    counted = None
    if n:
        counted = Clean(source, target, labels[keep][still], float(clean.p_target.to(labels.device)[keep][still].mean()), n)
        rows = count_patches(trials.through(defended, protocols), patches, counted, progress, still)
    for r in rows:
        r["defense"] = str(defended.defense)
    cost = DefenceCost(str(defended.defense), len(images), int(correct.sum()),
                       None if certified is None else int(certified.sum()),
                       None if certified is None else int((certified & correct).sum()), n, time.perf_counter() - t0)
    return DefendedSplit(rows, cost, still, counted)
