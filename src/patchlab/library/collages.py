"""Step 3b of the library search: two found proposals side by side as one patch.

Carter et al. 2019 pasted one photo per patch, and one photo is enough on sources near the
pair's boundary. On sources the model is sure of, a single photo rarely moves the label to
the target, but the features of two photos can add up: the search takes the best proposal of
each of the `combine` photos chosen below, puts every ordered pair of them side by side, each
in half the width, and scores the collages on the same train images, sizes and corners as
the single proposals they then compete with.

The parts are chosen in two steps: the best proposals of the `combine_from` photos with the
highest mean fine gain (`component_rows`; the fine stage sees one corner per image), then the
`combine` of them that flip the most train images pasted alone at `combine_size` in every
corner (`best_parts`): a photo that pulls toward the target in every corner adds to its partner.

Each part fills half the patch's width. A crop is cut again for that slot (`slot_boxes`):
a box of the same area and centre at half its aspect, so that the part keeps its proportions
and its content. A whole photo has nothing around it to cut into: it is either squeezed (all of
it, distorted) or cut to the half-width column whose feature cells score highest along the
pair's direction (in proportion, half of it), and a pair that holds a whole photo is made both
ways (`cut_collages`); the train images choose.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .index import LibraryIndex
from .proposals import Proposals, cut_proposals, window_scores
from .ranking import rank_key


def side_by_side(*parts: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Patches (…,3,h,w) in a row as one (…,3,h,width) (default width: w), each resampled to an equal
    share of it (antialiased): two square parts are squeezed, a part half as wide as tall keeps its
    proportions beside another."""
    h, w = parts[0].shape[-2:]
    width = w if width is None else width
    n = len(parts)
    columns = []
    for k, part in enumerate(parts):
        wide = (k + 1) * width // n - k * width // n
        flat = part.reshape(-1, *part.shape[-3:]).float()
        columns.append(F.interpolate(flat, size=(h, wide), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(columns, dim=-1).clamp(0, 1).reshape(*parts[0].shape[:-1], width)


def slot_boxes(parts: Proposals, image_px: float, share: float = 0.5) -> torch.Tensor:
    """Boxes (K,4) to cut the proposals `parts` for a slot `share` of the patch's width: a box at
    `share` times the aspect (width / height), with the area and centre, shrunk to fit the
    image_px-wide photo (then moved inside it): for a whole photo at share 0.5, its central half."""
    b = parts.boxes.float()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    tall_h = torch.clamp(h / share**0.5, max=image_px)
    tall_w = w / h * share * tall_h
    x1 = torch.minimum(((b[:, 0] + b[:, 2] - tall_w) / 2).clamp(min=0), image_px - tall_w)
    y1 = torch.minimum(((b[:, 1] + b[:, 3] - tall_h) / 2).clamp(min=0), image_px - tall_h)
    return torch.stack([x1, y1, x1 + tall_w, y1 + tall_h], dim=1)


@dataclass
class Collages:
    """Ordered pairs (`left`, `right`, (K,) each) of rows of `parts` (the proposals as cut for a
    half-width slot, at most one of a photo in a collage) and their patches (K,3,px,px)."""

    left: torch.Tensor
    right: torch.Tensor
    pixels: torch.Tensor
    parts: Proposals

    def __len__(self) -> int:
        return len(self.left)


def component_rows(pool: Proposals, rows: torch.Tensor, gain: torch.Tensor, allowed: torch.Tensor,
                   n: int) -> torch.Tensor:
    """The best proposal (by mean fine gain, `gain` (len(rows), areas)) of each of the n photos
    whose best proposal scores highest, among `rows` where `allowed` (pool-wide bool) holds."""
    out, seen = [], set()
    if n < 2:
        return torch.tensor(out, dtype=torch.long)
    order = gain.mean(1).argsort(descending=True).tolist()
    for j in order:
        r = int(rows[j])
        photo = int(pool.photo[r])
        if allowed[r] and photo not in seen:
            out.append(r)
            seen.add(photo)
            if len(out) == n:
                break
    return torch.tensor(out, dtype=torch.long)


def best_parts(shortlist: torch.Tensor, gain: torch.Tensor, success: torch.Tensor, n: int) -> torch.Tensor:
    """The n rows of `shortlist` with the highest train success, ties by the gain (gain and success:
    (len(shortlist),) each, the rows pasted alone), best first."""
    key = rank_key(gain.reshape(-1, 1), success.reshape(-1, 1), "success")
    return shortlist[key.argsort(descending=True)[:n]]


def make_collages(parts: Proposals, pixels: torch.Tensor, versions: Sequence[torch.Tensor] | None = None) -> Collages:
    """Every ordered pair of two of n proposals side by side, in each version: a (n,) tensor of the
    row of `parts` (and `pixels`, (len(parts),3,px,px)) that stands for each (default: parts' own
    n rows); a pair of rows made in two versions is made once."""
    versions = [torch.arange(len(parts))] if versions is None else versions
    n = len(versions[0])
    a, b = torch.cartesian_prod(torch.arange(n), torch.arange(n)).reshape(-1, 2).unbind(1)
    a, b = a[a != b], b[a != b]
    pairs = torch.cat([torch.stack([v[a], v[b]], dim=1) for v in versions]).tolist()
    left, right = torch.tensor(list(dict.fromkeys(map(tuple, pairs))), dtype=torch.long).reshape(-1, 2).unbind(1)
    return Collages(left, right, side_by_side(pixels[left], pixels[right]), parts)


def best_columns(index: LibraryIndex, direction: torch.Tensor, photos: torch.Tensor, share: float = 0.5) -> torch.Tensor:
    """Boxes (n,4) of the full-height window `share` of the width of each library photo (rows
    `photos`) whose feature cells score highest along `direction` (`proposals.window_scores`)."""
    if not len(photos):
        return torch.empty(0, 4)
    maps = index.cell_scores(direction, photos.numpy())
    return window_scores(maps, index.input_size, share**0.5, share)[1].float()


def half_slot_parts(index: LibraryIndex, pool: Proposals, rows: torch.Tensor, px: int,
                    direction: torch.Tensor) -> tuple[Proposals, torch.Tensor, list[torch.Tensor]]:
    """The proposals `pool` rows `rows` cut from their photos for a half-width slot
    (`slot_boxes`; a whole photo twice: squeezed, and cut to its half-width column that scores
    highest along the pair `direction`, `best_columns`): the parts, their px x px pixels, and the
    two versions of the n rows as rows of the parts (`make_collages`'s `versions`)."""
    chosen = pool.take(rows)
    whole = torch.nonzero(chosen.whole).flatten()
    halves = torch.where(chosen.whole[:, None], chosen.boxes.float(),  # a whole photo squeezed
                         slot_boxes(chosen, float(index.input_size)))
    columns = replace(chosen.take(whole), boxes=best_columns(index, direction, chosen.photo[whole]),
                      whole=torch.zeros(len(whole), dtype=torch.bool))
    parts = Proposals.cat([replace(chosen, boxes=halves), columns])
    pixels = cut_proposals(index, parts, px) if len(parts) else torch.empty(0, 3, px, px)
    in_columns = torch.arange(len(chosen))
    in_columns[whole] = len(chosen) + torch.arange(len(whole))
    return parts, pixels, [torch.arange(len(chosen)), in_columns]


def cut_collages(index: LibraryIndex, pool: Proposals, rows: torch.Tensor, px: int,
                 direction: torch.Tensor) -> Collages:
    """Every ordered pair of the proposals `pool` rows `rows` (of different photos), each cut for a
    half-width slot (`half_slot_parts`), side by side as px x px patches; a pair that holds a whole
    photo twice: with it squeezed, and with it cut to its best column."""
    return make_collages(*half_slot_parts(index, pool, rows, px, direction))


def distinct_pairs(col: Collages, key: torch.Tensor, k: int) -> list[int]:
    """The k best collages by `key`, at most one per unordered pair of photos (in any version)."""
    kept, seen = [], set()
    photo = col.parts.photo
    for j in key.argsort(descending=True).tolist():
        pair = frozenset((int(photo[col.left[j]]), int(photo[col.right[j]])))
        if pair not in seen:
            kept.append(j)
            seen.add(pair)
            if len(kept) == k:
                break
    return kept
