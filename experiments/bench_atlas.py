"""Benchmark for patchlab.atlases. Prints its figures.

  python experiments/bench_atlas.py [--device auto] [--batch 16] [--batches 6] [--umap-n 100000]

1. Collection throughput (images/s) on the default model at its feature layer
   ("head", 7x7x1280), same batches for all three:
   - plain forward (no grad)                      : the issue's reference
   - forward + full backward to the input pixels  : what a naive gradient x activation costs
   - patchlab collect(): forward, pair attribution (backward from the logits
     to the layer only), float16 vectors streamed to a memmap
2. UMAP 2-D layout time (cosine, n_neighbors=20, min_dist=0.01) on N vectors:
   --umap-source random (default: 200 ReLU'd Gaussian clusters in 1280-d) or
   model (default-model activations of smooth noise images; slow to collect on
   CPU); numba JIT compile timed separately.
3. Donor signal (ii) over all 1000 classes (median of 20 runs).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def smooth_noise(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int = 1) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--umap-n", type=int, default=100_000)
    ap.add_argument("--umap-source", choices=["random", "model"], default="random")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-umap", action="store_true")
    ap.add_argument("--skip-collect", action="store_true")
    args = ap.parse_args()

    from patchlab.atlases import collect, head_alignment, layout, tensor_batches
    from patchlab.models import load_classifier

    clf = load_classifier("efficientnet_lite0", args.device)
    dev = clf.device
    layer = clf.feature_layer
    s, t = 801, 983
    images = smooth_noise(args.batch * args.batches, clf.input_size, 0).to(dev)
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]
    n_img = len(images)
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, layer {layer}, "
          f"{args.batches} batches of {args.batch} images at {clf.input_size} px")

    def forward():
        with torch.no_grad():
            for b in batches:
                clf(b)

    def forward_backward():
        for b in batches:
            x = b.clone().requires_grad_(True)
            with clf.capture([layer]) as cap:
                lg = clf(x)
            h = cap[layer]
            (g,) = torch.autograd.grad((lg[:, t] - lg[:, s]).sum(), h)  # graph built from the pixels on
            (g * h).sum(1)

    tmp = Path(tempfile.mkdtemp())

    def collecting():
        acts = collect(clf, ((b, [""] * len(b), [-1] * len(b)) for b in batches), layer, pair=(s, t), store=tmp / "a.f16")
        assert len(acts) == n_img * 49

    if not args.skip_collect:
        forward()  # warm-up (allocator, cudnn)
        collecting()
        _throughput(args, dev, n_img, forward, forward_backward, collecting, clf, batches, layer, s, t, tmp)
    W = clf.head.weight
    head_alignment(W, s, t)
    runs = []
    for _ in range(20):
        t0 = time.perf_counter()
        head_alignment(W, s, t)
        runs.append(time.perf_counter() - t0)
    print(f"donor signal (ii) over {W.shape[0]} classes: median {np.median(runs) * 1000:.2f} ms")

    if args.skip_umap:
        return
    n_need = args.umap_n
    t0 = time.perf_counter()
    if args.umap_source == "model":
        per_batch = 32
        imgs_needed = (n_need + 48) // 49
        sizes = [min(per_batch, imgs_needed - i) for i in range(0, imgs_needed, per_batch)]
        acts = collect(
            clf, ((smooth_noise(k, clf.input_size, 1000 + j).to(dev), [""] * k, [-1] * k) for j, k in enumerate(sizes)),
            layer, pair=(s, t), store=tmp / "u.f16",
        )
        vecs = np.asarray(acts.vectors[:n_need], dtype=np.float32)
        what = "default-model activations of smooth random-noise images"
    else:  # clustered, non-negative like post-ReLU activations
        rng = np.random.default_rng(0)
        centers = np.maximum(rng.normal(size=(200, 1280)), 0).astype(np.float32)
        vecs = np.maximum(centers[rng.integers(0, 200, n_need)] + 0.5 * rng.normal(size=(n_need, 1280)).astype(np.float32), 0)
        what = "synthetic vectors: 200 ReLU'd Gaussian clusters in 1280-d"
    print(f"{len(vecs)} x {vecs.shape[1]} vectors for UMAP ({what}) prepared in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    layout(np.random.default_rng(0).random((300, 16), dtype=np.float32), dims=2, n_neighbors=20)
    print(f"UMAP numba JIT + tiny fit (300 x 16): {time.perf_counter() - t0:.1f} s")
    for seed, label in [(0, "seeded (single-threaded)"), (None, "unseeded (all cores)")]:
        t0 = time.perf_counter()
        lay = layout(vecs, dims=2, n_neighbors=20, min_dist=0.01, seed=seed)
        print(f"UMAP 2-D of {len(vecs)} x {vecs.shape[1]} ({args.umap_source}), {label}: {time.perf_counter() - t0:.1f} s ({lay.method})")


def _throughput(args, dev, n_img, forward, forward_backward, collecting, clf, batches, layer, s, t, tmp) -> None:
    from patchlab.atlases import collect

    methods = [("forward", forward), ("forward+backward(pixels)", forward_backward), ("collect (pair attr, memmap)", collecting)]
    best = {name: float("inf") for name, _ in methods}
    for _ in range(args.rounds):  # interleaved rounds, best of each: robust to other load on the machine
        for name, fn in methods:
            best[name] = min(best[name], timed(fn, dev))
    results = {name: n_img / sec for name, sec in best.items()}
    base = results["forward"]
    for name, ips in results.items():
        print(f"  {name:<30} {ips:8.1f} images/s   {ips / base * 100:6.1f} % of plain forward")
    print(f"  collect vs forward+backward(pixels): {results['collect (pair attr, memmap)'] / results['forward+backward(pixels)']:.2f}x")
    acts2 = collect(clf, ((b, [""] * len(b), [-1] * len(b)) for b in batches), layer, pair=(s, t), classes=[s, t], store=tmp / "b.f16")
    print(f"  per-class attributions (2 classes) also collected: {len(acts2)} vectors, {acts2.vectors.nbytes / 2**20:.1f} MiB float16 "
          f"-> 1M vectors = {1e6 * 1280 * 2 / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
