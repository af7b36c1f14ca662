"""Step 2 of the library search: exact scores by pasting, and the rankings built on them.

Each proposal is pasted on the pair's training images at given areas and positions
(`patchlab.patches.crops.score_crops_by_setting`) and scored by train success (top-1 =
target) and the mean gain in log p(target) - log p(source); the ranking keys and the
distinct selection (no overlapping boxes of one photo) are here.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..patches.apply import CORNERS
from ..patches.crops import CropSet, distinct_top, score_crops_by_setting
from .proposals import Proposals


RANK_BY = ("success", "gain", "static")


def score_rotated(
    classifier, crops: torch.Tensor, images: torch.Tensor, source: int, target: int, areas: Sequence[float],
    positions: Sequence[str] = CORNERS, per_image: int | None = None, batch_size: int = 64,
    objective: str = "log_ratio",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`score_crops_by_setting` where image i sees `per_image` of the positions, rotating through
    them (all positions when None), averaged over images and positions: the mean gain and success
    per crop and area, two (K, len(areas)) tensors."""
    p = len(positions)
    per_image = p if per_image is None else min(per_image, p)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(images)):
        groups.setdefault(tuple(positions[(i * per_image + j) % p] for j in range(per_image)), []).append(i)
    gain = torch.zeros(len(crops), len(areas), device=classifier.device)
    win = torch.zeros(len(crops), len(areas), device=classifier.device)
    for pos, idx in groups.items():
        g, w = score_crops_by_setting(classifier, crops, images[idx], source, target, areas, pos, batch_size,
                                      objective)
        gain += g.mean(2) * len(idx) / len(images)
        win += w.mean(2) * len(idx) / len(images)
    return gain.cpu(), win.cpu()


def fine_rows(pool: Proposals, coarse: torch.Tensor, k: int, distinct: int, per_photo: int) -> torch.Tensor:
    """The k best proposals by coarse gain, at most per_photo of each photo, with the best
    proposal of at least `distinct` photos among them (so top_k distinct candidates can be filled)."""
    order = coarse.argsort(descending=True).tolist()
    photo = pool.photo.tolist()
    kept, seen = [], set()
    for j in order:  # the best proposal of each photo, until `distinct` photos
        if len(seen) >= distinct:
            break
        if photo[j] not in seen:
            kept.append(j)
            seen.add(photo[j])
    count = {p: 1 for p in seen}
    for j in order:  # then the rest in order
        if len(kept) >= k:
            break
        if j not in kept and count.get(photo[j], 0) < per_photo:
            kept.append(j)
            count[photo[j]] = count.get(photo[j], 0) + 1
    kept.sort(key=lambda j: -float(coarse[j]))
    return torch.tensor(kept, dtype=torch.long)


def at_best_area(gain: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From per-area scores (K, areas): each proposal's success at its best area (by success),
    the gain there, and that area's index."""
    success, best = win.max(1)
    return success, gain.gather(1, best[:, None])[:, 0], best


def rank_key(gain: torch.Tensor, win: torch.Tensor, rank_by: str) -> torch.Tensor:
    """A sort key (higher is better) from per-area scores (K, areas): the mean gain ("gain"); the
    mean success, the mean gain breaking ties ("success"); or the success at the proposal's best
    area, the gain there breaking ties ("static": the static protocol fixes one size)."""
    if rank_by == "gain":
        return gain.mean(1).float()
    if rank_by == "static":
        win, gain, _ = at_best_area(gain, win)
    else:
        win, gain = win.mean(1), gain.mean(1)
    order = torch.from_numpy(np.lexsort((gain.numpy(), win.numpy())))
    return torch.empty(len(order)).index_copy_(0, order, torch.arange(len(order), dtype=torch.float32))


def select_distinct(props: Proposals, key: torch.Tensor, k: int, per_photo: int) -> list[int]:
    """The k best distinct proposals by `key` (no overlapping boxes on a photo, at most per_photo per photo)."""
    order = distinct_top(key, CropSet(props.photo, props.boxes, props.whole), len(props), iou=0.3)
    kept, count = [], {}
    for j in order:
        p = int(props.photo[j])
        if count.get(p, 0) < per_photo:
            kept.append(j)
            count[p] = count.get(p, 0) + 1
        if len(kept) == k:
            break
    return kept


def static_scores(gain: torch.Tensor, win: torch.Tensor, sizes: Sequence[float]) -> dict[str, torch.Tensor]:
    """From per-setting scores (K, sizes, positions): each proposal's best size by success
    averaged over the positions (the static protocol fixes one size for every image), its
    success and gain there."""
    success, gain_there, best = at_best_area(gain.mean(2), win.mean(2))
    return {"success": success, "gain": gain_there, "size": torch.as_tensor(sizes, dtype=torch.float64)[best]}
