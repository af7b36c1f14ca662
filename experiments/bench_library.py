"""Benchmark: photo library indexing and the pair search (patchlab.library).

Default run (prints its figures):
  1. indexing throughput (img/s, decode + forward + memmap writes) against the
     model's plain batched forward on the same photos already decoded, in
     alternating rounds (contiguous and channels-last input: the index feeds
     channels-last), and the ceiling decoding sets when it shares the forward's
     cores: forward CPU-ms / (forward + decode CPU-ms);
  2. search time for snorkel -> scuba diver on the indexed library with 8
     pair-aware synthesized snorkels, and its pasted images per second against
     the bare forward (it can exceed it: the pasted images are scored
     incrementally, `patchlab.patches.region_forward`).
  --scale N  repeats the library's photos with flips and crops into N files
             (for the timing only), indexes them (projected spatial store),
             reports time and peak RSS and projects to 1.28 M photos.
  --decode   CPU-ms per photo of decoding (at full size, and at a reduced DCT scale
             for JPEGs at least twice the resized short side, as `patchlab.data.decode_image`
             does now; `--upscale N` enlarges the photos N times first, phone-sized, for
             the timing only) and of the two ways to resample the
             centre crop (resize the whole photo then crop, as before; resample
             only the centre box, as `patchlab.data.to_model_pixels` does now)
             and how far their pixels differ.
  --pair     end to end with 24 pair-aware snorkels: 8 train the search, 16
             held out; each of the top 10 is placed at the best (size, corner)
             on 8 held-out images and counted on the other 8; plus the median of
             20 random library photos placed the same way.

    python experiments/bench_library.py [--library DIR] [--rounds 2] [--scale 5000] [--pair] [--decode] [--device cuda]
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from atlas_pairs import add_search_arg, search_overrides

from patchlab.data import ImageFolderDataset, decode_image, load_images, pixels_to_float, resized_size, short_side, to_model_pixels
from patchlab.devices import generator
from patchlab.classes import imagenet_classes
from patchlab.library import SearchSettings, control_photo_rows, index_library, library_records, search_library
from patchlab.library.index import AUTO_SPATIAL_DIM
from patchlab.models import load_classifier
from patchlab.patches.apply import CORNERS, apply_patch, named_centers

DEFAULT_LIBRARY = Path(__file__).resolve().parents[1].parent / "shared" / "realphotos"
FULL_IMAGENET = 1_281_167


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timed(fn) -> tuple[float, float]:
    """(wall, cpu) seconds of fn()."""
    w, c = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - w, cpu_seconds() - c


def plain_forward(clf, images: torch.Tensor, batch_size: int, channels_last: bool) -> float:
    """img/s of the bare batched forward (logits + the feature-layer hook, as the index runs it)."""
    return len(images) / _plain(clf, images, batch_size, channels_last)


@torch.inference_mode()
def _plain(clf, images: torch.Tensor, batch_size: int, channels_last: bool) -> float:
    t = time.perf_counter()
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(clf.device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        clf.run(x, [clf.feature_layer])
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def resize_then_crop(img, size: int, crop_pct: float) -> np.ndarray:
    """The earlier decode path (for comparison only): resize the whole photo, then crop its centre."""
    from PIL import Image

    nw, nh = resized_size(*img.size, size, crop_pct)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.resize((nw, nh), Image.BICUBIC).crop((left, top, left + size, top + size)), dtype=np.uint8)


def upscaled_jpegs(blobs: list[bytes], factor: int) -> list[bytes]:
    """The photos enlarged `factor` times and saved again as JPEG (quality 90): phone-sized photos, for timing only."""
    from PIL import Image

    out = []
    for b in blobs:
        im = decode_image(b)
        buf = io.BytesIO()
        im.resize((im.width * factor, im.height * factor), Image.BICUBIC).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def decode_costs(clf, library: Path, n: int, rounds: int, upscale: int = 1) -> None:
    """CPU-ms per photo: decode at full size and DCT-scaled (large JPEGs), resize-then-crop, centre-box
    resampling; and how far the model's pixels move with each change."""
    records = library_records(library, clf.classes)[:n]
    paths = [r.path for r in records]
    blobs = [p.read_bytes() for p in paths]
    if upscale > 1:
        blobs = upscaled_jpegs(blobs, upscale)
    photos = [decode_image(b) for b in blobs]
    s, c = clf.input_size, clf.crop_pct
    side = short_side(s, c)
    scaled = [decode_image(b, min_side=side) for b in blobs]
    steps = {"decode": lambda: [decode_image(b) for b in blobs],
             "decode DCT-scaled": lambda: [decode_image(b, min_side=side) for b in blobs],
             "resize then crop": lambda: [resize_then_crop(im, s, c) for im in photos],
             "centre box": lambda: [to_model_pixels(im, s, c) for im in photos]}
    ms = {k: statistics.median(timed(f)[1] for _ in range(rounds)) / len(paths) * 1000 for k, f in steps.items()}
    box = np.stack([to_model_pixels(im, s, c) for im in photos])
    box_scaled = np.stack([to_model_pixels(im, s, c) for im in scaled])
    diff = np.abs(np.stack([resize_then_crop(im, s, c) for im in photos]).astype(np.int16) - box)
    dct = np.abs(box_scaled.astype(np.int16) - box)
    n_scaled = sum(a.size != b.size for a, b in zip(scaled, photos))
    labels = torch.tensor([-1 if r.label is None else r.label for r in records])
    top1 = {name: clf.logits(pixels_to_float(torch.from_numpy(px).permute(0, 3, 1, 2))).argmax(1).cpu()
            for name, px in (("full", box), ("scaled", box_scaled))}
    print(f"decode: {len(paths)} photos{f' enlarged {upscale}x as JPEG (timing only)' if upscale > 1 else ''}, "
          f"median of {rounds} rounds, CPU-ms per photo: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
          + f"; centre box / resize then crop {ms['centre box'] / ms['resize then crop']:.2f}; pixels differing by "
          f"more than 1: {100 * (diff > 1).mean():.3f} %, mean |difference| {diff.mean():.3f} (0-255); "
          f"DCT-scaled / full decode {ms['decode DCT-scaled'] / ms['decode']:.2f} ({n_scaled} photos decoded "
          f"scaled), their model pixels differing by more than 1: {100 * (dct > 1).mean():.3f} %, "
          f"mean |difference| {dct.mean():.3f}; the model's top-1 agrees on {int((top1['full'] == top1['scaled']).sum())} "
          f"of {len(paths)}, right (labelled photos) {int((top1['full'] == labels).sum())} full -> "
          f"{int((top1['scaled'] == labels).sum())} DCT-scaled")


def subset_folder(library: Path, n: int, out: Path) -> Path:
    """A folder of symlinks to n photos spread over the library (class folders kept)."""
    records = library_records(library, imagenet_classes())
    step = max(1, len(records) // n)
    for r in records[::step][:n]:
        rel = r.path.relative_to(library)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).symlink_to(r.path.resolve())
    return out


def throughput(clf, library: Path, batch_size: int, rounds: int, n_photos: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _throughput(clf, subset_folder(library, n_photos, Path(tmp)) if n_photos else library, batch_size, rounds)


def _throughput(clf, library: Path, batch_size: int, rounds: int) -> None:
    records = library_records(library, clf.classes)
    images = load_images(records, clf.input_size, clf.crop_pct).images
    print(f"throughput: {len(images)} photos of {library}, batch {batch_size}, device {clf.device}, "
          f"{torch.get_num_threads()} threads, {rounds} alternating rounds")
    plain_forward(clf, images[: 2 * batch_size], batch_size, True)  # warm-up
    n = len(images)
    res: dict[str, list[tuple[float, float]]] = {"plain": [], "plain_cl": [], "index": [], "index_w0": [],
                                                 "index_w1": []}

    def index_once(workers: int | None):
        with tempfile.TemporaryDirectory() as cache:
            index_library(clf, library, batch_size=batch_size, cache_root=cache, workers=workers)

    photos = ImageFolderDataset(records, clf.input_size, clf.crop_pct, uint8=True)  # the index's own decode step
    decode_cpu: list[float] = []

    for r in range(rounds):
        res["plain"].append(timed(lambda: _plain(clf, images, batch_size, False)))
        res["plain_cl"].append(timed(lambda: _plain(clf, images, batch_size, True)))
        res["index"].append(timed(lambda: index_once(None)))  # the default number of decode workers
        res["index_w0"].append(timed(lambda: index_once(0)))  # decoding in turn with the forward
        res["index_w1"].append(timed(lambda: index_once(1)))  # one decode worker process
        decode_cpu.append(timed(lambda: [photos[i] for i in range(n)])[1] / n)  # read + decode + resample, one thread
        print(f"  round {r + 1}: " + "  ".join(f"{k} {n / v[-1][0]:.1f} img/s ({v[-1][1] / n * 1000:.0f} CPU-ms/img)"
                                            for k, v in res.items()))
    wall = {k: statistics.median(n / w for w, _ in v) for k, v in res.items()}
    cpu = {k: statistics.median(c / n for _, c in v) for k, v in res.items()}
    best = max(wall["plain"], wall["plain_cl"])
    print(f"  median wall: plain forward {wall['plain']:.1f}, channels-last forward {wall['plain_cl']:.1f}, "
          f"index {wall['index']:.1f} img/s -> index / best plain forward {wall['index'] / best:.2f} "
          "(wall clock: at the mercy of other load on the machine); decoding in turn "
          f"{wall['index_w0']:.1f}, with one decode worker {wall['index_w1']:.1f} img/s")
    print(f"  median CPU per image: plain {cpu['plain'] * 1000:.0f} ms, channels-last {cpu['plain_cl'] * 1000:.0f} ms, "
          f"index {cpu['index'] * 1000:.0f} ms (decode worker included) -> throughput ratio on an otherwise idle "
          f"machine ~ {min(cpu['plain'], cpu['plain_cl']) / cpu['index']:.2f} (CPU-bound; load-independent estimate)")
    fwd, dec = min(cpu["plain"], cpu["plain_cl"]), statistics.median(decode_cpu)
    print(f"  decoding alone (read, decode, resample the centre box): {dec * 1000:.1f} CPU-ms per photo -> where "
          f"decoding shares the forward's cores, the index can reach at most {fwd / (fwd + dec):.2f} of the bare "
          f"forward; the index spends {max(0.0, cpu['index'] - fwd - dec) * 1000:.1f} CPU-ms per photo beyond "
          "forward and decoding (hooks, top-1, float16 memmap writes, threads)")


def pair_images(clf, seed: int, n: int = 24):
    """n pair-aware synthesized snorkels (one cached set: the first 8 train the search)."""
    from patchlab.exemplars import exemplars

    src, tgt = clf.classes.resolve("snorkel"), clf.classes.resolve("scuba diver")
    t = time.perf_counter()
    ex = exemplars(clf, src, n=n, near=tgt, seed=seed)
    print(f"{n} pair-aware snorkels ({'cached' if ex.cached else f'rendered in {time.perf_counter() - t:.0f} s'})")
    return ex.images, src, tgt


def search_timing(clf, library: Path, batch_size: int, seed: int, cache: Path, search_kw: dict | None = None) -> None:
    idx = index_library(clf, library, batch_size=batch_size, cache_root=cache)
    images, src, tgt = pair_images(clf, seed)
    train = images[:8]
    imgs = load_images(library_records(library, clf.classes)[:64], clf.input_size, clf.crop_pct).images
    before = plain_forward(clf, imgs, 64, True)
    cands, stats = search_library(clf, idx, train, src, tgt, replace(SearchSettings(), **(search_kw or {})),
                                  generator=generator(seed))
    after = plain_forward(clf, imgs, 64, True)
    print(f"search snorkel -> scuba diver ({search_kw or 'defaults'}) on {len(idx)} indexed photos, 8 train images: "
          f"{stats['seconds']:.1f} s "
          f"(stages {stats['stage_seconds']}); {stats['pasted_forwards']} pasted images scored; "
          f"bare channels-last forward {before:.1f} / {after:.1f} img/s before / after")
    rate, bare = stats["pasted_forwards"] / stats["seconds"], max(before, after)
    print(f"  the search scored {rate:.1f} pasted img/s, {rate / bare:.2f} of the faster bare forward (whose rate would "
          f"need {stats['pasted_forwards'] / bare:.0f} s for them; on EfficientNet-Lite only the cells a patch changes "
          "are recomputed: patchlab.patches.region_forward)")
    print(f"  index-ranked vs random whole photos, mean coarse gain: {stats['coarse_gain_mean']}; "
          f"spearman(index score, coarse gain): {stats['index_vs_coarse_spearman']}")
    for c in cands[:5]:
        p = c.provenance
        print(f"  {c.name}: {p['file']} ({p['method']}) gain {p['score_gain_logodds']:.2f} "
              f"train {p['train_success']:.2f}")


# -- --scale: a synthetic large library for timing -------------------------------------------------
def make_scaled_library(library: Path, n: int, out: Path, seed: int) -> int:
    """Write n JPEGs made of the library's photos with flips and random 70-100 % crops."""
    from PIL import ImageOps

    files = [r.path for r in library_records(library, imagenet_classes())]
    rng = np.random.default_rng(seed)
    for k in range(n):
        img = decode_image(files[k % len(files)])
        w, h = img.size
        f = rng.uniform(0.7, 1.0)
        cw, ch = int(w * f), int(h * f)
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
        if (k // len(files)) % 2:
            img = ImageOps.mirror(img)
        img.save(out / f"{k:07d}.jpg", quality=90)
    return n


def scale_run(clf, library: Path, n: int, batch_size: int, spatial_dim: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        t = time.perf_counter()
        make_scaled_library(library, n, folder, seed)
        print(f"scale: wrote {n} flipped/cropped copies of {library.name} in {time.perf_counter() - t:.0f} s "
              "(for the timing only: these are not new photos)")
        rss0 = peak_rss_mb()
        t = time.perf_counter()
        idx = index_library(clf, folder, batch_size=batch_size, cache_root=Path(tmp) / "cache", spatial_dim=spatial_dim)
        wall = time.perf_counter() - t
        m = idx.manifest
        disk = sum(f.stat().st_size for f in idx.folder.iterdir())
        print(f"  indexed {len(idx)} photos in {wall:.0f} s ({m['images_per_s']:.1f} img/s in the pass, "
              f"decode workers {m['workers']}), spatial store {m['shapes']['spatial']} ({m['basis']}), "
              f"disk {disk / 2**20:.0f} MiB; peak RSS {peak_rss_mb():.0f} MiB (before indexing {rss0:.0f} MiB)")
        d = torch.randn(idx.pooled.shape[1])
        t = time.perf_counter()
        idx.pooled_scores(d)
        for i in range(0, len(idx), 4096):
            idx.cell_scores(d, slice(i, i + 4096))
        print(f"  index-only ranking of every photo and cell: {time.perf_counter() - t:.2f} s")
        sample = load_images(library_records(folder, clf.classes)[: 4 * batch_size], clf.input_size, clf.crop_pct).images
        plain_forward(clf, sample[:batch_size], batch_size, True)  # warm-up
        bare = statistics.median(plain_forward(clf, sample, batch_size, True) for _ in range(3))
        print(f"  bare channels-last forward on {len(sample)} of them already decoded, batch {batch_size}: {bare:.1f} "
              f"img/s -> index / bare forward {m['images_per_s'] / bare:.2f}")
        c, (h, w) = idx.pooled.shape[1], idx.grid_hw
        rate = m["images_per_s"]
        gib = FULL_IMAGENET * 2 / 2**30  # float16 bytes per stored number, in GiB
        print(f"  projection to {FULL_IMAGENET:,} photos on this {clf.device.type.upper()}: {FULL_IMAGENET / rate / 3600:.1f} h; memmaps: "
              f"pooled {gib * c:.1f} GiB + spatial {gib * h * w * spatial_dim:.1f} GiB (projected, {spatial_dim} "
              f"dims; full {c} dims would be {gib * h * w * c:.0f} GiB); "
              f"manifest ~{FULL_IMAGENET * 60 / 2**20:.0f} MiB")
        if clf.device.type != "cuda":
            print("  GPU projection: run with --device cuda")


# -- --pair: end-to-end held-out figures --------------------------------------------------------------
SIZES_EVAL = (0.1, 0.25, 0.4)


@torch.no_grad()
def success_grid(clf, patch: torch.Tensor, images: torch.Tensor, target: int) -> torch.Tensor:
    """Top-1 == target for every (size, corner, image): (len(SIZES_EVAL), 4, n) bool."""
    n, hw = len(images), images.shape[-2:]
    rows, areas, centers = [], [], []
    for a in SIZES_EVAL:
        for pos in CORNERS:
            at = torch.full((n,), a)
            rows.append(images)
            areas.append(at)
            centers.append(named_centers(pos, at, hw))
    x = apply_patch(torch.cat(rows), patch, torch.cat(areas), torch.cat(centers))
    top = clf.logits(x.contiguous(memory_format=torch.channels_last), batch_size=64).argmax(-1).cpu()
    return (top == target).view(len(SIZES_EVAL), len(CORNERS), n)


def held_out_static(clf, patch: torch.Tensor, select: torch.Tensor, confirm: torch.Tensor, target: int):
    """Best (size, corner) on `select`, success rate on `confirm` there."""
    s = success_grid(clf, patch, select, target).float().mean(-1)
    i = int(s.flatten().argmax())
    a, p = divmod(i, len(CORNERS))
    at = torch.full((len(confirm),), SIZES_EVAL[a])
    x = apply_patch(confirm, patch, at, named_centers(CORNERS[p], at, confirm.shape[-2:]))
    rate = float((clf.logits(x).argmax(-1).cpu() == target).float().mean())
    return rate, SIZES_EVAL[a], CORNERS[p], float(s.max())


def pair_run(clf, library: Path, batch_size: int, seed: int, cache: Path, search_kw: dict) -> None:
    idx = index_library(clf, library, batch_size=batch_size, cache_root=cache)
    images, src, tgt = pair_images(clf, seed)
    train, held = images[:8], images[8:]
    select, confirm = held[:8], held[8:]
    clean = clf.logits(held).argmax(-1)
    print(f"held-out snorkels top-1 snorkel: {int((clean == src).sum())}/16; "
          f"scuba diver already: {int((clean == tgt).sum())}")
    cands, stats = search_library(clf, idx, train, src, tgt, replace(SearchSettings(top_k=10), **search_kw),
                                  generator=generator(seed))
    print(f"search ({search_kw or 'defaults'}): {stats['seconds']:.1f} s, {stats['proposals']} proposals, "
          f"{stats['exactly_scored']} scored "
          f"exactly; excluded target photos {stats['excluded_target_photos']}, "
          f"source photos {stats['excluded_source_photos']}")
    print(f"  mean coarse gain {stats['coarse_gain_mean']}; spearman {stats['index_vs_coarse_spearman']}")
    print("  rank file | class | reads as (p) | method | gain | train success | held-out static (size, corner; select)")
    rates = []
    for c in cands:
        p = c.provenance
        rate, a, pos, sel = held_out_static(clf, c.patch, select, confirm, tgt)
        rates.append(rate)
        print(f"  {c.name}: {p['file']} | {p['donor_name']} | {c.reads_as['name']} ({c.reads_as['prob']:.2f}) | "
              f"{p['method']} | {p['score_gain_logodds']:.2f} | {p['train_success']:.2f} | "
              f"{rate:.3f} ({a}, {pos}; {sel:.2f})")
    ctrl = idx.load_photos(control_photo_rows(idx, 20, generator(seed + 1), exclude=(src, tgt)).tolist())
    crates = [held_out_static(clf, photo, select, confirm, tgt)[0] for photo in ctrl]
    print(f"top-10 held-out static: mean {np.mean(rates):.3f}, best {max(rates):.3f}; "
          f"control-library-photo (20 random whole photos, same protocol): median {np.median(crates):.3f}, "
          f"mean {np.mean(crates):.3f}")
    print("class ranking of the exact (coarse) search:",
          ", ".join(f"{r['name']} {r['best_gain']:.2f}" for r in stats["class_ranking"][:10]))
    from patchlab.atlases.donors import head_alignment

    cos = head_alignment(clf.head.weight, src, tgt)
    order = [int(i) for i in np.argsort(-np.nan_to_num(cos, nan=-9))[:10]]
    print("atlas donor signal (ii), head alignment:", ", ".join(f"{clf.classes.label(i)} {cos[i]:.2f}" for i in order))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", type=Path, default=DEFAULT_LIBRARY)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--throughput-photos", type=int, default=256, help="photos per throughput round (0: all)")
    ap.add_argument("--scale", type=int, default=0, help="index N flipped/cropped copies (timing only)")
    ap.add_argument("--spatial-dim", type=int, default=AUTO_SPATIAL_DIM, help="projected spatial dims for --scale")
    ap.add_argument("--pair", action="store_true", help="end-to-end snorkel -> scuba diver with held-out figures")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--decode", action="store_true", help="only the per-photo decode costs (before / after)")
    ap.add_argument("--upscale", type=int, default=1, help="--decode on the photos enlarged N times (phone-sized; timing only)")
    add_search_arg(ap)  # --search NAME=VALUE for --pair, as in atlas_pairs.py
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="library cache folder (default: a temporary one)")
    args = ap.parse_args()
    if not args.library.is_dir():
        raise SystemExit(f"no library at {args.library}")
    clf = load_classifier(args.model, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        if args.decode:
            decode_costs(clf, args.library, args.throughput_photos or 10**9, args.rounds, args.upscale)
            return
        if args.scale:
            scale_run(clf, args.library, args.scale, args.batch_size, args.spatial_dim, args.seed)
            return
        if not args.skip_throughput:
            throughput(clf, args.library, args.batch_size, args.rounds, args.throughput_photos)
        if args.pair:
            pair_run(clf, args.library, args.batch_size, args.seed, cache, search_overrides(args))
        else:
            search_timing(clf, args.library, args.batch_size, args.seed, cache, search_overrides(args))
    print(f"peak RSS {peak_rss_mb():.0f} MiB; pid {os.getpid()}")


if __name__ == "__main__":
    main()
