"""Benchmark: patchlab's synthesized EOT patch vs IBM ART's AdversarialPatchPyTorch.

Same model, same training and held-out images, same batch size, same EOT
ranges (area -> ART's scale = sqrt(area) of the image side; rotation) and
the same number of optimization steps. Prints seconds per step for the model's
bare forward+backward, patchlab and ART, and the targeted success of both
patches at equal steps on held-out images (corners + center, square patches),
with a uniform-noise patch as control. Under CPU contention, trust the
"interleaved" line (bare and patchlab steps timed alternately) for the ratio.

Images: random crops of scikit-image's bundled photos (train and held-out crops
come from disjoint photos), or class exemplars via patchlab.exemplars
(--exemplars SOURCE) when that module is available.

    python experiments/bench_patch.py                      # 20 steps, batch 8 and 16
    python experiments/bench_patch.py --steps 100 --batch-sizes 8
Needs `adversarial-robustness-toolbox` (the `bench` extra) for the ART column.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from patchlab.devices import generator
from patchlab.models import Classifier, load_classifier
from patchlab.patches.apply import POSITIONS, apply_patch, placement_grid
from patchlab.patches.synth import synthesize_patch

RGB_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "camera", "coins", "horse", "brick", "grass", "gravel", "moon", "page", "cat", "eagle"]


def photo_crops(n: int, names: list[str], size: int, seed: int) -> torch.Tensor:
    """n random square crops (40-90 % of the short side) of the named skimage photos, resized to size."""
    import skimage.data as sd

    photos = []
    for name in names:
        try:
            arr = np.asarray(getattr(sd, name)())
        except Exception:  # some need a download; skip them offline
            continue
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        t = torch.from_numpy(arr[..., :3].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else arr.max()))
        photos.append(t.permute(2, 0, 1))
    if not photos:
        raise SystemExit("no scikit-image photos available")
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[-2:]
        side = int(min(h, w) * (0.4 + 0.5 * float(torch.rand(1, generator=g))))
        y = int(torch.randint(0, h - side + 1, (1,), generator=g))
        x = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crop = img[:, y:y + side, x:x + side][None]
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
    return torch.stack(out).clamp(0, 1)


def bench_images(clf: Classifier, args) -> tuple[torch.Tensor, torch.Tensor, str]:
    n = args.train + args.held
    if args.exemplars:
        try:
            from patchlab.exemplars import exemplars
        except ImportError:
            raise SystemExit("--exemplars needs patchlab.exemplars, which is not available yet")
        src = clf.classes.resolve(args.exemplars)
        imgs = exemplars(clf, src, n, near=clf.classes.resolve(args.target))
        imgs = imgs.images if hasattr(imgs, "images") else imgs
        return imgs[: args.train], imgs[args.train:], f"exemplars of {clf.classes.label(src)}"
    half = len(RGB_PHOTOS) // 2
    train = photo_crops(args.train, RGB_PHOTOS[:half], clf.input_size, args.seed)
    held = photo_crops(args.held, RGB_PHOTOS[half:], clf.input_size, args.seed + 1)
    return train, held, "random crops of scikit-image photos (train/held-out from disjoint photos)"


def bare_step_seconds(clf: Classifier, images: torch.Tensor, target: int, batch: int, reps: int) -> float:
    """Median seconds of the model's forward + backward (to the input) for one batch."""
    x = images[torch.arange(batch) % len(images)].to(clf.device)
    y = torch.full((batch,), target, device=clf.device)
    times = []
    for i in range(reps + 1):
        t = time.perf_counter()
        xi = x.clone().requires_grad_(True)
        F.cross_entropy(clf(xi), y).backward()
        if clf.device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # first rep is warm-up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_ratio(clf: Classifier, images: torch.Tensor, target: int, batch: int, rounds: int, args) -> tuple[float, float]:
    """Median seconds of bare fwd+bwd and of one patchlab step, measured alternately (robust to CPU
    contention drifting during a run). The patchlab step is the real one: synthesize_patch(steps=2)
    times its second step (`sec_per_step` excludes the warm-up step)."""
    bare, ours = [], []
    for r in range(rounds):
        bare.append(bare_step_seconds(clf, images, target, batch, 1))
        cand = synthesize_patch(clf, images, target, steps=2, patch_px=args.patch_px, area=tuple(args.area),
                                rotation_deg=args.rotation, batch_size=batch, generator=generator(r))
        ours.append(cand.provenance["sec_per_step"])
    return statistics.median(bare), statistics.median(ours)


def success(clf: Classifier, images: torch.Tensor, patch: torch.Tensor, target: int, areas: list[float]) -> dict:
    """Targeted success (top-1 == target) per area over the 4 corners + center, no rotation."""
    out = {}
    images = images.to(clf.device)
    for a in areas:
        idx, ar, cen = placement_grid(len(images), [a], POSITIONS, tuple(images.shape[-2:]), clf.device)
        with torch.no_grad():
            pred = clf.logits(apply_patch(images[idx], patch.to(clf.device), ar, cen), batch_size=32).argmax(1)
        out[a] = float((pred == target).float().mean())
    return out


def run_art(clf: Classifier, train: torch.Tensor, target: int, args, batch: int) -> tuple[torch.Tensor, float, int]:
    """ART's AdversarialPatchPyTorch with the same budget: returns patch, seconds/step, steps run."""
    from art.attacks.evasion import AdversarialPatchPyTorch
    from art.estimators.classification import PyTorchClassifier

    est = PyTorchClassifier(
        model=clf, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, clf.input_size, clf.input_size),
        nb_classes=clf.num_classes, clip_values=(0.0, 1.0), device_type="gpu" if clf.device.type == "cuda" else "cpu",
    )
    per_iter = math.ceil(len(train) / batch)  # ART walks the whole training set each "iteration"
    max_iter = max(1, math.ceil(args.steps / per_iter))
    attack = AdversarialPatchPyTorch(
        est, rotation_max=args.rotation, scale_min=math.sqrt(args.area[0]), scale_max=math.sqrt(args.area[1]),
        learning_rate=args.art_lr, max_iter=max_iter, batch_size=batch, patch_shape=(3, args.patch_px, args.patch_px),
        patch_type="square", optimizer="Adam", targeted=True, verbose=False,
    )
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    y = np.zeros((len(train), clf.num_classes), dtype=np.float32)
    y[:, target] = 1
    t = time.perf_counter()
    patch, _ = attack.generate(x=train.numpy().astype(np.float32), y=y)
    steps = max_iter * per_iter
    return torch.from_numpy(patch).float().clamp(0, 1), (time.perf_counter() - t) / steps, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--target", default="scuba diver")
    ap.add_argument("--exemplars", default=None, help="source class: train on its exemplars (patchlab.exemplars)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--train", type=int, default=16, help="training images")
    ap.add_argument("--held", type=int, default=16, help="held-out images")
    ap.add_argument("--patch-px", type=int, default=64)
    ap.add_argument("--area", type=float, nargs=2, default=[0.05, 0.25])
    ap.add_argument("--rotation", type=float, default=20.0, help="max rotation, degrees")
    ap.add_argument("--lr", type=float, default=0.1, help="patchlab Adam lr (sigmoid pixels)")
    ap.add_argument("--art-lr", type=float, default=0.1, help="ART Adam lr (raw pixels in [0,1])")
    ap.add_argument("--eval-areas", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--bare-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    ap.add_argument("--interleaved", type=int, default=5, help="rounds of alternating bare/patchlab step timing (0 = off)")
    ap.add_argument("--no-art", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    clf = load_classifier(args.model, args.device)
    target = clf.classes.resolve(args.target)
    train, held, what = bench_images(clf, args)
    print(f"model {args.model} on {clf.device} ({torch.get_num_threads()} threads), target {clf.classes.label(target)}")
    print(f"images: {what}; {len(train)} train, {len(held)} held-out; patch {args.patch_px}px, area {args.area}, "
          f"rotation +-{args.rotation} deg, {args.steps} steps")
    noise = torch.rand(3, args.patch_px, args.patch_px, generator=generator(args.seed + 7))
    areas = args.eval_areas
    print(f"noise patch success {fmt(success(clf, held, noise, target, areas))}")
    for batch in args.batch_sizes:
        bare_before = bare_step_seconds(clf, train, target, batch, args.bare_reps)
        t = time.perf_counter()
        cand = synthesize_patch(clf, train, target, None, steps=args.steps, patch_px=args.patch_px, area=tuple(args.area),
                                rotation_deg=args.rotation, batch_size=batch, lr=args.lr, generator=generator(args.seed))
        ours = (time.perf_counter() - t) / args.steps
        # bare timing before and after our run, averaged: CPU contention drifts over a run
        bare = (bare_before + bare_step_seconds(clf, train, target, batch, args.bare_reps)) / 2
        print(f"\nbatch {batch}: bare fwd+bwd {bare:.3f} s | patchlab {ours:.3f} s/step "
              f"({ours / bare:.2f}x bare; in-loop {cand.provenance['sec_per_step']:.3f} s)")
        print(f"  patchlab success {fmt(success(clf, held, cand.patch, target, areas))}")
        if args.interleaved:
            b, o = interleaved_ratio(clf, train, target, batch, args.interleaved, args)
            print(f"  interleaved ({args.interleaved} rounds): bare {b:.3f} s, patchlab step {o:.3f} s ({o / b:.2f}x bare)")
        if args.no_art:
            continue
        try:
            art_patch, art_s, art_steps = run_art(clf, train, target, args, batch)
        except ImportError:
            print("  ART not installed (pip install adversarial-robustness-toolbox)")
            continue
        print(f"  ART      {art_s:.3f} s/step over {art_steps} steps ({art_s / bare:.2f}x bare; "
              f"patchlab is {art_s / ours:.2f}x faster)")
        print(f"  ART      success {fmt(success(clf, held, art_patch, target, areas))}")


def fmt(rates: dict) -> str:
    return ", ".join(f"{a:.0%} area: {r:.0%}" for a, r in rates.items())


if __name__ == "__main__":
    main()
