"""Step 1 of the library search: the pair direction, which photos may be patches, and
proposals (whole photos and crops) ranked from the index alone, then cut to pixels.

Crops at several scales and aspect ratios, centred on every cell of a photo's spatial
feature map, score the area-weighted mean of d . spatial over the cells they cover; whole
photos score d . pooled (Carter et al. 2019's separating direction d; Casper et al. 2022
rank a natural-image library by feature similarity the same way). A 4:3 or 3:4 crop is
resampled (stretched) to the square patch, keeping all of it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..patches.crops import CropSet, cut_crops
from ..patches.direction import pair_direction, pooled_features
from .index import LibraryIndex

CROP_SCALES = (0.35, 0.5, 0.7)
CROP_ASPECTS = (1.0, 4 / 3, 3 / 4)  # width / height


@dataclass
class Proposals:
    """Boxes (K,4) x1,y1,x2,y2 in model-input pixels on library rows `photo` (K,), with index scores."""

    photo: torch.Tensor
    boxes: torch.Tensor
    score: torch.Tensor
    whole: torch.Tensor  # (K,) bool
    mirror: torch.Tensor | None = None  # (K,) bool: the cut is flipped left-right (None: none is)

    def __post_init__(self) -> None:
        if self.mirror is None:
            self.mirror = torch.zeros(len(self.photo), dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.photo)

    def take(self, rows: torch.Tensor | Sequence[int]) -> "Proposals":
        rows = torch.as_tensor(rows, dtype=torch.long)
        return Proposals(*(getattr(self, f)[rows] for f in PROPOSAL_FIELDS))

    def mirrored(self) -> "Proposals":
        """The same boxes, cut flipped left-right."""
        return Proposals(self.photo, self.boxes, self.score, self.whole, torch.ones(len(self), dtype=torch.bool))

    @staticmethod
    def cat(parts: Sequence["Proposals"]) -> "Proposals":
        return Proposals(*(torch.cat([getattr(p, f) for p in parts]) for f in PROPOSAL_FIELDS))


PROPOSAL_FIELDS = ("photo", "boxes", "score", "whole", "mirror")


def library_direction(classifier, index: LibraryIndex, source: int, target: int,
                      pair_images: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, str]:
    """d at the feature layer: head row target minus source (Carter et al. 2019); without a linear
    head on that layer, the difference of the mean pooled features of the library's target and
    source photos, else of the pair's own (source, target) images when `pair_images` are given."""
    if classifier.direction_head is not None:
        return pair_direction(classifier, source, target).cpu(), "head: w_target - w_source"
    cls = index.photo_class()
    rows_t, rows_s = np.flatnonzero(cls == target), np.flatnonzero(cls == source)
    if len(rows_t) and len(rows_s):
        def mean(rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(index.pooled[rows], dtype=np.float32)).mean(0)

        return mean(rows_t) - mean(rows_s), f"library means: {len(rows_t)} target - {len(rows_s)} source photos"
    if pair_images is not None and all(len(x) for x in pair_images):
        src, tgt = (pooled_features(classifier, x).float().mean(0).cpu() for x in pair_images)
        return tgt - src, f"pair means: {len(pair_images[1])} target - {len(pair_images[0])} source images"
    names = classifier.classes
    raise UserError(
        f"model {classifier.spec} has no linear head on its feature layer, and the library lacks photos of "
        f"{names.label(target) if not len(rows_t) else names.label(source)!r} to estimate the pair direction from")


def eligible_photos(index: LibraryIndex, source: int, target: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(N,) bool: photos that may become patches, and what was excluded.

    Target photos (labelled target, or top-1 target) are references, not natural
    patches; source photos (labelled source, or unlabelled with top-1 source) are excluded too.
    """
    labels, top1 = index.labels, index.top1
    is_target = (labels == target) | (top1 == target)
    is_source = ((labels == source) | ((labels < 0) & (top1 == source))) & ~is_target
    keep = ~(is_target | is_source)
    info = {
        "excluded_target_photos": int(is_target.sum()), "excluded_source_photos": int(is_source.sum()),
        "target_photo_files": [index.paths[i] for i in np.flatnonzero(is_target)[:10]],
        "eligible_photos": int(keep.sum()),
    }
    return keep, info


def _overlap(size: float, centers: torch.Tensor, n_cells: int, image: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Intervals of length `size` px centred at `centers` (clamped inside the image) and their
    normalized overlap with each of n_cells cells: (P,2) and (P,n_cells)."""
    half = min(size, image) / 2
    c = centers.clamp(half, image - half)
    lo, hi = c - half, c + half
    edges = torch.arange(n_cells + 1, dtype=torch.float32) * image / n_cells
    ov = (torch.minimum(hi[:, None], edges[None, 1:]) - torch.maximum(lo[:, None], edges[None, :-1])).clamp(min=0)
    return torch.stack([lo, hi], 1), ov / ov.sum(1, keepdim=True)


def window_scores(maps: torch.Tensor, image: int, scale: float, aspect: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Best box of one scale / aspect per map: area-weighted mean of the cells it covers,
    over boxes centred on every cell. maps (n,h,w) -> score (n,), box (n,4) in pixels."""
    n, h, w = maps.shape
    bw, bh = scale * image * math.sqrt(aspect), scale * image / math.sqrt(aspect)
    xs, wx = _overlap(bw, (torch.arange(w, dtype=torch.float32) + 0.5) * image / w, w, image)
    ys, wy = _overlap(bh, (torch.arange(h, dtype=torch.float32) + 0.5) * image / h, h, image)
    grid = torch.einsum("yi,nij,xj->nyx", wy, maps, wx).flatten(1)  # (n, h*w) window means
    best, arg = grid.max(1)
    y, x = arg // w, arg % w
    return best, torch.stack([xs[x, 0], ys[y, 0], xs[x, 1], ys[y, 1]], 1)


def _crop_chunk(index, d, rows: np.ndarray, scales, aspects, per_photo: int) -> Proposals:
    """The `per_photo` best windows (over scales x aspects) of each photo in `rows`."""
    maps = index.cell_scores(d, rows)
    found = [window_scores(maps, index.input_size, s, a) for s in scales for a in aspects]
    score = torch.stack([f[0] for f in found], 1)  # (n, A)
    boxes = torch.stack([f[1] for f in found], 1)  # (n, A, 4)
    k = min(per_photo, score.shape[1])
    top, arg = score.topk(k, dim=1)
    pick = boxes.gather(1, arg[..., None].expand(-1, -1, 4))
    photo = torch.from_numpy(rows).long()[:, None].expand(-1, k)
    return Proposals(photo.reshape(-1), pick.reshape(-1, 4), top.reshape(-1),
                     torch.zeros(top.numel(), dtype=torch.bool))


def _best(props: Proposals, k: int) -> Proposals:
    return props.take(props.score.topk(min(k, len(props))).indices) if len(props) > k else props


def index_proposals(
    index: LibraryIndex, direction: torch.Tensor, eligible: np.ndarray, shortlist: int,
    scales: Sequence[float] = CROP_SCALES, aspects: Sequence[float] = CROP_ASPECTS, whole_share: float = 0.5,
    crops_per_photo: int = 2, chunk: int = 2048, whole_sweep: int = 0,
) -> tuple[Proposals, int]:
    """The shortlist from the index alone: the best whole photos (`whole_share` of it, or
    the best `whole_sweep` by index when that is more: with a small library, every whole
    photo) and the best crops (at most `crops_per_photo` per photo); also the number of
    proposals ranked."""
    rows = np.flatnonzero(eligible)
    if not len(rows):
        raise UserError("the library has no photos other than source and target photos")
    s = index.input_size
    pooled = index.pooled_scores(direction)[torch.from_numpy(rows)]
    share = max(1, round(shortlist * whole_share)) if scales else shortlist
    n_whole = max(share, whole_sweep)
    top = pooled.topk(min(n_whole, len(rows)))
    n = len(top.indices)
    whole = Proposals(torch.from_numpy(rows).long()[top.indices], torch.tensor([[0.0, 0.0, s, s]]).expand(n, 4),
                      top.values, torch.ones(n, dtype=torch.bool))
    crops: Proposals | None = None
    n_crop = shortlist - share
    for i in range(0, len(rows) if scales and n_crop > 0 else 0, chunk):
        part = _crop_chunk(index, direction, rows[i : i + chunk], scales, aspects, crops_per_photo)
        crops = _best(part if crops is None else Proposals.cat([crops, part]), n_crop)
    ranked = len(rows) * (1 + len(scales) * len(aspects))
    return (whole if crops is None else Proposals.cat([whole, crops])), ranked


def random_whole(index: LibraryIndex, eligible: np.ndarray, n: int, generator: torch.Generator) -> Proposals:
    """n eligible photos whole, drawn at random (a baseline beside the index shortlist; no index score: NaN)."""
    rows = np.flatnonzero(eligible)
    pick = torch.from_numpy(rows).long()[torch.randperm(len(rows), generator=generator)[: min(n, len(rows))]]
    s = index.input_size
    return Proposals(pick, torch.tensor([[0.0, 0.0, s, s]]).expand(len(pick), 4).clone(),
                     torch.full((len(pick),), float("nan")), torch.ones(len(pick), dtype=torch.bool))


def cut_proposals(index: LibraryIndex, props: Proposals, px: int, photos_per_chunk: int = 64) -> torch.Tensor:
    """The proposals' pixels, resampled to px x px (roi_align): (K,3,px,px); photos decoded in chunks."""
    out = torch.empty(len(props), 3, px, px)
    uniq = torch.unique(props.photo)
    for i in range(0, len(uniq), photos_per_chunk):
        part = uniq[i : i + photos_per_chunk]
        rows = torch.nonzero(torch.isin(props.photo, part)).flatten()
        local = torch.searchsorted(part, props.photo[rows])
        photos = index.load_photos(part.tolist())
        out[rows] = cut_crops(photos, CropSet(local, props.boxes[rows], props.whole[rows]), px).cpu()
    flip = torch.nonzero(props.mirror).flatten()
    out[flip] = out[flip].flip(-1)
    return out
