"""Candidate: one patch proposed by a generator (or a control), with its story."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import BadImage, decode_image
from ..errors import UserError
from ..runio import atomic_write_bytes, atomic_write_json, atomic_write_text, save_png
from ..weights import safe_torch_load

NULL_KIND = "control"  # null controls: does mere occlusion do it? (noise, gray, source photo, library photo)
REFERENCE_KIND = "reference"  # positive reference: a real target photo pasted the same way


def is_generated(kind: str) -> bool:
    """Whether a candidate of this kind was made by a generator (not a null control or the reference)."""
    return kind not in (NULL_KIND, REFERENCE_KIND)


@dataclass
class Candidate:
    """A patch (3,h,w) in [0,1] plus how it was made.

    kind: a generator's kind (see `patchlab.generators`), NULL_KIND or REFERENCE_KIND.
    name: unique, file-name safe.
    provenance: free-form facts (donor class, source image, crop box, atlas
    cell, objective, steps...). curve: optimization curve rows, e.g.
    {"step": 10, "loss": 1.2, "success": 0.4}. reads_as: what the model calls
    the patch on its own ({"index", "name", "prob"}), filled by the generator
    or the evaluator. members: patches of a pooled control (e.g. 20 random
    library photos); `patch` is then the first of them, shown in the report.
    """

    patch: torch.Tensor
    kind: str
    name: str
    provenance: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)
    score: float | None = None
    reads_as: dict[str, Any] | None = None
    members: torch.Tensor | None = None  # (K,3,h,w): a pooled control, each row the median over its K patches
    source_view: torch.Tensor | None = None  # (3,H,W): the photo a natural patch was cut from, crop box drawn

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"a candidate's kind must be a non-empty string, got {self.kind!r}")
        if self.patch.dim() != 3 or self.patch.shape[0] != 3:
            raise ValueError(f"patch must be (3,h,w), got {tuple(self.patch.shape)}")
        self.patch = self.patch.detach().clamp(0, 1)

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "size_px": list(self.patch.shape[1:]), "score": self.score,
            "reads_as": self.reads_as, "provenance": self.provenance,
        }

    def save(self, folder: str | Path) -> dict[str, str]:
        """Write NAME.png, NAME.pt (float tensor), NAME.curve.csv, NAME.json and NAME.source.png
    (natural patches: the source photo with the crop box); returns the paths."""
        folder = Path(folder)
        paths = {"png": str(save_png(folder / f"{self.name}.png", self.patch))}
        if self.source_view is not None:
            paths["source_view"] = str(save_png(folder / f"{self.name}.source.png", self.source_view))
        buf = io.BytesIO()
        torch.save(self.patch.cpu().float(), buf)
        paths["tensor"] = str(atomic_write_bytes(folder / f"{self.name}.pt", buf.getvalue()))
        if self.curve:
            out = io.StringIO()
            keys = sorted({k for row in self.curve for k in row}, key=lambda k: (k != "step", k))
            writer = csv.DictWriter(out, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.curve)
            paths["curve"] = str(atomic_write_text(folder / f"{self.name}.curve.csv", out.getvalue()))
        paths["meta"] = str(atomic_write_json(folder / f"{self.name}.json", self.meta()))
        return paths


def load_patch(path: str | Path) -> torch.Tensor:
    """A patch from a PNG/JPEG (any mode, via patchlab.data) or a .pt tensor (weights_only)."""
    path = Path(path)
    if path.suffix == ".pt":
        t = safe_torch_load(path, "patch tensor", "the patch as a plain (3,h,w) tensor or a PNG")
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[0] != 3 or min(t.shape[1:]) < 1:
            raise UserError(f"{path} does not hold a (3,h,w) patch tensor with h, w >= 1")
        if t.is_complex() or not torch.isfinite(t.float()).all():
            raise UserError(f"{path}: the patch tensor holds values that are not finite real numbers (NaN or inf)")
        return t.float().clamp(0, 1)
    try:
        img = decode_image(path)
    except BadImage as exc:
        raise UserError(f"cannot read patch: {exc}") from None
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
