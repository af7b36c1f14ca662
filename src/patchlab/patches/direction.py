"""The pair's separating direction at the feature layer (Carter et al. 2019).

d = w_target - w_source of the linear head on pooled features: the features
that separate two close classes, which feature patches render and natural
patch searches follow.
"""
from __future__ import annotations

import torch


def pair_direction(classifier, source: int, target: int) -> torch.Tensor:
    """d = w_target - w_source of the linear head on pooled features: (C,) at the feature layer."""
    head = classifier.direction_head
    if head is None:
        raise ValueError(f"model {classifier.spec} has no linear head on its feature layer; pass a direction")
    w = head.weight.detach()
    return (w[target] - w[source]).float()


@torch.no_grad()
def pooled_features(classifier, images: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Spatially averaged activations at the feature layer: (N,C)."""
    layer = layer or classifier.feature_layer
    _, acts = classifier.run(images.to(classifier.device), [layer])
    h = acts[layer]
    return h.mean(dim=(2, 3)) if h.dim() == 4 else h
