"""`patchlab synth`: parse options, call `patchlab.pipelines.synth.synth`, print."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..pipelines.synth import SYNTH_AREA, SYNTH_STEPS, synth
from ..runfolder import RunFolder, Summary
from .app import ModelArgs, emit_json, model_command
from .survival import PhysicalRangesOpt, print_survives


@model_command("synth")
def synth_cmd(
    classes: Annotated[tuple[str, str], typer.Option("--classes", help="SOURCE TARGET (SOURCE may be `any`).")],
    area: Annotated[tuple[float, float], typer.Option("--area", help="EOT area range, fraction of image area (drawn log-uniformly).")] = SYNTH_AREA,
    steps: Annotated[int, typer.Option("--steps", min=1)] = SYNTH_STEPS,
    patch_px: Annotated[int, typer.Option("--patch-px", min=2, help="Patch resolution in pixels.")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    data: Annotated[Optional[Path], typer.Option("--data", help="Source images (folder/CSV); else exemplars.")] = None,
    mix: Annotated[int, typer.Option("--mix", min=0, help="With --data: add N synthesized source images to the train photos.")] = 0,
    budget: Annotated[str, typer.Option("--budget", help="Split sizes: quick | standard | thorough (as probe and evaluate).")] = "quick",
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default reports/synth-...).")] = None,
    physical: Annotated[bool, typer.Option(
        "--physical", help="Optimise through print-and-camera transforms (EOT) and measure the physical protocol.")] = False,
    physical_ranges: PhysicalRangesOpt = None,
    *,
    opts: ModelArgs,
) -> None:
    """Synthesize a universal targeted patch with EOT (Brown et al. 2017) and test it on held-out images."""
    res = synth(classes[0], classes[1], **opts.model_kwargs(), seed=opts.seed,
                data=data, mix=mix, budget=budget, area=area, steps=steps, patch_px=patch_px, batch_size=batch_size, out=out,
                progress=opts.verbose, physical=physical, physical_ranges=physical_ranges)
    if opts.json_out:
        emit_json(res)
        return
    c = res["candidate"]
    typer.echo(f"patch: {res['run_dir']}/patches/{c['name']}.png  (alone reads as {c['reads_as']['name']} "
               f"{c['reads_as']['prob']:.2f}; {res['sec_per_step']:.3f} s/step)")
    n = res["summary"]["data"]["counts"]
    sure = Summary.from_dict(res["summary"]).confirmation.confidence_text()
    typer.echo(f"targeted success on {n['confirmation_denominator']} confirmation images "
               f"(placement chosen on {n['selection_denominator']} selection images"
               + (f"; {sure}" if sure else "") + "):")
    typer.echo(f"{'area':>6}  {'patch':>8}  {'best null control':>18}")
    for size, patch_rate, null_rate in area_table(res["run_dir"]):
        typer.echo(f"{size:>6.0%}  {patch_rate:>8.1%}  {null_rate:>18.1%}")
    print_survives(Summary.from_dict(res["summary"]))
    typer.echo(f"report: {res['report']}")


def area_table(run_dir: str) -> list[tuple[float, float, float]]:
    """(size, patch rate, best null-control rate) on confirmation under random placement, from results.csv."""
    res = RunFolder(run_dir).results()
    res = res[(res["split"] == "confirmation") & (res["protocol"] == "random")]
    out = []
    for size, g in res.groupby("size"):
        patch = g[g["kind"] == "synth"]["success_rate"].max()
        null = g[g["kind"] == "control"]["success_rate"].max()
        out.append((float(size), float(patch), float(null)))
    return out
