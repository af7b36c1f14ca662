"""Device choice and seeded random generators.

Every random draw in patchlab comes from a CPU `torch.Generator` seeded from the
run seed and a stage name (`stage_generator`), so one seed gives the same
exemplars, splits, crops and placements on CPU and CUDA: draw on the
generator's device, then move the tensor (`draw_on`).
"""
from __future__ import annotations

import zlib

import torch

from .errors import UserError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' -> torch.device."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (pass it down, never global RNG)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def stage_seed(seed: int, stage: str) -> int:
    """A 63-bit seed derived from the run seed and a stage name (stable across runs and machines)."""
    return (int(seed) * 1_000_003 + zlib.crc32(stage.encode())) % (2**63 - 1)


def stage_generator(seed: int, stage: str) -> torch.Generator:
    """The CPU generator of one pipeline stage: same seed and stage, same draws on any device."""
    return generator(stage_seed(seed, stage), "cpu")


def gen_device(generator: torch.Generator | None, fallback: torch.device | str = "cpu") -> torch.device:
    """Where a draw from `generator` must happen (its own device; `fallback` when there is none)."""
    return generator.device if generator is not None else torch.device(fallback)
