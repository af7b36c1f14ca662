"""How `synth`'s patch averaging behaves with few and many steps (Polyak & Juditsky 1992 averaging of
the iterates of Brown et al. 2017's EOT patch training).

For each step count, ONE training run of the `synth` recipe (the same seed, so every step count
starts from the same patch and draws the same placements) on the pair's TRAIN exemplars; every
averaging rule is computed from that one trajectory (averaging never changes the iterates), by a
hook after each optimizer step. Each patch is then pasted at random placements (area fixed, 10 %
and 20 % unless --areas says otherwise; location uniform, rotation +-20 degrees, the same draws for
every rule) on the SELECTION images (where a rule may be chosen) and on the CONFIRMATION images
(held out: the figure to report). Success: top-1 is the target, over every image x placement.

    python experiments/synth_steps.py                           # 100 and 300 steps, synthesized snorkels
    python experiments/synth_steps.py --steps 100 300 1200 --placements 8
    python experiments/synth_steps.py --source any --data ../shared/realphotos   # photos the model is sure of

Pair-aware synthesized sources sit at the decision boundary (p(snorkel) ~0.5), so every rule may
flip all of them; photos of any class (one per class) are a harder, confident set (`--data`:
train, selection and confirmation photos split by pairdata's rule, as `synth --data` does).
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from patchlab.generators.plan import get_plan
from patchlab.devices import stage_generator
from patchlab.models import Classifier, load_classifier
from patchlab.patches.apply import apply_patch, random_centers
from patchlab.patches.synth import averaging_decay, synthesize_patch
from patchlab.pipelines.synth import (
    SYNTH_AREA, SYNTH_AREA_SAMPLING, SYNTH_AVERAGE_WINDOW, SYNTH_FIXED_FRACTION, synth_pair,
)

OLD_DECAY = 0.99  # the fixed decay `synth` used before its window scaled with the steps


@dataclass
class Averages:
    """Averaged patches of one training run, updated after every optimizer step: exponential moving
    averages with fixed decays or decays from a window fraction, and uniform means over the last
    fraction of the steps."""

    steps: int
    ema_decays: dict[str, float]
    tails: dict[str, float]
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    tail_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    tail_n: dict[str, int] = field(default_factory=dict)
    step: int = 0
    last: torch.Tensor | None = None

    def update(self, patch: torch.Tensor) -> None:
        self.last = patch
        for name, decay in self.ema_decays.items():
            self.ema[name] = patch.clone() if name not in self.ema else self.ema[name].lerp_(patch, 1.0 - decay)
        for name, frac in self.tails.items():
            if self.step >= self.steps - max(1, round(frac * self.steps)):
                self.tail_sum[name] = self.tail_sum.get(name, torch.zeros_like(patch)) + patch
                self.tail_n[name] = self.tail_n.get(name, 0) + 1
        self.step += 1

    def patches(self) -> dict[str, torch.Tensor]:
        assert self.last is not None
        out = {"last iterate": self.last}
        out |= {name: p.clamp(0, 1) for name, p in self.ema.items()}
        out |= {name: (self.tail_sum[name] / self.tail_n[name]).clamp(0, 1) for name in self.tail_sum}
        return out


def track(averages: Averages) -> Callable[[], None]:
    """Feed the patch (sigmoid of the Adam parameter) to `averages` after every optimizer step;
    returns the function that removes the hook."""

    def hook(optimizer: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
        param = optimizer.param_groups[0]["params"][0]
        averages.update(torch.sigmoid(param.detach()).clone())

    return register_optimizer_step_post_hook(hook).remove


@torch.no_grad()
def success(clf: Classifier, images: torch.Tensor, patch: torch.Tensor, target: int, area: float,
            placements: int, seed: int) -> float:
    """Share of images x random placements (fixed area) whose top-1 is the target."""
    g = torch.Generator().manual_seed(seed)
    x = images.repeat(placements, 1, 1, 1)
    a = torch.full((len(x),), area)
    centers = random_centers(a, tuple(x.shape[-2:]), g)
    angle = (torch.rand(len(x), generator=g) * 2 - 1) * torch.pi / 9
    hits = 0
    for i in range(0, len(x), 32):
        pasted = apply_patch(x[i : i + 32], patch, a[i : i + 32], centers[i : i + 32], angle[i : i + 32])
        hits += int((clf(pasted).argmax(-1) == target).sum())
    return hits / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="snorkel")
    ap.add_argument("--target", default="scuba_diver")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--placements", type=int, default=8, help="random placements per image and area")
    ap.add_argument("--areas", type=float, nargs="+", default=[0.10, 0.20], help="patch areas (fraction of the image)")
    ap.add_argument("--data", type=Path, default=None, help="photo folder (default: synthesized source images)")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    clf = load_classifier("efficientnet_lite0", "cpu")
    src = None if args.source == "any" else clf.classes.resolve(args.source)
    tgt = clf.classes.resolve(args.target)
    pair = synth_pair(clf, src, tgt, get_plan(args.budget), args.data, args.seed)
    keep = {s: clf.logits(pair.images[s]).argmax(-1) != tgt for s in ("selection", "confirmation")}
    selection, confirmation = pair.selection[keep["selection"]], pair.confirmation[keep["confirmation"]]
    print(f"{args.source} -> {args.target}: {len(pair.train)} train, {len(selection)} selection, {len(confirmation)} "
          f"confirmation images ({pair.how}; those the model calls the target when clean left out); "
          f"{args.placements} random placements per image and area")
    for steps in args.steps:
        window = {f"EMA window {f:.3g} of the steps": f for f in (SYNTH_AVERAGE_WINDOW / 2, SYNTH_AVERAGE_WINDOW,
                                                                  2 * SYNTH_AVERAGE_WINDOW)}
        averages = Averages(steps, {f"EMA decay {OLD_DECAY} (old rule)": OLD_DECAY}
                            | {k: averaging_decay(steps, f) for k, f in window.items()},
                            {f"mean of the last {f:.0%}": f for f in (0.1, 0.25)})
        remove = track(averages)
        t0 = time.perf_counter()
        try:
            synthesize_patch(clf, pair.train, tgt, src, steps=steps, area=SYNTH_AREA, area_sampling=SYNTH_AREA_SAMPLING,
                             fixed_fraction=SYNTH_FIXED_FRACTION, generator=stage_generator(args.seed, "synth"),
                             amp=False)
        finally:
            remove()
        print(f"\n== {steps} steps (training {time.perf_counter() - t0:.0f} s); success % on "
              "selection | held-out confirmation")
        print(f"  {'patch':<40} " + "  ".join(f"{100 * a:>4.0f}% area: sel | held-out" for a in args.areas))
        for name, patch in averages.patches().items():
            cells = []
            for a in args.areas:
                sel = success(clf, selection, patch, tgt, a, args.placements, args.seed + 1)
                held = success(clf, confirmation, patch, tgt, a, args.placements, args.seed + 2)
                cells.append(f"{100 * sel:>15.1f} | {100 * held:>8.1f}")
            print(f"  {name:<40} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
