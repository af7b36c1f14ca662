"""`patchlab probe`: the whole mission for one class pair."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..pairdata import SourceBands
from ..pipelines.probe import probe
from ..runfolder import Entry, Summary
from .app import DonorDataOpt, LibraryOpt, ModelArgs, SourceBandOpt, TargetBandOpt, emit_json, model_command
from .format import rate_text
from .survival import DefenseOpt, PhysicalOpt, PhysicalRangesOpt, print_survives


def _lift(c: Entry) -> str:
    if c.lift is None or c.lift.value is None:
        return "-"
    lo, hi = c.lift.ci
    return f"{100 * c.lift.value:+.1f} [{100 * lo:+.0f},{100 * hi:+.0f}]"


def print_table(summary: Summary, report: str) -> None:
    """Ranked table: confirmation rates (static, dynamic, primary) with the selection
    figure of the primary protocol beside them, and lift over the best null control."""
    primary = summary.primary_protocol
    n = summary.data.counts
    rows = sorted(summary.candidates, key=lambda c: -(c.selection_rate(primary) or 0))
    sure = summary.confirmation.confidence_text()
    typer.echo(f"\n{summary.source.name} -> {summary.target.name}  ({summary.data.kind} images: "
               f"settings and winner chosen on {n.get('selection_denominator')} selection images, "
               f"rates counted on {n.get('confirmation_denominator')} confirmation images"
               + (f"; {sure}" if sure else "") + ")")
    typer.echo(f"{'candidate':<38} {'kind':<9} {'static':>15} {'dynamic':>15} {primary:>15} {'(selection)':>11} "
               f"{'lift vs null':>16}  reads as")
    for c in rows + summary.controls + summary.references:
        sel = c.selection_rate(primary)
        sel_s = f"({100 * sel:.0f}%)" if sel is not None else ""
        lift = _lift(c) if c.kind not in ("control", "reference") else ""
        typer.echo(f"{c.name[:38]:<38} {c.kind:<9} {rate_text(c.rate('static')):>15} {rate_text(c.rate('dynamic')):>15} "
                   f"{rate_text(c.rate(primary)):>15} {sel_s:>11} {lift:>16}  {c.reads_as.name or ''}")
    if summary.donors:
        typer.echo("top donors: " + ", ".join(str(d.get("name", d.get("class"))) for d in summary.donors[:5]))
    for key in ("best_candidate", "best_disguised_candidate", "reference"):
        b = getattr(summary, key)
        if b:
            typer.echo(f"{key.replace('_', ' ')}: {b.name} ({b.kind}, reads as {b.reads_as}) "
                       f"{100 * b.rate:.1f}% {primary} on confirmation (selection {100 * b.selection_rate:.1f}%)")
    print_survives(summary)
    typer.echo(f"report: {report}")


@model_command("probe", layer=True)
def probe_cmd(
    classes: Annotated[tuple[str, str], typer.Option("--classes", help="SOURCE TARGET, e.g. snorkel scuba_diver.")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Real photos (ImageNet tree, class folders or CSV).")] = None,
    library: LibraryOpt = None,
    donor_data: DonorDataOpt = None,
    budget: Annotated[str, typer.Option("--budget", help="quick | standard | thorough.")] = "quick",
    out: Annotated[Path, typer.Option("--out", help="Folder for run directories.")] = Path("reports"),
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue an interrupted run directory.")] = None,
    defense: DefenseOpt = None,
    physical: PhysicalOpt = False,
    physical_ranges: PhysicalRangesOpt = None,
    source_band: SourceBandOpt = None,
    target_band: TargetBandOpt = None,
    *,
    opts: ModelArgs,
) -> None:
    """Find and measure patches that flip SOURCE into TARGET; write a report (the main job)."""
    summary = probe(classes[0], classes[1], **opts.model_kwargs(), data=data, library=library, donor_data=donor_data,
                    budget=budget, out=out, seed=opts.seed, resume=resume,
                    progress=not opts.json_out and sys.stderr.isatty(),
                    echo=lambda m: typer.echo(m, err=True), defenses=defense or (),
                    physical=physical or physical_ranges is not None, physical_ranges=physical_ranges,
                    bands=SourceBands.of(source_band, target_band))
    if opts.json_out:
        emit_json(summary)
    else:
        print_table(Summary.from_dict(summary), summary["report"])
