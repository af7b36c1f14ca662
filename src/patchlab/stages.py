"""Resumable pipeline stages inside a run directory.

Each finished stage leaves `stages/<name>.safetensors` (its tensors) and
`stages/<name>.json` (its metadata and timing), written atomically; the JSON is
written last, so a stage interrupted midway is simply not done. `--resume`
reloads finished stages and recomputes from the first unfinished one.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import first_line
from .runio import atomic_write_bytes, atomic_write_json

_log = logging.getLogger("patchlab")


class UnreadableStage(Exception):
    """A finished stage's saved files cannot be read back."""


class StageStore:
    """Save and reload stage outputs (tensors + JSON-able metadata)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "stages"
        self.timings: dict[str, float] = {}

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.safetensors", self.dir / f"{name}.json"

    def done(self, name: str) -> bool:
        return self._paths(name)[1].is_file()

    def save(self, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], seconds: float) -> None:
        tpath, jpath = self._paths(name)
        blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        atomic_write_bytes(tpath, blob)
        atomic_write_json(jpath, {"meta": meta, "seconds": round(seconds, 3), "tensors": sorted(tensors)})

    def load(self, name: str, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """A saved stage's tensors and metadata; UnreadableStage when its files are damaged."""
        tpath, jpath = self._paths(name)
        try:
            record = json.loads(jpath.read_text())
            seconds, meta = float(record["seconds"]), record["meta"]
            if not isinstance(meta, dict):
                raise TypeError("its metadata is not a JSON object")
            tensors = load_file(str(tpath), device=str(device)) if tpath.is_file() else {}
            missing = set(record.get("tensors") or []) - set(tensors)  # runs before the list was kept: not checked
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise UnreadableStage(f"{type(exc).__name__}: {first_line(exc)}") from None
        if missing:
            raise UnreadableStage(f"tensors {', '.join(sorted(missing))} are missing")
        self.timings[name] = seconds
        return tensors, meta

    def run(
        self,
        name: str,
        compute: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
        device: torch.device | str = "cpu",
        log: Callable[[str], None] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Load stage `name` if it is done, else compute it, save it and record its time."""
        if self.done(name):
            try:
                tensors, meta = self.load(name, device)
            except UnreadableStage as exc:
                _log.warning("[%s] the saved stage is damaged (%s); computing it again", name, exc)
            else:
                if log:
                    log(f"[{name}] reused from an earlier run ({self.timings[name]:.1f} s then)")
                return tensors, meta
        if log:
            log(f"[{name}] ...")
        start = time.perf_counter()
        tensors, meta = compute()
        seconds = time.perf_counter() - start
        self.save(name, tensors, meta, seconds)
        self.timings[name] = round(seconds, 3)
        if log:
            log(f"[{name}] done in {seconds:.1f} s")
        return {k: v.to(device) for k, v in tensors.items()}, meta
