"""Composable feature-visualization objectives (lucid/lucent style; Olah et al. 2017).

An `Objective` maps a `Context` (logits and captured layer activations for a
batch) to a per-image score (N,) to MAXIMIZE. Objectives combine with
`+`, `-`, unary `-` and `*` (by scalars or by each other) and carry the set of
layer names they need, so the render loop captures only those.

Per-image arguments (class indices (N,), direction vectors (N,C)) are indexed
with `ctx.index`, the positions of the rows in the full batch, so a render
loop may evaluate only the images that are still active.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Context:
    """What an objective sees: logits (N,K), activations by layer name, and row positions `index` (N,)."""

    logits: torch.Tensor
    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """Select this batch's rows of a full-batch per-image tensor."""
        t = t.to(self.logits.device)
        return t if self.index is None else t[self.index]

    def act(self, layer: str) -> torch.Tensor:
        if layer not in self.acts:
            raise KeyError(f"activation of layer {layer!r} was not captured")
        return self.acts[layer]


class Objective:
    """A per-image score (N,) to maximize, with the layers it needs."""

    def __init__(self, fn: Callable[[Context], torch.Tensor], layers: frozenset[str] | set[str] = frozenset(), name: str = "objective"):
        self.fn, self.layers, self.name = fn, frozenset(layers), name

    def __call__(self, ctx: Context) -> torch.Tensor:
        return self.fn(ctx)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    @staticmethod
    def _lift(other) -> "Objective":
        if isinstance(other, Objective):
            return other
        if isinstance(other, (int, float)):
            v = float(other)
            return Objective(lambda ctx: ctx.logits.new_full((ctx.logits.shape[0],), v), name=repr(v))
        return NotImplemented

    def _combine(self, other, op, sym: str) -> "Objective":
        o = self._lift(other)
        if o is NotImplemented:
            return NotImplemented
        return Objective(lambda ctx: op(self(ctx), o(ctx)), self.layers | o.layers, f"({self.name} {sym} {o.name})")

    def __add__(self, other):
        return self._combine(other, torch.add, "+")

    def __radd__(self, other):  # allows sum([...])
        return self if isinstance(other, (int, float)) and other == 0 else self._combine(other, torch.add, "+")

    def __sub__(self, other):
        return self._combine(other, torch.sub, "-")

    def __rsub__(self, other):
        o = self._lift(other)
        return NotImplemented if o is NotImplemented else o - self

    def __mul__(self, other):
        return self._combine(other, torch.mul, "*")

    __rmul__ = __mul__

    def __truediv__(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        return self * (1.0 / float(other))

    def __neg__(self):
        return Objective(lambda ctx: -self(ctx), self.layers, f"-{self.name}")


def _index_rows(ctx: Context, index: int | torch.Tensor) -> torch.Tensor:
    n = ctx.logits.shape[0]
    if isinstance(index, torch.Tensor) and index.dim() > 0:
        return ctx.rows(index.long())
    return torch.full((n,), int(index), dtype=torch.long, device=ctx.logits.device)


def class_logit(index: int | torch.Tensor) -> Objective:
    """Logit of a class (int) or of one class per image ((N,) tensor)."""
    return Objective(lambda ctx: ctx.logits.gather(1, _index_rows(ctx, index)[:, None])[:, 0], name=f"logit[{_name(index)}]")


def class_logprob(index: int | torch.Tensor) -> Objective:
    """log p(class) under the softmax; unlike the logit it also pushes the other classes down."""
    return Objective(
        lambda ctx: F.log_softmax(ctx.logits, dim=1).gather(1, _index_rows(ctx, index)[:, None])[:, 0],
        name=f"logp[{_name(index)}]",
    )


def logprob_band(index: int | torch.Tensor, lo: float, hi: float) -> Objective:
    """Pull log p(class) into [log lo, log hi] and stop pushing inside it (calibrated exemplars).

    Score = -distance of log p from the interval, so an image below the band is
    pushed up and one that overshot is pulled back down instead of saturating.
    """
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"band must satisfy 0 < lo <= hi <= 1, got ({lo}, {hi})")
    llo, lhi = math.log(lo), math.log(hi)

    def fn(ctx: Context) -> torch.Tensor:
        lp = F.log_softmax(ctx.logits, dim=1).gather(1, _index_rows(ctx, index)[:, None])[:, 0]
        return -(F.relu(llo - lp) + F.relu(lp - lhi))

    return Objective(fn, name=f"logp_band[{_name(index)},{lo},{hi}]")


def _spatial_mean(h: torch.Tensor) -> torch.Tensor:
    return h.mean(dim=tuple(range(2, h.dim()))) if h.dim() > 2 else h


def channel(layer: str, c: int) -> Objective:
    """Mean activation of channel c at `layer` (over all positions)."""
    return Objective(lambda ctx: _spatial_mean(ctx.act(layer)[:, c : c + 1])[:, 0], {layer}, f"channel[{layer}:{c}]")


def neuron(layer: str, c: int, x: int | None = None, y: int | None = None) -> Objective:
    """Activation of channel c at one position (default: the center) of a spatial `layer`."""

    def fn(ctx: Context) -> torch.Tensor:
        h = ctx.act(layer)
        if h.dim() == 2:
            return h[:, c]
        hh, ww = h.shape[-2:]
        return h[:, c, hh // 2 if y is None else y, ww // 2 if x is None else x]

    return Objective(fn, {layer}, f"neuron[{layer}:{c}]")


def _dot_cos(h: torch.Tensor, v: torch.Tensor, cos_power: float, floor: float = 0.1) -> torch.Tensor:
    """dot(h,v) * max(cos(h,v), floor)^n along the last dim."""
    dot = (h * v).sum(-1)
    cos = dot / (h.norm(dim=-1) * v.norm(dim=-1) + 1e-8)
    return dot * cos.clamp(min=floor) ** cos_power


def direction(layer: str, vectors: torch.Tensor, cos_power: float = 2.0, pooled: bool = True) -> Objective:
    """Activation Atlas objective dot(h,v) * cos(h,v)^n, cos floored at 0.1 (Carter et al. 2019).

    vectors: (C,) shared or (N,C) one per image. pooled=True scores the spatially
    averaged activation; pooled=False averages the per-position objective.
    """

    def fn(ctx: Context) -> torch.Tensor:
        h = ctx.act(layer)
        v = vectors.to(device=h.device, dtype=h.dtype)
        v = ctx.rows(v) if v.dim() == 2 else v.expand(h.shape[0], -1)
        if pooled or h.dim() == 2:
            return _dot_cos(_spatial_mean(h), v, cos_power)
        hp = h.flatten(2).transpose(1, 2)  # (N,HW,C)
        return _dot_cos(hp, v[:, None, :], cos_power).mean(dim=1)

    return Objective(fn, {layer}, f"direction[{layer}]")


def diversity(layer: str, weight: float = 1.0, kind: str = "gram") -> Objective:
    """Penalize similarity across the batch (Olah et al. 2017, "diversity").

    kind="gram": cosine similarity of flattened Gram matrices (style);
    kind="pooled": cosine similarity of spatially pooled features.
    Score per image = -weight * mean cosine similarity to the other images.
    """
    if kind not in ("gram", "pooled"):
        raise ValueError("diversity kind must be 'gram' or 'pooled'")

    def fn(ctx: Context) -> torch.Tensor:
        h = ctx.act(layer)
        n = h.shape[0]
        if n < 2:
            return h.new_zeros(n)
        if kind == "gram" and h.dim() > 2:
            f = h.flatten(2)
            feats = torch.bmm(f, f.transpose(1, 2)).flatten(1)
        else:
            feats = _spatial_mean(h)
        feats = F.normalize(feats, dim=1)
        sim = feats @ feats.T
        off = (sim.sum(1) - sim.diagonal()) / (n - 1)
        return -weight * off

    return Objective(fn, {layer}, f"diversity[{layer}]")


def _name(index) -> str:
    return "per-image" if isinstance(index, torch.Tensor) and index.dim() > 0 else str(int(index))
