"""The patch generators probe runs, one registry line each.

A generator is `propose(job: GeneratorJob) -> list[Candidate]`: it may look at
the pair's TRAIN images only, draws randomness from `job.generator` (a seeded
CPU generator of its own stage), and writes search statistics or the reason it
made nothing into `job.notes`. Adding a generator = one new module with a
`propose` function + one line in GENERATORS.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..budgets import Budget
from ..pairdata import PairData
from .candidate import Candidate


@dataclass
class GeneratorJob:
    """Everything a generator may use for one pair."""

    pair: PairData
    classifier: Any
    budget: Budget
    generator: torch.Generator
    donors: list[int] = field(default_factory=list)  # the atlas ranking, best first
    donor_data: Path | None = None  # photos of donor classes
    library: Path | None = None  # any photo folder to search for natural patches
    seed: int = 0
    progress: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


Propose = Callable[[GeneratorJob], list[Candidate]]


def _registry() -> dict[str, Propose]:
    from . import feature, natural, synth

    return {
        "synth": synth.propose,  # Brown et al. 2017 universal EOT patch
        "feature": feature.propose,  # Carter et al. 2019 pair direction, plain and donor-disguised
        "natural": natural.propose,  # copy/paste: donor crops or a photo-library search
    }


GENERATORS: dict[str, Propose] = _registry()
