"""Atomic file writes (temp file + rename), JSON, and the primitives of a run directory.

A run directory is the unit of output (`patchlab.runfolder.RunFolder` reads and
writes one). `manifest.json` holds config, versions, seed and model id; a run is
marked complete only by `mark_complete`, written last, so an interrupted run
never looks finished.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import UserError
from .version import __version__

COMPLETE_MARKER = "COMPLETE"


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes the file 0600; give it the mode open() would
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def plain(obj: Any) -> Any:
    """`obj` as JSON holds it: numpy and torch numbers and arrays as Python numbers and lists,
    paths as strings, and every non-finite float (NaN, inf) as None, since JSON has no NaN.
    The one place where numbers become JSON: `to_json` writes what this returns."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return plain(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(plain(obj), indent=2, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj) + "\n")


def save_png(path: str | Path, image: torch.Tensor) -> Path:
    """Write a (3,H,W) [0,1] tensor as an 8-bit PNG, atomically."""
    arr = (image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def ensure_writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and prove it is writable; UserError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise UserError(f"output folder {path} is not writable: {exc.strerror or exc}") from None
    return path


def claim_new_dir(path: Path) -> Path:
    """Create a folder no other run uses: `path`, else `path-2`, `path-3`, ... (two runs started
    in the same second must not share one)."""
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir()
            return ensure_writable_dir(candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"output folder {candidate} is not writable: {exc.strerror or exc}") from None
    raise UserError(f"could not make a new run folder next to {path}")


def versions() -> dict[str, str]:
    out = {"patchlab": __version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return out


def new_manifest(command: str, config: dict[str, Any], seed: int, model: str) -> dict[str, Any]:
    return {
        "command": command, "config": config, "seed": seed, "model": model,
        "versions": versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False,
    }


def mark_complete(run_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Write the final manifest, then the COMPLETE marker (the very last file)."""
    run_dir = Path(run_dir)
    manifest = dict(manifest, complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(run_dir / "manifest.json", manifest)
    atomic_write_text(run_dir / COMPLETE_MARKER, manifest["finished"] + "\n")


def is_complete(run_dir: str | Path) -> bool:
    return (Path(run_dir) / COMPLETE_MARKER).is_file()
