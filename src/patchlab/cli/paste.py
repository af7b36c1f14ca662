"""`patchlab paste`: parse options, call `patchlab.pipelines.paste.paste`, print."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..pairdata import SourceBands
from ..pipelines.paste import paste
from .app import DonorDataOpt, LibraryOpt, ModelArgs, SourceBandOpt, TargetBandOpt, emit_json, model_command


@model_command("paste", layer=True)
def paste_cmd(
    classes: Annotated[tuple[str, str], typer.Option("--classes", help="SOURCE TARGET.")],
    donor: Annotated[Optional[list[str]], typer.Option("--donor", help="Donor class (repeatable); default: atlas ranking.")] = None,
    donor_data: DonorDataOpt = None,
    library: LibraryOpt = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Photos of the source class to score crops on.")] = None,
    top_k: Annotated[int, typer.Option("--top", min=1, help="How many distinct crops to keep.")] = 6,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder.")] = None,
    source_band: SourceBandOpt = None,
    target_band: TargetBandOpt = None,
    *,
    opts: ModelArgs,
) -> None:
    """Copy/paste search: natural patches cut from donor images, ranked by measured gain."""
    result = paste(classes[0], classes[1], **opts.model_kwargs(), seed=opts.seed,
                   data=data, library=library, donors=donor, donor_data=donor_data, top_k=top_k, out=out,
                   bands=SourceBands.of(source_band, target_band))
    if opts.json_out:
        emit_json(result)
        return
    for c in result["candidates"]:
        p = c["provenance"]
        typer.echo(f"{c['name']:<18} gain {p['score_gain_logodds']:+.3f}  train success {100 * p['train_success']:5.1f}%  "
                   f"donor {p['donor_name']}  reads as {c['reads_as']['name']}")
    search = result["search"] or {}
    typer.echo("search: " + ", ".join(f"{k} {v}" for k, v in search.items() if isinstance(v, (int, float, str))))
    typer.echo(f"saved in {result['out']}")
