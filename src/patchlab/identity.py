"""What makes two runs the same run: the settings a resumed probe or audit must share.

A resumed run that silently mixed two models, weight or labels files, feature
layers, preprocessing, photo folders, budgets, seeds, defences, physical
ranges or source bands would report numbers no single run produced, so `--resume` compares
these fields and refuses with the field's name (exit 2). A field an older run
did not record reads as None, the default, so an older run resumes with the
default labels, layer and preprocessing; a run that asked for no defence and no
physical protocol records neither (absent and None compare equal).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .errors import UserError

FIELDS = ("model", "weights", "labels", "layer", "preprocessing", "data", "donor_data", "library", "budget", "seed",
          "defenses", "physical", "bands")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_fingerprint(path: str | Path) -> str:
    """A short hash of a file or folder's contents as listed: relative paths, sizes and mtimes
    (a changed, added or removed photo changes it; reading the photos is not needed)."""
    root = Path(path)
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root) if p != root else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def run_identity(*, model: str | list[str], weights: str | Path | None, data: str | Path | None,
                 donor_data: str | Path | None = None, library: str | Path | None = None,
                 budget: str, seed: int, labels: str | Path | None = None, layer: str | None = None,
                 preprocessing: dict[str, Any] | None = None, bands: dict[str, Any] | None = None) -> dict[str, Any]:
    """The FIELDS of a run: model spec, weights and labels file hashes, the feature layer asked for
    and the preprocessing overrides (None: the model's own), folder paths with content
    fingerprints, budget name, seed and the source bands (only when asked for)."""
    def folder(p):
        return None if p is None else {"path": str(Path(p).resolve()), "content": folder_fingerprint(p)}

    def file(p):
        return None if p is None else {"path": str(p), "sha256": file_sha256(p)}

    return {"model": model, "weights": file(weights), "labels": file(labels), "layer": layer,
            "preprocessing": preprocessing, "data": folder(data), "donor_data": folder(donor_data),
            "library": folder(library), "budget": budget, "seed": int(seed)} | ({"bands": bands} if bands else {})


def check_same_run(old: dict[str, Any] | None, new: dict[str, Any], where: str) -> None:
    """UserError naming every field in which `new` differs from the recorded `old` identity."""
    old = old or {}
    diff = [f for f in FIELDS if _comparable(old.get(f)) != _comparable(new.get(f))]
    if diff:
        what = "; ".join(f"{f} {_show(old.get(f))} there, {_show(new.get(f))} here" for f in diff)
        raise UserError(f"{where} was made with other settings ({what}); use the same settings or a new output folder")


def _comparable(value: Any) -> Any:
    if isinstance(value, dict) and ("sha256" in value or "content" in value):
        return value.get("sha256") or value.get("content")  # a moved folder with the same content is the same data
    return value


def _show(value: Any) -> str:
    if isinstance(value, dict) and "path" in value:
        return repr(value.get("path"))
    return repr(value)
