"""Class-pair ("gradient") view of Activation Atlas (Carter et al. 2019, the
snorkel / scuba diver figure).

x = attribution difference target - source of each activation, divided by the
99th percentile of |diff| and clipped to [-1, 1] (right = favors the target);
y = a 1-D embedding of the activation vectors (t-SNE with the cosine metric
as in the article, or UMAP 1-D, the default here: t-SNE in 1-D is ~5x
slower for 2000 points, and is used when points are too few for UMAP); the plane is binned into a 10 x 10 grid.
With many activations the article's magnitude filter keeps those with the
largest attribution to either class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .collect import Activations
from .grid import Cells, make_grid
from .layout import CLASS_ATLAS, Layout, layout


@dataclass
class PairView:
    """rows: indices into the Activations used; x in [-1, 1]; y in [0, 1]; scale: the 99th percentile of |diff|."""

    source: int
    target: int
    rows: np.ndarray
    x: np.ndarray
    y: np.ndarray
    scale: float
    cells: Cells
    layout: Layout

    def normalize(self, diff: np.ndarray) -> np.ndarray:
        """Map raw pair attributions onto this view's x axis (same scale, clipped)."""
        return np.clip(np.asarray(diff, dtype=np.float64) / self.scale, -1.0, 1.0)


def pair_diff(acts: Activations, source: int, target: int) -> np.ndarray:
    """attr(target) - attr(source) per activation (the collected pair attribution when present)."""
    if acts.pair is not None:
        return acts.pair.astype(np.float64)
    return (acts.attribution(target) - acts.attribution(source)).astype(np.float64)


def magnitude_filter(acts: Activations, source: int, target: int, max_points: int) -> np.ndarray:
    """Rows with the largest attribution to either class (article: top 2000-3000), all if few."""
    m = len(acts)
    if m <= max_points:
        return np.arange(m)
    if acts.class_attr is not None and source in acts.classes and target in acts.classes:
        strength = np.maximum(acts.attribution(source), acts.attribution(target))
    else:
        strength = np.abs(pair_diff(acts, source, target))
    return np.sort(np.argsort(-strength, kind="stable")[:max_points])


def pair_view(
    acts: Activations,
    source: int,
    target: int,
    n: int = 10,
    embed: str = "auto",
    max_points: int = 2000,
    min_count: int = 3,
    seed: int = 0,
) -> PairView:
    """Build the class-pair view and its n x n grid of cells."""
    rows = magnitude_filter(acts, source, target, max_points)
    diff = pair_diff(acts, source, target)[rows]
    scale = float(np.percentile(np.abs(diff), 99)) if len(diff) else 1.0
    scale = scale if scale > 0 else 1.0
    x = np.clip(diff / scale, -1.0, 1.0)
    vectors = np.asarray(acts.vectors[rows], dtype=np.float32)
    lay = layout(vectors, dims=1, method=embed, n_neighbors=CLASS_ATLAS["n_neighbors"], min_dist=CLASS_ATLAS["min_dist"], seed=seed)
    y = lay.coords.reshape(-1)
    coords = np.stack([(x + 1.0) / 2.0, y], 1)
    class_attr = acts.class_attr[rows] if acts.class_attr is not None else None
    cells = make_grid(coords, vectors, n, attribution=diff, class_attr=class_attr, image_ids=acts.image_ids[rows], min_count=min_count)
    cells.extra["x_mean"] = cells.attribution / scale
    return PairView(source, target, rows, x, y, scale, cells, lay)
