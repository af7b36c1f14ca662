"""Image pools of an atlas run: where the images whose activations are collected come from.

A pool is images with names and labels, in memory or decoded lazily from a
data folder's records: the pair's (or the whole layer's) images from a data
folder, given images, or exemplars synthesized by `patchlab.exemplars`; and the
shortlisted donor classes' images from the data folder or rendered by optvis.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import ImageRecord, discover, load_images
from ..errors import UserError
from ..exemplars import exemplars
from ..optvis import objectives as obj
from ..optvis.render import render
from .collect import Activations, collect, folder_batches, tensor_batches
from .config import AtlasRun
from .result import save_index


class ImagePool:
    """Images with names and labels: in memory (tensor) or decoded lazily from data records."""

    def __init__(self, classifier, images: torch.Tensor | None = None, names=None, labels=None, records=None):
        self.classifier, self.images, self.records = classifier, images, records
        if records is not None:
            self.names = [str(r.path) for r in records]
            self.labels = [(-1 if r.label is None else int(r.label)) for r in records]
        else:
            self.names = list(names) if names is not None else [f"img{i:05d}" for i in range(len(images))]
            self.labels = list(labels) if labels is not None else [-1] * len(images)

    def __len__(self) -> int:
        return len(self.names)

    def batches(self, batch_size: int, uint8: bool = False):
        """(images, names, labels) batches; uint8: folder images as uint8 pixels (for `collect`)."""
        if self.records is not None:
            return folder_batches(self.records, self.classifier, batch_size, uint8=uint8)
        return tensor_batches(self.images, self.names, self.labels, batch_size)

    def fetch_by_name(self, names: list[str]) -> torch.Tensor:
        if self.records is None:
            index = {n: i for i, n in enumerate(self.names)}
            return self.images[[index[n] for n in names]]
        got = load_images([ImageRecord(Path(n)) for n in names], self.classifier.input_size, self.classifier.crop_pct,
                          interpolation=self.classifier.preprocessing.interpolation)
        by = dict(zip(got.paths, got.images))
        blank = torch.full((3, self.classifier.input_size, self.classifier.input_size), 0.5)
        return torch.stack([by.get(n, blank) for n in names])

    @staticmethod
    def concat(pools: list["ImagePool"]) -> "ImagePool":
        """Only for in-memory pools' name lookup (fetch)."""
        return _MultiPool(pools)


class _MultiPool:
    def __init__(self, pools: list[ImagePool]):
        self.pools = pools

    def fetch_by_name(self, names: list[str]) -> torch.Tensor:
        out = []
        for n in names:
            pool = next(p for p in self.pools if n in p.names)
            out.append(pool.fetch_by_name([n])[0].cpu())
        return torch.stack(out)


def exemplar_pool(classifier, classes: list[int], n: int, seed: int, tag: str) -> ImagePool:
    """Exemplars synthesized by `patchlab.exemplars` (one call per class)."""
    imgs, names, labels = [], [], []
    for c in classes:
        ex = exemplars(classifier, c, n, seed=seed)
        imgs.append(ex.images.detach().float().cpu())
        slug = classifier.classes.slug(c)
        names += [f"exemplar:{tag}:{slug}:{i}" for i in range(len(ex.images))]
        labels += [c] * len(ex.images)
    return ImagePool(classifier, torch.cat(imgs), names, labels)


def rendered_pool(classifier, classes: list[int], per_class: int, steps: int, generator: torch.Generator,
                  band=(0.5, 0.9)) -> ImagePool:
    """Donor-class images rendered in ONE optvis batch (each image its own class), each frozen
    once it is top-1 for its class with p >= band[0]; objective log p kept inside the band.
    Random draws from `generator` (a CPU one gives the same images on any device)."""
    dev = classifier.device
    idx = torch.tensor(classes, device=dev).repeat_interleave(per_class)
    rows = torch.arange(len(idx), device=dev)

    def stop(logits: torch.Tensor, _step: int) -> torch.Tensor:
        p = logits.softmax(1)[rows, idx]
        return (logits.argmax(1) == idx) & (p >= band[0])

    res = render(classifier, obj.logprob_band(idx, band[0] + 0.05, band[1] - 0.05), len(idx), steps=steps,
                 param="fourier", lr=0.05, stop=stop, generator=generator)
    names = [f"render:donor:{classifier.classes.slug(c)}:{i}" for c in classes for i in range(per_class)]
    return ImagePool(classifier, res.images.detach().float().cpu(), names, idx.tolist())


def data_records(classifier, data, classes: list[int] | None, per_class: int, generator: torch.Generator):
    """A data folder's records: at most `per_class` of each class in `classes` (None: at most that many in all),
    a random subset (drawn with the CPU `generator`) in folder order where there are more."""
    records = discover(data, classifier.classes)
    groups = [records] if classes is None else [[r for r in records if r.label == c] for c in classes]
    return [r for group in groups for r in _subset(group, per_class, generator)]


def _subset(items: list, k: int, generator: torch.Generator) -> list:
    if len(items) <= k:
        return items
    keep = torch.randperm(len(items), generator=generator)[:k].sort().values
    return [items[i] for i in keep.tolist()]


def given_pool(classifier, images) -> ImagePool:
    """images: a (N,3,S,S) tensor, or an object with .images/.labels/.paths (a `patchlab.data.Images`)."""
    if isinstance(images, torch.Tensor):
        return ImagePool(classifier, images)
    return ImagePool(classifier, images.images, list(images.paths), [int(x) for x in images.labels])


def pair_pool(run: AtlasRun, source: int, target: int, images) -> ImagePool:
    """The pair's images: from the data folder (both classes needed), the given images, or synthesized exemplars."""
    clf, cfg = run.classifier, run.config
    if run.folder is not None:
        pool = ImagePool(clf, records=data_records(clf, run.folder, [source, target], cfg.max_images, cfg.generator("pair_images")))
        if not any(lbl == source for lbl in pool.labels) or not any(lbl == target for lbl in pool.labels):
            raise UserError(f"{run.folder} needs images of both {clf.classes.label(source)!r} and {clf.classes.label(target)!r}")
        return pool
    if images is not None:
        return given_pool(clf, images)
    pool = exemplar_pool(clf, [source, target], cfg.n_exemplars, cfg.seed, "pair")
    run.log.notes.append(f"no data: used {cfg.n_exemplars} synthesized exemplars per class")
    return pool


def layer_pool(run: AtlasRun, images) -> ImagePool:
    """Whole-layer images: from the data folder, the given images, or exemplars of 8 random classes."""
    clf, cfg = run.classifier, run.config
    if run.folder is not None:
        most = cfg.layer_images if cfg.layer_images is not None else 10**12
        return ImagePool(clf, records=data_records(clf, run.folder, None, most, cfg.generator("pair_images")))
    if images is not None:
        return given_pool(clf, images)
    few = sorted(torch.randperm(clf.num_classes, generator=cfg.generator("layer_classes"))[:8].tolist())
    pool = exemplar_pool(clf, few, max(2, cfg.n_exemplars // 2), cfg.seed, "layer")
    run.log.notes.append(f"no data: exemplars of {len(few)} random classes: " + ", ".join(clf.classes.label(c) for c in few))
    return pool


def collect_pool(run: AtlasRun, pool: ImagePool, name: str, pair: tuple[int, int] | None, classes=()) -> Activations:
    """The pool's activations at the run's layer, stored as OUT/<name>.f16 with OUT/<name>-index.npz."""
    cfg = run.config
    acts = collect(run.classifier, pool.batches(cfg.batch_size, uint8=True), cfg.layer, pair=pair, classes=classes,
                   store=run.out / f"{name}.f16", seed=cfg.seed, progress=run.progress)
    save_index(run.out / f"{name}-index.npz", acts)
    return acts
