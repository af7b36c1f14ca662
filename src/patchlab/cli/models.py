"""`patchlab models`: the model specs patchlab can load; with --check DIR, top-1 accuracy on labelled
photos of the offline zoo, or of the model --model names (with its --weights, --labels, ...); with
--defense, one model's clean and certified top-1 behind each defence."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defenses import check_defenses
from ..errors import UserError
from ..evaluation.core import resolve_defenses
from ..models import available_models, check_models
from ..pipelines.common import load_model
from .app import ModelArgs, emit_json, given, model_command
from .survival import DefenseOpt

ZOO_NOTE = "zoo models installed (efficientnet_lite0/1/2)"


@model_command("models", seed=False)
def models_cmd(
    ctx: typer.Context,
    check: Annotated[Optional[Path], typer.Option(
        "--check", help="Photo folder (class folders named by WordNet id or class name, or a labels.csv): top-1 "
                        f"accuracy of the {ZOO_NOTE}, or of the model given with --model / --weights / --labels "
                        "(folders named by its labels file's names).")] = None,
    defense: DefenseOpt = None,
    max_images: Annotated[Optional[int], typer.Option(
        "--max-images", help="With --check and --defense: N photos spread evenly over the folder.")] = None,
    *,
    opts: ModelArgs,
) -> None:
    """List the model specs patchlab can load; with --check DIR, measure the offline zoo (or your model) on
    photos; with --defense SPEC, one model (--model, default efficientnet_lite0) bare and behind each
    defence: clean and certified top-1."""
    defended = resolve_defenses(defense or ())
    if defended and check is None:
        raise UserError("--defense goes with --check DIR (the photos to measure the defended model on)")
    if check is not None and defended:
        _check_defended(check, defended, load_model(**opts.model_kwargs()), max_images, opts.json_out)
        return
    if max_images is not None:
        raise UserError("--max-images goes with --check DIR --defense SPEC")
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


def _pct(share: dict[str, Any]) -> str:
    lo, hi = share["ci"]
    return f"{100 * share['rate']:5.1f} % [{100 * lo:.0f}-{100 * hi:.0f}]"


def _check_defended(folder: Path, defended: list, classifier: Any, max_images: int | None, json_out: bool) -> None:
    """`models --check DIR --defense SPEC`: the model bare, then behind each defence: clean top-1, and for
    PatchCleanser certified top-1 (certified and correct, as the paper counts it), the share it certifies,
    forwards per photo and seconds."""
    result = check_defenses(folder, defended, classifier, max_images=max_images)
    if json_out:
        emit_json(result)
        return
    bare = result["undefended"]
    typer.echo(f"{result['model']} on {result['n_photos']} labelled photos in {folder} ({result['input_size']} px), "
               "top-1 with Wilson 95 % intervals:")
    typer.echo(f"  {'undefended':<20} clean {_pct(bare['top1'])}  ({bare['seconds_per_image']:.4f} s/photo)")
    for r in result["defenses"]:
        line = f"  {r['defense']:<20} clean {_pct(r['top1'])}"
        if "certified" in r:
            line += (f"  certified top-1 {_pct(r['certified_and_correct'])} (certifies {_pct(r['certified'])} of photos);"
                     f" {r['masks']} masks of {r['mask_px']} px for a {r['patch_px']} px patch,"
                     f" {r['forwards_per_image']:.0f} forwards/photo")
        typer.echo(line + f"  ({r['seconds_per_image']:.3f} s/photo, x{r['seconds_per_image'] / bare['seconds_per_image']:.0f})")
