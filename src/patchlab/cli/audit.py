"""`patchlab audit`: probe many class pairs, rank them by attack success."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import DonorDataOpt, LibraryOpt, ModelArgs, emit_json, model_command


def print_leaderboard(doc: dict) -> None:
    """Ranked pairs: similarity, best candidate and its success, success with the smallest patch, best disguised."""
    rows = doc["leaderboard"]
    typer.echo(f"\n{'#':>3} {'source -> target':<40} {'sim':>6} {'best candidate':<34} {'success':>17} "
               f"{'smallest patch':>15} {'disguised':>9}")
    for r in rows:
        pair = f"{r['source']} -> {r['target']}"[:40]
        sim = "" if r.get("similarity") is None else f"{r['similarity']:.3f}"
        if r["status"] != "ok" or r.get("success") is None:
            typer.echo(f"{r['rank']:>3} {pair:<40} {sim:>6} {r['status'].upper()}: {r.get('error') or 'no candidate measured'}")
            continue
        ci = f" [{100 * r['ci_low']:.0f}-{100 * r['ci_high']:.0f}]" if r.get("ci_low") is not None else ""
        small = (f"{100 * r['min_area_success']:.0f}% @{100 * r['min_area']:g}%"
                 if r.get("min_area") is not None else "-")
        dis = f"{100 * r['disguised_success']:.0f}%" if r.get("disguised_success") is not None else "-"
        typer.echo(f"{r['rank']:>3} {pair:<40} {sim:>6} {str(r['best_candidate'])[:34]:<34} "
                   f"{100 * r['success']:5.1f}%{ci:>11} {small:>15} {dis:>9}")
    c = doc["counts"]
    typer.echo(f"{c['ok']} ok, {c['failed']} failed, {c['pending']} pending; report: {doc['report']}")


@model_command("audit")
def audit_cmd(
    pairs: Annotated[Optional[int], typer.Option("--pairs", help="Audit the N most confusable pairs (default 10).")] = None,
    pairs_file: Annotated[Optional[Path], typer.Option("--pairs-file", help="CSV of pairs: source,target per line.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Real photos: pairs from their confusion matrix, probes use them.")] = None,
    library: LibraryOpt = None,
    donor_data: DonorDataOpt = None,
    budget: Annotated[str, typer.Option("--budget", help="Probe budget per pair: quick | standard | thorough.")] = "quick",
    out: Annotated[Path, typer.Option("--out", help="Audit folder; re-run with the same folder to resume.")] = Path("reports/audit"),
    ray: Annotated[Optional[str], typer.Option("--ray", help="Run pairs as Ray tasks: auto (running cluster, else local) or ADDRESS.")] = None,
    cpus_per_pair: Annotated[int, typer.Option("--cpus-per-pair", help="CPUs (torch threads) each Ray task asks for.")] = 2,
    *,
    opts: ModelArgs,
) -> None:
    """Probe many class pairs (chosen from the model, from --data, or a file) and rank them by best attack success.

    Exit code 0 when every pair was probed, 3 when the audit finished but some pairs failed (see audit.csv)."""
    from ..audit import audit

    doc = audit(pairs, pairs_file, model=opts.model, weights=opts.weights, data=data, library=library, donor_data=donor_data, budget=budget,
                out=out, device=opts.device, seed=opts.seed, ray=ray, cpus_per_pair=cpus_per_pair,
                echo=lambda m: typer.echo(m, err=True))
    if opts.json_out:
        emit_json(doc)
    else:
        print_leaderboard(doc)
    if doc["counts"]["failed"]:
        raise typer.Exit(3)
