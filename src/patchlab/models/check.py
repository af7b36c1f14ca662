"""Checking the offline zoo on labelled photos: top-1 accuracy of each model at its own input size."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..classes import ClassIndex, imagenet_classes
from ..data import ImageRecord, discover, iter_batches
from ..errors import UserError
from .classifier import Classifier
from .lite import ZOO, ZOO_INSTALL, zoo_installed
from .registry import load_classifier


@torch.no_grad()
def _top1_hits(clf: Classifier, records: Sequence[ImageRecord], batch_size: int) -> tuple[int, int, list[str]]:
    """(correct, counted, skipped files) of top-1 over labelled records, in batches at the model's own size."""
    correct, counted, skipped = 0, 0, []
    for batch in iter_batches(records, clf.input_size, clf.crop_pct, batch_size,
                              interpolation=clf.preprocessing.interpolation):
        skipped += batch.skipped
        if len(batch):
            pred = clf.logits(batch.images, batch_size).argmax(-1).cpu()
            correct += int((pred == batch.labels).sum())
            counted += len(batch)
    return correct, counted, skipped


def _labelled(data: str | Path, classes: ClassIndex) -> list[ImageRecord]:
    return [r for r in discover(data, classes) if r.label is not None]


def _measure(clf: Classifier, records: Sequence[ImageRecord], batch_size: int, t0: float) -> dict:
    correct, n, skipped = _top1_hits(clf, records, batch_size)
    return {"model": clf.spec, "installed": True, "input_size": clf.input_size, "crop_pct": round(clf.crop_pct, 4),
            "n": n, "correct": correct, "top1": correct / n if n else None, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 2)}


def check_models(
    data: str | Path, *, models: Sequence[str] | None = None, device: str = "auto", batch_size: int = 50,
    classifiers: Sequence[Classifier] = (),
) -> dict:
    """Top-1 accuracy of each model on a labelled photo folder (an ImageNet tree: wnid or
    class-name folders, or a labels.csv; for `classifiers`, folders named by each model's own
    classes). A zoo model whose wheel is missing is listed with installed False and the pip
    command. models: default ZOO, or none when `classifiers` (models already loaded, e.g. your own
    with its labels file) are given. Returns {data, n_files (labelled), n_photos (those that decode),
    models: [{model, installed, input_size, crop_pct, n, correct, top1, seconds} | {model, installed:
    False, install}]}."""
    specs = list(ZOO if models is None and not classifiers else models or [])
    imagenet = _labelled(data, imagenet_classes()) if specs else []
    rows: list[dict] = []
    n_files = len(imagenet)
    for spec in specs:
        if not zoo_installed(spec):
            rows.append({"model": spec, "installed": False, "install": ZOO_INSTALL})
            continue
        t0 = time.perf_counter()
        if imagenet:
            rows.append(_measure(load_classifier(spec, device), imagenet, batch_size, t0))
    for clf in classifiers:
        t0 = time.perf_counter()
        records = _labelled(data, clf.classes)
        n_files = max(n_files, len(records))
        if records:
            rows.append(_measure(clf, records, batch_size, t0))
    if not n_files:
        raise UserError(f"no labelled photos in {data} (class folders named by WordNet id or by the model's class "
                        "names, or a labels.csv)")
    counted = [r["n"] for r in rows if r["installed"]]
    if counted and not max(counted):
        raise UserError(f"none of the {n_files} labelled files in {data} could be decoded as an image")
    return {"data": str(data), "n_files": n_files, "n_photos": max(counted, default=n_files), "models": rows}
