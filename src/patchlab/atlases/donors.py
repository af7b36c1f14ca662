"""Donor discovery: which other classes carry target-side features of a pair.

Activation Atlas (Carter et al. 2019) found its donors (train, noodles,
baseball) by eye in the class-pair view. patchlab ranks every class but the
source and the target with two independent signals, reported side by side:

(ii) weights: for a linear head on pooled features, the cosine between each
     class's centered weight vector w_c - mean(w) and the pair direction
     d = w_target - w_source. All classes, one matrix-vector product.
(i)  activations: spatial activations of candidate donor images (real photos
     or exemplars), scored by their pair attribution on the pair view's
     normalized x scale (mean of each image's top quarter of positions, then
     mean over the class's images); plus, as evidence, the fraction of their
     activations whose nearest pair-view cell (cosine to the cell mean) lies
     on the target side (mean x > 0).

The combined rank is the mean of the two signals' ranks over the shortlist.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .collect import Activations
from .pair import PairView


def head_alignment(weight: torch.Tensor | np.ndarray, source: int, target: int) -> np.ndarray:
    """Signal (ii): cos(w_c - mean w, w_target - w_source) for every class; NaN for source and target."""
    W = torch.as_tensor(weight).detach().double().cpu()
    d = W[target] - W[source]
    Wc = W - W.mean(0, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(Wc, d[None, :].expand_as(Wc), dim=1).numpy()
    cos[[source, target]] = np.nan
    return cos


def shortlist(scores: np.ndarray, k: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """Top-k class indices by score, never the excluded ones (NaN scores excluded too)."""
    s = np.where(np.isnan(scores), -np.inf, scores).astype(np.float64)
    s[list(exclude)] = -np.inf
    order = np.argsort(-s, kind="stable")
    return [int(c) for c in order[:k] if np.isfinite(s[c])]


@dataclass
class DonorEvidence:
    """Per candidate class: activation score, target-side fraction, target-side cells hit, best images."""

    act_score: dict[int, float]
    target_frac: dict[int, float]
    cells: dict[int, list[int]]
    images: dict[int, list[str]]


def top_position_mean(x: np.ndarray, image_ids: np.ndarray, n_images: int, top_fraction: float = 0.25) -> np.ndarray:
    """Per image, the mean of its top `top_fraction` of positions' x (NaN for images without
    positions): a patch is local, so the best part of an image counts."""
    per_img = np.full(n_images, np.nan)
    order = np.lexsort((-x, image_ids))
    ids_sorted, x_sorted = image_ids[order], x[order]
    starts = np.searchsorted(ids_sorted, np.arange(n_images), "left")
    ends = np.searchsorted(ids_sorted, np.arange(n_images), "right")
    k = np.maximum(1, np.ceil((ends - starts) * top_fraction).astype(np.int64))
    csum = np.concatenate([[0.0], np.cumsum(x_sorted, dtype=np.float64)])
    has = ends > starts
    per_img[has] = (csum[starts[has] + k[has]] - csum[starts[has]]) / k[has]
    return per_img


def layer_evidence(acts: Activations, top_fraction: float = 0.25, n_images: int = 3) -> DonorEvidence:
    """Signal (i) without a pair view (whole-layer mode, e.g. real photos with no source or
    target photos): each position's pair attribution in units of its standard deviation over
    all positions; per class, the mean over its images of `top_position_mean`, and the
    fraction of its positions that push towards the target (attribution > 0)."""
    a = np.asarray(acts.pair, dtype=np.float64)
    x = a / (a.std() or 1.0)
    per_img = top_position_mean(x, acts.image_ids, len(acts.image_names), top_fraction)
    labels = acts.image_labels[acts.image_ids]
    ev = DonorEvidence({}, {}, {}, {})
    for c in np.unique(acts.image_labels):
        c = int(c)
        if c < 0:
            continue
        imgs = np.nonzero(acts.image_labels == c)[0]
        ev.act_score[c] = float(np.nanmean(per_img[imgs]))
        ev.target_frac[c] = float((x[labels == c] > 0).mean())
        ev.cells[c] = []
        best = imgs[np.argsort(-np.nan_to_num(per_img[imgs], nan=-np.inf), kind="stable")[:n_images]]
        ev.images[c] = [acts.image_names[i] for i in best]
    return ev


def activation_scores(donor: Activations, view: PairView, top_fraction: float = 0.25, n_cells: int = 3, n_images: int = 3) -> DonorEvidence:
    """Signal (i) from donor images' activations (collected with the same pair attribution)."""
    labels = donor.image_labels[donor.image_ids]
    x = view.normalize(donor.pair)
    per_img = top_position_mean(x, donor.image_ids, len(donor.image_names), top_fraction)
    # nearest pair-view cell by cosine
    cells = view.cells
    cv = torch.nn.functional.normalize(torch.from_numpy(cells.vectors).float(), dim=1)
    hv = torch.nn.functional.normalize(torch.from_numpy(np.asarray(donor.vectors, dtype=np.float32)), dim=1)
    nearest = (hv @ cv.T).argmax(1).numpy() if len(cells) else np.zeros(len(hv), dtype=np.int64)
    cell_x = cells.extra.get("x_mean", cells.attribution / view.scale)
    on_target = cell_x[nearest] > 0 if len(cells) else np.zeros(len(hv), bool)
    ev = DonorEvidence({}, {}, {}, {})
    img_labels = donor.image_labels
    for c in np.unique(img_labels):
        c = int(c)
        imgs = np.nonzero(img_labels == c)[0]
        ev.act_score[c] = float(np.nanmean(per_img[imgs]))
        mask = labels == c
        ev.target_frac[c] = float(on_target[mask].mean()) if mask.any() else float("nan")
        hits = nearest[mask & on_target]
        if len(hits):
            u, cnt = np.unique(hits, return_counts=True)
            ev.cells[c] = [int(cells.ids[u[j]]) for j in np.argsort(-cnt, kind="stable")[:n_cells]]
        else:
            ev.cells[c] = []
        best = imgs[np.argsort(-np.nan_to_num(per_img[imgs], nan=-np.inf), kind="stable")[:n_images]]
        ev.images[c] = [donor.image_names[i] for i in best]
    return ev


def _rank(values: np.ndarray) -> np.ndarray:
    """1 = best (largest); NaN last; ties share the mean rank."""
    return pd.Series(values).rank(ascending=False, method="average", na_option="bottom").to_numpy()


def rank_donors(
    candidates: list[int],
    alignment: np.ndarray | None,
    evidence: DonorEvidence | None,
    class_names,
    source: int,
    target: int,
):
    """Table of candidates (never source/target) with each signal, its rank, and the combined rank."""
    cands = [c for c in candidates if c not in (source, target)]
    align = np.array([alignment[c] if alignment is not None else np.nan for c in cands], dtype=np.float64)
    act = np.array([evidence.act_score.get(c, np.nan) if evidence else np.nan for c in cands], dtype=np.float64)
    frac = np.array([evidence.target_frac.get(c, np.nan) if evidence else np.nan for c in cands], dtype=np.float64)
    ranks = []
    if alignment is not None:
        ranks.append(_rank(align))
    if evidence is not None:
        ranks.append(_rank(act))
    combined = np.mean(ranks, 0) if ranks else np.arange(len(cands), dtype=np.float64)
    df = pd.DataFrame({
        "class": [class_names.label(c) for c in cands], "index": cands,
        "head_alignment": align, "activation_score": act, "target_side_fraction": frac,
        "rank_head_alignment": ranks[0] if alignment is not None else np.nan,
        "rank_activation": ranks[-1] if evidence is not None else np.nan,
        "combined_score": combined,
        "evidence_cells": [";".join(map(str, evidence.cells.get(c, []))) if evidence else "" for c in cands],
        "example_images": [";".join(evidence.images.get(c, [])) if evidence else "" for c in cands],
    })
    # ties on the combined rank: the higher activation score, then alignment, first
    df = df.sort_values(["combined_score", "activation_score", "head_alignment"], ascending=[True, False, False], na_position="last")
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df.reset_index(drop=True)
