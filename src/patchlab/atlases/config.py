"""The settings of one atlas run (`AtlasConfig`) and the state its stages share (`AtlasRun`).

Random draws come from CPU `torch.Generator`s, one per purpose, derived from
the run seed and the purpose's name (`AtlasConfig.generator`, via
`devices.stage_generator`), so the same seed gives the same atlas on CPU and
CUDA; optvis draws on the generator's device and moves the draw to the model's.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..devices import stage_generator
from ..errors import UserError

# The purposes of the atlas's random draws (stage names "atlas:<purpose>"; renaming one changes results).
PURPOSES = {
    "pair_images": "which data-folder images of the pair (or of the whole layer) are used",
    "layer_classes": "which classes' exemplars a whole-layer atlas without data shows",
    "donor_images": "which data-folder images of the shortlisted donor classes are used",
    "donor_render": "initial images and transforms of the rendered donor images",
}  # cell icons: stage "atlas:icons:<first cell>" per render batch (see icons.render_icons)


ICON_DIRECTIONS = ("centered", "mean")


@dataclass(frozen=True)
class AtlasConfig:
    """Settings of `build_atlas` (recorded in manifest.json; defaults as in the command line).

    layer: None = the model's feature layer. grid: cells per side of the pair
    view (and of the class atlas unless atlas_grid). n_donors: donors listed.
    icons: optvis icons (else member-image crops), icon_steps/icon_size their
    render steps and pixels; icon_direction: what an icon renders, "centered"
    (the cell's mean minus the mean of all the view's activations: what sets the
    cell apart) or "mean" (the cell's mean vector as it is). n_exemplars: synthesized images per class when no
    images are given. donor_exemplars/donor_steps: rendered images per
    shortlisted donor class without data, and their most steps.
    shortlist_size: donor classes scored on activations. max_images: images
    per class drawn from a data folder. pair_embed/atlas_method: layout
    methods. batch_size: images per forward pass. seed: the run seed.
    layer_images: whole-layer mode, most images drawn from a data folder
    (None: all of them, streamed). donor_pair: whole-layer mode, (source,
    target) names whose donor table is computed from the layer's activations.
    """

    layer: str | None = None
    grid: int = 10
    n_donors: int = 10
    icons: bool = True
    icon_steps: int = 96
    icon_size: int = 96
    icon_direction: str = "centered"
    n_exemplars: int = 8
    donor_exemplars: int = 2
    donor_steps: int = 64
    shortlist_size: int = 24
    max_images: int = 200
    atlas_grid: int | None = None
    pair_embed: str = "auto"
    atlas_method: str = "auto"
    batch_size: int = 32
    seed: int = 0
    layer_images: int | None = None
    donor_pair: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.grid < 2 or self.grid > 320:
            raise UserError(f"--grid must be between 2 and 320, got {self.grid}")
        if self.icon_direction not in ICON_DIRECTIONS:
            raise UserError(f"--icon-direction must be one of {', '.join(ICON_DIRECTIONS)}, "
                            f"got {self.icon_direction!r}")

    def generator(self, purpose: str) -> torch.Generator:
        """The CPU generator of one purpose (see PURPOSES), derived from the run seed and its name."""
        if purpose not in PURPOSES:
            raise KeyError(f"unknown atlas random purpose {purpose!r}; known: {', '.join(PURPOSES)}")
        return stage_generator(self.seed, f"atlas:{purpose}")

    def manifest(self, source: str | None, target: str | None, images: str | None) -> dict:
        """The manifest's config: every setting but the seed (the manifest records it apart), then the pair and images."""
        config = {k: v for k, v in asdict(self).items() if k != "seed"}
        config.update(source=source, target=target, images=images)
        return config


@dataclass
class RunLog:
    """Notes for the user and seconds per stage, collected while the run goes."""

    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0


@dataclass
class AtlasRun:
    """What every stage of one run needs: the model, the settings, where files go, the image folder, the log."""

    classifier: object
    config: AtlasConfig  # with the layer resolved
    out: Path
    folder: str | Path | None = None
    progress: bool = False
    log: RunLog = field(default_factory=RunLog)
