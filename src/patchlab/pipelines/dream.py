"""`dream`: calibrated class exemplars written to a folder (the function behind `patchlab dream`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Unpack

from ..exemplars import DEFAULT_BAND, DEFAULT_NEAR_BAND, DEFAULT_STEPS, exemplars
from ..runfolder import RunFolder
from .common import ModelOptions, load_model, model_record, run_dir_name

log = logging.getLogger("patchlab")


def dream(
    cls: str | int,
    *,
    n: int = 16,
    near: str | int | None = None,
    band: tuple[float, float] | None = DEFAULT_BAND,
    near_band: tuple[float, float] | None = DEFAULT_NEAR_BAND,
    steps: int | None = DEFAULT_STEPS,
    size: int | None = None,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    cache: bool = True,
    out: str | Path | None = None,
    progress: bool = False,
    **options: Unpack[ModelOptions],
) -> dict:
    """Render `n` exemplars of class `cls` (name, WordNet id or index) into `out`; returns the manifest dict
    (with "folder"). See `patchlab.exemplars.exemplars` for the arguments.

    near: a second class given a realistic share (pair-aware). band / near_band:
    p(cls) and p(near) bands; steps: most steps per image (None for any of
    these: the default). size: image side (None: the model's input size).
    out: default reports/dream-CLASS-TIME. cache: load and save the exemplar cache.
    options: labels file and preprocessing overrides (`ModelOptions`).
    """
    clf = load_model(model, device, weights, **options)
    index = clf.classes.resolve(str(cls))
    near_index = clf.classes.resolve(str(near)) if near is not None else None
    if out is None:
        out = Path("reports") / run_dir_name(clf.classes.slug(index), "dream")
    RunFolder(out).check("dream")  # an unusable --out fails before the rendering, not after
    result = exemplars(
        clf, index, n=n, band=band or DEFAULT_BAND, near=near_index, near_band=near_band or DEFAULT_NEAR_BAND,
        size=size, steps=steps or DEFAULT_STEPS, seed=seed, cache=cache, progress=progress,
    )
    if result.interrupted:
        log.warning("interrupted: saving the images as they were (not all finished)")
    path = result.save(out, record=dict(model_record(clf, labels=options.get("labels")),
                                        weights=str(weights) if weights else None))
    manifest = json.loads(path.read_text())
    manifest["folder"] = str(Path(out))
    return manifest
