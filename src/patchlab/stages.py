"""Resumable pipeline stages inside a run directory.

Each finished stage leaves `stages/<name>.safetensors` (its tensors) and
`stages/<name>.json` (its metadata and timing), written atomically; the JSON is
written last, so a stage interrupted midway is simply not done. `--resume`
reloads finished stages and recomputes from the first unfinished one.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .runio import atomic_write_bytes, atomic_write_json


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
        from safetensors.torch import save

        tpath, jpath = self._paths(name)
        blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        atomic_write_bytes(tpath, blob)
        atomic_write_json(jpath, {"meta": meta, "seconds": round(seconds, 3)})

    def load(self, name: str, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors.torch import load_file

        tpath, jpath = self._paths(name)
        record = json.loads(jpath.read_text())
        self.timings[name] = record["seconds"]
        tensors = load_file(str(tpath), device=str(device)) if tpath.is_file() else {}
        return tensors, record["meta"]

    def run(
        self,
        name: str,
        compute: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
        device: torch.device | str = "cpu",
        log: Callable[[str], None] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Load stage `name` if it is done, else compute it, save it and record its time."""
        if self.done(name):
            if log:
                log(f"[{name}] reused from an earlier run ({self._read_seconds(name):.1f} s then)")
            return self.load(name, device)
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

    def _read_seconds(self, name: str) -> float:
        return float(json.loads(self._paths(name)[1].read_text()).get("seconds", 0.0))
