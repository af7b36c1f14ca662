"""Attack success of patches on held-out source images, under three protocols.

- static: one size and placement for all images (one row per size x position).
- dynamic: the best placement per image (Activation Atlas, Carter et al. 2019):
  an image counts when any position at that size flips it (one row per size),
  and overall when any position x size does (the row with size NaN).
- random: R random placements and rotations per image (Brown et al. 2017,
  "Adversarial Patch"); the rate is the mean over all R x n trials and its
  interval treats the n images (not the R x n correlated trials) as the sample.

Every candidate is measured on two disjoint image sets (see `patchlab.pairdata`):
`selection`, where sizes, placements and the best candidate are chosen, and
`confirmation`, where the headline numbers are counted (see `summary`).
Denominator: images the model classifies as the source when clean (source
None: images not already classified as the target). Success: top-1 == target.
Every trial of a candidate is one row of a flat (image, area, center, angle)
table pushed through `apply_patch` + the model in chunks of `batch_size`, so
all placements of a size share forward passes and there is no per-image loop.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch

from ..devices import stage_generator
from ..errors import UserError
from ..generators.registry import disguisable_kinds
from ..patches import apply as apply_mod
from ..patches.apply import CORNERS, random_centers
from ..patches.candidate import Candidate, is_generated
from ..patches.region_forward import paste_forward
from ..protocols import DEFAULT_SIZES, PRIMARY_PROTOCOL, PROTOCOLS, primary_of
from ..stats import wilson_interval
from .summary import CONFIRMATION, SELECTION, summarize

DEFAULT_POSITIONS = tuple(CORNERS) + ("center",)
SPLIT_NAMES = (SELECTION, CONFIRMATION)
RESULT_COLUMNS = [
    "split", "candidate", "kind", "protocol", "size", "placement", "n", "trials", "successes", "success_rate", "ci_low",
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
    n_images: int  # confirmation images given
    denominator: int  # confirmation images counted (classified as the source when clean)
    candidates: list[Candidate]
    controls: list[Candidate]
    config: dict[str, Any]
    timings: dict[str, float]
    image_names: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    primary_protocol: str = PRIMARY_PROTOCOL
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # per split: n_images, denominator, files

    def best(self, disguised: bool = False) -> dict[str, Any] | None:
        """Summary of the best generated candidate, chosen by its SELECTION rate under
        the primary protocol (its headline is then the confirmation count).

        disguised: only candidates of a disguisable generator (`patchlab.generators`: today
        natural and donor-disguised feature patches) that carry a donor class and whose patch
        alone does not read as the target: the automated form of the Activation Atlas
        article's train / noodles / baseball patches. A synthesized patch that happens to read
        as something else does not count."""
        p = self.primary_protocol
        rows = [s for s in self.summary if is_generated(s["kind"]) and s["selection"].get(p)]
        if disguised:
            kinds = disguisable_kinds()
            rows = [s for s in rows if s["kind"] in kinds and s.get("donor") is not None
                    and s["reads_as"]["index"] != self.target]
        return max(rows, key=lambda s: (s["selection"][p]["rate"], -(s["selection"][p].get("size") or 0)), default=None)


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


def _trial_outcomes(logits: torch.Tensor, target: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per trial: top-1 class, whether the target is in the top k, and p(target)."""
    return logits.argmax(-1), (logits.topk(k, dim=-1).indices == target).any(-1), logits.softmax(-1)[:, target]


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
        top1[sl], top5[sl], p_t[sl] = _trial_outcomes(classifier(x).float(), target, k)
        if progress is not None:
            progress.update(sl.stop - sl.start)
    return tuple(t.view(trials.shape) for t in (top1, top5, p_t))


@torch.no_grad()
def _run_static(fast, patch, sizes, positions, n: int, target: int, batch_size: int, progress=None):
    """`_run_trials` for the static grid through `region_forward` (one setting per batch, only
    the cells the patch changes recomputed): the same (S,P,n) top-1, top-5 and p(target)."""
    dev = fast.images.device
    top1 = torch.empty(len(sizes), len(positions), n, dtype=torch.long, device=dev)
    top5 = torch.empty(top1.shape, dtype=torch.bool, device=dev)
    p_t = torch.empty(top1.shape, dtype=torch.float32, device=dev)
    k = min(5, fast.clf.num_classes)
    patch = patch.to(dev)
    for i, area in enumerate(sizes):
        for j, pos in enumerate(positions):
            for s in range(0, n, batch_size):
                rows = torch.arange(s, min(n, s + batch_size), device=dev)
                logits = fast.logits(rows, patch.expand(len(rows), *patch.shape[-3:]), float(area), pos).float()
                top1[i, j, rows], top5[i, j, rows], p_t[i, j, rows] = _trial_outcomes(logits, target, k)
                if progress is not None:
                    progress.update(len(rows))
    return top1, top5, p_t


def _row(cand: Candidate, protocol: str, size: float, placement: str, succ, untargeted, top5, p_after,
         p_before: float, per_image: int) -> dict[str, Any]:
    """One results row; succ etc. are bool/float tensors of trials (any shape)."""
    trials = int(succ.numel())
    hits = int(succ.sum())
    rate = hits / trials if trials else float("nan")
    lo, hi = wilson_interval(rate * per_image, per_image)
    return {
        "split": "", "candidate": cand.name, "kind": cand.kind, "protocol": protocol, "size": size, "placement": placement,
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


@dataclass
class _Measured:
    """One image set pushed through every patch: its results rows and its counts."""

    rows: list[dict]
    n_images: int
    denominator: int
    kept: torch.Tensor
    kept_names: list[str]


def _check(protocols, sizes, everyone) -> None:
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise UserError(f"unknown protocol {', '.join(bad) or '(none)'}; use {', '.join(PROTOCOLS)}")
    if not sizes or any(not 0 < a < 1 for a in sizes):
        raise UserError("patch sizes must be fractions of the image area between 0 and 1 (e.g. 5 to 40 %)")
    names = [c.name for c in everyone]
    if len(set(names)) != len(names):
        raise UserError("candidate and control names must be unique: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))


def _measure(classifier, everyone, images, names, source, target, cfg: dict, gen, bar, split: str) -> _Measured:
    """Clean pass (the denominator), then every patch x trial on the kept images."""
    dev = classifier.device
    images = images.to(dev).float()
    clean = classifier.logits(images, cfg["batch_size"]).float()
    clean_top1 = clean.argmax(-1)
    keep = clean_top1 == source if source is not None else clean_top1 != target
    n = int(keep.sum())
    if n == 0:
        what = (f"as {classifier.classes.label(source)!r}" if source is not None
                else f"as anything but {classifier.classes.label(target)!r}")
        raise UserError(f"none of the {len(images)} {split} images is classified {what} when clean; nothing to measure")
    kept = images[keep]
    kept_names = [nm for nm, k in zip(names, keep.tolist()) if k] if names else []
    p_before = float(clean[keep].softmax(-1)[:, target].mean())
    clean_kept = clean_top1[keep]
    left = {"target": target,
            "untargeted": (lambda t1: t1 != source) if source is not None else (lambda t1: t1 != clean_kept.view(1, 1, -1))}
    hw = tuple(kept.shape[-2:])
    protocols, sizes, positions = cfg["protocols"], cfg["sizes"], cfg["positions"]
    static_tr = _static_trials(n, sizes, positions, hw, dev) if {"static", "dynamic"} & set(protocols) else None
    random_tr = (_random_trials(n, sizes, cfg["random_placements"], cfg["rotation_deg"], hw, dev, gen)
                 if "random" in protocols else None)
    named = static_tr is not None and all(p in apply_mod.POSITIONS for p in positions)  # not 'random'
    fast = paste_forward(classifier, kept, batch_size=cfg["batch_size"]) if named else None
    rows: list[dict] = []
    for cand in everyone:
        per_patch = []
        for patch in (cand.members if cand.members is not None else cand.patch[None]):
            if fast is not None:
                s_out = _run_static(fast, patch, sizes, positions, n, target, cfg["batch_size"], bar)
            else:
                s_out = _run_trials(classifier, kept, patch, static_tr, target, cfg["batch_size"], bar) if static_tr else None
            r_out = _run_trials(classifier, kept, patch, random_tr, target, cfg["batch_size"], bar) if random_tr else None
            per_patch.append(_rows_for(cand, protocols, sizes, positions, s_out, r_out, left, p_before, n))
        rows += _median_rows(per_patch)
    for r in rows:
        r["split"] = split
    return _Measured(rows, len(images), n, kept, kept_names)


def _median_rows(per_patch: list[list[dict]]) -> list[dict]:
    """Row by row, the row of the patch with the median success rate (lower median: a real row)."""
    if len(per_patch) == 1:
        return per_patch[0]
    return [sorted(rows, key=lambda r: r["success_rate"])[(len(rows) - 1) // 2] for rows in zip(*per_patch)]


def _split_inputs(images, image_names) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], bool]:
    """{selection, confirmation} images and names; a single tensor serves as both (shared=True)."""
    if isinstance(images, Mapping):
        names = image_names if isinstance(image_names, Mapping) else {}
        return ({s: images[s] for s in SPLIT_NAMES}, {s: list(names.get(s) or []) for s in SPLIT_NAMES}, False)
    names = list(image_names or [])
    return {s: images for s in SPLIT_NAMES}, {s: names for s in SPLIT_NAMES}, True


def _trials_per_image(cfg: dict) -> int:
    static = len(cfg["sizes"]) * len(cfg["positions"]) if {"static", "dynamic"} & set(cfg["protocols"]) else 0
    rand = len(cfg["sizes"]) * cfg["random_placements"] if "random" in cfg["protocols"] else 0
    return static + rand


def evaluate(
    classifier,
    candidates: Sequence[Candidate],
    images: torch.Tensor | Mapping[str, torch.Tensor],
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
    image_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    n_examples: int = 4,
) -> Evaluation:
    """Measure every candidate, null control and reference on {"selection": (N,3,H,W),
    "confirmation": (M,3,H,W)} images in [0,1] (a single tensor is used as both, and
    the run says so: its headline is then chosen on the images that count it).

    sizes: fractions of the image area. positions: named placements for static
    and dynamic (see patchlab.patches.apply.POSITIONS). Random placements are
    drawn once per split from `generator` (a CPU generator by default) and shared
    by all patches (common random numbers). Returns an Evaluation.
    """
    t0 = time.perf_counter()
    protocols = tuple(protocols)
    everyone = list(candidates) + list(controls or [])
    _check(protocols, sizes, everyone)
    gen = generator if generator is not None else stage_generator(0, "evaluate")
    split_images, split_names, shared = _split_inputs(images, image_names)
    cfg = {"sizes": list(sizes), "positions": list(positions), "protocols": list(protocols),
           "random_placements": random_placements, "rotation_deg": rotation_deg, "batch_size": batch_size,
           "split": "none: selection = confirmation" if shared else "selection / confirmation"}
    measured_splits = SPLIT_NAMES[1:] if shared else SPLIT_NAMES
    per_image = _trials_per_image(cfg) * sum(1 if c.members is None else len(c.members) for c in everyone)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=per_image * sum(len(split_images[s]) for s in measured_splits), unit="img", desc="evaluate")
    t1 = time.perf_counter()
    try:
        measured = {s: _measure(classifier, everyone, split_images[s], split_names[s], source, target, cfg, gen, bar, s)
                    for s in measured_splits}
    finally:
        if bar is not None:
            bar.close()
    if shared:
        measured[SELECTION] = replace(measured[CONFIRMATION], rows=[dict(r, split=SELECTION) for r in measured[CONFIRMATION].rows])
    if classifier.device.type == "cuda":
        torch.cuda.synchronize(classifier.device)
    t_eval = time.perf_counter() - t1
    results = pd.DataFrame([r for s in SPLIT_NAMES for r in measured[s].rows], columns=RESULT_COLUMNS)
    primary = primary_of(protocols)
    looks = {c.name: reads_as(classifier, c.patch, target, source) for c in everyone}
    conf = measured[CONFIRMATION]
    ev = Evaluation(
        results=results, summary=summarize(results, everyone, looks, primary), source=source, target=target,
        source_name=classifier.classes.label(source) if source is not None else "any",
        target_name=classifier.classes.label(target), n_images=conf.n_images, denominator=conf.denominator,
        candidates=list(candidates), controls=list(controls or []), config=cfg, timings={},
        image_names=list(split_names[CONFIRMATION]), primary_protocol=primary,
        splits={s: {"n_images": measured[s].n_images, "denominator": measured[s].denominator,
                    "files": list(split_names[s])} for s in SPLIT_NAMES},
    )
    best = ev.best()
    if best is not None and n_examples:
        cand = next(c for c in candidates if c.name == best["name"])
        ev.examples = _examples(classifier, conf.kept, conf.kept_names, cand, best, n_examples, target)
    forwards = per_image * sum(measured[s].n_images for s in measured_splits)
    ev.timings = {
        "eval_s": round(t_eval, 4), "total_s": round(time.perf_counter() - t0, 4),
        "patched_images": forwards, "images_per_s": round(forwards / t_eval, 2) if t_eval > 0 else None,
    }
    return ev
