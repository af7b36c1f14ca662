"""Step 3b of the library search: two found proposals side by side as one patch.

Carter et al. 2019 pasted one photo per patch, and one photo is enough on sources near the
pair's boundary. On sources the model is sure of, a single photo rarely moves the label to
the target, but the features of two photos can add up: the search takes the best proposal of
each of the `combine` photos with the highest mean fine gain, squeezes every ordered pair of
them to half width each, and scores the collages on the same train images, sizes and
corners as the single proposals they then compete with.

The parts are chosen in two steps: the best proposals of the `combine_from` photos with the
highest mean fine gain (`component_rows`; the fine stage sees one corner per image), then the
`combine` of them that flip the most train images pasted alone at `combine_size` in every
corner (`best_parts`): a photo that pulls toward the target in every corner adds to its partner.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .proposals import Proposals
from .ranking import rank_key


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Two patches (…,3,h,w) as one of the same size: each squeezed to half the width (antialiased)."""
    h, w = left.shape[-2:]
    halves = []
    for part, width in ((left, w // 2), (right, w - w // 2)):
        flat = part.reshape(-1, *part.shape[-3:]).float()
        halves.append(F.interpolate(flat, size=(h, width), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(halves, dim=-1).clamp(0, 1).reshape(left.shape)


@dataclass
class Collages:
    """Ordered pairs of pool rows (`left`, `right`, (K,) each) and their patches (K,3,px,px)."""

    left: torch.Tensor
    right: torch.Tensor
    pixels: torch.Tensor

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


def make_collages(pixels: torch.Tensor, parts: torch.Tensor) -> Collages:
    """Every ordered pair of the pool rows `parts` side by side (pixels: the pool's cut patches)."""
    left, right = torch.cartesian_prod(parts, parts).reshape(-1, 2).unbind(1)
    keep = left != right
    left, right = left[keep], right[keep]
    return Collages(left, right, side_by_side(pixels[left], pixels[right]))


def distinct_pairs(col: Collages, key: torch.Tensor, k: int) -> list[int]:
    """The k best collages by `key`, at most one per unordered pair of photos' proposals."""
    kept, seen = [], set()
    for j in key.argsort(descending=True).tolist():
        pair = frozenset((int(col.left[j]), int(col.right[j])))
        if pair not in seen:
            kept.append(j)
            seen.add(pair)
            if len(kept) == k:
                break
    return kept
