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
  of the other photos' parts (cut as the search cuts them);
- thirds: three parts in a row, each in a third of the width: the --around best search collages on
  the train images, each with every other of the 12 photos added left, between or right.
Every collage is pasted at --area in each corner on the train and SELECTION images. For each pool,
alone and added to the search's, it prints the best selection rate of any collage in its best corner
(the pool's ceiling on these images, chosen on them: optimistic) and, with each collage's corner
and the ten chosen on the train images, the best and the ten's mean (`collage_parts.selection_rates`).
These choose settings; they count nothing.

    python experiments/collage_pools.py --library ../shared/realphotos --seed 1
    python experiments/collage_pools.py --library ../shared/realphotos --seed 1 --pools thirds --around 3 10
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch
from collage_parts import choose_parts, confident_pair_parser, corner_scores, selection_rates, watched_pair

from patchlab.library.collages import (
    Collages, best_columns, half_slot_parts, make_collages, side_by_side, slot_boxes,
)
from patchlab.library.proposals import Proposals, cut_proposals, window_scores
from patchlab.library.ranking import rank_key

PARTS = 12  # the search's default `combine`
PX = 128
POOLS = ("stack", "window", "zoom", "expand", "thirds")


def main() -> None:
    ap = confident_pair_parser(__doc__)
    ap.add_argument("--photos", type=int, default=40, help="photos whose best proposals may be parts")
    ap.add_argument("--expand", type=int, default=3, help="search collages whose parts are swapped")
    ap.add_argument("--around", type=int, nargs="+", default=[3, 10],
                    help="thirds: grown from this many best search collages (each count printed)")
    ap.add_argument("--pools", nargs="+", choices=POOLS, default=list(POOLS))
    args = ap.parse_args()
    t0 = time.perf_counter()
    clf, s, t, pair, index, seen = watched_pair(args)
    ordered = choose_parts(clf, index, seen, pair.train, s, t, f"alone-{args.photos}", args.photos, args.area)
    pool, d = seen["pool"], seen["direction"]
    parts, pixels, versions = half_slot_parts(index, pool, ordered, PX, d)
    search = make_collages(parts, pixels, [v[:PARTS] for v in versions])
    chosen = pool.take(ordered[:PARTS])
    makers = {"stack": lambda: stacked(index, chosen, d), "window": lambda: windowed(index, chosen, d, 1.0),
              "zoom": lambda: windowed(index, chosen, d, 0.5)}
    pools = {"search": search.pixels, **{name: make() for name, make in makers.items() if name in args.pools}}
    scores = {name: corner_scores(clf, px, pair, args.area) for name, px in pools.items()}
    rank = train_ranking(scores["search"])
    photo_of = {int(r): i for v in versions for i, r in enumerate(v)}
    if "expand" in args.pools:
        pools["expand"] = swapped(search, rank, photo_of, versions, pixels, args.expand)
        scores["expand"] = corner_scores(clf, pools["expand"], pair, args.area)
    if "thirds" in args.pools:
        grown, origin = thirds(index, chosen, d, search, rank, photo_of, max(args.around))
        grown_scores = corner_scores(clf, grown, pair, args.area)
        for n in sorted(args.around):  # the triples grown from the n best collages
            pools[f"thirds-{n}"] = grown[origin < n]
            scores[f"thirds-{n}"] = [x[origin < n] for x in grown_scores]
    for name, px in pools.items():
        print(f"  {name:9s} {len(px):4d} collages: {selection_rates(*scores[name])}")
        if name != "search":
            both = [torch.cat([a, b]) for a, b in zip(scores["search"], scores[name])]
            print(f"  search + {name:9s} {len(px) + len(search):4d}: {selection_rates(*both)}")
    print(f"total {time.perf_counter() - t0:.0f} s")


def stacked(index, chosen: Proposals, direction: torch.Tensor) -> torch.Tensor:
    """Every ordered pair of the proposals one above the other, each cut at twice its aspect; a whole
    photo squeezed, and cut to its best full-width row. Made as the search's side-by-side collages of
    the transposed boxes and pixels, transposed back."""
    swap = [1, 0, 3, 2]
    size = float(index.input_size)
    wide = slot_boxes(replace(chosen, boxes=chosen.boxes[:, swap]), size)[:, swap]
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


def train_ranking(scores: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Collage indices best first on the train images, each collage in its best corner there."""
    g_train, w_train, _ = scores
    corner = w_train.argmax(1)
    return rank_key(g_train.gather(1, corner[:, None]), w_train.gather(1, corner[:, None]), "success").argsort(
        descending=True)


def swapped(search: Collages, rank: torch.Tensor, photo_of: dict[int, int], versions: list[torch.Tensor],
            pixels: torch.Tensor, top: int) -> torch.Tensor:
    """The `top` search collages best on the train images (`rank`), with either part swapped for each
    other photo's part in both its versions (`versions`: rows of the parts and their `pixels`, as
    `half_slot_parts` returns them; `photo_of`: a part row's photo); pairs the search made left out."""
    made = set(zip(search.left.tolist(), search.right.tolist()))
    pairs: dict[tuple[int, int], None] = {}
    for j in rank[:top].tolist():
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


def thirds(index, chosen: Proposals, direction: torch.Tensor, search: Collages, rank: torch.Tensor,
           photo_of: dict[int, int], around: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three parts in a row: the `around` best search collages on the train images (`rank`; one per
    ordered pair of photos), each with every other of the `chosen` photos added left, between or
    right; every part cut for a third-width slot (`slot_boxes` at share 1/3; a whole photo: its best
    third-width column). Returns the patches and, for each, the rank of the collage it grew from."""
    third = 1 / 3
    whole = torch.nonzero(chosen.whole).flatten()
    boxes = slot_boxes(chosen, float(index.input_size), third)
    boxes[whole] = best_columns(index, direction, chosen.photo[whole], third)
    cut = cut_proposals(index, replace(chosen, boxes=boxes, whole=torch.zeros(len(chosen), dtype=torch.bool)), PX)
    rows: dict[tuple[int, int, int], int] = {}
    grown: list[tuple[int, int]] = []
    for j in rank.tolist():
        a, b = photo_of[int(search.left[j])], photo_of[int(search.right[j])]
        if (a, b) in grown:
            continue
        for m in range(len(chosen)):
            if m not in (a, b):
                for row in ((m, a, b), (a, m, b), (a, b, m)):
                    rows.setdefault(row, len(grown))
        grown.append((a, b))
        if len(grown) == around:
            break
    members = torch.tensor(list(rows), dtype=torch.long)
    return side_by_side(*cut[members].unbind(1)), torch.tensor(list(rows.values()))

if __name__ == "__main__":
    main()
