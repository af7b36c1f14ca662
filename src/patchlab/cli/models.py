"""`patchlab models`: the model specs patchlab can load; with --check DIR, top-1 accuracy on labelled
photos of the offline zoo, or of the model --model names (with its --weights, --labels, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..models import available_models, check_models
from ..pipelines.common import load_model
from .app import ModelArgs, emit_json, given, model_command

ZOO_NOTE = "zoo models installed (efficientnet_lite0/1/2)"


@model_command("models", seed=False)
def models_cmd(
    ctx: typer.Context,
    check: Annotated[Optional[Path], typer.Option(
        "--check", help="Photo folder (class folders named by WordNet id or class name, or a labels.csv): top-1 "
                        f"accuracy of the {ZOO_NOTE}, or of the model given with --model / --weights / --labels "
                        "(folders named by its labels file's names).")] = None,
    *,
    opts: ModelArgs,
) -> None:
    """List the model specs patchlab can load; with --check DIR, measure the offline zoo (or your model) on photos."""
    if check is not None:
        own = any(given(ctx, name) for name in ("model", "weights", "labels"))
        result = check_models(check, classifiers=[load_model(**opts.model_kwargs())], batch_size=50) if own \
            else check_models(check, device=opts.device)
        _print_check(result, check, opts.json_out)
        return
    entries = [{"spec": e.name + ("NAME" if e.name.endswith(":") else ""), "description": e.description} for e in available_models()]
    if opts.json_out:
        emit_json(entries)
        return
    for e in entries:
        typer.echo(f"{e['spec']:<22} {e['description']}")


def _print_check(result: dict, folder: Path, json_out: bool) -> None:
    """`models --check DIR`: one line per model (accuracy, photos, seconds, or how to install it)."""
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
