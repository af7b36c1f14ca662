"""Can a reader tell the atlas's cells apart? Two measures of its icons.

Activation Atlas (Carter et al. 2019) icons are pictures of what a cell means.
For icons (rendered, or member-photo crops) of the kept cells:
(a) agreement: the fraction of icons whose own top-1 class is among the top-3
    classes attributed to their cell (gradient x activation of the cell's mean
    vector; at the pooled feature layer of a linear head that is W @ mean);
(b) sameness: the mean pairwise cosine similarity of the icons' pooled
    features at that layer (1 = every icon looks alike to the model).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def cell_top_classes(classifier, layer: str, cell_vectors: np.ndarray, k: int = 3) -> np.ndarray | None:
    """(K, k) class indices with the largest attribution for each cell's mean vector, or None
    when `layer` is not the pooled input of a linear head (no exact attribution without images)."""
    head = getattr(classifier, "head", None)
    if layer != classifier.feature_layer or not isinstance(head, torch.nn.Linear):
        return None
    v = torch.as_tensor(np.asarray(cell_vectors, dtype=np.float32))
    if v.ndim != 2 or v.shape[1] != head.in_features:
        return None
    scores = v @ head.weight.detach().float().cpu().T  # (K, classes): h . d logit_c / d pooled, up to 1/HW
    return scores.topk(min(k, scores.shape[1]), dim=1).indices.numpy()


def icon_measures(classifier, layer: str, icons: torch.Tensor, cell_top: np.ndarray | None,
                  batch_size: int = 32) -> dict[str, Any]:
    """(a) and (b) for icons (K,3,s,s) in [0,1], resized to the model's input."""
    if len(icons) == 0:
        return {"icons": 0, "top1_in_cell_top3": None, "mean_pairwise_cosine": None}
    size = classifier.input_size
    tops, pooled = [], []
    with torch.no_grad():
        for i in range(0, len(icons), batch_size):
            x = F.interpolate(icons[i : i + batch_size].float(), size=(size, size), mode="bilinear",
                              align_corners=False, antialias=True).to(classifier.device)
            logits, acts = classifier.run(x, [layer])
            tops.append(logits.argmax(1).cpu())
            h = acts[layer].float()
            pooled.append((h.mean((2, 3)) if h.ndim == 4 else h.flatten(1)).cpu())
    top1 = torch.cat(tops).numpy()
    z = F.normalize(torch.cat(pooled), dim=1)
    n = len(z)
    cos = (z @ z.T).sum().item() - n
    out = {"icons": n, "mean_pairwise_cosine": round(cos / (n * (n - 1)), 4) if n > 1 else None,
           "top1_in_cell_top3": None}
    if cell_top is not None:
        out["top1_in_cell_top3"] = round(float((np.asarray(cell_top) == top1[:, None]).any(1).mean()), 4)
    return out
