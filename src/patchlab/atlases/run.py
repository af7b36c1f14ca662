"""`build_atlas`: the function behind `patchlab atlas`.

Pair mode (source and target given), after Activation Atlas (Carter et al.
2019): collect spatial activations of source and target images (a data
folder, or exemplars synthesized by optvis), build the class-pair view and a
class atlas, rank donor classes (see `donor_run`), render cell icons, and
write a run directory: atlas-pair.png, atlas.png, cells.csv, donors.csv,
donors.json, activations (float16 + index npz), manifest.json, COMPLETE.
Whole-layer mode (no classes): an atlas of the data's (or a few classes'
exemplars') activations at one layer.

Stages: images (`pools`) -> activations -> pair view -> donors (`donor_run`)
-> class atlas layout and grid -> icons -> files (`result`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..runio import atomic_write_json, ensure_writable_dir, mark_complete, new_manifest
from . import icons
from .collect import Activations
from .config import AtlasConfig, AtlasRun
from .donor_run import ClassPair, DonorRun, layer_donors, rank_pair_donors
from .grid import Cells, make_grid
from .icon_measures import cell_top_classes, icon_measures
from .layout import CLASS_ATLAS, WHOLE_LAYER, Layout, layout
from .pair import pair_view
from .pools import ImagePool, collect_pool, layer_pool, pair_pool
from .result import AtlasResult, View, write_donors, write_views

_SETTINGS = frozenset(f.name for f in dataclasses.fields(AtlasConfig))


def build_atlas(
    classifier,
    source: int | str | None = None,
    target: int | str | None = None,
    images=None,
    *,
    out: str | Path | None = None,
    progress: bool = False,
    config: AtlasConfig | None = None,
    record: Mapping[str, Any] | None = None,
    **settings,
) -> AtlasResult:
    """Build a class-pair atlas with ranked donors (source and target given) or a whole-layer atlas.

    images: None (synthesize exemplars), a data folder, a (N,3,S,S) tensor in
    [0,1], or a `patchlab.data.Images`. Source/target: index or name.
    out: the run directory (default reports/atlas-...-TIME). Settings: an
    `AtlasConfig`, and/or any of its fields as keywords (they override it):
    layer, grid, n_donors, icons, icon_steps, icon_size, icon_direction, n_exemplars,
    donor_exemplars, donor_steps, shortlist_size, max_images, atlas_grid,
    pair_embed, atlas_method, batch_size, seed. record: how the model was loaded (spec, weights,
    labels, preprocessing), added to the manifest's config beside the atlas's own settings.
    """
    t_all = time.perf_counter()
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise TypeError(f"build_atlas() got unexpected keyword argument(s): {', '.join(unknown)}")
    classes = classifier.classes
    s, t = _resolve_pair(classes, source, target)
    cfg = dataclasses.replace(config or AtlasConfig(), **settings)
    cfg = dataclasses.replace(cfg, layer=cfg.layer or classifier.atlas_layer)
    classifier.layer(cfg.layer)  # UserError with suggestions for an unknown name
    layer_pair = _layer_donor_pair(classes, cfg, s)
    out = Path(out) if out else _default_out(classifier, s, t, cfg.layer)
    ensure_writable_dir(out)
    described = str(images) if isinstance(images, (str, Path)) else (None if images is None else "in-memory")
    config_record = cfg.manifest(None if s is None else classes.label(s), None if t is None else classes.label(t), described)
    config_record |= {k: v for k, v in (record or {}).items() if k not in config_record}
    manifest = new_manifest("atlas", config_record, cfg.seed, classifier.spec)
    atomic_write_json(out / "manifest.json", manifest)
    run = AtlasRun(classifier, cfg, out, images if isinstance(images, (str, Path)) else None, progress)

    with run.log.timed("images"):
        pool = pair_pool(run, s, t, images) if s is not None else layer_pool(run, images)
    with run.log.timed("collect"):
        pair = (s, t) if s is not None else layer_pair
        acts = collect_pool(run, pool, "activations", pair, [s, t] if s is not None else ())
    view, donors = None, None
    if s is not None:
        with run.log.timed("pair_view"):
            view = pair_view(acts, s, t, n=cfg.grid, embed=cfg.pair_embed, seed=cfg.seed)
            if view.layout.note:
                run.log.notes.append("pair view: " + view.layout.note)
        donors = rank_pair_donors(run, ClassPair(s, t, view, pool))
    elif layer_pair is not None:
        donors = layer_donors(run, acts, *layer_pair)
    with run.log.timed("atlas_layout"):
        merged, lay, atlas_cells = _class_atlas(run, acts, donors, pair_mode=s is not None)

    views = [View("atlas", atlas_cells, merged)]
    if view is not None:
        views.insert(0, View("pair", view.cells, acts, view.rows))
    pools = [pool] + ([donors.pool] if donors is not None and donors.acts is not None else [])
    with run.log.timed("icons"):
        tiles, rendered = _tiles(run, views, ImagePool.concat(pools))
    with run.log.timed("icon_measures"):
        measures = _measure_icons(run, atlas_cells, tiles[-1], rendered)
    files = write_views(out, views, tiles, cfg.icon_size, view.scale if view is not None else None)
    files.update(activations="activations.f16", activations_index="activations-index.npz")
    top = None
    if donors is not None:
        ds, dt = (s, t) if s is not None else layer_pair
        files.update(write_donors(out, donors.table, cfg.n_donors,
                                  {"source": classes.label(ds), "target": classes.label(dt), "layer": cfg.layer,
                                   "from": "pair view and donor images" if s is not None else "whole-layer activations"}))
        top = donors.table.head(cfg.n_donors)
    run.log.timings["total"] = time.perf_counter() - t_all
    result = AtlasResult(out, cfg.layer, s, t, len(merged), atlas_cells, lay, view, top, files, run.log.notes,
                         run.log.timings, measures)
    manifest["result"] = {k: v for k, v in result.summary().items() if k != "donors"}
    mark_complete(out, manifest)
    return result


def _resolve_pair(classes, source, target) -> tuple[int | None, int | None]:
    """Class indices of the pair (both None for a whole-layer atlas)."""
    if (source is None) != (target is None):
        raise UserError("give both a source and a target class (or neither, for a whole-layer atlas)")
    s = classes.resolve(str(source)) if source is not None else None
    t = classes.resolve(str(target)) if target is not None else None
    if s is not None and s == t:
        raise UserError("source and target must be different classes")
    return s, t


def _layer_donor_pair(classes, cfg: AtlasConfig, source: int | None) -> tuple[int, int] | None:
    """The whole-layer donor pair (class indices) from cfg.donor_pair; None when not asked for."""
    if cfg.donor_pair is None:
        return None
    if source is not None:
        raise UserError("--donors-for is for a whole-layer atlas; with --classes the pair's donors are ranked anyway")
    s, t = _resolve_pair(classes, *cfg.donor_pair)
    return s, t


def _default_out(classifier, source, target, layer) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if source is None:
        return Path("reports") / f"atlas-{layer.replace('.', '_')}-{stamp}"
    return Path("reports") / f"atlas-{classifier.classes.slug(source)}-to-{classifier.classes.slug(target)}-{stamp}"


def _class_atlas(run: AtlasRun, acts: Activations, donors: DonorRun | None, pair_mode: bool) -> tuple[Activations, Layout, Cells]:
    """The class atlas (pair and donor activations together) or whole-layer atlas: layout and grid cells."""
    cfg = run.config
    merged = _concat_acts([acts, donors.acts]) if donors is not None and donors.acts is not None else acts
    defaults = CLASS_ATLAS if pair_mode else WHOLE_LAYER
    lay = layout(np.asarray(merged.vectors, dtype=np.float32), dims=2, method=cfg.atlas_method, n_neighbors=defaults["n_neighbors"],
                 min_dist=defaults["min_dist"], whiten_first=defaults["whiten"], seed=cfg.seed)
    if lay.note:
        run.log.notes.append("atlas: " + lay.note)
    n_atlas = cfg.atlas_grid or (cfg.grid if pair_mode else 20)
    cells = make_grid(lay.coords, merged.vectors, n_atlas, attribution=merged.pair, image_ids=merged.image_ids, min_count=3)
    return merged, lay, cells


def _concat_acts(parts: list[Activations]) -> Activations:
    names, labels, ids, offset = [], [], [], 0
    for a in parts:
        ids.append(a.image_ids + offset)
        names += a.image_names
        labels.append(a.image_labels)
        offset += len(a.image_names)
    pair = np.concatenate([a.pair for a in parts]) if all(a.pair is not None for a in parts) else None
    return Activations(
        parts[0].layer, np.concatenate([np.asarray(a.vectors) for a in parts]), np.concatenate(ids),
        np.concatenate([a.positions for a in parts]), parts[0].grid_hw, names, np.concatenate(labels), pair,
    )


def _measure_icons(run: AtlasRun, cells: Cells, tiles: torch.Tensor, rendered: bool) -> dict:
    """The atlas view's icon measures (`icon_measures`); each cell's top-3 attributed classes go
    into cells.csv (top_class_1..3) when the layer allows an exact attribution."""
    clf = run.classifier
    top = cell_top_classes(clf, run.config.layer, cells.vectors)
    if top is not None:
        for j in range(top.shape[1]):
            cells.extra[f"top_class_{j + 1}"] = np.array([clf.classes.label(int(c)) for c in top[:, j]])
    measures = icon_measures(clf, run.config.layer, tiles, top)
    what = "centered cell means" if run.config.icon_direction == "centered" else "cell means"
    measures["icons_are"] = f"optvis renders of {what}" if rendered else "member-photo crops"
    return measures


def icon_directions(cells: Cells, how: str) -> np.ndarray:
    """The vectors a view's icons render: each cell's mean ("mean"), or minus the mean of all
    the view's gridded activations ("centered"; the count-weighted mean of the cell means).
    Post-ReLU activations share a large common part, so uncentered cell means point almost
    the same way and their icons look alike (the atlas's icons should tell cells apart)."""
    vectors = np.asarray(cells.vectors, dtype=np.float32)
    if how == "mean" or len(cells) == 0:
        return vectors
    weights = np.asarray(cells.count, dtype=np.float64)
    common = (weights[:, None] * vectors).sum(0) / max(weights.sum(), 1.0)
    return (vectors - common).astype(np.float32)


def _tiles(run: AtlasRun, views: list[View], pool) -> tuple[list[torch.Tensor], bool]:
    """Icon images per view: optvis renders of cell means (one batched pass), else member crops;
    and whether they were rendered."""
    cfg = run.config
    if cfg.icons:
        vecs = np.concatenate([icon_directions(v.cells, cfg.icon_direction) for v in views])
        rendered = icons.render_icons(run.classifier, cfg.layer, vecs, size=cfg.icon_size, steps=cfg.icon_steps, seed=cfg.seed)
        out, i = [], 0
        for v in views:
            out.append(rendered[i : i + len(v.cells)])
            i += len(v.cells)
        return out, True
    out = []
    for v in views:
        rep = icons.representatives(v.cells, v.acts.vectors, v.rows)
        point_rows = rep if v.rows is None else v.rows[rep]
        fetch = lambda ids, a=v.acts: pool.fetch_by_name([a.image_names[i] for i in ids])  # noqa: E731
        out.append(icons.member_crops(fetch, v.acts, point_rows, cfg.icon_size))
    return out, False
