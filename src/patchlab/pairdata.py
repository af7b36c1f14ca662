"""PairData: the images of one class pair, split by ONE rule for every command.

Splits (ANCHORS: "optimize on one split, choose on another, count on a third"):
  train         generators may look at these (optimize, score crops)
  selection     size, placement and the best candidate are chosen here
  confirmation  headline counts only; nothing is chosen on them
plus target-class images (a positive reference, never a null control).

The rule: items (exemplar indices in order, or photo files sorted by path)
fall into blocks of 8; in each block a seeded permutation of the pattern
2 train / 2 selection / 4 confirmation says which split each item goes to.
An item's split depends only on the seed and its position, never on how many
images a command asks for, so `synth` then `evaluate` on the same folder (or the
same exemplar seed) never count a training image.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import exemplars as exemplars_mod
from .data import discover, load_images, select
from .devices import stage_generator
from .errors import UserError

log = logging.getLogger("patchlab")

TRAIN, SELECTION, CONFIRMATION = "train", "selection", "confirmation"
SPLITS = (TRAIN, SELECTION, CONFIRMATION)
EVALUATED = (SELECTION, CONFIRMATION)  # the splits `evaluate` measures; train is for generators only
BLOCK = (TRAIN,) * 2 + (SELECTION,) * 2 + (CONFIRMATION,) * 4
RULE = (f"blocks of {len(BLOCK)} in item order, each a seeded permutation of "
        + " / ".join(f"{BLOCK.count(s)} {s}" for s in SPLITS))  # 2 train / 2 selection / 4 confirmation
ANY = "any"
ANY_CLASSES = 8  # classes drawn for exemplars when the source is `any` (Brown et al.: variety helps)
PHOTO_FACTOR = 4  # photos: selection and confirmation take up to this many times their sizes


Band = tuple[float, float]


@dataclass(frozen=True)
class SourceBands:
    """How sure the model should be of the source images: p(source) in `source` and, when given,
    p(target) in `target`. Synthesized sources are rendered into the bands (pair-aware when a
    target band is given); photos are measured, and those outside are set aside in every split."""

    source: Band
    target: Band | None = None

    def __post_init__(self) -> None:
        for name, band in (("--source-band", self.source), ("--target-band", self.target)):
            if band is not None and not 0.0 <= band[0] < band[1] <= 1.0:
                raise UserError(f"{name} takes two probabilities 0 <= LO < HI <= 1, got {band[0]:g} {band[1]:g}")

    @classmethod
    def of(cls, source: Band | None, target: Band | None = None) -> "SourceBands | None":
        """The bands a command asked for (None: the defaults, pair-aware exemplars near the boundary)."""
        if source is None and target is None:
            return None
        return cls(tuple(source) if source is not None else exemplars_mod.DEFAULT_BAND,
                   tuple(target) if target is not None else None)

    def holds(self, probs: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """(N,) whether each image's softmax `probs` (N, classes) lies inside the bands."""
        p_s, p_t = probs[:, source], probs[:, target]
        inside = (p_s >= self.source[0]) & (p_s <= self.source[1])
        if self.target is not None:
            inside &= (p_t >= self.target[0]) & (p_t <= self.target[1])
        return inside

    def text(self) -> str:
        out = f"p(source) in [{self.source[0]:g}, {self.source[1]:g}]"
        return out + (f", p(target) in [{self.target[0]:g}, {self.target[1]:g}]" if self.target is not None else "")

    def as_dict(self) -> dict[str, Any]:
        return {"source": list(self.source), "target": None if self.target is None else list(self.target)}


@dataclass(frozen=True)
class SplitSizes:
    """How many images each split gets (exemplars: exact; photos: at most)."""

    train: int
    selection: int
    confirmation: int
    target: int = 2

    def items_needed(self) -> int:
        """Items to generate so that every split reaches its size under the block rule."""
        blocks = max(*(-(-getattr(self, s) // BLOCK.count(s)) for s in SPLITS), 1)
        return blocks * len(BLOCK)


def split_of(n_items: int, seed: int) -> list[str]:
    """The split of each of n_items items (see the module docstring); a prefix-stable rule."""
    g = stage_generator(seed, "split")
    out: list[str] = []
    while len(out) < n_items:
        out += [BLOCK[i] for i in torch.randperm(len(BLOCK), generator=g).tolist()]
    return out[:n_items]


def split_indices(n_items: int, seed: int, sizes: SplitSizes | None = None) -> dict[str, list[int]]:
    """Item indices per split, each capped at its size in `sizes` (None: uncapped)."""
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, s in enumerate(split_of(n_items, seed)):
        out[s].append(i)
    if sizes is not None:
        out = {s: idx[: getattr(sizes, s)] for s, idx in out.items()}
    return out


@dataclass
class PairData:
    """Images of a (source, target) pair, on CPU, in [0,1], (N,3,S,S) per split.

    source None means "any class but the target" (universal patches)."""

    source: int | None
    target: int
    images: dict[str, torch.Tensor]
    names: dict[str, list[str]]
    target_images: torch.Tensor
    kind: str  # "real" | "synthesized"
    how: str
    seed: int
    skipped: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)

    @property
    def train(self) -> torch.Tensor:
        return self.images["train"]

    @property
    def selection(self) -> torch.Tensor:
        return self.images["selection"]

    @property
    def confirmation(self) -> torch.Tensor:
        return self.images["confirmation"]

    def with_extra_train(self, images: torch.Tensor, names: list[str], how: str) -> "PairData":
        """The same pair with `images` added to the train split only (e.g. synthesized images
        mixed into real train photos); selection and confirmation are unchanged."""
        new = dict(self.images, train=torch.cat([self.train, images.to(self.train.dtype)]))
        new_names = dict(self.names, train=list(self.names["train"]) + list(names))
        return replace(self, images=new, names=new_names, how=f"{self.how}; train split mixed with {how}")

    def counts(self) -> dict[str, int]:
        return {s: len(self.images[s]) for s in SPLITS} | {"target": len(self.target_images)}

    def manifest(self) -> dict[str, Any]:
        """What a run records: the rule, seed, counts and every split's file names or exemplar ids."""
        return {"kind": self.kind, "how": self.how, "rule": RULE, "seed": self.seed, "counts": self.counts(),
                "files": {s: list(self.names[s]) for s in SPLITS}, "target_files": list(self.target_names),
                "skipped": list(self.skipped)}

    def pack(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, meta) for a StageStore."""
        tensors = {s: self.images[s] for s in SPLITS} | {"target": self.target_images}
        meta = {"source": self.source, "target": self.target, "names": self.names, "kind": self.kind,
                "how": self.how, "seed": self.seed, "skipped": self.skipped, "target_names": self.target_names}
        return tensors, meta

    @classmethod
    def unpack(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "PairData":
        return cls(meta["source"], meta["target"], {s: tensors[s].cpu() for s in SPLITS},
                   {s: list(meta["names"][s]) for s in SPLITS}, tensors["target"].cpu(), meta["kind"], meta["how"],
                   meta["seed"], list(meta["skipped"]), list(meta["target_names"]))



def load_pair(
    classifier, source: int | None, target: int, sizes: SplitSizes, *, data: str | Path | None = None,
    seed: int = 0, photo_factor: int = PHOTO_FACTOR, progress: bool = False, bands: SourceBands | None = None,
) -> PairData:
    """PairData from photos (`data`: any layout `patchlab.data.discover` reads) or, without
    data, from calibrated pair-aware exemplars (Carter et al. 2019's sources sit near the
    pair's boundary). Photos: selection and confirmation take up to `photo_factor` x
    their sizes (more real photos, tighter intervals). `bands`: how sure the model should be
    of the sources (`SourceBands`; None: the exemplars' pair-aware defaults, and every photo)."""
    if bands is not None and source is None:
        raise UserError("--source-band / --target-band need a source class (p(source) of 'any' is not defined)")
    if data is not None:
        return _from_photos(classifier, source, target, sizes, Path(data), seed, photo_factor, bands)
    return _from_exemplars(classifier, source, target, sizes, seed, progress, bands)


def _split_tensor(images: torch.Tensor, names: list[str], idx: dict[str, list[int]]):
    return {s: images[i] for s, i in idx.items()}, {s: [names[j] for j in i] for s, i in idx.items()}


def _require(images: dict[str, torch.Tensor], where: str) -> None:
    empty = [s for s in SPLITS if len(images[s]) == 0]
    if empty:
        raise UserError(f"not enough source images {where} for the {' and '.join(empty)} split(s) "
                        f"(the split rule: {RULE})")


def synthesized_sources(classifier, source: int | None, target: int, n: int, seed: int = 0,
                        progress: bool = False, bands: SourceBands | None = None,
                        ) -> tuple[torch.Tensor, list[str], str]:
    """n calibrated exemplars of the source (default: pair-aware, near the target, in the
    exemplars' default bands; `bands`: p(source) in its source band, and pair-aware only when
    it has a target band), or, when source is None, ceil(n / ANY_CLASSES) of each of
    ANY_CLASSES random classes but the target (at least n): (images, names, how they were made)."""
    if source is not None:
        band, near, near_band = ((exemplars_mod.DEFAULT_BAND, target, exemplars_mod.DEFAULT_NEAR_BAND) if bands is None
                                 else (bands.source, target if bands.target else None,
                                       bands.target or exemplars_mod.DEFAULT_NEAR_BAND))
        ex = exemplars_mod.exemplars(classifier, source, n, band=band, near=near, near_band=near_band, seed=seed,
                                     progress=progress)
        images, how = ex.images.cpu(), exemplars_mod.describe(ex.settings)
        names = [f"exemplar {classifier.classes.label(source)} #{i}" for i in range(n)]
    else:
        g = stage_generator(seed, "any-classes")
        pool = [c for c in torch.randperm(classifier.num_classes, generator=g).tolist() if c != target][:ANY_CLASSES]
        per = -(-n // len(pool))
        parts, names = [], []
        for c in pool:
            parts.append(exemplars_mod.exemplars(classifier, c, per, seed=seed, progress=progress).images.cpu())
            names += [f"exemplar {classifier.classes.label(c)} #{i}" for i in range(per)]
        images, how = torch.cat(parts), f"calibrated exemplars of {len(pool)} random classes"
    return images, names, how


def _from_exemplars(classifier, source, target, sizes: SplitSizes, seed: int, progress: bool,
                    bands: SourceBands | None = None) -> PairData:
    images, names, how = synthesized_sources(classifier, source, target, sizes.items_needed(), seed, progress, bands)
    idx = split_indices(len(images), seed, sizes)
    split, split_names = _split_tensor(images, names, idx)
    tgt = exemplars_mod.exemplars(classifier, target, sizes.target, seed=seed + 1, progress=progress).images.cpu()
    tnames = [f"exemplar {classifier.classes.label(target)} #{i}" for i in range(len(tgt))]
    return PairData(source, target, split, split_names, tgt, "synthesized", how, seed, [], tnames)


def _from_photos(classifier, source, target, sizes: SplitSizes, root: Path, seed: int, factor: int,
                 bands: SourceBands | None = None) -> PairData:
    records = discover(root, classifier.classes)
    if source is None:
        src = [r for r in records if r.label != target]
        if not src:
            raise UserError(f"no images in {root} outside the target class")
    else:
        src = select(records, source, classifier.classes, root)
    src = sorted(src, key=lambda r: str(r.path))
    caps = SplitSizes(sizes.train, sizes.selection * factor, sizes.confirmation * factor, sizes.target)
    # with bands, every photo of a split is measured and those inside are kept up to its cap (a photo's
    # split never depends on the bands, so runs with other bands never count each other's train photos)
    idx = split_indices(len(src), seed, None if bands is not None else caps)
    split: dict[str, torch.Tensor] = {}
    names: dict[str, list[str]] = {}
    skipped: list[str] = []
    outside = 0
    for s in SPLITS:
        recs = [src[i] for i in idx[s]]
        got = load_images(recs, classifier.input_size, classifier.crop_pct,
                          interpolation=classifier.preprocessing.interpolation) if recs else None
        split[s] = got.images if got else torch.empty(0, 3, classifier.input_size, classifier.input_size)
        names[s] = [_relative(p, root) for p in got.paths] if got else []
        skipped += got.skipped if got else []
        if bands is not None and len(split[s]):
            inside = bands.holds(classifier.logits(split[s]).softmax(-1).cpu(), source, target)
            outside += int((~inside).sum())
            keep = inside.nonzero().flatten()[: getattr(caps, s)]
            split[s], names[s] = split[s][keep], [names[s][i] for i in keep.tolist()]
    how = f"photos from {root}"
    if bands is not None:
        how += f"; only photos with {bands.text()} ({outside} others set aside)"
    _require(split, f"in {root} ({len(src)} found" + (f", {outside} outside {bands.text()}" if bands else "") + ")")
    tgt_recs = sorted((r for r in records if r.label == target), key=lambda r: str(r.path))[: sizes.target]
    if tgt_recs:
        got = load_images(tgt_recs, classifier.input_size, classifier.crop_pct,
                          interpolation=classifier.preprocessing.interpolation)
        tgt, tnames = got.images, [_relative(p, root) for p in got.paths]
    else:
        log.warning("no %s images in %s: the target reference uses synthesized exemplars",
                    classifier.classes.label(target), root)
        tgt = exemplars_mod.exemplars(classifier, target, sizes.target, seed=seed + 1).images.cpu()
        tnames = [f"exemplar {classifier.classes.label(target)} #{i}" for i in range(len(tgt))]
    return PairData(source, target, split, names, tgt, "real", how, seed, skipped, tnames)


def _relative(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
