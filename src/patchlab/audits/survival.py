"""The audit's "does it survive?" columns and the orders the leaderboard can rank pairs by.

Per pair, from its probe summary (every figure counted on confirmation for the candidate chosen on
selection, never the best confirmation count):
- physical: the best generated candidate's rate under the physical protocol;
- defense:SPEC: the best rate that survives that defence (the candidate best on the defended
  model's selection images, its defended confirmation rate);
- area50 and area50:SPEC: the smallest patch area reaching 50 % success over the candidate kinds,
  bare and through each defence (see `patchlab.evaluation.area50`).

Rank orders (`--rank-by`): success (the default), physical, defense:SPEC, area50, area50:SPEC; a
higher rate ranks first, a smaller area ranks first.
"""
from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..patches.candidate import is_generated
from ..protocols import PHYSICAL
from ..runfolder import Entry, Summary

RANKS = ("success", PHYSICAL, "defense:SPEC", "area50", "area50:SPEC")
NO_DEFENCE = "none"


def _best(entries: list[Entry], rate_of) -> tuple[Entry, Any] | None:
    """(entry, its counts) of the entry with the best selection figure; rate_of(entry) -> (selection, Rate) or None."""
    rated = [(e, got) for e in entries if (got := rate_of(e)) is not None and got[0] is not None and got[1] is not None]
    return max(rated, key=lambda t: t[1][0], default=None)


def _rate_columns(prefix: str, best: tuple[Entry, Any] | None) -> dict[str, Any]:
    if best is None:
        return {prefix: None, f"{prefix}:ci_low": None, f"{prefix}:ci_high": None, f"{prefix}:candidate": None}
    entry, (_, rate) = best
    return {prefix: rate.rate, f"{prefix}:ci_low": rate.ci[0], f"{prefix}:ci_high": rate.ci[1],
            f"{prefix}:candidate": entry.name}


def _area_columns(prefix: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The smallest area50 over the kinds (a kind that never reaches 50 % on the grid counts as None)."""
    reached = [r for r in rows if r.get("area") is not None]
    best = min(reached, key=lambda r: (r["area"], r["ci"][1] if r["ci"][1] is not None else float("inf")), default=None)
    if best is None:
        return {prefix: None, f"{prefix}:ci_low": None, f"{prefix}:ci_high": None, f"{prefix}:kind": None}
    return {prefix: best["area"], f"{prefix}:ci_low": best["ci"][0], f"{prefix}:ci_high": best["ci"][1],
            f"{prefix}:kind": best["kind"]}


def survival_columns(summary: Summary) -> dict[str, Any]:
    """The pair's physical, defense:SPEC and area50[:SPEC] columns (each with ci_low, ci_high and the
    candidate or kind behind it); only those its summary measured."""
    out: dict[str, Any] = {}
    generated = [e for e in summary.candidates if is_generated(e.kind)]
    primary = summary.primary_protocol
    if PHYSICAL in summary.protocols:
        out |= _rate_columns(PHYSICAL, _best(generated, lambda e: (e.selection_rate(PHYSICAL), e.rate(PHYSICAL))))
    for d in summary.defenses:
        spec = d["defense"]
        out |= _rate_columns(f"defense:{spec}", _best(generated, lambda e: (
            (e.defended[spec].selection_rate(primary), e.defended[spec].rate(primary)) if spec in e.defended else None)))
    for spec in dict.fromkeys(r.get("defense", NO_DEFENCE) for r in summary.area50):
        prefix = "area50" if spec == NO_DEFENCE else f"area50:{spec}"
        out |= _area_columns(prefix, [r for r in summary.area50 if r.get("defense", NO_DEFENCE) == spec])
    return out


def check_rank_by(rank_by: str, defenses: list[str]) -> str:
    """The rank order as the leaderboard's column name; UserError (one line) for an unknown order or a
    defence the audit does not measure."""
    rank_by = rank_by.strip()
    if rank_by in ("success", PHYSICAL, "area50"):
        return rank_by
    kind, _, spec = rank_by.partition(":")
    if kind in ("defense", "area50") and spec:
        if spec not in defenses:
            given = ", ".join(defenses) or "none"
            raise UserError(f"--rank-by {rank_by}: the audit measures no defence {spec!r} (--defense given: {given})")
        return rank_by
    raise UserError(f"unknown --rank-by {rank_by!r}; use {', '.join(RANKS)}")


def sort_order(rank_by: str) -> tuple[list[str], list[bool]]:
    """The leaderboard's sort columns and directions for a rank order (after status): its own column
    first (rates descending, areas ascending), then success and the usual tie-breakers."""
    tail = ["success", "min_area_success", "ci_low", "similarity"]
    if rank_by == "success":
        return tail, [False] * len(tail)
    ascending = rank_by.startswith("area50")
    return [rank_by] + tail, [ascending] + [False] * len(tail)
