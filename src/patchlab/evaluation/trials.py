"""Trials: every (image, area, center, angle) a patch is measured at, run in batches.

- static / dynamic: one trial per size x named placement x image (Carter et al.
  2019's fixed and best-placement protocols share this grid);
- random: R random placements and rotations per size x image (Brown et al. 2017,
  "Adversarial Patch"), drawn once per image set and shared by all patches
  (common random numbers).

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
from dataclasses import dataclass
from typing import Any

import torch

from ..patches import apply as apply_mod
from ..patches.apply import random_centers
from ..patches.region_forward import PasteForward, paste_forward

Outcomes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # top-1, target in top-5, p(target); each (S,P,n)


@dataclass(frozen=True)
class TrialSettings:
    """The evaluation grid: sizes (fractions of the image area), named positions (static and
    dynamic), protocols, random placements per size and image with their largest rotation,
    and the images per forward pass."""

    sizes: tuple[float, ...]
    positions: tuple[str, ...]
    protocols: tuple[str, ...]
    random_placements: int
    rotation_deg: float
    batch_size: int

    @property
    def on_grid(self) -> bool:
        """Whether the static grid is measured (the static and dynamic protocols read it)."""
        return bool({"static", "dynamic"} & set(self.protocols))

    def per_image(self) -> int:
        """Trials of one patch on one image."""
        static = len(self.sizes) * len(self.positions) if self.on_grid else 0
        rand = len(self.sizes) * self.random_placements if "random" in self.protocols else 0
        return static + rand

    def record(self, split: str) -> dict[str, Any]:
        """The settings as the run records them (with how the images were split)."""
        return {"sizes": list(self.sizes), "positions": list(self.positions), "protocols": list(self.protocols),
                "random_placements": self.random_placements, "rotation_deg": self.rotation_deg,
                "batch_size": self.batch_size, "split": split}


@dataclass
class Trials:
    """Flat trial table: image index, area, center, angle, plus its block shape."""

    idx: torch.Tensor
    area: torch.Tensor
    centers: torch.Tensor
    angle: torch.Tensor
    shape: tuple[int, int, int]  # (sizes, placements, images)


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


def trial_outcomes(logits: torch.Tensor, target: int, k: int) -> Outcomes:
    """Per trial: top-1 class, whether the target is in the top k, and p(target)."""
    return logits.argmax(-1), (logits.topk(k, dim=-1).indices == target).any(-1), logits.softmax(-1)[:, target]


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

    @classmethod
    def lay_out(cls, classifier, images: torch.Tensor, target: int, settings: TrialSettings,
                generator: torch.Generator) -> "ImageTrials":
        """The static grid (when static or dynamic is measured), the random trials drawn from
        `generator` (when random is), and the incremental forward where every position is named."""
        n, hw, dev = len(images), tuple(images.shape[-2:]), classifier.device
        st = static_trials(n, settings.sizes, settings.positions, hw, dev) if settings.on_grid else None
        rt = (random_trials(n, settings.sizes, settings.random_placements, settings.rotation_deg, hw, dev, generator)
              if "random" in settings.protocols else None)
        named = st is not None and all(p in apply_mod.POSITIONS for p in settings.positions)  # not 'random'
        fast = paste_forward(classifier, images, batch_size=settings.batch_size) if named else None
        return cls(classifier, images, target, settings, st, rt, fast)

    def run(self, patch: torch.Tensor, progress=None) -> tuple[Outcomes | None, Outcomes | None]:
        """The patch's (static grid, random) outcomes; None for a table not measured."""
        if self.fast is not None:
            s_out = self._run_pasted(patch, progress)
        else:
            s_out = self._run_table(patch, self.static, progress) if self.static is not None else None
        r_out = self._run_table(patch, self.random, progress) if self.random is not None else None
        return s_out, r_out

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
            x = apply_mod.apply_patch(self.images[trials.idx[sl]], patch, trials.area[sl], trials.centers[sl],
                                      trials.angle[sl])
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
