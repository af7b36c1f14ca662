"""`apply_to_files`: paste a saved patch on any images, without re-running an attack
(the function behind `patchlab apply`).

Images are brought to the model's view (short side resized, center crop to the
input size, as everywhere in patchlab), the patch is composited with the shared
`apply_at` (area = fraction of that view), the patched images are written as
PNGs and the model's top-1 before and after is reported.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Unpack

import torch

from ..data import ImageRecord, iter_batches, list_image_files
from ..errors import UserError
from ..patches.apply import POSITIONS, apply_at
from ..patches.candidate import load_patch
from ..runio import ensure_writable_dir, save_png
from .common import ModelOptions, load_model


def apply_to_files(
    patch: str | Path,
    images: Sequence[str | Path],
    *,
    area: float = 0.1,
    position: str = "top-left",
    angle_deg: float = 0.0,
    shape: str = "square",
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 32,
    out: str | Path = "patched",
    **options: Unpack[ModelOptions],
) -> dict:
    """Apply the patch file (PNG or .pt) to every decodable image in `images` (files or folders); write the
    patched PNGs into `out` (never over an existing file; not into a folder of the inputs); returns
    per-image top-1 before/after and the skipped files.

    area: patch size as a fraction of the image area. position: top-left,
    top-right, bottom-left, bottom-right or center. shape: square or circle. options: labels file and
    preprocessing overrides (`ModelOptions`); photos are resized with the model's interpolation.
    """
    if not 0 < area < 1:
        raise UserError(f"--area must be a fraction of the image area in (0, 1), got {area}")
    if position not in POSITIONS:
        raise UserError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    if shape not in ("square", "circle"):
        raise UserError(f"unknown shape {shape!r}; use square or circle")
    if not math.isfinite(angle_deg):
        raise UserError(f"--angle must be a finite number of degrees, got {angle_deg}")
    tensor = load_patch(patch)
    files = list_image_files(images)
    if not files:
        raise UserError("no image files found in " + ", ".join(map(str, images)))
    out_resolved = Path(out).resolve()
    if any(f.resolve().parent == out_resolved for f in files):
        raise UserError(f"--out {out} holds input images; write the patched images to another folder")
    out_dir = ensure_writable_dir(out)
    clf = load_model(model, device, weights, **options)
    tensor = tensor.to(clf.device)
    rows, skipped, used = [], [], set()
    for batch in iter_batches([ImageRecord(f) for f in files], clf.input_size, clf.crop_pct, batch_size,
                              interpolation=clf.preprocessing.interpolation):
        skipped += batch.skipped
        if not len(batch):
            continue
        x = batch.images.to(clf.device)
        patched = apply_at(x, tensor, area, position, math.radians(angle_deg), shape)
        with torch.no_grad():
            before = [r[0] for r in clf.classes.top(clf(x).softmax(1), digits=None)]
            after = [r[0] for r in clf.classes.top(clf(patched).softmax(1), digits=None)]
        for k, path in enumerate(batch.paths):
            dest = out_dir / _out_name(path, used, out_dir)
            save_png(dest, patched[k])
            rows.append({"path": path, "out": str(dest), "before": before[k], "after": after[k],
                         "changed": before[k]["index"] != after[k]["index"]})
    if not rows:
        raise UserError(f"none of the {len(files)} file(s) could be decoded as an image")
    return {
        "patch": str(patch), "area": area, "position": position, "angle_deg": angle_deg, "shape": shape,
        "model": model, "out": str(out_dir), "images": rows, "skipped": skipped,
    }


def _out_name(path: str, used: set[str], out_dir: Path) -> str:
    """`<stem>.png`, numbered when this run used the name already or a file of that name exists (never overwritten)."""
    stem = Path(path).stem or "image"
    name, k = f"{stem}.png", 1
    while name in used or (out_dir / name).exists():
        name, k = f"{stem}-{k}.png", k + 1
    used.add(name)
    return name
