"""The run folder: one contract for what every command leaves behind, and for reading it back.

  manifest.json   `Manifest`: command, config (`RunConfig`), seed, model, versions, started,
                  complete, finished
  summary.json    `Summary` (schema SUMMARY_SCHEMA) of an evaluated run
  results.csv     one row per candidate x size x placement x protocol x split
  stages/         finished pipeline stages (`patchlab.stages.StageStore`)
  COMPLETE        written last (`RunFolder.mark_complete`), so an interrupted run never looks finished

Every command records its inputs the same way in `config`: `data` {kind: "real" | "synthesized",
path}, `budget` (a plan's name), `splits` (the split sizes asked of `patchlab.pairdata`) and
`weights`; the model spec is the manifest's `model`.

The records read the run folders of older versions too: a key an older patchlab did not write
gets its default in `from_dict` (nowhere else), and keys a record does not model are kept in
`extra` and written back as they were, so `from_dict(d).as_dict()` gives `d` back for a folder
this version wrote.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import UserError, first_line
from .protocols import ALL_PROTOCOLS
from .runio import (
    COMPLETE_MARKER, atomic_write_json, atomic_write_text, ensure_writable_dir, is_complete, mark_complete, new_manifest,
    plain,
)
from .stages import StageStore

SUMMARY_SCHEMA = "patchlab.summary/3"
REAL, SYNTHESIZED = "real", "synthesized"
SPLIT_KEYS = ("train", "selection", "confirmation", "target")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in _list(value) if isinstance(v, dict)]


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pair(value: Any) -> list[Any]:
    """An interval [low, high]; [None, None] when absent."""
    return list(value) if isinstance(value, (list, tuple)) and len(value) == 2 else [None, None]


def _rest(d: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


# -- the manifest ------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSource:
    """Where a run's images came from: photos at `path` ("real") or exemplars the model made ("synthesized")."""

    kind: str = SYNTHESIZED
    path: str | None = None

    @classmethod
    def of(cls, data: str | Path | None) -> DataSource:
        """The source of a command's --data (None: synthesized exemplars), with the path made absolute."""
        return cls(SYNTHESIZED) if data is None else cls(REAL, str(Path(data).resolve()))

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> DataSource:
        """config.data, or where older versions recorded it: a plain path (evaluate, synth, paste),
        config.identity.data.path (probe), config.settings.data (audit)."""
        data = cfg.get("data")
        if isinstance(data, dict):
            return cls(str(data.get("kind") or (REAL if data.get("path") else SYNTHESIZED)), data.get("path"))
        path = data or _dict(_dict(cfg.get("identity")).get("data")).get("path") or _dict(cfg.get("settings")).get("data")
        return cls(REAL, str(path)) if path else cls(SYNTHESIZED)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}


@dataclass(frozen=True)
class RunConfig:
    """The settings a command records: what every command shares, and its own settings (`extra`).
    The model: its spec, weights and labels files, the layer each use read ({"atlas", "library
    index", "pair direction"} -> layer; None for a command that reads none) and its preprocessing
    (input_size, mean, std, crop_pct, interpolation)."""

    source: str | None = None
    target: str | None = None
    data: DataSource = DataSource()
    budget: str | None = None
    splits: dict[str, int] | None = None
    weights: str | None = None
    model: str | None = None
    labels: str | None = None
    layer: dict[str, str] | None = None
    preprocessing: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("source", "target", "data", "budget", "splits", "weights", "model", "labels", "layer", "preprocessing")

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        """Older configs: the budget in config.identity or config.settings, the splits from a
        recorded plan's n_train / n_selection / n_confirmation / n_target, the weights file in
        config.identity.weights.path or config.settings.weights."""
        d = _dict(d)
        identity, settings, plan = _dict(d.get("identity")), _dict(d.get("settings")), _dict(d.get("plan"))
        splits = d.get("splits")
        if not isinstance(splits, dict) and all(f"n_{k}" in plan for k in SPLIT_KEYS):
            splits = {k: plan[f"n_{k}"] for k in SPLIT_KEYS}
        weights = d.get("weights") or _dict(identity.get("weights")).get("path") or settings.get("weights")
        model, labels = d.get("model"), d.get("labels")
        return cls(d.get("source"), d.get("target"), DataSource.from_config(d),
                   d.get("budget") or identity.get("budget") or settings.get("budget"),
                   splits if isinstance(splits, dict) else None, str(weights) if weights else None,
                   model if isinstance(model, str) else None, labels if isinstance(labels, str) else None,
                   d.get("layer") if isinstance(d.get("layer"), dict) else None,
                   d.get("preprocessing") if isinstance(d.get("preprocessing"), dict) else None, _rest(d, cls.FIELDS))

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "data": self.data.as_dict(), "budget": self.budget,
                "splits": self.splits, "weights": self.weights, "model": self.model, "labels": self.labels,
                "layer": self.layer, "preprocessing": self.preprocessing, **self.extra}

    def model_options(self) -> dict[str, Any]:
        """The recorded labels file and preprocessing as `patchlab.pipelines.common.load_model` takes them
        (the same model again, e.g. to remake a run's images)."""
        return {"labels": self.labels, **(self.preprocessing or {})}


@dataclass(frozen=True)
class Manifest:
    """manifest.json: the command, its config, seed, model spec and versions, and whether it finished."""

    command: str | None = None
    config: RunConfig = RunConfig()
    seed: int = 0
    model: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    started: str | None = None
    complete: bool = False
    finished: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("command", "config", "seed", "model", "versions", "started", "complete", "finished")

    @classmethod
    def new(cls, command: str, config: RunConfig, seed: int, model: str) -> Manifest:
        """A new run's manifest (versions and start time of now)."""
        return cls.from_dict(new_manifest(command, config.as_dict(), seed, model))

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        d = _dict(d)
        seed = d.get("seed")
        return cls(d.get("command") if isinstance(d.get("command"), str) else None, RunConfig.from_dict(d.get("config")),
                   int(seed) if isinstance(seed, int) else 0, d.get("model"), _dict(d.get("versions")), d.get("started"),
                   d.get("complete") is True, d.get("finished"), _rest(d, cls.FIELDS))

    def as_dict(self) -> dict[str, Any]:
        out = {"command": self.command, "config": self.config.as_dict(), "seed": self.seed, "model": self.model,
               "versions": self.versions, "started": self.started, "complete": self.complete}
        if self.finished is not None:
            out["finished"] = self.finished
        return out | self.extra

    def settings(self) -> Any:
        """What makes two runs of a command the same run: config, seed and model, as JSON has them."""
        return plain([self.config.as_dict(), self.seed, self.model])

    def with_result(self, **result: Any) -> Manifest:
        """The manifest with more top-level keys (e.g. what `paste` found)."""
        return replace(self, extra=self.extra | result)


# -- the summary -------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassRef:
    """A class of the run: its index in the model's output (None for 'any') and its name."""

    index: int | None = None
    name: str = ""

    @classmethod
    def from_dict(cls, d: Any) -> ClassRef:
        d = _dict(d)
        return cls(d.get("index"), str(d.get("name") or ""))

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name}


@dataclass(frozen=True)
class Rate:
    """One counted rate: {rate, ci, n, ... , size, placement} (size and placement only where a
    setting was chosen: not for dynamic)."""

    rate: float | None = None
    ci: list[float | None] = field(default_factory=lambda: [None, None])
    n: int | None = None
    size: float | None = None
    placement: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("rate", "ci", "n", "size", "placement")

    @classmethod
    def from_dict(cls, d: Any) -> Rate | None:
        if not isinstance(d, dict):
            return None
        return cls(_number(d.get("rate")), _pair(d.get("ci")), d.get("n"), _number(d.get("size")), d.get("placement"),
                   _rest(d, cls.FIELDS))

    def as_dict(self) -> dict[str, Any]:
        out = {"rate": self.rate, "ci": self.ci, "n": self.n, **self.extra}
        if self.placement is not None:
            out |= {"size": self.size, "placement": self.placement}
        return out


@dataclass(frozen=True)
class Lift:
    """A rate minus the best null control's, with its interval and the control's name."""

    value: float | None = None
    ci: list[float | None] = field(default_factory=lambda: [None, None])
    control: str | None = None
    protocol: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Lift | None:
        if not isinstance(d, dict):
            return None
        return cls(_number(d.get("value")), _pair(d.get("ci")), d.get("control"), d.get("protocol"))

    def as_dict(self) -> dict[str, Any]:
        out = {"value": self.value, "ci": self.ci, "control": self.control}
        return out | ({"protocol": self.protocol} if self.protocol is not None else {})


@dataclass(frozen=True)
class Prediction:
    """What the model calls an image (or a patch alone): class index, name, probability."""

    index: int | None = None
    name: str | None = None
    prob: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. p_target, p_source

    @classmethod
    def from_dict(cls, d: Any) -> Prediction:
        d = _dict(d)
        return cls(d.get("index"), d.get("name"), _number(d.get("prob")), _rest(d, ("index", "name", "prob")))

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "prob": self.prob, **self.extra}


def _rates(d: Any) -> dict[str, Rate]:
    return {k: r for k, v in _dict(d).items() if (r := Rate.from_dict(v)) is not None}


@dataclass(frozen=True)
class DefendedRates:
    """One entry's counts through one defended model: per protocol the confirmation count at the
    setting chosen on the defended model's selection (`rates`), and the selection figures."""

    rates: dict[str, Rate] = field(default_factory=dict)
    selection: dict[str, Rate] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> DefendedRates:
        d = _dict(d)
        return cls(_rates({p: d[p] for p in d if p in ALL_PROTOCOLS}), _rates(d.get("selection")))

    def rate(self, protocol: str | None) -> Rate | None:
        return self.rates.get(protocol) if protocol else None

    def selection_rate(self, protocol: str | None) -> float | None:
        r = self.selection.get(protocol) if protocol else None
        return None if r is None else r.rate

    def as_dict(self) -> dict[str, Any]:
        return {"selection": {k: r.as_dict() for k, r in self.selection.items()},
                **{k: r.as_dict() for k, r in self.rates.items()}}


@dataclass(frozen=True)
class Entry:
    """One candidate, null control or reference of a summary: what it reads as alone, its
    confirmation rate per protocol (`rates`), the selection figures beside them, its lift."""

    name: str
    kind: str
    reads_as: Prediction = Prediction()
    donor: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Rate] = field(default_factory=dict)
    rates: dict[str, Rate] = field(default_factory=dict)
    lift_by_protocol: dict[str, Lift] = field(default_factory=dict)
    lift: Lift | None = None
    patch_file: str | None = None
    non_printability: float | None = None  # Sharif et al. 2016 (absent before summary/3)
    defended: dict[str, DefendedRates] = field(default_factory=dict)  # defence spec -> its counts
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("name", "kind", "reads_as", "donor", "provenance", "selection", *ALL_PROTOCOLS, "lift_by_protocol",
              "lift_over_best_control", "patch_file", "non_printability", "defended")

    @classmethod
    def from_dict(cls, d: Any) -> Entry:
        """ValueError without a name and a kind (nothing can be shown or measured then)."""
        d = _dict(d)
        if not isinstance(d.get("name"), str) or not isinstance(d.get("kind"), str):
            raise ValueError("a candidate without a name or a kind")
        lifts = {k: lift for k, v in _dict(d.get("lift_by_protocol")).items() if (lift := Lift.from_dict(v)) is not None}
        return cls(d["name"], d["kind"], Prediction.from_dict(d.get("reads_as")), d.get("donor"),
                   _dict(d.get("provenance")), _rates(d.get("selection")),
                   _rates({p: d[p] for p in d if p in ALL_PROTOCOLS}), lifts, Lift.from_dict(d.get("lift_over_best_control")),
                   d.get("patch_file"), _number(d.get("non_printability")),
                   {k: DefendedRates.from_dict(v) for k, v in _dict(d.get("defended")).items()}, _rest(d, cls.FIELDS))

    def rate(self, protocol: str | None) -> Rate | None:
        """The confirmation count under `protocol` (None when it was not measured)."""
        return self.rates.get(protocol) if protocol else None

    def confirmation_rate(self, protocol: str | None) -> float | None:
        """The headline rate under `protocol`, counted on confirmation."""
        r = self.rate(protocol)
        return None if r is None else r.rate

    def selection_rate(self, protocol: str | None) -> float | None:
        """The selection figure under `protocol` (what the setting and the winner were chosen by)."""
        r = self.selection.get(protocol) if protocol else None
        return None if r is None else r.rate

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "reads_as": self.reads_as.as_dict(),
                "donor": self.donor, "provenance": self.provenance,
                "selection": {k: r.as_dict() for k, r in self.selection.items()},
                **{k: r.as_dict() for k, r in self.rates.items()},
                "lift_by_protocol": {k: v.as_dict() for k, v in self.lift_by_protocol.items()},
                "lift_over_best_control": self.lift and self.lift.as_dict(), "patch_file": self.patch_file,
                **({"non_printability": self.non_printability} if self.non_printability is not None else {}),
                **({"defended": {k: v.as_dict() for k, v in self.defended.items()}} if self.defended else {}),
                **self.extra}


@dataclass(frozen=True)
class Headline:
    """The chosen candidate of a run: its confirmation count, the selection figure beside it."""

    name: str | None = None
    kind: str | None = None
    protocol: str | None = None
    rate: float | None = None
    ci: list[float | None] = field(default_factory=lambda: [None, None])
    n: int | None = None
    size: float | None = None
    selection_rate: float | None = None
    selection_ci: list[float | None] = field(default_factory=lambda: [None, None])
    reads_as: str | None = None
    donor: Any = None

    @classmethod
    def of(cls, entry: Entry, primary: str) -> Headline:
        r, sel = entry.rates[primary], entry.selection[primary]
        return cls(entry.name, entry.kind, primary, r.rate, r.ci, r.n, r.size, sel.rate, sel.ci,
                   entry.reads_as.name, entry.donor)

    @classmethod
    def from_dict(cls, d: Any) -> Headline | None:
        if not isinstance(d, dict):
            return None
        return cls(d.get("name"), d.get("kind"), d.get("protocol"), _number(d.get("rate")), _pair(d.get("ci")),
                   d.get("n"), d.get("size"), _number(d.get("selection_rate")), _pair(d.get("selection_ci")),
                   d.get("reads_as"), d.get("donor"))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "protocol": self.protocol, "rate": self.rate, "ci": self.ci,
                "n": self.n, "size": self.size, "selection_rate": self.selection_rate, "selection_ci": self.selection_ci,
                "reads_as": self.reads_as, "donor": self.donor}


@dataclass(frozen=True)
class SplitCount:
    """Images of a split given, and counted (the model called them the source when clean), with
    how sure the model is of the counted ones: the median p(source) and p(target) when clean
    (None in runs made before they were recorded, and p(source) for a source of 'any')."""

    n_images: int | None = None
    denominator: int | None = None
    p_source: float | None = None
    p_target: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> SplitCount:
        d = _dict(d)
        return cls(d.get("n_images"), d.get("denominator"), d.get("p_source"), d.get("p_target"))

    def as_dict(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "denominator": self.denominator, "p_source": self.p_source,
                "p_target": self.p_target}

    def confidence_text(self) -> str:
        """'median p(source) 0.62, p(target) 0.090' ('' when not recorded)."""
        parts = ([f"p(source) {self.p_source:.2f}"] if self.p_source is not None else []) + \
            ([f"p(target) {self.p_target:.3f}"] if self.p_target is not None else [])
        return "median " + ", ".join(parts) if parts else ""


@dataclass(frozen=True)
class DataInfo:
    """The images a run counted on: kind (real | synthesized), how they were made, the split rule
    and seed, counts per split, every split's file names or exemplar ids, skipped files, and (for
    `evaluate`) which splits were counted and why: {splits, images, set_aside, total, made_from, text}."""

    kind: str = REAL
    how: str = ""
    rule: str | None = None
    seed: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    target_files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    counted: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("kind", "how", "rule", "seed", "counts", "files", "target_files", "skipped", "counted")

    @classmethod
    def from_dict(cls, d: Any) -> DataInfo:
        """Older runs listed the evaluated files as one list: they become {"evaluated": [...]}."""
        d = _dict(d)
        files = d.get("files")
        files = files if isinstance(files, dict) else ({"evaluated": files} if isinstance(files, list) else {})
        return cls(str(d.get("kind") or REAL), str(d.get("how") or ""), d.get("rule"), d.get("seed"), _dict(d.get("counts")),
                   files, _list(d.get("target_files")), _list(d.get("skipped")), _dict(d.get("counted")),
                   _rest(d, cls.FIELDS))

    def as_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "how": self.how, "rule": self.rule, "seed": self.seed, "counts": self.counts,
               "files": self.files, "target_files": self.target_files, "skipped": self.skipped}
        return out | ({"counted": self.counted} if self.counted else {}) | self.extra


@dataclass(frozen=True)
class Summary:
    """summary.json: source, target, model, data, selection and confirmation counts, donors,
    protocols, primary_protocol, evaluation config, candidates / controls / references, the
    headlines (best_candidate, best_disguised_candidate, reference), examples, generator_notes,
    timings, versions, seed, complete; since summary/3 also defenses (each defence's cost),
    survives (per entry: digital, physical and defended rates side by side) and area50 (the
    smallest patch area reaching 50 % success, per kind and defence)."""

    schema: str | None = SUMMARY_SCHEMA
    source: ClassRef = ClassRef()
    target: ClassRef = ClassRef()
    model: str | None = None
    data: DataInfo = DataInfo()
    selection: SplitCount = SplitCount()
    confirmation: SplitCount = SplitCount()
    donors: list[Any] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    primary_protocol: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    candidates: list[Entry] = field(default_factory=list)
    controls: list[Entry] = field(default_factory=list)
    references: list[Entry] = field(default_factory=list)
    best_candidate: Headline | None = None
    best_disguised_candidate: Headline | None = None
    reference: Headline | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    generator_notes: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    complete: bool = False
    defenses: list[dict[str, Any]] = field(default_factory=list)
    survives: list[dict[str, Any]] = field(default_factory=list)
    area50: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("schema", "source", "target", "model", "data", "selection", "confirmation", "donors", "protocols",
              "primary_protocol", "config", "candidates", "controls", "references", "best_candidate",
              "best_disguised_candidate", "reference", "examples", "generator_notes", "timings", "versions", "seed",
              "complete", "defenses", "survives", "area50")

    @classmethod
    def from_dict(cls, d: Any) -> Summary:
        """ValueError for anything but a JSON object, or an entry without a name or kind."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        def entries(key: str) -> list[Entry]:
            return [Entry.from_dict(e) for e in _list(d.get(key))]

        return cls(d.get("schema"), ClassRef.from_dict(d.get("source")), ClassRef.from_dict(d.get("target")), d.get("model"), DataInfo.from_dict(d.get("data")),
                   SplitCount.from_dict(d.get("selection")), SplitCount.from_dict(d.get("confirmation")),
                   _list(d.get("donors")), _list(d.get("protocols")), d.get("primary_protocol"), _dict(d.get("config")),
                   entries("candidates"), entries("controls"), entries("references"),
                   Headline.from_dict(d.get("best_candidate")), Headline.from_dict(d.get("best_disguised_candidate")),
                   Headline.from_dict(d.get("reference")), [e for e in _list(d.get("examples")) if isinstance(e, dict)],
                   _dict(d.get("generator_notes")), _dict(d.get("timings")), _dict(d.get("versions")), d.get("seed"),
                   d.get("complete") is True, _dicts(d.get("defenses")), _dicts(d.get("survives")),
                   _dicts(d.get("area50")), _rest(d, cls.FIELDS))

    @property
    def entries(self) -> list[Entry]:
        """Candidates, then null controls, then references."""
        return self.candidates + self.controls + self.references

    def entry(self, name: str | None) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        def many(entries: list[Entry]) -> list[dict[str, Any]]:
            return [e.as_dict() for e in entries]

        def one(record: Any) -> Any:
            return record and record.as_dict()

        return {"schema": self.schema, "source": self.source.as_dict(), "target": self.target.as_dict(), "model": self.model,
                "data": self.data.as_dict(), "selection": self.selection.as_dict(),
                "confirmation": self.confirmation.as_dict(), "donors": self.donors, "protocols": self.protocols,
                "primary_protocol": self.primary_protocol, "config": self.config, "candidates": many(self.candidates),
                "controls": many(self.controls), "references": many(self.references),
                "best_candidate": one(self.best_candidate), "best_disguised_candidate": one(self.best_disguised_candidate),
                "reference": one(self.reference), "examples": self.examples, "generator_notes": self.generator_notes,
                "timings": self.timings, "versions": self.versions, "seed": self.seed, "complete": self.complete,
                "defenses": self.defenses, "survives": self.survives, "area50": self.area50, **self.extra}


# -- the folder --------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


class RunFolder:
    """Read and write one run folder (see the module docstring). Reading errors are UserErrors
    naming the folder; nothing is read before it is asked for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.stages = StageStore(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def _json(self, name: str, what: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise UserError(f"{self.path} is not a patchlab run folder (no {name})") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the {what} {path}: {first_line(exc)}") from None

    def has_manifest(self) -> bool:
        return (self.path / "manifest.json").is_file()

    def manifest(self) -> Manifest:
        """manifest.json; UserError when it is missing, unreadable or not a JSON object."""
        content = self._json("manifest.json", "run manifest")
        if not isinstance(content, dict):
            raise UserError(f"{self.path / 'manifest.json'} is not a patchlab run manifest (a JSON object)")
        return Manifest.from_dict(content)

    def write_manifest(self, manifest: Manifest) -> Path:
        return atomic_write_json(self.path / "manifest.json", manifest.as_dict())

    def summary(self) -> Summary:
        """summary.json; UserError when it is missing, unreadable or not a patchlab summary."""
        content = self._json("summary.json", "run summary")
        if not isinstance(content, dict):
            raise UserError(f"{self.path / 'summary.json'} is not a patchlab summary (a JSON object)")
        try:
            return Summary.from_dict(content)
        except ValueError as exc:
            raise UserError(f"{self.path / 'summary.json'} is not a patchlab summary ({exc})") from None

    def write_summary(self, summary: Summary) -> Path:
        return atomic_write_json(self.path / "summary.json", summary.as_dict())

    def results(self) -> pd.DataFrame:
        """results.csv; UserError when it is missing or unreadable."""
        path = self.path / "results.csv"
        try:
            return pd.read_csv(path)
        except (FileNotFoundError, NotADirectoryError):
            raise UserError(f"{self.path} is not a patchlab run folder (no results.csv)") from None
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (ValueError, pd.errors.ParserError) as exc:
            raise UserError(f"cannot read {path}: {first_line(exc)}") from None

    def write_results(self, results: pd.DataFrame) -> Path:
        return atomic_write_text(self.path / "results.csv", results.to_csv(index=False))

    def is_complete(self) -> bool:
        return is_complete(self.path)

    def mark_complete(self, manifest: Manifest) -> None:
        """Write the final manifest, then the COMPLETE marker (the very last file)."""
        mark_complete(self.path, manifest.as_dict())

    def check(self, command: str, manifest: Manifest | None = None) -> RunFolder:
        """Create the folder if needed and prove it writable, touching nothing in it; UserError
        when it holds the manifest of another command's run (or an unreadable one), or, given the
        new run's `manifest`, a finished run of the same command with another config, seed or
        model: either would be lost."""
        ensure_writable_dir(self.path)
        if not self.has_manifest():
            return self
        try:
            old = self.manifest()
        except UserError:
            old = None
        if old is None or old.command != command:
            kind = None if old is None else old.command
            what = f"{_article(kind)} {kind} run" if kind else "an unreadable manifest.json"
            raise UserError(f"{self.path} already holds {what}; give another --out")
        if manifest is not None and self.is_complete() and old.settings() != manifest.settings():
            raise UserError(f"{self.path} already holds a finished {command} run with other settings; give another --out")
        return self

    @contextlib.contextmanager
    def preparing(self, command: str, manifest: Manifest | None = None) -> Iterator[RunFolder]:
        """`check`, then the block that reads the inputs: when it fails with a UserError (photos outside
        every band, too few images, ...), a folder this call created is removed again if still empty."""
        fresh = not self.path.exists()
        self.check(command, manifest)
        try:
            yield self
        except UserError:
            if fresh:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
            raise

    def start(self, manifest: Manifest) -> RunFolder:
        """Take the folder for a new run (see `check`), drop any old COMPLETE marker, write the manifest."""
        self.check(str(manifest.command))
        (self.path / COMPLETE_MARKER).unlink(missing_ok=True)
        self.write_manifest(replace(manifest, complete=False))
        return self
