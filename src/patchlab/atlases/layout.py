"""Low-dimensional layouts of activation vectors (Activation Atlas, Carter et al. 2019).

The article lays activations out with UMAP (cosine metric): whole-layer
atlases n_neighbors=50, min_dist=0.05 on whitened activations; class atlases
n_neighbors=20, min_dist=0.01. The layout is clipped to its 1st-99th
percentiles, widened by a 10 % margin and rescaled to [0, 1]. With too few
points for UMAP a t-SNE (cosine) or PCA layout is used instead, and the
returned `Layout.method` / `.note` say so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

log = logging.getLogger("patchlab")

WHOLE_LAYER = {"n_neighbors": 50, "min_dist": 0.05, "whiten": True}
CLASS_ATLAS = {"n_neighbors": 20, "min_dist": 0.01, "whiten": False}


@dataclass
class Layout:
    """coords (M, dims) in [0, 1]; method actually used; note explains a fallback."""

    coords: np.ndarray
    method: str
    note: str = ""

    def as_dict(self) -> dict:
        return {"method": self.method, "note": self.note, "points": int(len(self.coords))}


def whiten(x: np.ndarray, eps: float = 1e-2) -> np.ndarray:
    """PCA whitening: center, rotate to the covariance eigenbasis, scale each axis to unit variance.

    eps (relative to the largest eigenvalue) keeps near-null directions from blowing up.
    """
    x = np.asarray(x, dtype=np.float32)
    xc = x - x.mean(0, keepdims=True)
    cov = xc.T @ xc / max(1, len(x) - 1)
    vals, vecs = np.linalg.eigh(cov.astype(np.float64))
    vals = np.clip(vals, 0, None) + eps * max(float(vals.max()), 1e-12)
    return (xc @ (vecs / np.sqrt(vals)).astype(np.float32)).astype(np.float32)


def normalize_layout(coords: np.ndarray, lo: float = 1.0, hi: float = 99.0, margin: float = 0.1) -> np.ndarray:
    """Clip each axis to its [lo, hi] percentiles widened by `margin` of the range, rescale to [0, 1]."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim == 1:
        return normalize_layout(coords[:, None], lo, hi, margin)[:, 0]
    mins, maxs = np.percentile(coords, lo, axis=0), np.percentile(coords, hi, axis=0)
    span = maxs - mins
    mins, maxs = mins - margin * span, maxs + margin * span
    clipped = np.clip(coords, mins, maxs)
    clipped = clipped - clipped.min(0)
    top = clipped.max(0)
    return np.divide(clipped, top, out=np.full_like(clipped, 0.5), where=top > 0)


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    xc = x - x.mean(0, keepdims=True)
    if len(x) < 2:
        return np.zeros((len(x), dims))
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    out = u[:, :dims] * s[:dims]
    return np.pad(out, ((0, 0), (0, dims - out.shape[1])))


def _tsne(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    method = "barnes_hut" if dims < 4 else "exact"
    return TSNE(dims, metric="cosine", perplexity=perplexity, init="random", random_state=seed, method=method).fit_transform(x)


def _umap(x: np.ndarray, dims: int, n_neighbors: int, min_dist: float, seed: int | None) -> np.ndarray:
    import umap  # umap-learn; imported lazily (numba JIT on first call)

    reducer = umap.UMAP(
        n_components=dims, n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine",
        random_state=seed, low_memory=True, verbose=False,
        # a seed makes UMAP deterministic but single-threaded; seed=None allows all cores
        n_jobs=1 if seed is not None else -1,
    )
    return reducer.fit_transform(x)


def layout(
    vectors: np.ndarray,
    dims: int = 2,
    method: str = "auto",
    n_neighbors: int = CLASS_ATLAS["n_neighbors"],
    min_dist: float = CLASS_ATLAS["min_dist"],
    whiten_first: bool = False,
    seed: int | None = 0,
    min_umap_points: int | None = None,
    normalize: bool = True,
) -> Layout:
    """Embed (M, C) vectors in `dims` dimensions, normalized to [0, 1].

    method: auto | umap | tsne | pca. auto uses UMAP when there are at least
    `min_umap_points` points (default 4 * n_neighbors), else t-SNE (>= 10
    points) or PCA. An explicit umap request with too few points also falls
    back, and says so in `note`.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if whiten_first and len(x) > 2:
        x = whiten(x)
    m = len(x)
    need = min_umap_points if min_umap_points is not None else 4 * n_neighbors
    chosen, note = method, ""
    if method in ("auto", "umap") and m < need:
        chosen = "tsne" if m >= 10 else "pca"
        note = f"{m} points are too few for UMAP (needs >= {need}); used {chosen.upper()} instead"
    elif method == "auto":
        chosen = "umap"
    if chosen == "tsne" and m < 10:
        chosen, note = "pca", (note or f"{m} points are too few for t-SNE") + "; used PCA"
    if m == 0:
        return Layout(np.zeros((0, dims)), chosen, note)
    if chosen == "umap":
        coords = _umap(x, dims, n_neighbors, min_dist, seed)
    elif chosen == "tsne":
        coords = _tsne(x, dims, 0 if seed is None else seed)
    elif chosen == "pca":
        coords = _pca(x, dims)
    else:
        raise UserError(f"unknown layout method {method!r}; use auto, umap, tsne or pca")
    if note:
        log.info("layout: %s", note)
    return Layout(normalize_layout(coords) if normalize else np.asarray(coords), chosen, note)
