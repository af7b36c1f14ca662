"""`patchlab dream`: calibrated class exemplars (see patchlab.pipelines.dream and patchlab.exemplars)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError
from ..pipelines.dream import dream
from .app import ModelArgs, emit_json, model_command


@model_command("dream")
def dream_cmd(
    cls: Annotated[str, typer.Option("--class", "-c", help="Class name, WordNet id or index.")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="How many images.")] = 16,
    near: Annotated[Optional[str], typer.Option("--near", help="Pair-aware: give this class a realistic share.")] = None,
    band: Annotated[Optional[tuple[float, float]], typer.Option("--band", help="p(class) band LO HI [0.5 0.9].")] = None,
    near_band: Annotated[Optional[tuple[float, float]], typer.Option("--near-band", help="p(near) band LO HI [0.02 0.15].")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Most optimization steps per image.")] = None,
    size: Annotated[Optional[int], typer.Option("--size", min=16, help="Image size (default: the model's input size).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder [reports/dream-CLASS-TIME].")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore and do not write the exemplar cache.")] = False,
    *,
    opts: ModelArgs,
) -> None:
    """Synthesize calibrated class exemplars: top-1 for the class at a confidence inside a band."""
    if near_band is not None and near is None:
        raise UserError("--near-band sets the band of the --near class; give --near CLASS too")
    manifest = dream(
        cls, n=n, near=near, band=band, near_band=near_band, steps=steps, size=size, **opts.model_kwargs(),
        seed=opts.seed, cache=not no_cache, out=out, progress=not opts.json_out,
    )
    if opts.json_out:
        emit_json(manifest)
        return
    recs = manifest["images"]
    ok = sum(r["in_band"] for r in recs)
    typer.echo(f"{len(recs)} image(s) in {manifest['folder']} ({ok} in band{', from cache' if manifest['cached'] else ''})")
    for r in recs:
        extra = f"  p(near) {r['p_near']:.3f}" if "p_near" in r else ""
        typer.echo(f"  {r['file']}: p {r['p_class']:.3f}  top-1 {r['top5'][0]['name']}  steps {r['steps']}{extra}")
