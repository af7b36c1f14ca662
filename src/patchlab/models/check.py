"""Checking the offline zoo on labelled photos: top-1 accuracy of each model at its own input size."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..classes import imagenet_classes
from ..data import ImageRecord, discover, iter_batches
from ..errors import UserError
from .classifier import Classifier
from .lite import ZOO, ZOO_INSTALL, zoo_installed
from .registry import load_classifier


@torch.no_grad()
def _top1_hits(clf: Classifier, records: Sequence[ImageRecord], batch_size: int) -> tuple[int, int, list[str]]:
    """(correct, counted, skipped files) of top-1 over labelled records, in batches at the model's own size."""
    correct, counted, skipped = 0, 0, []
    for batch in iter_batches(records, clf.input_size, clf.crop_pct, batch_size):
        skipped += batch.skipped
        if len(batch):
            pred = clf.logits(batch.images, batch_size).argmax(-1).cpu()
            correct += int((pred == batch.labels).sum())
            counted += len(batch)
    return correct, counted, skipped


def check_models(
    data: str | Path, *, models: Sequence[str] | None = None, device: str = "auto", batch_size: int = 50,
) -> dict:
    """Top-1 accuracy of each model on a labelled photo folder (an ImageNet tree: wnid or
    class-name folders, or a labels.csv). A zoo model whose wheel is missing is listed with
    installed False and the pip command. models: default ZOO. Returns {data, n_files (labelled), n_photos (those
    that decode), models: [{model, installed,
    input_size, crop_pct, n, correct, top1, seconds} | {model, installed: False, install}]}."""
    records = [r for r in discover(data, imagenet_classes()) if r.label is not None]
    if not records:
        raise UserError(f"no labelled photos in {data} (class folders named by WordNet id or class name)")
    rows: list[dict] = []
    for spec in ZOO if models is None else models:
        if not zoo_installed(spec):
            rows.append({"model": spec, "installed": False, "install": ZOO_INSTALL})
            continue
        t0 = time.perf_counter()
        clf = load_classifier(spec, device)
        correct, n, skipped = _top1_hits(clf, records, batch_size)
        rows.append({"model": spec, "installed": True, "input_size": clf.input_size, "crop_pct": round(clf.crop_pct, 4),
                     "n": n, "correct": correct, "top1": correct / n if n else None, "skipped": skipped,
                     "seconds": round(time.perf_counter() - t0, 2)})
    counted = [r["n"] for r in rows if r["installed"]]
    if counted and not max(counted):
        raise UserError(f"none of the {len(records)} labelled files in {data} could be decoded as an image")
    return {"data": str(data), "n_files": len(records), "n_photos": max(counted, default=len(records)), "models": rows}
