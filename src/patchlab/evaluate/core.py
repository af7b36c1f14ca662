"""Attack success of patches on held-out source images, under three protocols.

- static: one size and placement for all images (one row per size x position).
- dynamic: the best placement per image (Activation Atlas, Carter et al. 2019):
  an image counts when any position at that size flips it (one row per size),
  and overall when any position x size does (the row with size NaN).
- random: R random placements and rotations per image (Brown et al. 2017,
  "Adversarial Patch"); the rate is the mean over all R x n trials and its
  interval treats the n images (not the R x n correlated trials) as the sample.

Denominator: images the model classifies as the source when clean (source
None: images not already classified as the target). Success: top-1 == target.
Every trial of a candidate is one row of a flat (image, area, center, angle)
table pushed through `apply_patch` + the model in chunks of `batch_size`, so
all placements of a size share forward passes and there is no per-image loop.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..devices import generator as make_generator
from ..errors import UserError
from ..patches import apply as apply_mod
from ..patches.apply import CORNERS, random_centers
from ..patches.candidate import Candidate
from ..stats import wilson_interval
from .summary import summarize

PROTOCOLS = ("static", "dynamic", "random")
DEFAULT_SIZES = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40)
DEFAULT_POSITIONS = tuple(CORNERS) + ("center",)
RESULT_COLUMNS = [
    "candidate", "kind", "protocol", "size", "placement", "n", "trials", "successes", "success_rate", "ci_low",
    "ci_high", "untargeted_rate", "top5_rate", "p_target_before", "p_target_after",
]


@dataclass
class Evaluation:
    """What `evaluate` measured. `results`: one row per candidate x size x
    placement x protocol (columns RESULT_COLUMNS; size is a fraction of the image
    area, NaN for dynamic over all sizes). `summary`: one dict per candidate and
    control (see `summarize`). `examples`: before/after images of the best
    candidate with the model's top-3."""

    results: pd.DataFrame
    summary: list[dict[str, Any]]
    source: int | None
    target: int
    source_name: str
    target_name: str
    n_images: int
    denominator: int
    candidates: list[Candidate]
    controls: list[Candidate]
    config: dict[str, Any]
    timings: dict[str, float]
    image_names: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    primary_protocol: str = "random"

    def best(self, disguised: bool = False) -> dict[str, Any] | None:
        """Summary of the best non-control candidate by the primary protocol.

        disguised: only natural or donor-disguised patches (those with a donor
        class) whose patch alone does not read as the target: the automated form
        of the Activation Atlas article's train / noodles / baseball patches. A
        synthesized patch that happens to read as something else does not count."""
        rows = [s for s in self.summary if s["kind"] != "control"]
        if disguised:
            rows = [s for s in rows if s["kind"] in ("natural", "feature") and s.get("donor") is not None
                    and s["reads_as"]["index"] != self.target]
        rows = [s for s in rows if s.get(self.primary_protocol)]
        return max(rows, key=lambda s: s[self.primary_protocol]["rate"], default=None)


@dataclass
class _Trials:
    """Flat trial table: image index, area, center, angle, plus its block shape."""

    idx: torch.Tensor
    area: torch.Tensor
    centers: torch.Tensor
    angle: torch.Tensor
    shape: tuple[int, int, int]  # (sizes, placements, images)


def _static_trials(n: int, sizes, positions, hw, device) -> _Trials:
    idx, area, centers = apply_mod.placement_grid(n, sizes, positions, hw, device)
    return _Trials(idx, area, centers, torch.zeros_like(area), (len(sizes), len(positions), n))


def _random_trials(n: int, sizes, reps: int, rotation_deg: float, hw, device, generator) -> _Trials:
    area = torch.tensor(sizes, dtype=torch.float32, device=device).repeat_interleave(reps * n)
    idx = torch.arange(n, device=device).repeat(len(sizes) * reps)
    centers = random_centers(area, hw, generator)
    u = torch.rand(area.shape[0], generator=generator, device=generator.device).to(device)
    angle = (u * 2 - 1) * math.radians(rotation_deg)
    return _Trials(idx, area, centers, angle, (len(sizes), reps, n))


@torch.no_grad()
def _run_trials(classifier, images, patch, trials: _Trials, target: int, batch_size: int, progress=None):
    """top-1 class, target-in-top-5 and p(target) for every trial, shaped (S,P,n)."""
    m = trials.idx.shape[0]
    dev = classifier.device
    top1 = torch.empty(m, dtype=torch.long, device=dev)
    top5 = torch.empty(m, dtype=torch.bool, device=dev)
    p_t = torch.empty(m, dtype=torch.float32, device=dev)
    k = min(5, classifier.num_classes)
    patch = patch.to(dev)
    for s in range(0, m, batch_size):
        sl = slice(s, min(m, s + batch_size))
        x = apply_mod.apply_patch(images[trials.idx[sl]], patch, trials.area[sl], trials.centers[sl], trials.angle[sl])
        logits = classifier(x).float()
        top1[sl] = logits.argmax(-1)
        top5[sl] = (logits.topk(k, dim=-1).indices == target).any(-1)
        p_t[sl] = logits.softmax(-1)[:, target]
        if progress is not None:
            progress.update(sl.stop - sl.start)
    return tuple(t.view(trials.shape) for t in (top1, top5, p_t))


def _row(cand: Candidate, protocol: str, size: float, placement: str, succ, untargeted, top5, p_after,
         p_before: float, per_image: int) -> dict[str, Any]:
    """One results row; succ etc. are bool/float tensors of trials (any shape)."""
    trials = int(succ.numel())
    hits = int(succ.sum())
    rate = hits / trials if trials else float("nan")
    lo, hi = wilson_interval(rate * per_image, per_image)
    return {
        "candidate": cand.name, "kind": cand.kind, "protocol": protocol, "size": size, "placement": placement,
        "n": per_image, "trials": trials, "successes": hits, "success_rate": rate, "ci_low": lo, "ci_high": hi,
        "untargeted_rate": float(untargeted.float().mean()) if trials else float("nan"),
        "top5_rate": float(top5.float().mean()) if trials else float("nan"),
        "p_target_before": p_before, "p_target_after": float(p_after.float().mean()) if trials else float("nan"),
    }


def _rows_for(cand, protocols, sizes, positions, static_out, random_out, left, p_before, n) -> list[dict]:
    rows: list[dict] = []
    if static_out is not None:
        top1, top5, p_t = static_out
        succ, unt = top1 == left["target"], left["untargeted"](top1)
        if "static" in protocols:
            for i, a in enumerate(sizes):
                for j, pos in enumerate(positions):
                    rows.append(_row(cand, "static", a, pos, succ[i, j], unt[i, j], top5[i, j], p_t[i, j], p_before, n))
        if "dynamic" in protocols:
            best = f"best of {len(positions)}"
            for i, a in enumerate(sizes):
                rows.append(_row(cand, "dynamic", a, best, succ[i].any(0), unt[i].any(0), top5[i].any(0),
                                 p_t[i].amax(0), p_before, n))
            rows.append(_row(cand, "dynamic", float("nan"), f"best of {len(positions)}x{len(sizes)}",
                             succ.flatten(0, 1).any(0), unt.flatten(0, 1).any(0), top5.flatten(0, 1).any(0),
                             p_t.flatten(0, 1).amax(0), p_before, n))
    if random_out is not None:
        top1, top5, p_t = random_out
        succ, unt = top1 == left["target"], left["untargeted"](top1)
        for i, a in enumerate(sizes):
            rows.append(_row(cand, "random", a, "random", succ[i], unt[i], top5[i], p_t[i], p_before, n))
    return rows


@torch.no_grad()
def reads_as(classifier, patch: torch.Tensor, target: int, source: int | None = None) -> dict[str, Any]:
    """What the model calls the patch on its own: top-1 index, name and prob, plus p(target), p(source)."""
    probs = classifier(patch[None].to(classifier.device).float()).softmax(-1)[0]
    i = int(probs.argmax())
    out = {"index": i, "name": classifier.classes.label(i), "prob": float(probs[i]), "p_target": float(probs[target])}
    if source is not None:
        out["p_source"] = float(probs[source])
    return out


@torch.no_grad()
def _examples(classifier, images, names, cand, summary_row, n_examples: int, target: int) -> list[dict]:
    """Before/after images of one candidate at its best static setting, with top-3."""
    best = summary_row.get("static") or {}
    area, pos = best.get("size", 0.25), best.get("placement", "top-left")
    x = images[:n_examples]
    a = torch.full((len(x),), float(area), device=x.device)
    after = apply_mod.apply_patch(x, cand.patch.to(x.device), a, apply_mod.centers_for(pos, a, x.shape[-2:]))
    out = []
    probs = [classifier(t).softmax(-1) for t in (x, after)]
    for i in range(len(x)):
        tops = []
        for p in probs:
            v, ix = p[i].topk(min(3, classifier.num_classes))
            tops.append([{"index": int(j), "name": classifier.classes.label(int(j)), "prob": float(q)} for q, j in zip(v, ix)])
        out.append({
            "candidate": cand.name, "size": area, "placement": pos, "image": names[i] if i < len(names) else f"image {i}",
            "before": x[i].cpu(), "after": after[i].cpu(), "top3_before": tops[0], "top3_after": tops[1],
            "success": tops[1][0]["index"] == target,
        })
    return out


def evaluate(
    classifier,
    candidates: Sequence[Candidate],
    images: torch.Tensor,
    source: int | None,
    target: int,
    sizes: Sequence[float] = DEFAULT_SIZES,
    positions: Sequence[str] = DEFAULT_POSITIONS,
    protocols: Sequence[str] = PROTOCOLS,
    random_placements: int = 8,
    rotation_deg: float = 20.0,
    controls: Sequence[Candidate] | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 128,
    progress: bool = False,
    image_names: Sequence[str] | None = None,
    n_examples: int = 4,
) -> Evaluation:
    """Measure every candidate and control on held-out images (N,3,H,W) in [0,1].

    sizes: fractions of the image area. positions: named placements for static
    and dynamic (see patchlab.patches.apply.POSITIONS). Random placements are
    drawn once and shared by all candidates and controls (common random numbers,
    so differences are not placement luck). Controls: pass `make_controls(...)`;
    None evaluates no controls (lift is then absent). Returns an Evaluation.
    """
    t0 = time.perf_counter()
    protocols = tuple(protocols)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise UserError(f"unknown protocol {', '.join(bad) or '(none)'}; use {', '.join(PROTOCOLS)}")
    if not sizes or any(not 0 < a < 1 for a in sizes):
        raise UserError("patch sizes must be fractions of the image area between 0 and 1 (e.g. 5 to 40 %)")
    controls = list(controls or [])
    names = [c.name for c in list(candidates) + controls]
    if len(set(names)) != len(names):
        raise UserError("candidate and control names must be unique: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    dev = classifier.device
    gen = generator if generator is not None else make_generator(0, dev)
    images = images.to(dev).float()
    image_names = list(image_names or [])

    # clean pass: the denominator
    clean = classifier.logits(images, batch_size).float()
    clean_top1 = clean.argmax(-1)
    keep = clean_top1 == source if source is not None else clean_top1 != target
    n = int(keep.sum())
    src_label = classifier.classes.label(source) if source is not None else "any"
    if n == 0:
        what = f"as {src_label!r}" if source is not None else f"as anything but {classifier.classes.label(target)!r}"
        raise UserError(f"none of the {len(images)} held-out images is classified {what} when clean; nothing to measure")
    kept = images[keep]
    kept_names = [nm for nm, k in zip(image_names, keep.tolist()) if k] if image_names else []
    p_before = float(clean[keep].softmax(-1)[:, target].mean())
    clean_kept = clean_top1[keep]
    left = {
        "target": target,
        "untargeted": (lambda t1: t1 != source) if source is not None else (lambda t1: t1 != clean_kept.view(1, 1, -1)),
    }
    t_clean = time.perf_counter() - t0

    hw = tuple(kept.shape[-2:])
    need_static = "static" in protocols or "dynamic" in protocols
    static_tr = _static_trials(n, sizes, positions, hw, dev) if need_static else None
    random_tr = (_random_trials(n, sizes, random_placements, rotation_deg, hw, dev, gen) if "random" in protocols else None)
    per_cand = sum(t.idx.shape[0] for t in (static_tr, random_tr) if t is not None)
    everyone = list(candidates) + controls
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=per_cand * len(everyone), unit="img", desc="evaluate")
    rows: list[dict] = []
    t1 = time.perf_counter()
    try:
        for cand in everyone:
            s_out = _run_trials(classifier, kept, cand.patch, static_tr, target, batch_size, bar) if static_tr else None
            r_out = _run_trials(classifier, kept, cand.patch, random_tr, target, batch_size, bar) if random_tr else None
            rows += _rows_for(cand, protocols, sizes, positions, s_out, r_out, left, p_before, n)
    finally:
        if bar is not None:
            bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_eval = time.perf_counter() - t1
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    primary = next(p for p in ("random", "static", "dynamic") if p in protocols)
    looks = {c.name: reads_as(classifier, c.patch, target, source) for c in everyone}
    summary = summarize(results, everyone, looks, primary)
    ev = Evaluation(
        results=results, summary=summary, source=source, target=target, source_name=src_label,
        target_name=classifier.classes.label(target), n_images=len(images), denominator=n,
        candidates=list(candidates), controls=controls,
        config={
            "sizes": list(sizes), "positions": list(positions), "protocols": list(protocols),
            "random_placements": random_placements, "rotation_deg": rotation_deg, "batch_size": batch_size,
        },
        timings={}, image_names=image_names, primary_protocol=primary,
    )
    best = ev.best()
    if best is not None and n_examples:
        cand = next(c for c in candidates if c.name == best["name"])
        ev.examples = _examples(classifier, kept, kept_names, cand, best, n_examples, target)
    forwards = per_cand * len(everyone)
    ev.timings = {
        "clean_s": round(t_clean, 4), "eval_s": round(t_eval, 4), "total_s": round(time.perf_counter() - t0, 4),
        "patched_images": forwards, "images_per_s": round(forwards / t_eval, 2) if t_eval > 0 else None,
    }
    return ev
