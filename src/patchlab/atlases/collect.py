"""Spatial activations and their attributions, streamed to disk.

Activation Atlas (Carter et al., Distill 2019) samples spatial activation
vectors h at one layer and attributes each to a class c by gradient x
activation, a_c = h . d logit_c / dh. Here every sampled vector keeps its
image id and (y, x) position, the pair attribution
a = h . d(logit_target - logit_source)/dh, and optional per-class
attributions. The layer output is made a gradient leaf by a forward hook, so
the backward pass only runs through the layers after it (for the default
model's `head`: pooling and the linear head), one backward per batch and class.
Vectors are appended to a float16 file and reopened as a `np.memmap`, so a
million 1280-d vectors (2.6 GB) never sit in memory.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import iter_batches, pixels_to_float
from ..errors import UserError

log = logging.getLogger("patchlab")


@dataclass
class Activations:
    """Sampled activation vectors with provenance and attributions.

    vectors: (M, C) float16 (a memmap when streamed to disk); image_ids (M,)
    index into `image_names`; positions (M, 2) as (y, x) on the layer's
    (H, W) grid; pair (M,) float32 pair attribution target - source (None
    without a pair); class_attr (M, K) float32 attributions to `classes`.
    """

    layer: str
    vectors: np.ndarray
    image_ids: np.ndarray
    positions: np.ndarray
    grid_hw: tuple[int, int]
    image_names: list[str]
    image_labels: np.ndarray
    pair: np.ndarray | None = None
    classes: list[int] = field(default_factory=list)
    class_attr: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def attribution(self, cls: int) -> np.ndarray:
        """Per-class attribution column for class index `cls`."""
        if cls not in self.classes:
            raise KeyError(f"class {cls} was not collected (have {self.classes})")
        return self.class_attr[:, self.classes.index(cls)]

    def subset(self, rows: np.ndarray) -> "Activations":
        """Rows `rows` (vectors loaded into memory)."""
        rows = np.asarray(rows)
        return Activations(
            self.layer, np.asarray(self.vectors[rows]), self.image_ids[rows], self.positions[rows], self.grid_hw,
            self.image_names, self.image_labels, None if self.pair is None else self.pair[rows], list(self.classes),
            None if self.class_attr is None else self.class_attr[rows], None,
        )


@contextmanager
def grad_leaf(classifier, layer: str):
    """Make `layer`'s output a fresh gradient leaf during forward passes.

    Yields a dict that receives the leaf under key "h". Everything before the
    layer runs without building a graph; the leaf's clone flows on, so
    in-place ops after the layer stay legal.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        leaf = out.detach().requires_grad_(True)
        store["h"] = leaf
        return leaf.clone()

    handle = classifier.layer(layer).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def attribute_batch(
    classifier, images: torch.Tensor, layer: str, pair: tuple[int, int] | None = None, classes: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """One batch: activations (N,C,H,W), pair attribution (N,H,W), per-class (N,K,H,W), logits.

    pair = (source, target). When both are in `classes` the pair attribution
    is their difference (attribution is linear in the logit), saving a backward.
    """
    classes = list(classes)
    with grad_leaf(classifier, layer) as store, torch.enable_grad():
        logits = classifier(images)
        h = store["h"]
        if h.dim() != 4:
            raise UserError(f"layer {layer!r} output has shape {tuple(h.shape)}; an atlas needs a spatial map (N,C,H,W)")
        objectives = [logits[:, c].sum() for c in classes]
        derive = pair is not None and pair[0] in classes and pair[1] in classes
        if pair is not None and not derive:
            objectives.append((logits[:, pair[1]] - logits[:, pair[0]]).sum())
        attrs = []
        for k, obj in enumerate(objectives):
            (g,) = torch.autograd.grad(obj, h, retain_graph=k < len(objectives) - 1)
            attrs.append((g * h).sum(1).detach())
        per_class = torch.stack(attrs[: len(classes)], 1) if classes else None
        pair_attr = None
        if pair is not None:
            s, t = pair
            pair_attr = per_class[:, classes.index(t)] - per_class[:, classes.index(s)] if derive else attrs[-1]
    return h.detach(), pair_attr, per_class, logits.detach()


def _positions(n: int, hw: tuple[int, int], per_image: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """Flat position indices (n, k): all H*W, or k random interior ones per image (edges avoided as in the article)."""
    H, W = hw
    if per_image is None or per_image >= H * W:
        return torch.arange(H * W).expand(n, H * W)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    interior = ((ys > 0) & (ys < H - 1) & (xs > 0) & (xs < W - 1)).flatten() if H > 2 and W > 2 else torch.ones(H * W, dtype=torch.bool)
    pool = torch.nonzero(interior).flatten()
    k = min(per_image, len(pool))
    scores = torch.rand(n, len(pool), generator=generator)
    return pool[scores.argsort(1)[:, :k]]


class _Writer:
    """Appends float16 rows to a file (or memory) and reopens them as a memmap."""

    def __init__(self, path: Path | None):
        self.path, self.rows, self.dim, self.chunks = path, 0, None, []
        self.fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(path, "wb")

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float16)
        self.dim = block.shape[1]
        self.rows += len(block)
        if self.fh is not None:
            self.fh.write(block.tobytes())
        else:
            self.chunks.append(block)

    def finish(self) -> np.ndarray:
        dim = self.dim or 0
        if self.fh is None:
            return np.concatenate(self.chunks) if self.chunks else np.zeros((0, dim), np.float16)
        self.fh.close()
        if self.rows == 0:
            return np.zeros((0, dim), np.float16)
        return np.memmap(self.path, dtype=np.float16, mode="r", shape=(self.rows, dim))


def collect(
    classifier,
    batches: Iterable[tuple[torch.Tensor, Sequence[str], Sequence[int]]],
    layer: str | None = None,
    pair: tuple[int, int] | None = None,
    classes: Sequence[int] = (),
    per_image: int | None = None,
    store: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Activations:
    """Collect spatial activations and attributions from batches of images.

    batches: iterable of (images (N,3,S,S) in [0,1], names, labels). per_image:
    None = every position, k = k random interior positions per image (the
    article took one per image from 1M images). store: a file path for the
    float16 vectors (streamed, returned as a memmap) or None for memory.
    """
    layer = layer or classifier.feature_layer
    classifier.layer(layer)  # UserError with suggestions for an unknown name
    gen = torch.Generator().manual_seed(seed)
    writer = _Writer(Path(store) if store else None)
    ids, pos, pairs, per, names, labels = [], [], [], [], [], []
    hw = None
    it = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc="collect", unit="batch")
    for images, bnames, blabels in it:
        if len(images) == 0:
            continue
        images = images.to(classifier.device, non_blocking=True)
        if images.dtype == torch.uint8:  # folder_batches(uint8=True): converted on the device
            images = pixels_to_float(images)
        h, pa, pc, _ = attribute_batch(classifier, images, layer, pair, classes)
        n, C, H, W = h.shape
        hw = (H, W)
        flat_pos = _positions(n, hw, per_image, gen).to(h.device)  # (n, k)
        k = flat_pos.shape[1]
        hv = h.flatten(2).gather(2, flat_pos[:, None, :].expand(n, C, k))  # (n, C, k)
        writer.write(hv.permute(0, 2, 1).reshape(n * k, C).to(torch.float16).cpu().numpy())
        base = len(names)
        ids.append(np.repeat(np.arange(base, base + n, dtype=np.int32), k))
        fp = flat_pos.cpu().numpy().reshape(-1)
        pos.append(np.stack([fp // W, fp % W], 1).astype(np.int16))
        if pa is not None:
            pairs.append(pa.flatten(1).gather(1, flat_pos).reshape(-1).float().cpu().numpy())
        if pc is not None:
            K = pc.shape[1]
            pcv = pc.flatten(2).gather(2, flat_pos[:, None, :].expand(n, K, k))
            per.append(pcv.permute(0, 2, 1).reshape(n * k, K).float().cpu().numpy())
        names.extend(str(x) for x in bnames)
        labels.extend(int(x) for x in blabels)
    if hw is None:
        raise UserError("no images to collect activations from")
    vectors = writer.finish()
    return Activations(
        layer=layer, vectors=vectors, image_ids=np.concatenate(ids), positions=np.concatenate(pos), grid_hw=hw,
        image_names=names, image_labels=np.asarray(labels, dtype=np.int64),
        pair=np.concatenate(pairs) if pairs else None, classes=list(classes),
        class_attr=np.concatenate(per) if per else None, path=Path(store) if store else None,
    )


def tensor_batches(
    images: torch.Tensor, names: Sequence[str] | None = None, labels: Sequence[int] | None = None, batch_size: int = 32
):
    """Batches from an in-memory image tensor (for `collect`)."""
    n = len(images)
    names = list(names) if names is not None else [f"img{i:05d}" for i in range(n)]
    labels = list(labels) if labels is not None else [-1] * n
    for i in range(0, n, batch_size):
        yield images[i : i + batch_size], names[i : i + batch_size], labels[i : i + batch_size]


def folder_batches(records, classifier, batch_size: int = 32, workers: int | None = None, uint8: bool = False):
    """Batches decoded from `patchlab.data` records (bad files skipped with a warning); uint8:
    as channels-last uint8 pixels, which `collect` converts on the device."""
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    for b in iter_batches(records, classifier.input_size, classifier.crop_pct, batch_size=batch_size, workers=workers,
                          uint8=uint8, interpolation=classifier.preprocessing.interpolation):
        yield b.images, b.paths, b.labels.tolist()
