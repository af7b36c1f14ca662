"""The patch generators, one registration each (in the spirit of timm's `@register_model`).

A generator is a function `propose(job, settings) -> list[Candidate]` decorated with
`register_generator`: its name (the probe stage and the manifest's generator list),
the kind of candidate it makes, a human label (audit figures), whether its candidates
count as disguised when they carry a donor class (`Evaluation.best`), and a frozen
settings dataclass whose classmethod `preset(plan)` gives its settings for each plan
(quick, standard, thorough). It may look at the pair's TRAIN images only, draws
randomness from `job.rng` (a seeded CPU generator of its own stage) and writes search
statistics, or the reason it made nothing, into `job.notes`.

A new generator is one module and nothing else changes: `generators/synth.py` is the
smallest example (a settings dataclass with `preset`, and `propose` under the decorator);
`tests/test_generator_plugin.py` registers one from a test file alone.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..pairdata import PairData
from ..patches.candidate import NULL_KIND, REFERENCE_KIND, Candidate

if TYPE_CHECKING:
    from .plan import Plan

PLAN_NAMES = ("quick", "standard", "thorough")


@dataclass
class GeneratorJob:
    """Everything a generator may use for one pair."""

    pair: PairData
    classifier: Any
    plan: "Plan"
    rng: torch.Generator
    donors: list[int] = field(default_factory=list)  # the atlas ranking, best first
    donor_data: Path | None = None  # photos of donor classes
    library: Path | None = None  # any photo folder to search for natural patches
    seed: int = 0
    progress: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


Propose = Callable[[GeneratorJob, Any], list[Candidate]]


@dataclass(frozen=True)
class GeneratorSpec:
    """One registered generator (see the module docstring)."""

    name: str
    kind: str
    label: str
    disguisable: bool
    settings: type
    propose: Propose

    def run(self, job: GeneratorJob) -> list[Candidate]:
        """The candidates of `propose` with this plan's settings; each must be of this generator's kind."""
        cands = self.propose(job, job.plan.settings[self.name])
        wrong = sorted({c.kind for c in cands} - {self.kind})
        if wrong:
            raise ValueError(f"generator {self.name!r} is registered with kind {self.kind!r} but made kind {wrong}")
        return cands


_REGISTRY: dict[str, GeneratorSpec] = {}


def _check_settings(name: str, settings: type) -> None:
    """A frozen dataclass with a `preset(plan)` classmethod giving an instance for every plan."""
    params = getattr(settings, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"generator {name!r}: settings must be a frozen dataclass, got {settings!r}")
    for plan in PLAN_NAMES:
        preset = settings.preset(plan)
        if not isinstance(preset, settings):
            raise TypeError(f"generator {name!r}: {settings.__name__}.preset({plan!r}) is not a {settings.__name__}")


def register_generator(name: str, *, kind: str, label: str, disguisable: bool,
                       settings: type) -> Callable[[Propose], Propose]:
    """Decorator: register `propose(job, settings)` under `name` (stage order = registration order).

    Refuses a taken name, a kind that is a control's or the reference's, and settings that are
    not a frozen dataclass with a preset for every plan (so a typo fails at import time)."""
    if not name or not kind or not label:
        raise ValueError("a generator needs a name, a kind and a label")
    if name in _REGISTRY:
        raise ValueError(f"a generator named {name!r} is already registered")
    if kind in (NULL_KIND, REFERENCE_KIND):
        raise ValueError(f"kind {kind!r} is reserved for controls and the reference")
    _check_settings(name, settings)

    def add(propose: Propose) -> Propose:
        _REGISTRY[name] = GeneratorSpec(name, kind, label, disguisable, settings, propose)
        return propose

    return add


def unregister_generator(name: str) -> None:
    """Remove a registered generator (e.g. one a test added)."""
    del _REGISTRY[name]


def registered() -> dict[str, GeneratorSpec]:
    """Name -> GeneratorSpec, in registration order (the probe's stage order)."""
    return dict(_REGISTRY)


def generated_kinds() -> tuple[str, ...]:
    """The candidate kinds the registered generators make, in registration order."""
    return tuple(dict.fromkeys(spec.kind for spec in _REGISTRY.values()))


def kind_labels() -> dict[str, str]:
    """Kind -> human label (the first generator registered with that kind names it)."""
    labels: dict[str, str] = {}
    for spec in _REGISTRY.values():
        labels.setdefault(spec.kind, spec.label)
    return labels


def disguisable_kinds() -> tuple[str, ...]:
    """Kinds whose candidates count as disguised when they carry a donor class."""
    return tuple(dict.fromkeys(spec.kind for spec in _REGISTRY.values() if spec.disguisable))


def preset_settings(plan: str) -> dict[str, Any]:
    """Generator name -> its settings for the named plan, for every registered generator."""
    return {name: spec.settings.preset(plan) for name, spec in _REGISTRY.items()}


def settings_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A settings dataclass from `dataclasses.asdict` output read back from JSON: lists
    become tuples and nested dataclass fields are rebuilt; an unknown key is an error."""
    hints = typing.get_type_hints(cls)
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    out = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            out[key] = settings_from_dict(hints[key], value)
        else:
            out[key] = tuple(value) if isinstance(value, list) else value
    return cls(**out)
