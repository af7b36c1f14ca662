"""`patchlab atlas`: class-pair activation atlas with ranked donor classes, or a whole-layer atlas."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError
from ..pipelines.atlas import atlas
from .app import ModelArgs, emit_json, model_command


@model_command("atlas", layer=True)
def atlas_cmd(
    classes: Annotated[Optional[tuple[str, str]], typer.Option("--classes", help="SOURCE TARGET class names or indices.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Image folder (else synthesized exemplars).")] = None,
    grid: Annotated[int, typer.Option("--grid", min=2, max=320, help="Cells per side.")] = 10,
    donors: Annotated[int, typer.Option("--donors", min=1, help="How many donor classes to list.")] = 10,
    icons: Annotated[Optional[bool], typer.Option("--icons/--no-icons", help="Render cell icons with optvis (else member-image crops); default: on with CUDA, off on CPU.")] = None,
    icon_steps: Annotated[int, typer.Option("--icon-steps", min=1, help="Optimization steps per icon batch.")] = 96,
    icon_direction: Annotated[str, typer.Option("--icon-direction", help="Icons render each cell's mean minus the mean of all cells (centered) or the mean itself (mean).")] = "centered",
    donors_for: Annotated[Optional[tuple[str, str]], typer.Option("--donors-for", help="Whole-layer atlas: SOURCE TARGET whose donor table is computed from the layer's activations.")] = None,
    max_images: Annotated[Optional[int], typer.Option("--max-images", min=1, help="Whole-layer atlas: most images drawn from --data (default: all).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default reports/atlas-SOURCE-to-TARGET-TIME).")] = None,
    *,
    opts: ModelArgs,
) -> None:
    """Activation atlas of a class pair (pair view, class atlas, ranked donors) or of a whole layer."""
    if max_images is not None and data is None:
        raise UserError("--max-images limits the photos a whole-layer atlas draws from --data; give --data DIR too")
    source, target = classes if classes else (None, None)
    summary = atlas(
        source, target, **opts.model_kwargs(), seed=opts.seed, data=data, grid=grid, donors=donors, icons=icons, icon_steps=icon_steps, icon_direction=icon_direction, donors_for=donors_for,
        max_images=max_images, out=out, progress=opts.verbose,
    )
    if opts.json_out:
        emit_json(summary)
        return
    typer.echo(f"atlas written to {summary['out']}")
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    m = summary.get("icon_measures") or {}
    if m.get("icons"):
        agree = "n/a" if m["top1_in_cell_top3"] is None else f"{m['top1_in_cell_top3']:.0%}"
        typer.echo(f"icons ({m['icons_are']}, {m['icons']}): own top-1 among the cell's top-3 classes {agree}; "
                   f"mean pairwise cosine of their pooled features {m['mean_pairwise_cosine']}")
    for d in summary.get("donors", []):
        sig = d["signals"]
        typer.echo(
            f"{d['rank']:>3}. {d['class']:<28} align {_f(sig['head_alignment'])}  act {_f(sig['activation_score'])}  "
            f"target-side {_f(sig['target_side_fraction'])}"
        )

def _f(v) -> str:
    return "   -  " if v is None else f"{v:+.3f}"
