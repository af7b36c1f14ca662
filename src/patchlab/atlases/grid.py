"""Binning a layout into an n x n grid of cells (Activation Atlas, Carter et al. 2019).

Each cell averages its members' activation vectors (the vector its icon
visualizes) and attributions; cells with fewer than `min_count` members are
dropped, as in the article (~4-10). Cells are numbered row-major from the top
left: id = iy * n + ix, with x growing right and y growing down.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch


@dataclass
class Cells:
    """The kept cells of one grid.

    ids, ix, iy, count: (K,); vectors (K, C) float32 mean activation;
    attribution (K,) mean pair attribution (or NaN); class_attr (K, Kc);
    top_images: per cell, image ids of its most frequent members;
    assign: (M,) cell id of every point; dropped: cells under min_count.
    """

    n: int
    ids: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    count: np.ndarray
    vectors: np.ndarray
    attribution: np.ndarray
    class_attr: np.ndarray | None
    top_images: list[list[int]]
    assign: np.ndarray
    dropped: int = 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, cell_id: int) -> int:
        return int(np.nonzero(self.ids == cell_id)[0][0])


def bin_points(coords: np.ndarray, n: int) -> np.ndarray:
    """Cell id (iy * n + ix) of each point of a (M, 2) layout in [0, 1]; 1.0 falls in the last cell."""
    coords = np.asarray(coords, dtype=np.float64)
    idx = np.clip(np.floor(coords * n).astype(np.int64), 0, n - 1)
    return idx[:, 1] * n + idx[:, 0]


def mean_by_cell(vectors: np.ndarray, assign: np.ndarray, n_cells: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell sum -> mean of (M, C) vectors (streamed in chunks, works on a memmap); also counts."""
    C = vectors.shape[1]
    sums = torch.zeros(n_cells, C, dtype=torch.float64)
    for i in range(0, len(assign), chunk):
        block = torch.from_numpy(np.asarray(vectors[i : i + chunk], dtype=np.float32)).double()
        sums.index_add_(0, torch.from_numpy(assign[i : i + chunk]), block)
    counts = np.bincount(assign, minlength=n_cells)
    means = sums.numpy() / np.maximum(counts, 1)[:, None]
    return means.astype(np.float32), counts


def make_grid(
    coords: np.ndarray,
    vectors: np.ndarray,
    n: int = 10,
    attribution: np.ndarray | None = None,
    class_attr: np.ndarray | None = None,
    image_ids: np.ndarray | None = None,
    min_count: int = 4,
    top_k: int = 3,
) -> Cells:
    """Bin points into n x n cells and summarize each kept cell (count >= min_count)."""
    assign = bin_points(coords, n)
    n_cells = n * n
    means, counts = mean_by_cell(vectors, assign, n_cells)
    kept = np.nonzero(counts >= max(1, min_count))[0]
    dropped = int(((counts > 0) & (counts < max(1, min_count))).sum())

    def cell_mean(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            return (np.bincount(assign, weights=values, minlength=n_cells) / np.maximum(counts, 1))[kept]
        return np.stack([cell_mean(values[:, j]) for j in range(values.shape[1])], 1)

    attr = cell_mean(attribution) if attribution is not None else np.full(len(kept), np.nan)
    cattr = cell_mean(class_attr) if class_attr is not None else None
    top: list[list[int]] = []
    if image_ids is not None:
        order = np.lexsort((image_ids, assign))  # group by cell, then image
        a_sorted, i_sorted = assign[order], image_ids[order]
        starts = np.searchsorted(a_sorted, kept, side="left")
        ends = np.searchsorted(a_sorted, kept, side="right")
        for s, e in zip(starts, ends):  # one short loop over kept cells, not over points
            imgs, c = np.unique(i_sorted[s:e], return_counts=True)
            top.append([int(v) for v in imgs[np.argsort(-c, kind="stable")[:top_k]]])
    else:
        top = [[] for _ in kept]
    return Cells(
        n=n, ids=kept, ix=kept % n, iy=kept // n, count=counts[kept], vectors=means[kept], attribution=attr,
        class_attr=cattr, top_images=top, assign=assign, dropped=dropped,
    )


def cells_table(cells: Cells, image_names: list[str], view: str, class_names: list[str] | None = None):
    """A pandas table of kept cells (one row each) for cells.csv."""
    data = {
        "view": view, "cell": cells.ids, "ix": cells.ix, "iy": cells.iy, "count": cells.count,
        "mean_attribution": cells.attribution,
    }
    if cells.class_attr is not None and class_names:
        for j, name in enumerate(class_names):
            data[f"attr_{name}"] = cells.class_attr[:, j]
    for key, vals in cells.extra.items():
        data[key] = vals
    data["top_images"] = [";".join(image_names[i] for i in t) for t in cells.top_images]
    return pd.DataFrame(data)
