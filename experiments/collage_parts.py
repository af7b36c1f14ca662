"""How many photos should the library search pair into collages? A development check.

On a development seed's confident synthesized sources, the search runs once (its train images,
sizes 10-40 %); its collage stage is watched to keep the fine-scored proposals and their gains.
For each count N, the collages of the best proposals of the N photos with the highest mean fine
gain (`patchlab.library.collages`) are pasted at --area in each corner on the SELECTION images,
and it prints the best collage's rate (in its best corner) and the mean of the 10 best. These
choose a setting; they are optimistic (corner chosen on the same images) and count nothing.

    python experiments/collage_parts.py --library ../shared/realphotos --seed 1 --counts 6 8 10 12 16
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from atlas_pairs import add_band_args, pair_data

import patchlab.library.search as search_mod
from patchlab.library import SearchSettings, index_library, search_library
from patchlab.library.collages import component_rows, make_collages
from patchlab.models import load_classifier
from patchlab.patches.apply import CORNERS
from patchlab.patches.crops import score_crops_by_setting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, required=True)
    ap.add_argument("--pair", nargs=2, default=["snorkel", "scuba diver"], metavar=("SOURCE", "TARGET"))
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--train", type=int, default=16)
    ap.add_argument("--selection", type=int, default=16)
    ap.add_argument("--confirmation", type=int, default=32)
    ap.add_argument("--counts", type=int, nargs="+", default=[6, 8, 10, 12, 16])
    ap.add_argument("--area", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=1)
    add_band_args(ap)
    ap.set_defaults(source_band=[0.85, 1.0], target_band=[0.0, 0.01])
    args = ap.parse_args()
    t0 = time.perf_counter()
    clf = load_classifier("efficientnet_lite0", "auto")
    s, t = clf.classes.resolve(args.pair[0]), clf.classes.resolve(args.pair[1])
    pair = pair_data(clf, s, t, args)
    index = index_library(clf, args.library)
    seen: dict = {}

    def watched(pool, rows, gain, allowed, n):  # the search's own inputs to its collage stage
        seen.update(pool=pool, rows=rows, gain=gain, allowed=allowed)
        return component_rows(pool, rows, gain, allowed, n)

    search_mod.component_rows = watched
    def watched_pixels(pixels, parts):  # the search's cut proposals
        seen["pixels"] = pixels
        return make_collages(pixels, parts)

    search_mod.make_collages = watched_pixels
    search_library(clf, index, pair.train, s, t, SearchSettings(top_k=30, combine=2), sizes=(0.1, 0.2, 0.3, 0.4),
                   generator=torch.Generator().manual_seed(0))
    print(f"{clf.classes.label(s)} -> {clf.classes.label(t)}, seed {args.seed}: {len(pair.selection)} selection "
          f"images, collages at {100 * args.area:.0f} % area, best corner each")
    for n in args.counts:
        parts = component_rows(seen["pool"], seen["rows"], seen["gain"], seen["allowed"], n)
        col = make_collages(seen["pixels"], parts)
        _, wins = score_crops_by_setting(clf, col.pixels, pair.selection, s, t, (args.area,), CORNERS, 64)
        best = wins[:, 0, :].max(1).values.sort(descending=True).values
        print(f"  {n:2d} photos, {len(col):3d} collages: best {100 * best[0]:.0f} %, top-10 mean "
              f"{100 * best[:10].mean():.1f} %", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
