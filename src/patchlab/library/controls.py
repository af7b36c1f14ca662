"""The photos behind the random-library-photo null control.

Many unrelated photos flip near-boundary sources, so a natural patch is special only if
it beats photos picked at random from the same library and pasted the same way (the
control itself is built in `patchlab.evaluation.controls`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UserError
from .index import LibraryIndex


def control_photo_rows(index: LibraryIndex, n: int, generator: torch.Generator | None = None,
                       exclude: Sequence[int] = ()) -> np.ndarray:
    """n library rows at random (seeded by `generator`), none labelled, or seen by the model
    (top-1), as a class in `exclude`; UserError when the library has fewer such photos."""
    ex = list(exclude)
    bad = np.isin(index.labels, ex) | np.isin(index.top1, ex)
    rows = np.flatnonzero(~bad)
    if len(rows) < n:
        raise UserError(f"the library has only {len(rows)} photos outside classes {list(exclude)}; {n} requested")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return rows[torch.randperm(len(rows), generator=gen)[:n].numpy()]
