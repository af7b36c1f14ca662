"""Benchmark: calibrated exemplars and render-loop overhead (prints its figures).

  python experiments/bench_exemplars.py [--class goldfish] [--n 16] [--near CLASS] [--skip-nodiv]

Figures: wall time for n exemplars (no cache), how many stopped in band, steps,
robustness (share of image x view pairs still top-1 after a random crop of
85-100 % of the side, rescale and JPEG q75), mean pairwise cosine of pooled
penultimate features with and without the diversity term, and the render
loop's time per step against the model's bare forward+backward on the same batch.
Timings on a shared CPU are noisy: report the load with them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from patchlab.devices import generator
from patchlab.exemplars import exemplars, robustness
from patchlab.models import load_classifier
from patchlab.optvis import objectives as O
from patchlab.optvis import render
from patchlab.optvis.transforms import compose, crop, jitter, random_rotate, random_scale


def pairwise_cosine(clf, images: torch.Tensor) -> float:
    """Mean off-diagonal cosine similarity of pooled `feature_layer` activations."""
    with torch.no_grad():
        _, acts = clf.run(images, [clf.feature_layer])
    f = F.normalize(acts[clf.feature_layer].flatten(2).mean(2), dim=1)
    sim = f @ f.T
    n = len(f)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def overhead(clf, n: int, rounds: int = 3, k: int = 4) -> tuple[float, float]:
    """Median seconds per step: bare forward+backward at input size vs one render step (Fourier at
    round(S/crop_pct) px, fused transforms + crop, objective, Adam), interleaved to share the noise."""
    s = clf.input_size
    full = round(s / clf.crop_pct)
    x = torch.rand(n, 3, s, s, device=clf.device, requires_grad=True)
    tf = compose(jitter(4), random_scale((0.95, 1.05)), random_rotate(5.0), crop(s))
    objective = O.class_logprob(1)
    bare, loop = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(k):
            x.grad = None
            clf(x)[:, 1].sum().backward()
        bare.append((time.perf_counter() - t) / k)
        t = time.perf_counter()
        render(clf, objective, n, size=full, steps=k, transforms=tf, generator=generator(0, clf.device))
        loop.append((time.perf_counter() - t) / k)
    return statistics.median(bare), statistics.median(loop)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--class", dest="cls", default="goldfish")
    ap.add_argument("--near", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--diversity", type=float, default=None)
    ap.add_argument("--skip-nodiv", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    clf = load_classifier("efficientnet_lite0", "auto")
    print(f"device {clf.device}, torch threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}")
    cls = clf.classes.resolve(args.cls)
    near = clf.classes.resolve(args.near) if args.near else None
    extra = {} if args.diversity is None else {"diversity": args.diversity}

    if not args.skip_overhead:
        bare, loop = overhead(clf, args.n)
        print(f"overhead: bare fwd+bwd {bare:.3f} s/step, render step {loop:.3f} s/step -> {100 * (loop / bare - 1):+.1f} %")

    t = time.perf_counter()
    ex = exemplars(clf, cls, n=args.n, near=near, seed=args.seed, cache=False, **extra)
    secs = time.perf_counter() - t
    recs = ex.records
    steps = [r["steps"] for r in recs]
    rob = robustness(clf, ex.images, cls, generator(1000 + args.seed, clf.device), views=8)
    print(f"exemplars: {args.n} x {clf.classes.label(cls)} in {secs:.1f} s (load avg {os.getloadavg()[0]:.1f}); "
          f"in band {sum(r['in_band'] for r in recs)}/{len(recs)}; steps median {statistics.median(steps)} max {max(steps)}")
    print("  p(class): " + " ".join(f"{r['p_class']:.2f}" for r in recs))
    if near is not None:
        print("  p(near):  " + " ".join(f"{r['p_near']:.3f}" for r in recs))
    print(f"  robustness (crop/rescale + JPEG, 8 views): {100 * float(rob.mean()):.1f} % stay top-1; "
          f"images with >= 80 %: {int((rob >= 0.8).sum())}/{len(rob)}")
    print(f"  diversity: mean pairwise cosine (pooled {clf.feature_layer}) = {pairwise_cosine(clf, ex.images):.3f}")
    if not args.skip_nodiv:
        t = time.perf_counter()
        nd = exemplars(clf, cls, n=args.n, near=near, seed=args.seed, cache=False, diversity=0.0)
        print(f"  without diversity term: cosine = {pairwise_cosine(clf, nd.images):.3f} "
              f"(in band {sum(r['in_band'] for r in nd.records)}/{args.n}, {time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
