"""`patchlab models`: the model specs patchlab can load; with --check DIR, the offline zoo measured on photos."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..models import available_models, check_models
from .app import JsonOpt, VerboseOpt, app, emit_json, setup


@app.command("models")
def models_cmd(
    check: Annotated[Optional[Path], typer.Option(
        "--check", help="Photo folder (ImageNet tree: WordNet-id or class-name folders): top-1 accuracy of each "
                        "zoo model installed (efficientnet_lite0/1/2).")] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List the model specs patchlab can load; with --check DIR, measure the offline zoo on photos."""
    setup(verbose)
    if check is not None:
        _check_zoo(check, json_out)
        return
    entries = [{"spec": e.name + ("NAME" if e.name.endswith(":") else ""), "description": e.description} for e in available_models()]
    if json_out:
        emit_json(entries)
        return
    for e in entries:
        typer.echo(f"{e['spec']:<22} {e['description']}")


def _check_zoo(folder: Path, json_out: bool) -> None:
    """`models --check DIR`: one line per zoo model (accuracy, photos, seconds, or how to install it)."""
    result = check_models(folder)
    if json_out:
        emit_json(result)
        return
    unread = result["n_files"] - result["n_photos"]
    typer.echo(f"top-1 accuracy on {result['n_photos']} photos in {folder}"
               + (f" ({unread} unreadable files skipped):" if unread else ":"))
    for r in result["models"]:
        if not r["installed"]:
            typer.echo(f"{r['model']:<20} not installed ({r['install']})")
            continue
        acc = "-" if r["top1"] is None else f"{100 * r['top1']:.1f} %"
        typer.echo(f"{r['model']:<20} {acc:>7}  ({r['correct']}/{r['n']}, {r['input_size']} px, {r['seconds']:.0f} s)")
