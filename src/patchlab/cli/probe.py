"""`patchlab probe`: the whole mission for one class pair."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import ModelArgs, emit_json, model_command


def _pct(r: dict | None) -> str:
    if not r or r.get("rate") is None:
        return "   -  "
    lo, hi = r.get("ci") or (None, None)
    ci = f" [{100 * lo:.0f}-{100 * hi:.0f}]" if lo is not None else ""
    return f"{100 * r['rate']:5.1f}%{ci}"


def print_table(summary: dict) -> None:
    """Short ranked table: candidate, kind, static and dynamic success, lift over controls."""
    primary = summary.get("primary_protocol", "static")
    rows = sorted(summary["candidates"], key=lambda c: -((c.get(primary) or {}).get("rate") or 0))
    typer.echo(f"\n{summary['source']['name']} -> {summary['target']['name']}  "
               f"({summary['data']['kind']} images, {summary['data']['counts'].get('denominator')} held-out counted)")
    typer.echo(f"{'candidate':<40} {'kind':<8} {'static':>16} {'dynamic':>16} {'lift (' + primary + ')':>22}  reads as")
    for c in rows:
        lift = c.get("lift_over_best_control") or {}
        lv = lift.get("value")
        lci = lift.get("ci") or [None, None]
        lift_s = f"{100 * lv:+.1f} [{100 * lci[0]:+.0f},{100 * lci[1]:+.0f}]" if lv is not None else "-"
        ra = (c.get("reads_as") or {}).get("name", "")
        typer.echo(f"{c['name'][:40]:<40} {c['kind']:<8} {_pct(c.get('static')):>16} {_pct(c.get('dynamic')):>16} {lift_s:>22}  {ra}")
    for c in summary.get("controls", []):
        typer.echo(f"{c['name'][:40]:<40} {'control':<8} {_pct(c.get('static')):>16} {_pct(c.get('dynamic')):>16}")
    donors = summary.get("donors") or []
    if donors:
        typer.echo("top donors: " + ", ".join(str(d.get("name", d.get("class"))) for d in donors[:5]))
    for key in ("best_candidate", "best_disguised_candidate"):
        b = summary.get(key)
        if b:
            typer.echo(f"{key.replace('_', ' ')}: {b['name']} ({b['kind']}, reads as {b.get('reads_as')}) "
                       f"{100 * b['rate']:.1f}% {primary}")
    typer.echo(f"report: {summary['report']}")


@model_command("probe")
def probe_cmd(
    classes: Annotated[tuple[str, str], typer.Option("--classes", help="SOURCE TARGET, e.g. snorkel scuba_diver.")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Real photos (ImageNet tree, class folders or CSV).")] = None,
    donor_data: Annotated[Optional[Path], typer.Option("--donor-data", help="Photos to cut natural patches from.")] = None,
    budget: Annotated[str, typer.Option("--budget", help="quick | standard | thorough.")] = "quick",
    out: Annotated[Path, typer.Option("--out", help="Folder for run directories.")] = Path("reports"),
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue an interrupted run directory.")] = None,
    *,
    opts: ModelArgs,
) -> None:
    """Find and measure patches that flip SOURCE into TARGET; write a report (the main job)."""
    from ..probe import probe

    summary = probe(classes[0], classes[1], model=opts.model, weights=opts.weights, data=data, donor_data=donor_data,
                    budget=budget, out=out, device=opts.device, seed=opts.seed, resume=resume,
                    progress=not opts.json_out and sys.stderr.isatty(),
                    echo=lambda m: typer.echo(m, err=True))
    if opts.json_out:
        emit_json(summary)
    else:
        print_table(summary)
