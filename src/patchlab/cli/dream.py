"""`patchlab dream`: calibrated class exemplars (see patchlab.exemplars)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import ModelArgs, emit_json, model_command


def dream(
    cls: str, n: int = 16, near: str | None = None, band: tuple[float, float] | None = None,
    near_band: tuple[float, float] | None = None, steps: int | None = None, size: int | None = None,
    out: str | Path | None = None, seed: int = 0, model: str = "efficientnet_lite0", weights: str | None = None,
    device: str = "auto", cache: bool = True, progress: bool = False,
) -> dict:
    """Render exemplars of class `cls` (name, wnid or index) into `out`; returns the manifest dict."""
    import json

    from ..exemplars import DEFAULT_BAND, DEFAULT_NEAR_BAND, DEFAULT_STEPS, exemplars
    from ..models import load_classifier

    clf = load_classifier(model, device, weights=weights)
    index = clf.classes.resolve(cls)
    near_index = clf.classes.resolve(near) if near else None
    if out is None:
        out = Path("reports") / f"dream-{clf.classes.slug(index)}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = exemplars(
        clf, index, n=n, band=band or DEFAULT_BAND, near=near_index, near_band=near_band or DEFAULT_NEAR_BAND,
        size=size, steps=steps or DEFAULT_STEPS, seed=seed, cache=cache, progress=progress,
    )
    if result.interrupted:
        logging.getLogger(__name__).warning("interrupted: saving the images as they were (not all finished)")
    path = result.save(out)
    manifest = json.loads(path.read_text())
    manifest["folder"] = str(Path(out))
    return manifest


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
    manifest = dream(
        cls, n=n, near=near, band=band, near_band=near_band, steps=steps, size=size, out=out, seed=opts.seed,
        model=opts.model, weights=str(opts.weights) if opts.weights else None, device=opts.device, cache=not no_cache,
        progress=not opts.json_out,
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
