"""Trials: every (image, area, center, angle) a patch is measured at, run in batches.

- static / dynamic: one trial per size x named placement x image (Carter et al.
  2019's fixed and best-placement protocols share this grid);
- random: R random placements and rotations per size x image (Brown et al. 2017,
  "Adversarial Patch"), drawn once per image set and shared by all patches
  (common random numbers);
- physical: R random placements per size x image, each pasted through its own
  print-and-camera draw (`patchlab.patches.physical`), drawn once per image set
  from a generator of its own and shared by all patches.

A patch's trials form one flat table pushed through `apply_patch` + the model in
chunks of `batch_size`, so all placements of a size share forward passes and
there is no per-image loop. Where the network allows it (see
`patchlab.patches.region_forward`), the static grid goes through `paste_forward`
instead: one setting per batch, only the cells the patch changes recomputed,
with the same outcomes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..patches import apply as apply_mod
from ..patches.apply import random_centers
from ..patches.physical import PhysicalDraw, PhysicalRanges, apply_physical, sample_physical
from ..patches.region_forward import PasteForward, paste_forward
from ..protocols import PHYSICAL

Outcomes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # top-1, target in top-5, p(target); each (S,P,n)


@dataclass(frozen=True)
class TrialSettings:
    """The evaluation grid: sizes (fractions of the image area), named positions (static and
    dynamic), protocols, random placements per size and image with their largest rotation,
    the images per forward pass, and the ranges of the physical protocol's draws."""

    sizes: tuple[float, ...]
    positions: tuple[str, ...]
    protocols: tuple[str, ...]
    random_placements: int
    rotation_deg: float
    batch_size: int
    physical: PhysicalRanges = PhysicalRanges()

    @property
    def on_grid(self) -> bool:
        """Whether the static grid is measured (the static and dynamic protocols read it)."""
        return bool({"static", "dynamic"} & set(self.protocols))

    def per_image(self) -> int:
        """Trials of one patch on one image."""
        static = len(self.sizes) * len(self.positions) if self.on_grid else 0
        drawn = sum(p in self.protocols for p in ("random", PHYSICAL))
        return static + drawn * len(self.sizes) * self.random_placements

    def record(self, split: str) -> dict[str, Any]:
        """The settings as the run records them (with how the images were split; the physical ranges
        only where the physical protocol is measured)."""
        out = {"sizes": list(self.sizes), "positions": list(self.positions), "protocols": list(self.protocols),
               "random_placements": self.random_placements, "rotation_deg": self.rotation_deg,
               "batch_size": self.batch_size, "split": split}
        return out | ({"physical_ranges": self.physical.as_dict()} if PHYSICAL in self.protocols else {})


@dataclass
class Trials:
    """Flat trial table: image index, area, center, angle, plus its block shape; a physical table
    also holds one print-and-camera draw per trial (its angle is the draw's)."""

    idx: torch.Tensor
    area: torch.Tensor
    centers: torch.Tensor
    angle: torch.Tensor
    shape: tuple[int, int, int]  # (sizes, placements, images)
    physical: PhysicalDraw | None = None

    def paste(self, images: torch.Tensor, patch: torch.Tensor, rows: slice) -> torch.Tensor:
        """The patched images of trials `rows`: plain compositing, or through their physical draws."""
        x = images[self.idx[rows]]
        if self.physical is not None:
            return apply_physical(x, patch, self.physical.take(rows), self.area[rows], self.centers[rows])
        return apply_mod.apply_patch(x, patch, self.area[rows], self.centers[rows], self.angle[rows])


def static_trials(n: int, sizes: Sequence[float], positions: Sequence[str], hw, device) -> Trials:
    """Every size x position x image, unrotated."""
    idx, area, centers = apply_mod.placement_grid(n, sizes, positions, hw, device)
    return Trials(idx, area, centers, torch.zeros_like(area), (len(sizes), len(positions), n))


def random_trials(n: int, sizes: Sequence[float], reps: int, rotation_deg: float, hw, device,
                  generator: torch.Generator) -> Trials:
    """`reps` uniform centers and rotations in [-rotation_deg, rotation_deg] per size x image."""
    area = torch.tensor(sizes, dtype=torch.float32, device=device).repeat_interleave(reps * n)
    idx = torch.arange(n, device=device).repeat(len(sizes) * reps)
    centers = random_centers(area, hw, generator)
    u = torch.rand(area.shape[0], generator=generator, device=generator.device).to(device)
    angle = (u * 2 - 1) * math.radians(rotation_deg)
    return Trials(idx, area, centers, angle, (len(sizes), reps, n))


def physical_trials(n: int, sizes: Sequence[float], reps: int, ranges: PhysicalRanges, hw, device,
                    generator: torch.Generator) -> Trials:
    """`reps` uniform centers per size x image, each with a physical draw (`sample_physical`) from
    `generator` (a CPU generator; the centers first, then the draws)."""
    area = torch.tensor(sizes, dtype=torch.float32, device=device).repeat_interleave(reps * n)
    idx = torch.arange(n, device=device).repeat(len(sizes) * reps)
    centers = random_centers(area, hw, generator)
    draw = sample_physical(area.shape[0], ranges, generator)
    return Trials(idx, area, centers, draw.angle.to(device), (len(sizes), reps, n), draw)


def trial_outcomes(logits: torch.Tensor, target: int, k: int) -> Outcomes:
    """Per trial: top-1 class, whether the target is in the top k, and p(target)."""
    return logits.argmax(-1), (logits.topk(k, dim=-1).indices == target).any(-1), logits.softmax(-1)[:, target]


@dataclass(frozen=True)
class TrialOutcomes:
    """A patch's outcomes on each table measured (None where a table is not): the static grid
    (static and dynamic read it), the random and the physical trials."""

    static: Outcomes | None = None
    random: Outcomes | None = None
    physical: Outcomes | None = None

    def images(self, keep: torch.Tensor) -> TrialOutcomes:
        """The outcomes of the images `keep` (a boolean mask over the last axis) only."""
        def cut(o: Outcomes | None) -> Outcomes | None:
            return None if o is None else tuple(t[..., keep] for t in o)

        return TrialOutcomes(cut(self.static), cut(self.random), cut(self.physical))


@dataclass
class ImageTrials:
    """The trials of one image set (the images the model classifies as the source when clean),
    laid out once and run for every patch."""

    classifier: Any
    images: torch.Tensor
    target: int
    settings: TrialSettings
    static: Trials | None
    random: Trials | None
    fast: PasteForward | None
    physical: Trials | None = None

    @classmethod
    def lay_out(cls, classifier, images: torch.Tensor, target: int, settings: TrialSettings,
                generator: torch.Generator, physical_generator: torch.Generator | None = None) -> "ImageTrials":
        """The static grid (when static or dynamic is measured), the random trials drawn from
        `generator` (when random is), the physical trials from `physical_generator` (when physical
        is; its own generator, so measuring it changes no other draw), and the incremental forward
        where every position is named and the classifier is not behind a defence."""
        n, hw, dev = len(images), tuple(images.shape[-2:]), classifier.device
        st = static_trials(n, settings.sizes, settings.positions, hw, dev) if settings.on_grid else None
        rt = (random_trials(n, settings.sizes, settings.random_placements, settings.rotation_deg, hw, dev, generator)
              if "random" in settings.protocols else None)
        pt = None
        if PHYSICAL in settings.protocols:
            if physical_generator is None:
                raise ValueError("the physical protocol needs a physical_generator")
            pt = physical_trials(n, settings.sizes, settings.random_placements, settings.physical, hw, dev,
                                 physical_generator)
        named = st is not None and all(p in apply_mod.POSITIONS for p in settings.positions)  # not 'random'
        bare = not getattr(classifier, "is_defended", False)
        fast = paste_forward(classifier, images, batch_size=settings.batch_size) if named and bare else None
        return cls(classifier, images, target, settings, st, rt, fast, pt)

    def through(self, classifier, protocols: Sequence[str]) -> "ImageTrials":
        """The same trials (same images, placements and draws) run through another classifier (a
        defended one), for `protocols` only; the incremental forward steps aside."""
        keep = tuple(p for p in self.settings.protocols if p in protocols)
        grid = bool({"static", "dynamic"} & set(keep))
        return ImageTrials(classifier, self.images, self.target, replace(self.settings, protocols=keep),
                           self.static if grid else None, self.random if "random" in keep else None, None,
                           self.physical if PHYSICAL in keep else None)

    def run(self, patch: torch.Tensor, progress=None) -> TrialOutcomes:
        """The patch's outcomes on every table laid out."""
        if self.fast is not None:
            s_out = self._run_pasted(patch, progress)
        else:
            s_out = self._run_table(patch, self.static, progress) if self.static is not None else None
        r_out = self._run_table(patch, self.random, progress) if self.random is not None else None
        p_out = self._run_table(patch, self.physical, progress) if self.physical is not None else None
        return TrialOutcomes(s_out, r_out, p_out)

    @torch.no_grad()
    def _run_table(self, patch: torch.Tensor, trials: Trials, progress=None) -> Outcomes:
        """top-1 class, target-in-top-5 and p(target) for every trial, shaped (S,P,n)."""
        classifier, batch_size = self.classifier, self.settings.batch_size
        m = trials.idx.shape[0]
        dev = classifier.device
        top1 = torch.empty(m, dtype=torch.long, device=dev)
        top5 = torch.empty(m, dtype=torch.bool, device=dev)
        p_t = torch.empty(m, dtype=torch.float32, device=dev)
        k = min(5, classifier.num_classes)
        patch = patch.to(dev)
        for s in range(0, m, batch_size):
            sl = slice(s, min(m, s + batch_size))
            x = trials.paste(self.images, patch, sl)
            top1[sl], top5[sl], p_t[sl] = trial_outcomes(classifier(x).float(), self.target, k)
            if progress is not None:
                progress.update(sl.stop - sl.start)
        return tuple(t.view(trials.shape) for t in (top1, top5, p_t))

    @torch.no_grad()
    def _run_pasted(self, patch: torch.Tensor, progress=None) -> Outcomes:
        """`_run_table` for the static grid through `region_forward` (one setting per batch, only
        the cells the patch changes recomputed): the same (S,P,n) top-1, top-5 and p(target)."""
        fast, cfg, n = self.fast, self.settings, len(self.images)
        sizes, positions, batch_size = cfg.sizes, cfg.positions, cfg.batch_size
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
                    top1[i, j, rows], top5[i, j, rows], p_t[i, j, rows] = trial_outcomes(logits, self.target, k)
                    if progress is not None:
                        progress.update(len(rows))
        return top1, top5, p_t
