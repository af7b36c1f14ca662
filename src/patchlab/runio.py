"""Run directories and atomic file writes (temp file + rename).

A run directory is the unit of output. `manifest.json` holds config, versions,
seed and model id; a run is marked complete only by `mark_complete`, written
last, so an interrupted run never looks finished.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError

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


def _json_default(obj: Any):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj) + "\n")


def save_png(path: str | Path, image: torch.Tensor) -> Path:
    """Write a (3,H,W) [0,1] tensor as an 8-bit PNG, atomically."""
    from io import BytesIO

    from PIL import Image

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


def check_run_dir(run_dir: str | Path, command: str, manifest: dict[str, Any] | None = None) -> Path:
    """Create `run_dir` if needed and prove it writable, touching nothing in it; UserError when it
    already holds the manifest of another command's run (or an unreadable one), or, given the new
    run's `manifest`, a finished run of the same command with another config, seed or model:
    either would be lost."""
    run_dir = ensure_writable_dir(run_dir)
    old_path = run_dir / "manifest.json"
    if not old_path.exists():
        return run_dir
    try:
        old = json.loads(old_path.read_text())
        kind = old.get("command")
    except (OSError, ValueError, AttributeError):
        old, kind = {}, None
    if kind != command:
        what = f"{_article(kind)} {kind} run" if isinstance(kind, str) else "an unreadable manifest.json"
        raise UserError(f"{run_dir} already holds {what}; give another --out")
    settings = ("config", "seed", "model")
    if manifest is not None and is_complete(run_dir) and (
            [old.get(k) for k in settings] != json.loads(to_json([manifest.get(k) for k in settings]))):
        raise UserError(f"{run_dir} already holds a finished {command} run with other settings; give another --out")
    return run_dir


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def versions() -> dict[str, str]:
    from . import __version__

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
