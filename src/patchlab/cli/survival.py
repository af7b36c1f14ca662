"""The options that ask "does the patch survive?" (defences, the physical protocol) and the table
that answers it; shared by probe, evaluate, synth, audit and models."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defenses.spec import USAGE
from ..runfolder import Rate, Summary
from .format import rate_text

DefenseOpt = Annotated[Optional[list[str]], typer.Option(
    "--defense", help=f"Also count every patch through a defended model: {USAGE} (repeatable).")]
PhysicalOpt = Annotated[bool, typer.Option(
    "--physical", help="Also measure the physical protocol (print, perspective, light, blur, noise, JPEG).")]
PhysicalRangesOpt = Annotated[Optional[Path], typer.Option(
    "--physical-ranges", help="JSON object of PhysicalRanges fields to change (the rest keep their defaults).")]


def _cell(d: dict[str, Any] | None) -> str:
    return rate_text(Rate.from_dict(d))


def area_text(row: dict[str, Any]) -> str:
    """'5% (3-5]': the smallest grid area reaching 50 %, and the bracket the area needed lies in ('>' past
    the grid); '> 40%' when no grid area reaches it."""
    lo, hi = row.get("ci") or [None, None]
    if row.get("area") is None:
        return f"> {100 * max(r['size'] for r in row['grid']):g}%" if row.get("grid") else "-"
    return f"{100 * row['area']:g}% ({0 if lo is None else 100 * lo:g}-{'>' if hi is None else f'{100 * hi:g}'}]"


def print_area50(summary: Summary) -> None:
    """Per defence (none first), the smallest patch area at which each kind's chosen candidate reaches 50 %."""
    if not summary.area50:
        return
    protocol = summary.area50[0].get("protocol")
    typer.echo(f"\nsmallest patch area reaching 50 % ({protocol}, confirmation; in brackets the areas it lies between, "
               "from where the Wilson interval reaches 50 % to where it lies above):")
    for spec in dict.fromkeys(r["defense"] for r in summary.area50):
        cells = [f"{r['kind']} {area_text(r)}" for r in summary.area50 if r["defense"] == spec]
        typer.echo(f"  {'bare model' if spec == 'none' else 'through ' + spec:<24} " + "; ".join(cells))


def print_survives(summary: Summary) -> None:
    """Per candidate (then controls and references): digital, physical and defended rates side by side,
    counted on confirmation at the setting chosen on selection, and the patch's non-printability."""
    rows = summary.survives
    defenses = [d["defense"] for d in summary.defenses]
    physical = any(r.get("physical") is not None for r in rows)
    print_area50(summary)
    if not rows or not (defenses or physical):
        return
    head = f"{'does it survive?':<38} {'kind':<9} {'digital':>15}" + (f" {'physical':>15}" if physical else "")
    head += "".join(f" {d[:17]:>17}" for d in defenses) + f" {'non-print.':>10}"
    typer.echo(f"\n{head}")
    for r in rows:
        line = f"{str(r['name'])[:38]:<38} {r['kind']:<9} {_cell(r.get('digital')):>15}"
        if physical:
            line += f" {_cell(r.get('physical')):>15}"
        line += "".join(f" {_cell((r.get('defended') or {}).get(d)):>17}" for d in defenses)
        nps = r.get("non_printability")
        typer.echo(line + (f" {nps:>10.2e}" if isinstance(nps, (int, float)) else f" {'-':>10}"))
    for d in summary.defenses:
        acc, cert = d.get("clean_accuracy"), d.get("certified")
        text = f"{d['defense']}: clean accuracy {_cell(acc).strip()} of {acc['n'] if acc else '-'} source images"
        if cert is not None:
            text += f", certified {_cell(cert).strip()}"
        typer.echo(text + f" ({d.get('seconds', 0):.0f} s)")
