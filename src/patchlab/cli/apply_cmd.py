"""`patchlab apply`: paste a saved patch on any images, without re-running an attack.

Images are brought to the model's view (short side resized, center crop to the
input size, as everywhere in patchlab), the patch is composited with the shared
`apply_at` (area = fraction of that view), the patched images are written as
PNGs and the model's top-1 before and after is reported.
`apply_to_files` is the Python function behind the command."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import torch
import typer

from ..errors import UserError
from .app import DeviceOpt, JsonOpt, ModelOpt, VerboseOpt, WeightsOpt, app, emit_json, setup

POSITION_HELP = "top-left | top-right | bottom-left | bottom-right | center"


def _top1(probs: torch.Tensor, classes) -> list[dict]:
    p, i = probs.max(1)
    return [{"index": int(k), "name": classes.label(int(k)), "prob": float(v)} for v, k in zip(p.tolist(), i.tolist())]


def _out_name(path: str, used: set[str]) -> str:
    stem = Path(path).stem or "image"
    name, k = f"{stem}.png", 1
    while name in used:
        name, k = f"{stem}-{k}.png", k + 1
    used.add(name)
    return name


def apply_to_files(
    patch: str | Path, images: list[str | Path], area: float = 0.1, position: str = "top-left",
    angle_deg: float = 0.0, shape: str = "square", out: str | Path = "patched", model: str = "efficientnet_lite0",
    weights: str | None = None, device: str = "auto", batch_size: int = 32,
) -> dict:
    """Apply the patch file (PNG or .pt) to every decodable image; returns per-image top-1 before/after."""
    from ..data import ImageRecord, iter_batches, list_image_files
    from ..models import load_classifier
    from ..patches.apply import POSITIONS, apply_at
    from ..patches.candidate import load_patch
    from ..runio import ensure_writable_dir, save_png

    if not 0 < area < 1:
        raise UserError(f"--area must be a fraction of the image area in (0, 1), got {area}")
    if position not in POSITIONS:
        raise UserError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    if shape not in ("square", "circle"):
        raise UserError(f"unknown shape {shape!r}; use square or circle")
    tensor = load_patch(patch)
    files = list_image_files(images)
    if not files:
        raise UserError("no image files found in " + ", ".join(map(str, images)))
    out_dir = ensure_writable_dir(out)
    clf = load_classifier(model, device, weights)
    tensor = tensor.to(clf.device)
    rows, skipped, used = [], [], set()
    for batch in iter_batches([ImageRecord(f) for f in files], clf.input_size, clf.crop_pct, batch_size):
        skipped += batch.skipped
        if not len(batch):
            continue
        x = batch.images.to(clf.device)
        patched = apply_at(x, tensor, area, position, math.radians(angle_deg), shape)
        with torch.no_grad():
            before = _top1(clf(x).softmax(1), clf.classes)
            after = _top1(clf(patched).softmax(1), clf.classes)
        for k, path in enumerate(batch.paths):
            dest = out_dir / _out_name(path, used)
            save_png(dest, patched[k])
            rows.append({"path": path, "out": str(dest), "before": before[k], "after": after[k],
                         "changed": before[k]["index"] != after[k]["index"]})
    if not rows:
        raise UserError(f"none of the {len(files)} file(s) could be decoded as an image")
    return {
        "patch": str(patch), "area": area, "position": position, "angle_deg": angle_deg, "shape": shape,
        "model": model, "out": str(out_dir), "images": rows, "skipped": skipped,
    }


@app.command("apply")
def apply_cmd(
    patch: Annotated[Path, typer.Argument(help="Patch file: PNG/JPEG or .pt tensor (3,h,w).")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the patched PNGs.")],
    area: Annotated[float, typer.Option("--area", help="Patch size as a fraction of the image area.")] = 0.1,
    position: Annotated[str, typer.Option("--position", help=POSITION_HELP)] = "top-left",
    angle: Annotated[float, typer.Option("--angle", help="Rotation in degrees.")] = 0.0,
    shape: Annotated[str, typer.Option("--shape", help="square | circle")] = "square",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Paste a saved patch on images and show the model's top-1 before and after."""
    setup(verbose)
    res = apply_to_files(patch, list(images), area, position, angle, shape, out, model,
                         str(weights) if weights else None, device, batch_size)
    if json_out:
        emit_json(res)
        return
    for r in res["images"]:
        b, a = r["before"], r["after"]
        typer.echo(f"{r['path']}: {b['name']} {b['prob']:.2f} -> {a['name']} {a['prob']:.2f}  [{r['out']}]")
    changed = sum(r["changed"] for r in res["images"])
    typer.echo(f"{changed}/{len(res['images'])} top-1 changed; patched images in {res['out']}")
    if res["skipped"]:
        typer.echo(f"{len(res['skipped'])} file(s) skipped (see warnings above)", err=True)
