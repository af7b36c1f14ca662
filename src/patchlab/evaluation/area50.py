"""A measure that does not saturate: the smallest patch area reaching 50 % targeted success.

When every pair's best patch flips every image at the smallest evaluated area, success rates cannot
tell pairs apart; the area a patch needs can. Per candidate kind (synth: optimised; feature:
disguised; natural) and per model (bare, and each defended one), the candidate of that kind chosen
on selection under the headline protocol is counted on the confirmation images at every area of a
log-spaced grid down to 1 % of the image (Brown et al. 2017 evaluated 1-10 % in 1 % steps), under
the headline protocol only, all areas and candidates on one table of trials (common random numbers).

- area: the smallest grid area whose success rate reaches 50 % (None: none on the grid does);
- interval (low, high]: low is the grid area just below the first one whose Wilson 95 % interval
  reaches up to 50 % (every smaller area surely falls short; None: not even the smallest area on
  the grid is surely short), high the first area whose interval lies at or above 50 % (None:
  beyond the grid). Between grid areas nothing was measured, so the area needed lies above low,
  up to high.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from ..generators.registry import generated_kinds
from ..patches.candidate import Candidate
from .rows import Clean, count_patches
from .trials import ImageTrials, TrialSettings

AREA_GRID = (0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.10, 0.15, 0.25, 0.40)
HALF = 0.5
NO_DEFENCE = "none"


def smallest_area(grid: Sequence[dict[str, Any]], level: float = HALF) -> dict[str, Any]:
    """{area, ci: [low, high]} from per-area rows {size, rate, ci} (see the module docstring)."""
    rows = sorted(grid, key=lambda r: r["size"])

    def first(ok) -> int | None:
        return next((i for i, r in enumerate(rows) if ok(r)), None)

    def size(i: int | None) -> float | None:
        return None if i is None or i < 0 else rows[i]["size"]

    may = first(lambda r: r["ci"][1] >= level)
    below = len(rows) - 1 if may is None else may - 1  # every area up to here surely falls short
    return {"area": size(first(lambda r: r["rate"] >= level)),
            "ci": [size(below), size(first(lambda r: r["ci"][0] >= level))]}


def chosen_of_kind(summary: Sequence[dict[str, Any]], kind: str, protocol: str, defense: str | None = None) -> str | None:
    """The entry of `kind` with the best SELECTION rate under `protocol` (ties: the smaller patch),
    bare (defense None) or through `defense`; None when no entry of that kind was counted."""
    def selection(entry: dict[str, Any]) -> dict[str, Any] | None:
        where = entry if defense is None else (entry.get("defended") or {}).get(defense) or {}
        return (where.get("selection") or {}).get(protocol)

    rated = [(e["name"], s) for e in summary if e["kind"] == kind and (s := selection(e)) is not None]
    best = max(rated, key=lambda t: (t[1]["rate"], -(t[1].get("size") or 0)), default=None)
    return None if best is None else best[0]


def grid_trials(classifier: Any, images: torch.Tensor, target: int, settings: TrialSettings, protocol: str,
                generator: torch.Generator, grid: Sequence[float] = AREA_GRID) -> ImageTrials:
    """The trials of every `grid` area under `protocol` ('random' or 'physical', with `settings`'
    placements per image, rotation and physical ranges) on `images`, drawn from `generator`; laid out
    once, then run bare and through each defence (`ImageTrials.through`)."""
    on_grid = replace(settings, sizes=tuple(grid), protocols=(protocol,))
    return ImageTrials.lay_out(classifier, images, target, on_grid, generator, generator)


def area50(trials: ImageTrials, candidates: Sequence[Candidate], summary: Sequence[dict[str, Any]], clean: Clean,
           protocol: str, counted: torch.Tensor | None = None, defense: str | None = None,
           ) -> tuple[list[dict], list[dict]]:
    """(results rows, area50 rows) of each kind's chosen candidate on `trials` (`grid_trials`, through the
    defended model for `defense`); clean: the counted images' clean pass; counted: a mask of the trials'
    images that count (a defended model's). An area50 row: {kind, defense, candidate, protocol, area, ci,
    grid: [{size, rate, ci, n, successes}]}."""
    chosen = {kind: chosen_of_kind(summary, kind, protocol, defense) for kind in generated_kinds()}
    by_name = {c.name: c for c in candidates}
    picked = [by_name[name] for name in dict.fromkeys(n for n in chosen.values() if n is not None)]
    if not picked:
        return [], []
    rows = count_patches(trials, picked, clean, counted=counted)
    spec = NO_DEFENCE if defense is None else defense
    out = []
    for kind, name in chosen.items():
        if name is None:
            continue
        mine = [{"size": r["size"], "rate": r["success_rate"], "ci": [r["ci_low"], r["ci_high"]], "n": r["n"],
                 "successes": r["successes"]} for r in rows if r["candidate"] == name]
        out.append({"kind": kind, "defense": spec, "candidate": name, "protocol": protocol, **smallest_area(mine),
                    "grid": mine})
    for r in rows:
        r["defense"] = spec
    return rows, out
