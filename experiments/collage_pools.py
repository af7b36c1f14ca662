"""Does a larger pool of collages hold a better one? A development check of the collage stage's ceiling.

On a development seed's confident synthesized sources, the search runs once on its train images
(`collage_parts.watched_search`). Its parts are the best proposals of --photos photos, ordered by how
many train images each flips alone at --area in every corner (the search pairs the first 12). Pools:
- search: every ordered pair of the 12, as the search makes them (`library.collages.cut_collages`);
- stack: the 12 one above the other, each part cut at twice its aspect (a whole photo squeezed, or
  cut to its full-width, half-height row that scores highest along the pair direction);
- window: each of the 12 cut at its best half-aspect window of the same area anywhere in its photo
  (a whole photo: its best column), side by side;
- zoom: the same at half the area (the part's feature seen closer);
- expand: the --expand best search collages on the train images, with either part swapped for each
  of the other photos' parts (cut as the search cuts them).
Every collage is pasted at --area in each corner on the train and SELECTION images. For each pool,
alone and added to the search's, it prints the best selection rate of any collage in its best corner
(the pool's ceiling on these images, chosen on them: optimistic) and, with each collage's corner
and the ten chosen on the train images, the best and the ten's mean (`collage_parts.selection_rates`).
These choose settings; they count nothing.

    python experiments/collage_pools.py --library ../shared/realphotos --seed 1
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from atlas_pairs import add_pair_args, pair_and_library
from collage_parts import choose_parts, corner_scores, selection_rates, watched_search

from patchlab.library.collages import Collages, half_slot_parts, half_width_boxes, make_collages, side_by_side
from patchlab.library.proposals import Proposals, cut_proposals, window_scores
from patchlab.library.ranking import rank_key

PARTS = 12  # the search's default `combine`
PX = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_args(ap, train=16, selection=16, confirmation=32)
    ap.add_argument("--photos", type=int, default=40, help="photos whose best proposals may be parts")
    ap.add_argument("--expand", type=int, default=3, help="search collages whose parts are swapped")
    ap.add_argument("--area", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=1)
    ap.set_defaults(source_band=[0.85, 1.0], target_band=[0.0, 0.01])
    args = ap.parse_args()
    t0 = time.perf_counter()
    clf, s, t, pair, index = pair_and_library(args)
    seen = watched_search(clf, index, pair.train, s, t)
    ordered = choose_parts(clf, index, seen, pair.train, s, t, f"alone-{args.photos}", args.photos, args.area)
    pool, d = seen["pool"], seen["direction"]
    parts, pixels, versions = half_slot_parts(index, pool, ordered, PX, d)
    search = make_collages(parts, pixels, [v[:PARTS] for v in versions])
    chosen = pool.take(ordered[:PARTS])
    pools = {"search": search.pixels, "stack": stacked(index, chosen, d), "window": windowed(index, chosen, d, 1.0),
             "zoom": windowed(index, chosen, d, 0.5)}
    print(f"{clf.classes.label(s)} -> {clf.classes.label(t)}, seed {args.seed}: {len(pair.selection)} selection "
          f"images, collages at {100 * args.area:.0f} % area; parts from {len(ordered)} photos", flush=True)
    scores = {name: corner_scores(clf, px, pair, args.area) for name, px in pools.items()}
    pools["expand"] = swapped(search, scores["search"], versions, pixels, args.expand)
    scores["expand"] = corner_scores(clf, pools["expand"], pair, args.area)
    for name, px in pools.items():
        print(f"  {name:7s} {len(px):4d} collages: {selection_rates(*scores[name])}")
        if name != "search":
            both = [torch.cat([a, b]) for a, b in zip(scores["search"], scores[name])]
            print(f"  search + {name:7s} {len(px) + len(search):4d}: {selection_rates(*both)}")
    print(f"total {time.perf_counter() - t0:.0f} s")


def stacked(index, chosen: Proposals, direction: torch.Tensor) -> torch.Tensor:
    """Every ordered pair of the proposals one above the other, each cut at twice its aspect; a whole
    photo squeezed, and cut to its best full-width row. Made as the search's side-by-side collages of
    the transposed boxes and pixels, transposed back."""
    swap = [1, 0, 3, 2]
    size = float(index.input_size)
    wide = half_width_boxes(replace(chosen, boxes=chosen.boxes[:, swap]), size)[:, swap]
    boxes = torch.where(chosen.whole[:, None], chosen.boxes.float(), wide)
    whole = torch.nonzero(chosen.whole).flatten()
    maps = index.cell_scores(direction, chosen.photo[whole].numpy())
    rows = replace(chosen.take(whole), boxes=window_scores(maps, index.input_size, 0.5**0.5, 2.0)[1].float(),
                   whole=torch.zeros(len(whole), dtype=torch.bool))
    parts = Proposals.cat([replace(chosen, boxes=boxes), rows])
    in_rows = torch.arange(len(chosen))
    in_rows[whole] = len(chosen) + torch.arange(len(whole))
    pixels = cut_proposals(index, parts, PX).transpose(-1, -2)
    return make_collages(parts, pixels, [torch.arange(len(chosen)), in_rows]).pixels.transpose(-1, -2)


def windowed(index, chosen: Proposals, direction: torch.Tensor, area_factor: float) -> torch.Tensor:
    """Every ordered pair of the proposals side by side, each cut at its best window (along the pair
    direction) of half its aspect and `area_factor` times its area (a whole photo: half of it)."""
    b = chosen.boxes.float()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    size = float(index.input_size)
    scale = torch.where(chosen.whole, torch.tensor(0.5**0.5), (w * h).sqrt() / size) * area_factor**0.5
    aspect = torch.where(chosen.whole, torch.tensor(0.5), w / h / 2)
    maps = index.cell_scores(direction, chosen.photo.numpy())
    boxes = torch.cat([window_scores(maps[k : k + 1], index.input_size, float(scale[k]), float(aspect[k]))[1]
                       for k in range(len(chosen))]).float()
    parts = replace(chosen, boxes=boxes, whole=torch.zeros(len(chosen), dtype=torch.bool))
    return make_collages(parts, cut_proposals(index, parts, PX)).pixels


def swapped(search: Collages, scores: tuple[torch.Tensor, ...], versions: list[torch.Tensor],
            pixels: torch.Tensor, top: int) -> torch.Tensor:
    """The `top` search collages best on the train images (each in its best corner), with either part
    swapped for each other photo's part in both its versions (`versions`: rows of the parts and their
    `pixels`, as `half_slot_parts` returns them); pairs the search already made left out."""
    g_train, w_train, _ = scores
    corner = w_train.argmax(1)
    key = rank_key(g_train.gather(1, corner[:, None]), w_train.gather(1, corner[:, None]), "success")
    photo_of = {int(r): i for v in versions for i, r in enumerate(v)}
    made = set(zip(search.left.tolist(), search.right.tolist()))
    pairs: dict[tuple[int, int], None] = {}
    for j in key.argsort(descending=True)[:top].tolist():
        a, b = int(search.left[j]), int(search.right[j])
        for m in range(len(versions[0])):
            if m in (photo_of[a], photo_of[b]):
                continue
            for v in versions:
                for pair in ((int(v[m]), b), (a, int(v[m]))):
                    if pair not in made:
                        pairs[pair] = None
    left, right = torch.tensor(list(pairs), dtype=torch.long).reshape(-1, 2).unbind(1)
    return side_by_side(pixels[left], pixels[right])


if __name__ == "__main__":
    main()
