"""A model behind each defence on labelled photos: clean top-1 beside the undefended top-1 and, for
PatchCleanser (Xiang et al. 2022), the share of photos it certifies, with what each costs.

The paper's anchors (ImageNet, one patch of 2 % of the pixels, k = 6 masks per axis): 81.6 % clean /
53.0 % certified top-1 for ResNet-50, 83.9 % / 62.1 % for ViT-B.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import ImageRecord, discover, iter_batches
from ..errors import UserError
from ..models import Classifier
from ..stats import wilson_interval
from .factory import defend
from .patchcleanser import PatchCleanser
from .spec import Defense
from .wrapped import DefendedClassifier


def spread(records: Sequence[ImageRecord], n: int | None) -> list[ImageRecord]:
    """`n` records evenly spaced over the list (every class folder of an ImageNet tree gets its
    share, not the first few), or all of them for None."""
    if n is None or n >= len(records):
        return list(records)
    if n < 1:
        raise UserError("--max-images must be at least 1")
    return [records[i * len(records) // n] for i in range(n)]


def _share(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else None, "ci": [lo, hi], "n": n, "successes": k}


class _Tally:
    """Running counts of one model (bare or defended) over the batches."""

    def __init__(self, name: str, classifier: Classifier | DefendedClassifier):
        self.name, self.classifier = name, classifier
        self.correct, self.certified, self.certified_correct, self.seconds = 0, 0, 0, 0.0

    @torch.no_grad()
    def add(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        t0 = time.perf_counter()
        if isinstance(self.classifier, PatchCleanser):
            pred, cert = self.classifier.certify(images)
            pred, cert = pred.cpu(), cert.cpu()
            self.certified += int(cert.sum())
            self.certified_correct += int((cert & (pred == labels)).sum())
        else:
            pred = self.classifier.logits(images, batch_size).argmax(-1).cpu()
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        self.seconds += time.perf_counter() - t0
        self.correct += int((pred == labels).sum())

    def row(self, n: int) -> dict[str, Any]:
        out = {"defense": self.name, "top1": _share(self.correct, n), "seconds": round(self.seconds, 3),
               "seconds_per_image": self.seconds / n if n else None}
        if isinstance(self.classifier, PatchCleanser):
            ms = self.classifier.mask_set((self.classifier.input_size,) * 2)
            out |= {"certified": _share(self.certified, n), "certified_and_correct": _share(self.certified_correct, n),
                    "masks": len(ms), "patch_px": ms.rows.patch, "mask_px": ms.rows.size,
                    "forwards_per_image": self.classifier.forwards / n if n else None}
        return out


def check_defenses(
    data: str | Path, defenses: Sequence[Defense], classifier: Classifier, *, max_images: int | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Top-1 of `classifier` on the labelled photos in `data` (an ImageNet tree, class-name folders or a
    labels.csv; `max_images` evenly spread over them), bare and behind each defence; PatchCleanser also
    certifies each photo (one-mask and two-mask predictions) and counts its forwards. Returns {data,
    model, input_size, n_photos, skipped, undefended: row, defenses: [row]}; a row is {defense, top1
    {rate, ci, n, successes}, seconds, seconds_per_image} plus, for PatchCleanser, certified,
    certified_and_correct, masks, patch_px, mask_px and forwards_per_image."""
    clf = classifier
    records = spread([r for r in discover(data, clf.classes) if r.label is not None], max_images)
    if not records:
        raise UserError(f"no labelled photos in {data} (class folders named by WordNet id or class name)")
    tallies = [_Tally("none", clf)] + [_Tally(str(d), defend(clf, d, batch_size=max(batch_size, 64))) for d in defenses]
    n, skipped = 0, []
    for batch in iter_batches(records, clf.input_size, clf.crop_pct, batch_size,
                              interpolation=clf.preprocessing.interpolation):
        skipped += batch.skipped
        if not len(batch):
            continue
        images = batch.images.to(clf.device)
        for tally in tallies:
            tally.add(images, batch.labels, batch_size)
        n += len(batch)
    if not n:
        raise UserError(f"none of the {len(records)} labelled files in {data} could be decoded as an image")
    return {"data": str(data), "model": clf.spec, "input_size": clf.input_size, "n_photos": n, "skipped": skipped,
            "undefended": tallies[0].row(n), "defenses": [t.row(n) for t in tallies[1:]]}
