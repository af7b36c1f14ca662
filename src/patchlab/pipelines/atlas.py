"""`atlas`: load a model and build an activation atlas (the function behind `patchlab atlas`).

`patchlab.atlases.build_atlas(classifier, ...)` is the lower-level function for
a classifier already loaded, with every setting of `AtlasConfig`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Unpack

from ..atlases import build_atlas
from ..errors import UserError
from .common import ModelOptions, check_paths, load_model, model_record

log = logging.getLogger("patchlab")


def atlas(
    source: str | int | None = None,
    target: str | int | None = None,
    *,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    data: str | Path | None = None,
    layer: str | None = None,
    grid: int = 10,
    donors: int = 10,
    icons: bool | None = None,
    icon_steps: int = 96,
    icon_direction: str = "centered",
    donors_for: tuple[str, str] | None = None,
    max_images: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    **options: Unpack[ModelOptions],
) -> dict:
    """Class-pair atlas with ranked donors (source and target: names or indices) or, without classes,
    a whole-layer atlas of `layer`; returns the run's summary (out, files, notes, donors, ...).

    data: an image folder (default: synthesized exemplars). grid: cells per
    side. donors: how many donor classes to list. icons: optvis cell icons
    (None: on with CUDA; on CPU, member-image crops, since rendering takes
    minutes there); icon_direction: "centered" or "mean" (see AtlasConfig).
    out: the run folder (default reports/atlas-...-TIME).
    Whole-layer mode: donors_for (SOURCE, TARGET) adds that pair's donor table
    computed from the layer's own activations (real photos need no source or
    target photo); max_images caps the photos drawn from `data` (None: all).
    layer: the feature layer every use reads (checked against the model; the whole-layer atlas's
    layer); options: labels file and preprocessing overrides (`ModelOptions`).
    """
    if source is None and target is None and layer is None and data is None:
        raise UserError("give --classes SOURCE TARGET, or --data DIR / --layer L for a whole-layer atlas")
    if max_images is not None and max_images < 1:
        raise UserError("--max-images must be at least 1")
    check_paths(data=data)
    clf = load_model(model, device, weights, layer=layer, **options)
    if icons is None:  # a pair atlas's 32 icons: ~2.5 minutes on one CPU thread (README, Icons)
        icons = clf.device.type == "cuda"
        if not icons:
            log.info("on CPU cells show member-image crops; --icons (icons=True) renders optvis icons (slow here)")
    result = build_atlas(clf, source, target, images=data, layer=layer, grid=grid, n_donors=donors, out=out, seed=seed,
                         progress=progress, icons=icons, icon_steps=icon_steps, icon_direction=icon_direction,
                         layer_images=max_images,
                         donor_pair=tuple(donors_for) if donors_for else None,
                         record=dict(model_record(clf, labels=options.get("labels")),
                                     weights=str(weights) if weights else None))
    return result.summary()
