"""`patchlab audit`: probe many class pairs, rank them by attack success."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..audits import audit
from ..errors import UserError
from ..pairdata import SourceBands
from .app import DonorDataOpt, LibraryOpt, ModelArgs, SourceBandOpt, TargetBandOpt, emit_json, given, model_command
from .survival import DefenseOpt, PhysicalOpt, PhysicalRangesOpt


def model_specs(ctx: typer.Context, model: str, models: list[str] | None,
                extra: list[str] | None) -> tuple[str | None, list[str] | None]:
    """(model, models) for `audit()`: --models takes several values (`--models A B`, `A,B`, or
    repeated); a --model given as well is passed on (and refused there). Bare values only follow --models."""
    if extra and not models:
        raise UserError(f"unexpected argument {extra[0]!r} (several models: --models A B ...)")
    if not models:
        return model, None
    return (model if given(ctx, "model") else None), list(models) + list(extra or [])


def print_leaderboard(doc: dict) -> None:
    """Ranked (model, pair) runs: similarity, best candidate and its success, success with the
    smallest patch, best disguised, median p(source) of the counted sources; then the most vulnerable model per pair when there are several."""
    rows = doc["leaderboard"]
    several = len(doc["config"].get("models") or [None]) > 1
    width = max([len(str(r.get("model"))) for r in rows] + [5]) if several else 0

    def lead(first: object, model: object, pair: str) -> str:
        return f"{first:>3} " + (f"{str(model):<{width}} " if several else "") + f"{pair[:40]:<40}"

    rank_by = doc["config"].get("rank_by") or "success"
    key = "" if rank_by == "success" else f" {rank_by[:22]:>22}"
    typer.echo("\n" + lead("#", "model", "source -> target") + f" {'sim':>6} {'best candidate':<34} {'success':>17} "
               f"{'smallest patch':>15} {'disguised':>9} {'p(src)':>6}{key}")
    for r in rows:
        start = lead(r["rank"], r.get("model"), f"{r['source']} -> {r['target']}")
        sim = "" if r.get("similarity") is None else f"{r['similarity']:.3f}"
        if r["status"] != "ok" or r.get("success") is None:
            typer.echo(f"{start} {sim:>6} {r['status'].upper()}: {r.get('error') or 'no candidate measured'}")
            continue
        ci = f" [{100 * r['ci_low']:.0f}-{100 * r['ci_high']:.0f}]" if r.get("ci_low") is not None else ""
        small = (f"{100 * r['min_area_success']:.0f}% @{100 * r['min_area']:g}%"
                 if r.get("min_area") is not None else "-")
        dis = f"{100 * r['disguised_success']:.0f}%" if r.get("disguised_success") is not None else "-"
        ranked = f" {rank_text(r, rank_by):>22}" if key else ""
        sure = "" if r.get("p_source") is None else f"{r['p_source']:.2f}"
        typer.echo(f"{start} {sim:>6} {str(r['best_candidate'])[:34]:<34} "
                   f"{100 * r['success']:5.1f}%{ci:>11} {small:>15} {dis:>9} {sure:>6}{ranked}")
    if several and doc.get("most_vulnerable"):
        _print_most_vulnerable(doc["most_vulnerable"], doc["config"]["models"])
    c = doc["counts"]
    typer.echo(f"{c['ok']} ok, {c['failed']} failed, {c['pending']} pending; report: {doc['report']}")


def _pct(value: object) -> str | None:
    return None if not isinstance(value, (int, float)) or value != value else f"{100 * value:.3g}"


def rank_text(row: dict, column: str) -> str:
    """The rank column of a leaderboard row: a rate with its interval, or an area (percent) with the bracket
    the area needed lies in ('>' past the grid), or '-' (not measured, or never reaching 50 % on the grid)."""
    value = _pct(row.get(column))
    if value is None:
        return "-"
    lo, hi = _pct(row.get(f"{column}:ci_low")), _pct(row.get(f"{column}:ci_high"))
    if column.startswith("area50"):  # the bracket the area needed lies in
        return f"{value}% ({lo or 0}-{hi or '>'}]"
    return f"{value}%" + ("" if lo is None else f" [{lo}-{hi or '>'}]")


def _print_most_vulnerable(entries: list[dict], models: list[str]) -> None:
    """Per pair: the model with the highest confirmation success, then every model's success."""
    typer.echo(f"\nmost vulnerable model per pair ({', '.join(models)}):")
    for e in entries:
        figs = []
        for m in models:
            f = e["models"].get(m) or {}
            figs.append(f"{m} {100 * f['success']:.1f}%" if f.get("status") == "ok" and f.get("success") is not None
                        else f"{m} {str(f.get('status', '-')).upper()}")
        pair = f"{e['source']} -> {e['target']}"
        typer.echo(f"  {pair[:40]:<40} {str(e['model'] or '-'):<12} ({'; '.join(figs)})")


@model_command("audit", layer=True)
def audit_cmd(
    ctx: typer.Context,
    pairs: Annotated[Optional[int], typer.Option("--pairs", help="Audit the N most confusable pairs (default 10).")] = None,
    pairs_file: Annotated[Optional[Path], typer.Option("--pairs-file", help="CSV of pairs: source,target per line.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Real photos: pairs from their confusion matrix, probes use them.")] = None,
    library: LibraryOpt = None,
    donor_data: DonorDataOpt = None,
    budget: Annotated[str, typer.Option("--budget", help="Probe budget per pair: quick | standard | thorough.")] = "quick",
    out: Annotated[Path, typer.Option("--out", help="Audit folder; re-run with the same folder to resume.")] = Path("reports/audit"),
    ray: Annotated[Optional[str], typer.Option("--ray", help="Run pairs as Ray tasks: auto (running cluster, else local) or ADDRESS.")] = None,
    cpus_per_pair: Annotated[int, typer.Option("--cpus-per-pair", help="CPUs (torch threads) each Ray task asks for.")] = 2,
    models: Annotated[Optional[list[str]], typer.Option(
        "--models", help="Probe the same pairs (chosen on the first) on several models: --models A B (or A,B); "
                         "not with --model. --weights applies to every model.")] = None,
    extra: Annotated[Optional[list[str]], typer.Argument(hidden=True, help="More values for --models.")] = None,
    defense: DefenseOpt = None,
    physical: PhysicalOpt = False,
    physical_ranges: PhysicalRangesOpt = None,
    rank_by: Annotated[str, typer.Option(
        "--rank-by", help="Leaderboard order: success, physical, defense:SPEC (the best rate that survives that "
                          "--defense), area50 or area50:SPEC (the smallest area reaching 50 %).")] = "success",
    source_band: SourceBandOpt = None,
    target_band: TargetBandOpt = None,
    *,
    opts: ModelArgs,
) -> None:
    """Probe many class pairs (chosen from the model, from --data, or a file) and rank them by best attack success.

    With --models A B ..., every pair is probed on each model (OUT/pairs/<model>/<pair>/) and the
    report adds the most vulnerable model per pair. Exit code 0 when every pair was probed,
    3 when the audit finished but some pairs failed (see audit.csv)."""
    model, many = model_specs(ctx, opts.model, models, extra)
    doc = audit(pairs, pairs_file, **dict(opts.model_kwargs(), model=model), models=many, data=data, library=library,
                donor_data=donor_data, budget=budget, out=out, seed=opts.seed, ray=ray,
                cpus_per_pair=cpus_per_pair, echo=lambda m: typer.echo(m, err=True), defenses=defense or (),
                physical=physical, physical_ranges=physical_ranges, rank_by=rank_by,
                bands=SourceBands.of(source_band, target_band))
    if opts.json_out:
        emit_json(doc)
    else:
        print_leaderboard(doc)
    if doc["counts"]["failed"]:
        raise typer.Exit(3)
