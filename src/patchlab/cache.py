"""On-disk cache of tensors (e.g. rendered exemplars), keyed by a stable hash.

Directory: $PATCHLAB_CACHE, else the platform user cache dir (~/.cache/patchlab
on Linux). Entries are safetensors files written atomically, with a SHA-256 of
every tensor in the metadata; an entry that fails to parse or verify counts as
a miss, is deleted, and gets rebuilt by the caller.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .runio import atomic_write_bytes, to_json

log = logging.getLogger(__name__)
_FORMAT = "patchlab-cache-1"


def cache_dir() -> Path:
    """$PATCHLAB_CACHE, or the user cache dir (XDG_CACHE_HOME / ~/Library/Caches / %LOCALAPPDATA%) + patchlab."""
    env = os.environ.get("PATCHLAB_CACHE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "patchlab"


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _canonical(obj.tolist())
    if isinstance(obj, float):
        return repr(obj)
    if obj is None or isinstance(obj, (int, str, bool)):
        return obj
    return str(obj)


def cache_key(**parts: Any) -> str:
    """Stable hex key (SHA-256, 32 chars) of keyword parts (order-independent; floats by repr)."""
    text = json.dumps(_canonical(parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _path(key: str) -> Path:
    if not key or any(c not in "0123456789abcdefghijklmnopqrstuvwxyz_-" for c in key):
        raise ValueError(f"bad cache key {key!r}")
    return cache_dir() / f"{key}.safetensors"


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _metadata(data: bytes) -> dict[str, str]:
    """The __metadata__ of a safetensors blob (8-byte length + JSON header)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__") or {}


def save_tensors(key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> Path | None:
    """Store tensors (+ JSON-able meta) under `key`, atomically; None (and a warning) if the cache is not writable."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"format": _FORMAT, "meta": to_json(meta or {}), "sha256": json.dumps({k: _digest(v) for k, v in cpu.items()})}
    try:
        return atomic_write_bytes(_path(key), save_safetensors(cpu, metadata=header))
    except OSError as exc:
        log.warning("cache not written (%s): %s", cache_dir(), exc)
        return None


def load_tensors(key: str, with_meta: bool = False):
    """Tensors stored under `key` (or (tensors, meta) with with_meta=True); None on a miss or a corrupt entry."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        tensors = load_safetensors(data)
        header = _metadata(data)
        if header.get("format") != _FORMAT:
            raise ValueError("unknown format")
        sums = json.loads(header["sha256"])
        if set(sums) != set(tensors) or any(_digest(tensors[k]) != sums[k] for k in tensors):
            raise ValueError("checksum mismatch")
        meta = json.loads(header.get("meta", "{}"))
    except Exception as exc:  # corrupt or truncated: drop it, the caller rebuilds
        log.warning("cache entry %s is corrupt (%s); rebuilding", path.name, exc)
        path.unlink(missing_ok=True)
        return None
    return (tensors, meta) if with_meta else tensors
