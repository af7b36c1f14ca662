"""What the trials of a patch come to: result rows, what the model reads the patch as,
and before/after examples.

One results row per candidate x size x placement x protocol (columns RESULT_COLUMNS):
- static: one size and placement for all images;
- dynamic: the best placement per image (Activation Atlas, Carter et al. 2019): an
  image counts when any position at that size flips it (one row per size), and
  overall when any position x size does (the row with size NaN);
- random: the mean over the R x n random trials (Brown et al. 2017); its Wilson
  interval treats the n images (not the R x n correlated trials) as the sample;
- physical: the same over R x n random placements, each through a print-and-camera draw.
Success: top-1 == target; untargeted: top-1 is no longer the source (source None:
no longer the image's clean class).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..patches import apply as apply_mod
from ..patches.candidate import Candidate
from ..protocols import PHYSICAL
from ..stats import wilson_interval
from .trials import ImageTrials, Outcomes, TrialOutcomes, TrialSettings

RESULT_COLUMNS = [
    "split", "candidate", "kind", "protocol", "size", "placement", "n", "trials", "successes", "success_rate", "ci_low",
    "ci_high", "untargeted_rate", "top5_rate", "p_target_before", "p_target_after",
]


@dataclass(frozen=True)
class Hits:
    """Per trial (any shape): success (top-1 is the target), untargeted success, target in
    the top 5, and p(target)."""

    success: torch.Tensor
    untargeted: torch.Tensor
    top5: torch.Tensor
    p_target: torch.Tensor

    def __getitem__(self, index) -> "Hits":
        return Hits(self.success[index], self.untargeted[index], self.top5[index], self.p_target[index])

    def best_placement(self) -> "Hits":
        """Per image, the best of the first axis (dynamic: any placement flips it; the highest p)."""
        return Hits(self.success.any(0), self.untargeted.any(0), self.top5.any(0), self.p_target.amax(0))

    def flatten_settings(self) -> "Hits":
        """(S,P,n) -> (S*P,n): every size x placement as one axis."""
        return Hits(*(t.flatten(0, 1) for t in (self.success, self.untargeted, self.top5, self.p_target)))


@dataclass(frozen=True)
class Clean:
    """The measured images when clean: the n counted (classified as the source, or source
    None: not as the target), their top-1 classes and mean p(target)."""

    source: int | None
    target: int
    top1: torch.Tensor  # (n,) clean top-1 of the counted images
    p_before: float
    n: int

    def hits(self, outcomes: Outcomes) -> Hits:
        """What the patched (S,P,n) top-1, top-5 and p(target) come to against the clean images."""
        top1, top5, p_t = outcomes
        untargeted = top1 != self.source if self.source is not None else top1 != self.top1.view(1, 1, -1)
        return Hits(top1 == self.target, untargeted, top5, p_t)


def _mean(t: torch.Tensor) -> float:
    return float(t.float().mean()) if t.numel() else float("nan")


def result_row(cand: Candidate, protocol: str, size: float, placement: str, hits: Hits, clean: Clean) -> dict[str, Any]:
    """One results row from the hits of its trials (any shape)."""
    trials = int(hits.success.numel())
    successes = int(hits.success.sum())
    rate = successes / trials if trials else float("nan")
    lo, hi = wilson_interval(rate * clean.n, clean.n)
    return {
        "split": "", "candidate": cand.name, "kind": cand.kind, "protocol": protocol, "size": size, "placement": placement,
        "n": clean.n, "trials": trials, "successes": successes, "success_rate": rate, "ci_low": lo, "ci_high": hi,
        "untargeted_rate": _mean(hits.untargeted), "top5_rate": _mean(hits.top5),
        "p_target_before": clean.p_before, "p_target_after": _mean(hits.p_target),
    }


def patch_rows(cand: Candidate, settings: TrialSettings, outcomes: TrialOutcomes, clean: Clean) -> list[dict]:
    """Every results row of one patch: static and dynamic from the static grid, random and physical
    from their trials."""
    protocols, sizes, positions = settings.protocols, settings.sizes, settings.positions
    rows: list[dict] = []
    if outcomes.static is not None:
        grid = clean.hits(outcomes.static)
        if "static" in protocols:
            for i, a in enumerate(sizes):
                for j, pos in enumerate(positions):
                    rows.append(result_row(cand, "static", a, pos, grid[i, j], clean))
        if "dynamic" in protocols:
            best = f"best of {len(positions)}"
            for i, a in enumerate(sizes):
                rows.append(result_row(cand, "dynamic", a, best, grid[i].best_placement(), clean))
            rows.append(result_row(cand, "dynamic", float("nan"), f"best of {len(positions)}x{len(sizes)}",
                                   grid.flatten_settings().best_placement(), clean))
    for protocol, drawn in (("random", outcomes.random), (PHYSICAL, outcomes.physical)):
        if drawn is not None:
            hits = clean.hits(drawn)
            rows += [result_row(cand, protocol, a, protocol, hits[i], clean) for i, a in enumerate(sizes)]
    return rows


def median_rows(per_patch: list[list[dict]]) -> list[dict]:
    """Row by row, the row of the patch with the median success rate (lower median: a real row)."""
    if len(per_patch) == 1:
        return per_patch[0]
    return [sorted(rows, key=lambda r: r["success_rate"])[(len(rows) - 1) // 2] for rows in zip(*per_patch)]


def count_patches(trials: ImageTrials, patches: Sequence[Candidate], clean: Clean, progress: Any = None,
                  counted: torch.Tensor | None = None) -> list[dict]:
    """The results rows of every patch (a pooled control: its median member, row by row) on `trials`.
    counted: a boolean mask of the trials' images that count (the rest are run, then left out)."""
    rows: list[dict] = []
    for cand in patches:
        per_patch = []
        for patch in (cand.members if cand.members is not None else cand.patch[None]):
            outcomes = trials.run(patch, progress)
            if counted is not None:
                outcomes = outcomes.images(counted)
            per_patch.append(patch_rows(cand, trials.settings, outcomes, clean))
        rows += median_rows(per_patch)
    return rows


@torch.no_grad()
def reads_as(classifier, patch: torch.Tensor, target: int, source: int | None = None) -> dict[str, Any]:
    """What the model calls the patch on its own: top-1 index, name and prob, plus p(target), p(source)."""
    probs = classifier(patch[None].to(classifier.device).float()).softmax(-1)[0]
    out = {**classifier.classes.top(probs[None], digits=None)[0][0], "p_target": float(probs[target])}
    if source is not None:
        out["p_source"] = float(probs[source])
    return out


@torch.no_grad()
def examples(classifier, images, names, cand, summary_row, n_examples: int, target: int) -> list[dict]:
    """Before/after images of one candidate at its best static setting, with top-3."""
    best = summary_row.get("static") or {}
    area, pos = best.get("size", 0.25), best.get("placement", "top-left")
    x = images[:n_examples]
    a = torch.full((len(x),), float(area), device=x.device)
    after = apply_mod.apply_patch(x, cand.patch.to(x.device), a, apply_mod.centers_for(pos, a, x.shape[-2:]))
    out = []
    probs = [classifier(t).softmax(-1) for t in (x, after)]
    k = min(3, classifier.num_classes)
    for i in range(len(x)):
        tops = [classifier.classes.top(p[i][None], k, digits=None)[0] for p in probs]
        out.append({
            "candidate": cand.name, "size": area, "placement": pos, "image": names[i] if i < len(names) else f"image {i}",
            "before": x[i].cpu(), "after": after[i].cpu(), "top3_before": tops[0], "top3_after": tops[1],
            "success": tops[1][0]["index"] == target,
        })
    return out
