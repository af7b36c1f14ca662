"""The natural generator: real photos (or crops of them) pasted as patches, the automated
form of the Activation Atlas article's hand-picked patches (Carter et al. 2019) and of the
copy/paste search of Casper et al. 2022 ("SNAFUE").

With a photo library (`job.library`), the library search (`patchlab.library.search`);
else crops of donor images (`patchlab.patches.natural`): photos of the atlas's top donor
classes from `job.donor_data`, or their exemplars. Both rank by measured gain on the
pair's train images.

Settings: crops (DonorCropSettings: the donor-crop search) and search (SearchSettings:
the library search); the top-k of each is the plan's (quick 3, standard 6, thorough 10).
Returns Candidates of kind "natural", each with its donor class (disguisable).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..data import discover, load_images
from ..exemplars import exemplars
from ..library import SearchSettings, index_library, search_library
from ..library.collages import side_by_side
from ..patches.candidate import Candidate
from ..patches.crops import with_box
from ..patches.direction import pair_direction
from ..patches.natural import DonorCropSettings, natural_patches
from .registry import GeneratorJob, register_generator

log = logging.getLogger("patchlab")


@dataclass(frozen=True)
class NaturalSettings:
    """crops: the donor-crop search (without a library); search: the photo-library search."""

    crops: DonorCropSettings = field(default_factory=DonorCropSettings)
    search: SearchSettings = field(default_factory=SearchSettings)

    def with_top_k(self, top_k: int) -> "NaturalSettings":
        """Both searches keeping `top_k` candidates."""
        return replace(self, crops=replace(self.crops, top_k=top_k), search=replace(self.search, top_k=top_k))

    @classmethod
    def preset(cls, plan: str) -> "NaturalSettings":
        if plan == "quick":
            return cls(DonorCropSettings(coarse_images=3, fine_keep=12, fine_areas=(0.2,))).with_top_k(3)
        return cls().with_top_k({"standard": 6, "thorough": 10}[plan])


def donor_images(classifier, donors: Sequence[int], per_class: int, seed: int, donor_data: str | Path | None):
    """(images, labels, names, source) of the donor classes: real photos from donor_data, else
    exemplars; `source` says which the report shows (exemplars also when donor_data has no
    photo of a donor class)."""
    if donor_data is not None:
        records = [r for r in discover(donor_data, classifier.classes) if r.label in set(donors)]
        picked = []
        for d in donors:
            picked += [r for r in records if r.label == d][: per_class * 4]
        if picked:
            got = load_images(picked, classifier.input_size, classifier.crop_pct,
                              interpolation=classifier.preprocessing.interpolation)
            return got.images, got.labels, got.paths, "donor photos"
        log.warning("no images of the donor classes in %s: using synthesized donor exemplars", donor_data)
        source = f"donor exemplars (no photo of a donor class in --donor-data {donor_data})"
    else:
        source = "donor exemplars (no photo library given)"
    imgs, labels, names = [], [], []
    for d in donors:
        ex = exemplars(classifier, d, per_class, seed=seed + d)
        imgs.append(ex.images.cpu())
        labels += [d] * len(ex.images)
        names += [f"exemplar {classifier.classes.label(d)} #{i}" for i in range(len(ex.images))]
    return torch.cat(imgs), torch.tensor(labels), names, source


def _library_patches(job: GeneratorJob, settings: SearchSettings) -> list[Candidate]:
    """The library search's candidates, each with the photo it was cut from (crop box drawn)."""
    clf, pair = job.classifier, job.pair
    index = index_library(clf, job.library, progress=job.progress)
    cands, stats = search_library(clf, index, pair.train, pair.source, pair.target, settings, sizes=job.plan.sizes,
                                  generator=job.rng, progress=job.progress, target_images=pair.target_images)
    parts = [c.provenance.get("parts") or [c.provenance] for c in cands]  # a collage: both photos
    flat = [p for own in parts for p in own]
    photos = iter(index.load_photos([p["library_row"] for p in flat]) if flat else [])
    for cand, own in zip(cands, parts):  # a collage's view: its two photos side by side, as in the patch
        views = [with_box(next(photos), p["box_xyxy"]) for p in own]
        cand.source_view = views[0] if len(views) == 1 else side_by_side(*views)
    job.notes.update(source=f"photo library {job.library} ({len(index.paths)} photos)", search=stats)
    return cands


@register_generator("natural", kind="natural", label="natural crop", disguisable=True, settings=NaturalSettings)
def propose(job: GeneratorJob, settings: NaturalSettings) -> list[Candidate]:
    """Natural patches: with a photo library, the library search; else crops of donor images
    (photos from donor_data, or exemplars of the atlas's top donors), ranked by measured gain."""
    clf, pair, plan = job.classifier, job.pair, job.plan
    if job.library is not None:
        return _library_patches(job, settings.search)
    if clf.direction_head is None:
        job.notes["skipped"] = (f"{clf.spec} has no linear head on its feature layer, so there is no pair direction "
                                "to guide the crop search: no natural candidates (a --library search estimates it "
                                "from the library's photos)")
        return []
    ids = job.donors[: plan.n_donors_used]
    d_imgs, d_labels, d_names, source = donor_images(clf, ids, plan.donor_images, job.seed, job.donor_data)
    cands, stats = natural_patches(clf, pair.source, pair.target, pair.train, d_imgs, d_labels,
                                   pair_direction(clf, pair.source, pair.target), settings.crops,
                                   donor_names=[str(n) for n in d_names], generator=job.rng)
    job.notes.update(source=source, search=stats)
    return cands
