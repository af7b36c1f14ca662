"""How much work a probe does: `Plan` (quick | standard | thorough).

A plan holds the pair's split sizes, the evaluation grid, the atlas donor shortlist,
the controls, and the settings of every registered generator for that plan (each
generator's settings class gives its own preset, see `registry`). quick: <= 5 min on
a 2-core CPU with the default model and a cold cache.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import UserError
from ..pairdata import SplitSizes
from ..patches.apply import CORNERS, POSITIONS
from ..protocols import DEFAULT_SIZES, PROTOCOLS
from .registry import preset_settings, registered, settings_from_dict


@dataclass(frozen=True)
class Plan:
    """Split sizes, the atlas donor shortlist, the evaluation grid, controls, and
    `settings`: generator name -> that generator's settings dataclass for this plan."""

    n_train: int
    n_selection: int
    n_confirmation: int
    n_target: int
    shortlist: int  # donor classes the atlas shortlists
    donor_images: int  # exemplars (or photos) per donor class
    n_donors_used: int  # top donors the generators disguise as or cut crops from
    sizes: tuple[float, ...]
    protocols: tuple[str, ...] = PROTOCOLS
    positions: tuple[str, ...] = POSITIONS
    random_placements: int = 4
    icons: bool = False
    library_controls: int = 20  # random library photos behind control-library-photo (the median is reported)
    settings: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> SplitSizes:
        return SplitSizes(self.n_train, self.n_selection, self.n_confirmation, self.n_target)

    def with_settings(self, generator: str, settings: Any) -> "Plan":
        """This plan with one generator's settings replaced."""
        return replace(self, settings={**self.settings, generator: settings})

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (the manifest's config.plan); `from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        """A plan from `as_dict` output, or from an older manifest's flat Budget fields.
        Settings of generators not registered in this process are left out."""
        d = dict(d)
        settings = d.pop("settings") if "settings" in d else _budget_settings(d)
        specs = registered()
        own = {f.name for f in fields(cls)}
        plain = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in own}
        return cls(**plain, settings={name: settings_from_dict(specs[name].settings, values)
                                      for name, values in settings.items() if name in specs})


def _budget_settings(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The built-in generators' settings that an older manifest's flat Budget fields stood for."""
    top = d["natural_top"]
    return {
        "synth": {"steps": d["synth_steps"]},
        "feature": {"plain": d["feature_plain"], "steps": d["feature_steps"], "tune_steps": d["tune_steps"],
                    "evaluate_untuned_disguised": d.get("evaluate_untuned_disguised", True)},
        "natural": {"crops": {"top_k": top, **(d.get("natural") or {})},
                    "search": {"top_k": top, **(d.get("library_search") or {})}},
    }


_GRIDS: dict[str, dict[str, Any]] = {
    "quick": dict(n_train=8, n_selection=8, n_confirmation=16, n_target=2, shortlist=6, donor_images=2,
                  n_donors_used=2, sizes=(0.10, 0.25), positions=CORNERS, random_placements=1, library_controls=8),
    "standard": dict(n_train=16, n_selection=16, n_confirmation=32, n_target=4, shortlist=12, donor_images=3,
                     n_donors_used=3, sizes=DEFAULT_SIZES, random_placements=4),
    "thorough": dict(n_train=32, n_selection=32, n_confirmation=64, n_target=8, shortlist=24, donor_images=4,
                     n_donors_used=4, sizes=DEFAULT_SIZES, random_placements=8, icons=True),
}


class _Plans(Mapping[str, Plan]):
    """The named plans, each built when looked up, so it holds every generator registered by then."""

    def __getitem__(self, name: str) -> Plan:
        return Plan(**_GRIDS[name], settings=preset_settings(name))

    def __iter__(self) -> Iterator[str]:
        return iter(_GRIDS)

    def __len__(self) -> int:
        return len(_GRIDS)


PLANS: Mapping[str, Plan] = _Plans()


def get_plan(name: str) -> Plan:
    """The named plan; UserError for an unknown name."""
    if name not in _GRIDS:
        raise UserError(f"unknown budget {name!r}; use {', '.join(PLANS)}")
    return PLANS[name]
