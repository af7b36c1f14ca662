"""How much work each probe stage does (quick | standard | thorough)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError
from .pairdata import SplitSizes
from .patches.apply import CORNERS, POSITIONS
from .protocols import PROTOCOLS


@dataclass(frozen=True)
class Budget:
    """Split sizes, generator effort and the evaluation grid. quick: <= 5 min on a 2-core CPU
    with the default model and a cold cache."""

    n_train: int
    n_selection: int
    n_confirmation: int
    n_target: int
    shortlist: int
    donor_images: int
    n_donors_used: int
    synth_steps: int
    feature_plain: int
    feature_steps: int
    tune_steps: int
    natural_top: int
    sizes: tuple[float, ...]
    protocols: tuple[str, ...] = PROTOCOLS
    positions: tuple[str, ...] = POSITIONS
    random_placements: int = 4
    icons: bool = False
    evaluate_untuned_disguised: bool = True  # also measure disguised feature patches before EOT tuning
    library_controls: int = 20  # random library photos behind control-library-photo (the median is reported)
    natural: dict[str, Any] = field(default_factory=dict)  # extra arguments for the natural generator (donor crops)
    library_search: dict[str, Any] = field(default_factory=dict)  # extra arguments for search_library (--library)

    def splits(self) -> SplitSizes:
        return SplitSizes(self.n_train, self.n_selection, self.n_confirmation, self.n_target)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Budget":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


BUDGETS: dict[str, Budget] = {
    "quick": Budget(n_train=8, n_selection=8, n_confirmation=16, n_target=2, shortlist=6, donor_images=2,
                    n_donors_used=2, synth_steps=100, feature_plain=1, feature_steps=96, tune_steps=40, natural_top=3,
                    sizes=(0.10, 0.25), positions=CORNERS, random_placements=1, evaluate_untuned_disguised=False,
                    library_controls=8, natural={"coarse_images": 3, "fine_keep": 12, "fine_areas": (0.2,)}),
    "standard": Budget(n_train=16, n_selection=16, n_confirmation=32, n_target=4, shortlist=12, donor_images=3,
                       n_donors_used=3, synth_steps=200, feature_plain=2, feature_steps=160, tune_steps=80, natural_top=6,
                       sizes=(0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40), random_placements=4),
    "thorough": Budget(n_train=32, n_selection=32, n_confirmation=64, n_target=8, shortlist=24, donor_images=4,
                       n_donors_used=4, synth_steps=500, feature_plain=4, feature_steps=256, tune_steps=160,
                       natural_top=10, sizes=(0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40), random_placements=8,
                       icons=True),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise UserError(f"unknown budget {name!r}; use {', '.join(BUDGETS)}")
    return BUDGETS[name]
