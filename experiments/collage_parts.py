"""Which photos, and how many, should the library search pair into collages? A development check.

On a development seed's confident synthesized sources, the search runs once (its train images,
sizes 10-40 %); its collage stage is watched to keep the fine-scored proposals and their gains.
For each rule and count N, the parts are the best proposals of N photos (`patchlab.library.collages`):
- "fine": the N photos with the highest mean fine gain;
- "alone-M": of the best proposals of the M photos with the highest mean fine gain, the N that
  flip the most train images pasted alone at --area in every corner (the search's rule).
Every ordered pair is pasted at --area in each corner on the train and SELECTION images, with each
part in its half-width slot as the search makes it ("cut": a crop cut again at half its aspect, a
whole photo both squeezed and cut to its best column) or squeezed ("squeeze"). It prints
the best collage's selection rate in its best corner and the mean of the 10 best (optimistic: the
corner and the ranking chosen on the same images), then the same with the corner and the ten
chosen on the train images. These choose settings; they count nothing.

    python experiments/collage_parts.py --library ../shared/realphotos --seed 1 --counts 6 8 10 12 16
    python experiments/collage_parts.py --library ../shared/realphotos --seed 1 --counts 12 --rules fine alone-40 alone-80
    python experiments/collage_parts.py --library ../shared/realphotos --seed 1 --counts 12 --rules alone-40 --layouts squeeze cut
"""
from __future__ import annotations

import argparse
import time

import torch
from atlas_pairs import add_pair_args, pair_and_library

import patchlab.library.search as search_mod
from patchlab.library import SearchSettings, search_library
from patchlab.library.collages import best_parts, component_rows, cut_collages, make_collages
from patchlab.library.proposals import cut_proposals
from patchlab.library.ranking import rank_key
from patchlab.patches.apply import CORNERS
from patchlab.patches.crops import score_crops_by_setting


def main() -> None:
    ap = confident_pair_parser(__doc__)
    ap.add_argument("--counts", type=int, nargs="+", default=[6, 8, 10, 12, 16])
    ap.add_argument("--rules", nargs="+", default=["fine"], help="fine, or alone-M (M: photos rescored alone)")
    ap.add_argument("--layouts", nargs="+", choices=("cut", "squeeze"), default=["cut"],
                    help="cut: crops cut again at half their aspect (the search's); squeeze: every part squeezed")
    args = ap.parse_args()
    t0 = time.perf_counter()
    clf, s, t, pair, index, seen = watched_pair(args)
    for rule in args.rules:
        for n in args.counts:
            parts = choose_parts(clf, index, seen, pair.train, s, t, rule, n, args.area)
            for layout in args.layouts:
                col = collages(index, seen, parts, layout)
                scores = corner_scores(clf, col.pixels, pair, args.area)
                print(f"  {rule:9s} {n:2d} photos, {layout:7s} {len(col):3d} collages: {selection_rates(*scores)}",
                      flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


def confident_pair_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a collage development check: the pair and library (`add_pair_args`; 16 train,
    16 selection images), --area of the collages and --seed, with confident sources by default."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_pair_args(ap, train=16, selection=16, confirmation=32)
    ap.add_argument("--area", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=1)
    ap.set_defaults(source_band=[0.85, 1.0], target_band=[0.0, 0.01])
    return ap


def watched_pair(args) -> tuple:
    """The model, pair, images and library (`pair_and_library`) and the search's collage-stage inputs
    (`watched_search`): (classifier, source, target, pair, index, seen); prints which pair and seed."""
    clf, s, t, pair, index = pair_and_library(args)
    seen = watched_search(clf, index, pair.train, s, t)
    print(f"{clf.classes.label(s)} -> {clf.classes.label(t)}, seed {args.seed}: {len(pair.selection)} selection "
          f"images, collages at {100 * args.area:.0f} % area", flush=True)
    return clf, s, t, pair, index, seen


def corner_scores(clf, pixels: torch.Tensor, pair, area: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patches pasted at `area` in each corner: train gain and success, selection success, (K, 4) each."""
    g_train, w_train = (x[:, 0].cpu() for x in score_crops_by_setting(
        clf, pixels, pair.train, pair.source, pair.target, (area,), CORNERS, 64))
    w_sel = score_crops_by_setting(clf, pixels, pair.selection, pair.source, pair.target, (area,), CORNERS,
                                   64)[1][:, 0].cpu()
    return g_train, w_train, w_sel


def selection_rates(g_train: torch.Tensor, w_train: torch.Tensor, w_sel: torch.Tensor) -> str:
    """The best selection rate in the best corner and the mean of the 10 best (optimistic: chosen on the
    selection images), then the same with each patch's corner and the ten chosen on train."""
    best = w_sel.max(1).values.sort(descending=True).values
    corner = w_train.argmax(1)  # chosen on train, counted on selection
    key = rank_key(g_train.gather(1, corner[:, None]), w_train.gather(1, corner[:, None]), "success")
    ten = w_sel.gather(1, corner[:, None])[:, 0][key.argsort(descending=True)[:10]]
    return (f"best {100 * best[0]:.0f} %, top-10 mean {100 * best[:10].mean():.1f} % | chosen on train: "
            f"best {100 * ten[0]:.0f} %, top-10 mean {100 * ten.mean():.1f} %")


def watched_search(clf, index, train: torch.Tensor, s: int, t: int) -> dict:
    """Run the library search once on the train images (sizes 10-40 %) and keep what its collage stage
    is given: the pool, the fine-scored rows and their gains, which rows may be parts, the pair direction."""
    seen: dict = {}

    def watched(pool, rows, gain, allowed, n):  # the search's own inputs to its collage stage
        seen.update(pool=pool, rows=rows, gain=gain, allowed=allowed)
        return component_rows(pool, rows, gain, allowed, n)

    def watched_direction(*args, **kwargs):  # the pair direction the search found
        d, how = direction(*args, **kwargs)
        seen["direction"] = d
        return d, how

    rows_fn, direction = search_mod.component_rows, search_mod.library_direction
    search_mod.component_rows, search_mod.library_direction = watched, watched_direction
    try:
        search_library(clf, index, train, s, t, SearchSettings(top_k=30, combine=2, combine_from=0),
                       sizes=(0.1, 0.2, 0.3, 0.4), generator=torch.Generator().manual_seed(0))
    finally:
        search_mod.component_rows, search_mod.library_direction = rows_fn, direction
    return seen


def collages(index, seen: dict, rows: torch.Tensor, layout: str):
    """Every ordered pair of the pool rows, in the search's layout ("cut") or each part squeezed."""
    if layout == "cut":
        return cut_collages(index, seen["pool"], rows, 128, seen["direction"])
    parts = seen["pool"].take(rows)
    return make_collages(parts, cut_proposals(index, parts, 128))


def choose_parts(clf, index, seen: dict, train: torch.Tensor, s: int, t: int, rule: str, n: int,
                 area: float) -> torch.Tensor:
    """The pool rows paired under `rule` ("fine" or "alone-M"; see the module docstring)."""
    if rule == "fine":
        return component_rows(seen["pool"], seen["rows"], seen["gain"], seen["allowed"], n)
    shortlist = component_rows(seen["pool"], seen["rows"], seen["gain"], seen["allowed"], int(rule.split("-")[1]))
    pixels = cut_proposals(index, seen["pool"].take(shortlist), 128)
    g, w = score_crops_by_setting(clf, pixels, train, s, t, (area,), CORNERS, 64)
    return best_parts(shortlist, g[:, 0].mean(1).cpu(), w[:, 0].mean(1).cpu(), n)


if __name__ == "__main__":
    main()
