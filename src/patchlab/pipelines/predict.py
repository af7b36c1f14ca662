"""Classify image files: the Python function behind `patchlab predict`."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Unpack

from ..data import ImageRecord, iter_batches, list_image_files
from ..errors import UserError
from ..models import Classifier
from .common import ModelOptions, load_model


def predict_files(
    paths: Sequence[str | Path], top: int = 5, model: str | Classifier = "efficientnet_lite0",
    weights: str | Path | None = None, device: str = "auto", batch_size: int = 32, **options: Unpack[ModelOptions],
) -> dict:
    """Top-k predictions for every decodable image; bad files are listed under 'skipped'.

    `model` is a spec (loaded on `device` with `weights` and `options`: labels file, preprocessing
    overrides) or an already loaded Classifier. Photos are resized with the model's interpolation.
    """
    if isinstance(paths, (str, Path)):  # one file or folder
        paths = [paths]
    files = list_image_files(paths)
    if not files:
        raise UserError("no image files found in " + ", ".join(map(str, paths)))
    if isinstance(model, Classifier):
        clf = model
    else:
        clf = load_model(model, device, weights, **options)
    k = min(top, clf.num_classes)
    predictions, skipped = [], []
    for batch in iter_batches([ImageRecord(f) for f in files], clf.input_size, clf.crop_pct, batch_size,
                              interpolation=clf.preprocessing.interpolation):
        skipped += batch.skipped
        if not len(batch):
            continue
        probs = clf.logits(batch.images.to(clf.device)).softmax(-1)
        for path, top_k in zip(batch.paths, clf.classes.top(probs, k, digits=6)):
            predictions.append({"path": path, "top": top_k})
    if not predictions:
        raise UserError(f"none of the {len(files)} file(s) could be decoded as an image")
    return {"model": clf.spec, "predictions": predictions, "skipped": skipped}
