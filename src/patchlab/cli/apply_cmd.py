"""`patchlab apply`: paste a saved patch on any images, without re-running an attack
(`patchlab.pipelines.apply.apply_to_files` is the Python function behind the command)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..pipelines.apply import apply_to_files
from .app import ModelArgs, emit_json, model_command

POSITION_HELP = "top-left | top-right | bottom-left | bottom-right | center"


@model_command("apply", seed=False)
def apply_cmd(
    patch: Annotated[Path, typer.Argument(help="Patch file: PNG/JPEG or .pt tensor (3,h,w).")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the patched PNGs.")],
    area: Annotated[float, typer.Option("--area", help="Patch size as a fraction of the image area.")] = 0.1,
    position: Annotated[str, typer.Option("--position", help=POSITION_HELP)] = "top-left",
    angle: Annotated[float, typer.Option("--angle", help="Rotation in degrees.")] = 0.0,
    shape: Annotated[str, typer.Option("--shape", help="square | circle")] = "square",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    *,
    opts: ModelArgs,
) -> None:
    """Paste a saved patch on images and show the model's top-1 before and after."""
    res = apply_to_files(patch, list(images), area=area, position=position, angle_deg=angle, shape=shape,
                         **opts.model_kwargs(), batch_size=batch_size, out=out)
    if opts.json_out:
        emit_json(res)
        return
    for r in res["images"]:
        b, a = r["before"], r["after"]
        typer.echo(f"{r['path']}: {b['name']} {b['prob']:.2f} -> {a['name']} {a['prob']:.2f}  [{r['out']}]")
    changed = sum(r["changed"] for r in res["images"])
    typer.echo(f"{changed}/{len(res['images'])} top-1 changed; patched images in {res['out']}")
    if res["skipped"]:
        typer.echo(f"{len(res['skipped'])} file(s) skipped (see warnings above)", err=True)
