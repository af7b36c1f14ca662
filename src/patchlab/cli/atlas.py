"""`patchlab atlas`: class-pair activation atlas with ranked donor classes, or a whole-layer atlas."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import ModelArgs, emit_json, model_command


@model_command("atlas")
def atlas_cmd(
    classes: Annotated[Optional[tuple[str, str]], typer.Option("--classes", help="SOURCE TARGET class names or indices.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Image folder (else synthesized exemplars).")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", help="Layer name (see `patchlab layers`); default: the model's last spatial map.")] = None,
    grid: Annotated[int, typer.Option("--grid", min=2, max=320, help="Cells per side.")] = 10,
    donors: Annotated[int, typer.Option("--donors", min=1, help="How many donor classes to list.")] = 10,
    icons: Annotated[Optional[bool], typer.Option("--icons/--no-icons", help="Render cell icons with optvis (else member-image crops); default: on with CUDA, off on CPU.")] = None,
    icon_steps: Annotated[int, typer.Option("--icon-steps", min=1, help="Optimization steps per icon batch.")] = 96,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default reports/atlas-SOURCE-to-TARGET-TIME).")] = None,
    *,
    opts: ModelArgs,
) -> None:
    """Activation atlas of a class pair (pair view, class atlas, ranked donors) or of a whole layer."""
    from ..errors import UserError
    from ..models import load_classifier
    from ..atlas import build_atlas

    if classes is None and layer is None:
        raise UserError("give --classes SOURCE TARGET, or --layer L for a whole-layer atlas")
    if data is not None and not data.exists():
        raise UserError(f"--data {data} does not exist")
    clf = load_classifier(opts.model, opts.device, weights=str(opts.weights) if opts.weights else None)
    source, target = classes if classes else (None, None)
    if icons is None:  # ~0.9 s per optvis step for 16 icons on a 2-core CPU: 10+ minutes for a pair atlas
        icons = clf.device.type == "cuda"
        if not icons:
            typer.echo("note: on CPU cells show member-image crops; --icons renders optvis icons (slow here)", err=True)
    result = build_atlas(
        clf, source, target, images=data, layer=layer, grid=grid, n_donors=donors, out=out, seed=opts.seed,
        progress=opts.verbose, icons=icons, icon_steps=icon_steps,
    )
    summary = result.summary()
    if opts.json_out:
        emit_json(summary)
        return
    typer.echo(f"atlas written to {result.out}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    for d in summary.get("donors", []):
        sig = d["signals"]
        typer.echo(
            f"{d['rank']:>3}. {d['class']:<28} align {_f(sig['head_alignment'])}  act {_f(sig['activation_score'])}  "
            f"target-side {_f(sig['target_side_fraction'])}"
        )


def _f(v) -> str:
    return "   -  " if v is None else f"{v:+.3f}"
