"""Benchmark: evaluation throughput (patched images/s through apply_patch + the
model + metrics) against the model's plain forward throughput on the same
number of images and the same batch size.

Usage: python experiments/bench_evaluate.py [--model efficientnet_lite0] [--device auto]
           [--images 16] [--sizes 0.1 0.25] [--placements 4] [--batch-size 64] [--repeats 2]
Prints both rates and their ratio (1.0 = evaluation costs no more than the forward pass).
"""
from __future__ import annotations

import argparse
import time

import torch

from patchlab.evaluation import evaluate
from patchlab.models import load_classifier
from patchlab.patches.candidate import Candidate


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.10, 0.25])
    ap.add_argument("--placements", type=int, default=4, help="random placements per image and size")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    clf = load_classifier(args.model, args.device)
    dev = clf.device
    g = torch.Generator(device=dev).manual_seed(0)
    s = clf.input_size
    images = torch.rand(args.images, 3, s, s, generator=g, device=dev)
    # every image counts: source None = every image not already the target
    top = clf.logits(images[:1]).argmax(-1).item()
    target = (top + 1) % clf.num_classes
    cand = Candidate(torch.rand(3, s // 2, s // 2, generator=g, device=dev).cpu(), "synth", "noise")
    evaluate(clf, [cand], images[:2], None, target, sizes=args.sizes[:1], protocols=("static",), n_examples=0)  # warm-up

    best_eval, n_patched = float("inf"), 0
    for _ in range(args.repeats):
        ev = evaluate(clf, [cand], images, None, target, sizes=args.sizes, random_placements=args.placements,
                      batch_size=args.batch_size, n_examples=0, generator=g)
        best_eval = min(best_eval, ev.timings["eval_s"])
        n_patched = ev.timings["patched_images"]
    # plain forward on the same number of images (repeat the held-out set) and batch size
    reps = -(-n_patched // args.images)
    plain_in = images.repeat(reps, 1, 1, 1)[:n_patched]
    best_plain = float("inf")
    for _ in range(args.repeats):
        sync(dev)
        t = time.perf_counter()
        clf.logits(plain_in, args.batch_size)
        sync(dev)
        best_plain = min(best_plain, time.perf_counter() - t)
    ev_rate, fw_rate = n_patched / best_eval, n_patched / best_plain
    print(f"model {clf.spec} on {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"patched images per candidate: {n_patched} ({args.images} images x {len(args.sizes)} sizes x "
          f"(5 positions + {args.placements} random))")
    print(f"evaluate: {best_eval:.3f} s  {ev_rate:.1f} images/s")
    print(f"plain forward: {best_plain:.3f} s  {fw_rate:.1f} images/s")
    print(f"evaluate / plain throughput: {ev_rate / fw_rate:.2f}")


if __name__ == "__main__":
    main()
