"""What an atlas run produced (`AtlasResult`) and the files it writes into its run directory:
atlas-pair.png, atlas.png, cells.csv, donors.csv, donors.json, activation indexes."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..runio import atomic_write_bytes, atomic_write_json, atomic_write_text, save_png
from .collect import Activations
from .grid import Cells, cells_table
from .icons import compose
from .layout import Layout
from .pair import PairView

DONOR_SIGNALS = {
    "head_alignment": "(ii) cos(w_c - mean w, w_target - w_source) of the linear head",
    "activation_score": "(i) mean over the class's images of the mean normalized pair attribution "
                        "of each image's top quarter of positions (pair-view x scale)",
    "target_side_fraction": "share of the class's activations whose nearest pair-view cell has mean x > 0",
}


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
    icon_measures: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict:
        d = {
            "out": str(self.out), "layer": self.layer, "source": self.source, "target": self.target,
            "activations": self.activations, "atlas_layout": self.atlas_layout.as_dict(),
            "atlas_cells": len(self.atlas_cells), "files": self.files, "notes": self.notes,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "icon_measures": self.icon_measures,
        }
        if self.pair is not None:
            d["pair"] = {"layout": self.pair.layout.as_dict(), "cells": len(self.pair.cells), "scale_p99": self.pair.scale}
        if self.donors is not None:
            d["donors"] = donor_records(self.donors)
        return d


@dataclass
class View:
    """One atlas picture: its cells, the activations they bin, and which rows of those (None: all)."""

    name: str  # "pair" or "atlas"
    cells: Cells
    acts: Activations
    rows: np.ndarray | None = None

    @property
    def png(self) -> str:
        return "atlas-pair.png" if self.name == "pair" else "atlas.png"


def save_index(path: Path, acts: Activations) -> None:
    """Activation provenance (image ids, positions, attributions, names) beside the float16 vectors."""
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


def write_views(out: Path, views: list[View], tiles: list[torch.Tensor], cell_px: int, pair_scale: float | None) -> dict[str, str]:
    """The atlas PNGs (cells framed by their pair attribution / pair_scale in pair mode) and cells.csv."""
    files: dict[str, str] = {}
    for view, tile in zip(views, tiles):
        frame = view.cells.attribution / pair_scale if pair_scale is not None else None
        save_png(out / view.png, compose(tile, view.cells, cell_px=cell_px, frame=frame))
        files[view.name + "_png"] = view.png
    tables = [cells_table(v.cells, v.acts.image_names, v.name) for v in views]
    atomic_write_text(out / "cells.csv", pd.concat(tables, ignore_index=True).to_csv(index=False))
    files["cells"] = "cells.csv"
    return files


def write_donors(out: Path, table, n_donors: int, header: dict[str, Any]) -> dict[str, str]:
    """donors.csv (the best n_donors of the ranked table) and donors.json (header: source, target, layer)."""
    top = table.head(n_donors)
    atomic_write_text(out / "donors.csv", top.to_csv(index=False))
    atomic_write_json(out / "donors.json", {
        **header, "signals": DONOR_SIGNALS, "combined": "mean of the signals' ranks over the shortlist (1 = best)",
        "shortlist_size": len(table), "donors": donor_records(top),
    })
    return {"donors_csv": "donors.csv", "donors_json": "donors.json"}


def donor_records(df) -> list[dict]:
    """The ranked donor table as JSON records (signals, ranks, evidence cells and images)."""
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
