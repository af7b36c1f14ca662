"""`build_atlas`: the function behind `patchlab atlas`.

Pair mode (source and target given), after Activation Atlas (Carter et al.
2019): collect spatial activations of source and target images (a data
folder, or exemplars synthesized by optvis), build the class-pair view and a
class atlas, rank donor classes (see `donors`), render cell icons, and write
a run directory: atlas-pair.png, atlas.png, cells.csv, donors.csv,
donors.json, activations (float16 + index npz), manifest.json, COMPLETE.
Whole-layer mode (no classes): an atlas of the data's (or a few classes'
exemplars') activations at one layer.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .collect import Activations, collect, folder_batches, tensor_batches
from .grid import Cells, cells_table, make_grid
from .layout import CLASS_ATLAS, WHOLE_LAYER, Layout, layout
from .pair import PairView, pair_view

log = logging.getLogger("patchlab")


@dataclass
class AtlasResult:
    """What one atlas run produced (paths are inside `out`)."""

    out: Path
    layer: str
    source: int | None
    target: int | None
    activations: int
    atlas_cells: Cells
    atlas_layout: Layout
    pair: PairView | None = None
    donors: Any = None  # pandas DataFrame, best first
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        d = {
            "out": str(self.out), "layer": self.layer, "source": self.source, "target": self.target,
            "activations": self.activations, "atlas_layout": self.atlas_layout.as_dict(),
            "atlas_cells": len(self.atlas_cells), "files": self.files, "notes": self.notes,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
        }
        if self.pair is not None:
            d["pair"] = {"layout": self.pair.layout.as_dict(), "cells": len(self.pair.cells), "scale_p99": self.pair.scale}
        if self.donors is not None:
            d["donors"] = _donor_records(self.donors)
        return d


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

    def batches(self, batch_size: int):
        if self.records is not None:
            return folder_batches(self.records, self.classifier, batch_size)
        return tensor_batches(self.images, self.names, self.labels, batch_size)

    def fetch_by_name(self, names: list[str]) -> torch.Tensor:
        if self.records is None:
            index = {n: i for i, n in enumerate(self.names)}
            return self.images[[index[n] for n in names]]
        from ..data import ImageRecord, load_images

        got = load_images([ImageRecord(Path(n)) for n in names], self.classifier.input_size, self.classifier.crop_pct)
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


def _exemplar_pool(classifier, classes: list[int], n: int, seed: int, tag: str) -> ImagePool:
    """Exemplars synthesized by `patchlab.exemplars` (one call per class)."""
    try:
        from ..exemplars import exemplars
    except ImportError:
        raise UserError("no --data given and patchlab.exemplars is not available to synthesize images; pass --data DIR") from None
    imgs, names, labels = [], [], []
    for c in classes:
        ex = exemplars(classifier, c, n, seed=seed)
        imgs.append(ex.images.detach().float().cpu())
        slug = classifier.classes.slug(c)
        names += [f"exemplar:{tag}:{slug}:{i}" for i in range(len(ex.images))]
        labels += [c] * len(ex.images)
    return ImagePool(classifier, torch.cat(imgs), names, labels)


def _rendered_pool(classifier, classes: list[int], per_class: int, steps: int, seed: int, band=(0.5, 0.9)) -> ImagePool:
    """Donor-class images rendered in ONE optvis batch (each image its own class), each frozen
    once it is top-1 for its class with p >= band[0]; objective log p kept inside the band."""
    from ..devices import generator
    from ..optvis import objectives as obj
    from ..optvis.render import render

    dev = classifier.device
    idx = torch.tensor(classes, device=dev).repeat_interleave(per_class)
    rows = torch.arange(len(idx), device=dev)

    def stop(logits: torch.Tensor, _step: int) -> torch.Tensor:
        p = logits.softmax(1)[rows, idx]
        return (logits.argmax(1) == idx) & (p >= band[0])

    res = render(classifier, obj.logprob_band(idx, band[0] + 0.05, band[1] - 0.05), len(idx), steps=steps,
                 param="fourier", lr=0.05, stop=stop, generator=generator(seed, dev))
    names = [f"render:donor:{classifier.classes.slug(c)}:{i}" for c in classes for i in range(per_class)]
    return ImagePool(classifier, res.images.detach().float().cpu(), names, idx.tolist())


def _data_records(classifier, data, classes: list[int] | None, per_class: int, seed: int):
    from ..data import discover

    records = discover(data, classifier.classes)
    rng = np.random.default_rng(seed)
    if classes is None:
        if len(records) > per_class:
            keep = np.sort(rng.choice(len(records), per_class, replace=False))
            records = [records[i] for i in keep]
        return records
    out = []
    for c in classes:
        mine = [r for r in records if r.label == c]
        if len(mine) > per_class:
            mine = [mine[i] for i in np.sort(rng.choice(len(mine), per_class, replace=False))]
        out += mine
    return out


def _as_pool(classifier, images) -> ImagePool | None:
    """images: None, a data folder, a (N,3,S,S) tensor, or an object with .images/.labels/.paths."""
    if images is None:
        return None
    if isinstance(images, (str, Path)):
        return None  # handled as a folder by the caller
    if isinstance(images, torch.Tensor):
        return ImagePool(classifier, images)
    return ImagePool(classifier, images.images, list(images.paths), [int(x) for x in images.labels])


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


def _save_index(path: Path, acts: Activations) -> None:
    """Activation provenance (image ids, positions, attributions, names) beside the float16 vectors."""
    import io

    from ..runio import atomic_write_bytes

    buf = io.BytesIO()
    arrays = {"image_ids": acts.image_ids, "positions": acts.positions, "image_labels": acts.image_labels,
              "image_names": np.asarray(acts.image_names), "shape": np.asarray(acts.vectors.shape),
              "classes": np.asarray(acts.classes, dtype=np.int64)}
    if acts.pair is not None:
        arrays["pair"] = acts.pair
    if acts.class_attr is not None:
        arrays["class_attr"] = acts.class_attr
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _donor_records(df) -> list[dict]:
    recs = []
    for r in df.to_dict("records"):
        recs.append({
            "rank": int(r["rank"]), "class": r["class"], "index": int(r["index"]),
            "signals": {
                "head_alignment": _num(r["head_alignment"]), "activation_score": _num(r["activation_score"]),
                "target_side_fraction": _num(r["target_side_fraction"]),
            },
            "ranks": {"head_alignment": _num(r["rank_head_alignment"]), "activation": _num(r["rank_activation"])},
            "combined_score": _num(r["combined_score"]),
            "evidence": {
                "cells": [int(c) for c in str(r["evidence_cells"]).split(";") if c],
                "images": [s for s in str(r["example_images"]).split(";") if s],
            },
        })
    return recs


def _num(v) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else v


def _default_out(classifier, source, target, layer) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if source is None:
        return Path("reports") / f"atlas-{layer.replace('.', '_')}-{stamp}"
    return Path("reports") / f"atlas-{classifier.classes.slug(source)}-to-{classifier.classes.slug(target)}-{stamp}"


def build_atlas(
    classifier,
    source: int | str | None = None,
    target: int | str | None = None,
    images=None,
    layer: str | None = None,
    grid: int = 10,
    n_donors: int = 10,
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
    icons: bool = True,
    icon_steps: int = 96,
    icon_size: int = 96,
    n_exemplars: int = 8,
    donor_exemplars: int = 2,
    donor_steps: int = 64,
    shortlist_size: int = 24,
    max_images: int = 200,
    atlas_grid: int | None = None,
    pair_embed: str = "auto",
    atlas_method: str = "auto",
    batch_size: int = 32,
) -> AtlasResult:
    """Build a class-pair atlas with ranked donors (source and target given) or a whole-layer atlas.

    images: None (synthesize exemplars), a data folder, a (N,3,S,S) tensor in
    [0,1], or a `patchlab.data.Images`. Source/target: index or name.
    """
    from ..runio import atomic_write_json, atomic_write_text, ensure_writable_dir, mark_complete, new_manifest, save_png

    t_all = time.perf_counter()
    classes = classifier.classes
    if (source is None) != (target is None):
        raise UserError("give both a source and a target class (or neither, for a whole-layer atlas)")
    s = classes.resolve(str(source)) if source is not None else None
    t = classes.resolve(str(target)) if target is not None else None
    if s is not None and s == t:
        raise UserError("source and target must be different classes")
    layer = layer or classifier.feature_layer
    classifier.layer(layer)
    if grid < 2 or grid > 320:
        raise UserError(f"--grid must be between 2 and 320, got {grid}")
    out = Path(out) if out else _default_out(classifier, s, t, layer)
    ensure_writable_dir(out)
    config = {k: v for k, v in locals().items() if k in (
        "layer", "grid", "n_donors", "icons", "icon_steps", "icon_size", "n_exemplars", "donor_exemplars", "donor_steps",
        "shortlist_size", "max_images", "atlas_grid", "pair_embed", "atlas_method", "batch_size")}
    config.update(source=None if s is None else classes.label(s), target=None if t is None else classes.label(t),
                  images=str(images) if isinstance(images, (str, Path)) else (None if images is None else "in-memory"))
    manifest = new_manifest("atlas", config, seed, classifier.spec)
    atomic_write_json(out / "manifest.json", manifest)
    notes: list[str] = []
    timings: dict[str, float] = {}
    folder = images if isinstance(images, (str, Path)) else None
    given = _as_pool(classifier, images)

    def clock(key: str, t0: float) -> None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0

    # -- images and activations of the pair (or the whole layer) ------------
    t0 = time.perf_counter()
    if s is not None:
        if folder is not None:
            pool = ImagePool(classifier, records=_data_records(classifier, folder, [s, t], max_images, seed))
            if not any(lbl == s for lbl in pool.labels) or not any(lbl == t for lbl in pool.labels):
                raise UserError(f"{folder} needs images of both {classes.label(s)!r} and {classes.label(t)!r}")
        elif given is not None:
            pool = given
        else:
            pool = _exemplar_pool(classifier, [s, t], n_exemplars, seed, "pair")
            notes.append(f"no data: used {n_exemplars} synthesized exemplars per class")
    else:
        if folder is not None:
            pool = ImagePool(classifier, records=_data_records(classifier, folder, None, max_images, seed))
        elif given is not None:
            pool = given
        else:
            g = np.random.default_rng(seed)
            few = sorted(int(c) for c in g.choice(classifier.num_classes, 8, replace=False))
            pool = _exemplar_pool(classifier, few, max(2, n_exemplars // 2), seed, "layer")
            notes.append(f"no data: exemplars of {len(few)} random classes: " + ", ".join(classes.label(c) for c in few))
    clock("images", t0)
    t0 = time.perf_counter()
    pair = (s, t) if s is not None else None
    acts = collect(classifier, pool.batches(batch_size), layer, pair=pair, classes=[s, t] if s is not None else (),
                   store=out / "activations.f16", seed=seed, progress=progress)
    _save_index(out / "activations-index.npz", acts)
    clock("collect", t0)

    # -- class-pair view and donors ------------------------------------------
    view = None
    donors_df = None
    pools = [pool]
    all_acts = [acts]
    if s is not None:
        t0 = time.perf_counter()
        view = pair_view(acts, s, t, n=grid, embed=pair_embed, seed=seed)
        if view.layout.note:
            notes.append("pair view: " + view.layout.note)
        clock("pair_view", t0)
        donors_df, donor_acts, donor_pool = _donors(
            classifier, s, t, view, pool, layer, folder, shortlist_size, donor_exemplars, donor_steps, max_images, seed, batch_size,
            progress, out, notes, timings,
        )
        if donor_acts is not None:
            pools.append(donor_pool)
            all_acts.append(donor_acts)

    # -- whole atlas -----------------------------------------------------------
    t0 = time.perf_counter()
    merged = _concat_acts(all_acts) if len(all_acts) > 1 else acts
    defaults = CLASS_ATLAS if s is not None else WHOLE_LAYER
    lay = layout(np.asarray(merged.vectors, dtype=np.float32), dims=2, method=atlas_method, n_neighbors=defaults["n_neighbors"],
                 min_dist=defaults["min_dist"], whiten_first=defaults["whiten"], seed=seed)
    if lay.note:
        notes.append("atlas: " + lay.note)
    n_atlas = atlas_grid or (grid if s is not None else 20)
    atlas_cells = make_grid(lay.coords, merged.vectors, n_atlas, attribution=merged.pair, image_ids=merged.image_ids, min_count=3)
    clock("atlas_layout", t0)

    # -- icons and images -------------------------------------------------------
    t0 = time.perf_counter()
    views = [("atlas", atlas_cells, merged, None)]
    if view is not None:
        views.insert(0, ("pair", view.cells, acts, view.rows))
    tiles = _tiles(classifier, layer, views, icons, icon_steps, icon_size, seed, ImagePool.concat(pools), notes)
    clock("icons", t0)
    from .icons import compose

    files: dict[str, str] = {}
    for (name, cells, _a, _r), tile in zip(views, tiles):
        scale = view.scale if view is not None else 1.0
        frame = cells.attribution / scale if s is not None else None
        png = out / ("atlas-pair.png" if name == "pair" else "atlas.png")
        save_png(png, compose(tile, cells, cell_px=icon_size, frame=frame))
        files[name + "_png"] = png.name
    tables = [cells_table(c, a.image_names, name) for name, c, a, _ in views]
    import pandas as pd

    atomic_write_text(out / "cells.csv", pd.concat(tables, ignore_index=True).to_csv(index=False))
    files["cells"] = "cells.csv"
    files["activations"] = "activations.f16"
    files["activations_index"] = "activations-index.npz"
    if donors_df is not None:
        top = donors_df.head(n_donors)
        atomic_write_text(out / "donors.csv", top.to_csv(index=False))
        atomic_write_json(out / "donors.json", {
            "source": classes.label(s), "target": classes.label(t), "layer": layer,
            "signals": {
                "head_alignment": "(ii) cos(w_c - mean w, w_target - w_source) of the linear head",
                "activation_score": "(i) mean over the class's images of the mean normalized pair attribution "
                                    "of each image's top quarter of positions (pair-view x scale)",
                "target_side_fraction": "share of the class's activations whose nearest pair-view cell has mean x > 0",
            },
            "combined": "mean of the signals' ranks over the shortlist (1 = best)",
            "shortlist_size": len(donors_df), "donors": _donor_records(top),
        })
        files["donors_csv"], files["donors_json"] = "donors.csv", "donors.json"
    timings["total"] = time.perf_counter() - t_all
    result = AtlasResult(out, layer, s, t, len(merged), atlas_cells, lay, view, donors_df.head(n_donors) if donors_df is not None else None,
                         files, notes, timings)
    manifest["result"] = {k: v for k, v in result.summary().items() if k != "donors"}
    mark_complete(out, manifest)
    return result


def _donors(classifier, s, t, view, pair_pool, layer, folder, shortlist_size, donor_exemplars, donor_steps, max_images, seed, batch_size,
            progress, out, notes, timings):
    """Rank donor classes: signal (ii) over all classes, signal (i) on a shortlist."""
    from .donors import activation_scores, head_alignment, rank_donors, shortlist

    t0 = time.perf_counter()
    head = classifier.head
    alignment = None
    if isinstance(head, nn.Linear):
        alignment = head_alignment(head.weight, s, t)
        cands = shortlist(alignment, shortlist_size, (s, t))
    else:
        notes.append("head is not linear: signal (ii) unavailable; shortlist = classes most predicted on target images")
        probs = torch.zeros(classifier.num_classes)
        for images, _names, labels in pair_pool.batches(batch_size):
            keep = torch.tensor([lbl == t for lbl in labels], dtype=torch.bool)
            if keep.any():
                probs += classifier.logits(images[keep]).softmax(1).sum(0).cpu()
        cands = shortlist(probs.numpy(), shortlist_size, (s, t))
    timings["donor_signal_ii"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pool = None
    if folder is not None:
        records = _data_records(classifier, folder, None if not cands else cands, max(4, max_images // 10), seed)
        records = [r for r in records if r.label is not None and r.label not in (s, t)]
        if not cands:
            cands = sorted({int(r.label) for r in records})
        if records:
            pool = ImagePool(classifier, records=records)
        missing = sorted(set(cands) - {int(r.label) for r in records})
        if missing:
            notes.append(f"{len(missing)} shortlisted classes have no images in the data; signal (i) is missing for them")
    elif cands:
        pool = _rendered_pool(classifier, cands, donor_exemplars, donor_steps, seed)
        notes.append(f"donor images: {donor_exemplars} per shortlisted class, rendered in one batch (<= {donor_steps} steps)")
    timings["donor_images"] = time.perf_counter() - t0
    if not cands:
        raise UserError("no candidate donor classes: the head is not linear and the data has no other classes")
    evidence, donor_acts = None, None
    if pool is not None:
        t0 = time.perf_counter()
        donor_acts = collect(classifier, pool.batches(batch_size), layer, pair=(s, t), store=out / "activations-donors.f16",
                             seed=seed, progress=progress)
        _save_index(out / "activations-donors-index.npz", donor_acts)
        evidence = activation_scores(donor_acts, view)
        timings["donor_signal_i"] = time.perf_counter() - t0
    df = rank_donors(cands, alignment, evidence, classifier.classes, s, t)
    return df, donor_acts, pool


def _tiles(classifier, layer, views, icons, steps, size, seed, pool, notes) -> list[torch.Tensor]:
    """Icon images per view: optvis renders of cell means (one batched pass), else member crops."""
    from .icons import member_crops, render_icons, representatives

    if icons:
        try:
            import patchlab.optvis.render  # noqa: F401
        except ImportError:
            notes.append("optvis render is not available: icons are member-image crops")
            icons = False
    if icons:
        vecs = np.concatenate([c.vectors for _, c, _, _ in views])
        rendered = render_icons(classifier, layer, vecs, size=size, steps=steps, seed=seed)
        out, i = [], 0
        for _, c, _, _ in views:
            out.append(rendered[i : i + len(c)])
            i += len(c)
        return out
    out = []
    for _, cells, acts, rows in views:
        rep = representatives(cells, acts.vectors, rows)
        point_rows = rep if rows is None else rows[rep]
        fetch = lambda ids, a=acts: pool.fetch_by_name([a.image_names[i] for i in ids])  # noqa: E731
        out.append(member_crops(fetch, acts, point_rows, size))
    return out
