"""`evaluate`: attack success of patches on held-out source images, under the protocols
(static, dynamic, random, and physical when asked for: see `rows`), optionally re-counted
through defended classifiers (see `defended`), and the `Evaluation` it returns.

Every candidate is measured on two disjoint image sets (see `patchlab.pairdata`):
`selection`, where sizes, placements and the best candidate are chosen, and
`confirmation`, where the headline numbers are counted (see `summary`).
Denominator: images the model classifies as the source when clean (source
None: images not already classified as the target). Success: top-1 == target.
Each image set's trials are laid out once and run for every patch in batches
(see `trials`); their outcomes become results rows (see `rows`).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch

from ..defenses import DefendedClassifier, Defense, defend, parse_defense
from ..devices import stage_generator
from ..errors import UserError
from ..generators.registry import disguisable_kinds
from ..pairdata import CONFIRMATION, EVALUATED, SELECTION
from ..patches.apply import CORNERS
from ..patches.candidate import Candidate, is_generated
from ..patches.physical import PhysicalRanges
from ..protocols import ALL_PROTOCOLS, DEFAULT_SIZES, PHYSICAL, PRIMARY_PROTOCOL, PROTOCOLS, primary_of
from .area50 import area50, grid_trials
from .defended import DefenceCost, DefendedSplit, defended_protocols, measure_defended
from .rows import RESULT_COLUMNS, Clean, count_patches, examples, reads_as
from .summary import summarize
from .trials import ImageTrials, TrialSettings

DEFENDED_COLUMNS = RESULT_COLUMNS + ["defense"]

DEFAULT_POSITIONS = tuple(CORNERS) + ("center",)


@dataclass
class Evaluation:
    """What `evaluate` measured. `results`: one row per candidate x size x
    placement x protocol (columns RESULT_COLUMNS; size is a fraction of the image
    area, NaN for dynamic over all sizes). `summary`: one dict per candidate and
    control (see `summarize`). `examples`: before/after images of the best
    candidate with the model's top-3. With defences: `defended_results` (the same rows
    with a `defense` column) and `defenses` (each defence's cost); with an area grid:
    `area_results` and `area50` (the smallest area reaching 50 % per kind and defence)."""

    results: pd.DataFrame
    summary: list[dict[str, Any]]
    source: int | None
    target: int
    source_name: str
    target_name: str
    n_images: int  # confirmation images given
    denominator: int  # confirmation images counted (classified as the source when clean)
    candidates: list[Candidate]
    controls: list[Candidate]
    config: dict[str, Any]
    timings: dict[str, float]
    image_names: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    primary_protocol: str = PRIMARY_PROTOCOL
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # per split: n_images, denominator, p_source, p_target, files
    defended_results: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DEFENDED_COLUMNS))
    defenses: list[dict[str, Any]] = field(default_factory=list)  # per defence: its cost (DefenceCost.as_dict)
    area_results: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DEFENDED_COLUMNS))
    area50: list[dict[str, Any]] = field(default_factory=list)  # per kind and defence (see `area50`)

    def best(self, disguised: bool = False) -> dict[str, Any] | None:
        """Summary of the best generated candidate, chosen by its SELECTION rate under
        the primary protocol (its headline is then the confirmation count).

        disguised: only candidates of a disguisable generator (`patchlab.generators`: today
        natural and donor-disguised feature patches) that carry a donor class and whose patch
        alone does not read as the target: the automated form of the Activation Atlas
        article's train / noodles / baseball patches. A synthesized patch that happens to read
        as something else does not count."""
        p = self.primary_protocol
        rows = [s for s in self.summary if is_generated(s["kind"]) and s["selection"].get(p)]
        if disguised:
            kinds = disguisable_kinds()
            rows = [s for s in rows if s["kind"] in kinds and s.get("donor") is not None
                    and s["reads_as"]["index"] != self.target]
        return max(rows, key=lambda s: (s["selection"][p]["rate"], -(s["selection"][p].get("size") or 0)), default=None)


@dataclass
class _Measured:
    """One image set pushed through every patch: its results rows and its counts, and per defence
    (spec -> DefendedSplit) its rows and cost."""

    rows: list[dict]
    n_images: int
    denominator: int
    kept: torch.Tensor
    kept_names: list[str]
    clean: Clean
    defended: dict[str, DefendedSplit] = field(default_factory=dict)
    confidence: dict[str, float | None] = field(default_factory=dict)  # median p(source), p(target) when clean


@dataclass(frozen=True)
class _Job:
    """What every image set is measured with: the model, the patches (candidates and
    controls), the pair, the trial settings, the random draws (the physical protocol's from a
    generator of its own), the defended models with their protocols, and the progress bar."""

    classifier: Any
    patches: list[Candidate]
    source: int | None
    target: int
    settings: TrialSettings
    generator: torch.Generator
    physical_generator: torch.Generator | None = None
    defended: tuple[DefendedClassifier, ...] = ()
    defended_protocols: tuple[str, ...] = ()
    progress: Any = None

    def measure(self, images: torch.Tensor, names: list[str], split: str) -> _Measured:
        """Clean pass (the denominator), then every patch x trial on the kept images, then the same
        trials through every defended model."""
        classifier, source, target = self.classifier, self.source, self.target
        images = images.to(classifier.device).float()
        clean = classifier.logits(images, self.settings.batch_size).float()
        clean_top1 = clean.argmax(-1)
        keep = clean_top1 == source if source is not None else clean_top1 != target
        n = int(keep.sum())
        if n == 0:
            what = (f"as {classifier.classes.label(source)!r}" if source is not None
                    else f"as anything but {classifier.classes.label(target)!r}")
            raise UserError(f"none of the {len(images)} {split} images is classified {what} when clean; nothing to measure")
        kept = images[keep]
        kept_names = [nm for nm, k in zip(names, keep.tolist()) if k] if names else []
        probs = clean[keep].softmax(-1)
        p_before = float(probs[:, target].mean())
        confidence = {"p_source": None if source is None else float(probs[:, source].median()),
                      "p_target": float(probs[:, target].median())}
        counted = Clean(source, target, clean_top1[keep], p_before, n)
        trials = ImageTrials.lay_out(classifier, kept, target, self.settings, self.generator, self.physical_generator)
        rows = count_patches(trials, self.patches, counted, self.progress)
        defended = {str(d.defense): measure_defended(d, trials, images, keep, clean_top1, self.patches, source, target,
                                                     self.defended_protocols, self.progress) for d in self.defended}
        for r in rows + [r for d in defended.values() for r in d.rows]:
            r["split"] = split
        return _Measured(rows, len(images), n, kept, kept_names, counted, defended, confidence)


def _check(protocols, sizes, everyone) -> None:
    bad = [p for p in protocols if p not in ALL_PROTOCOLS]
    if bad or not protocols:
        raise UserError(f"unknown protocol {', '.join(bad) or '(none)'}; use {', '.join(ALL_PROTOCOLS)}")
    if not sizes or any(not 0 < a < 1 for a in sizes):
        raise UserError("patch sizes must be fractions of the image area between 0 and 1 (e.g. 5 to 40 %)")
    names = [c.name for c in everyone]
    if len(set(names)) != len(names):
        raise UserError("candidate and control names must be unique: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))


def _split_inputs(images, image_names) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], bool]:
    """{selection, confirmation} images and names; a single tensor serves as both (shared=True)."""
    if isinstance(images, Mapping):
        names = image_names if isinstance(image_names, Mapping) else {}
        return ({s: images[s] for s in EVALUATED}, {s: list(names.get(s) or []) for s in EVALUATED}, False)
    names = list(image_names or [])
    return {s: images for s in EVALUATED}, {s: names for s in EVALUATED}, True


def resolve_defenses(defenses: Sequence[str | Defense]) -> list[Defense]:
    """Defence specs ('jpeg:75', ...) or Defenses as Defenses, in order, each once; UserError (one line)
    for a bad spec (see `patchlab.defenses.parse_defense`)."""
    parsed = [d if isinstance(d, Defense) else parse_defense(d) for d in defenses]
    return list({str(d): d for d in parsed}.values())


def evaluate(
    classifier,
    candidates: Sequence[Candidate],
    images: torch.Tensor | Mapping[str, torch.Tensor],
    source: int | None,
    target: int,
    sizes: Sequence[float] = DEFAULT_SIZES,
    positions: Sequence[str] = DEFAULT_POSITIONS,
    protocols: Sequence[str] = PROTOCOLS,
    random_placements: int = 8,
    rotation_deg: float = 20.0,
    controls: Sequence[Candidate] | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 128,
    progress: bool = False,
    image_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    n_examples: int = 4,
    physical: PhysicalRanges = PhysicalRanges(),
    defenses: Sequence[str | Defense] = (),
    area_grid: Sequence[float] = (),
) -> Evaluation:
    """Measure every candidate, null control and reference on {"selection": (N,3,H,W),
    "confirmation": (M,3,H,W)} images in [0,1] (a single tensor is used as both, and
    the run says so: its headline is then chosen on the images that count it).

    sizes: fractions of the image area. positions: named placements for static
    and dynamic (see patchlab.patches.apply.POSITIONS). Random placements are
    drawn once per split from `generator` (a CPU generator by default) and shared
    by all patches (common random numbers). protocols may add 'physical' (see
    `patchlab.protocols`): random placements through print-and-camera draws within
    `physical`, drawn from a generator derived from `generator`'s seed, so the other
    protocols' draws do not change. defenses: specs ('jpeg:75', 'patchcleanser:0.02', ...)
    whose defended models re-count every patch on the same trials (see `defended`).
    area_grid: patch areas (e.g. area50.AREA_GRID) at which each kind's chosen candidate is
    counted on confirmation under the headline protocol, bare and through each defence, for
    the smallest area reaching 50 % (see `area50`; random or physical headline only).
    Returns an Evaluation.
    """
    t0 = time.perf_counter()
    protocols = tuple(protocols)
    everyone = list(candidates) + list(controls or [])
    _check(protocols, tuple(sizes) + tuple(area_grid), everyone)
    defended = [defend(classifier, d) for d in resolve_defenses(defenses)]
    gen = generator if generator is not None else stage_generator(0, "evaluate")
    physical_gen = stage_generator(gen.initial_seed(), PHYSICAL) if PHYSICAL in protocols else None
    split_images, split_names, shared = _split_inputs(images, image_names)
    settings = TrialSettings(tuple(sizes), tuple(positions), protocols, random_placements, rotation_deg, batch_size,
                             physical)
    primary = primary_of(protocols)
    under_defence = defended_protocols(protocols, primary)
    config = settings.record("none: selection = confirmation" if shared else "selection / confirmation")
    if defended:
        config |= {"defenses": [str(d.defense) for d in defended], "defended_protocols": list(under_defence)}
    measured_splits = (CONFIRMATION,) if shared else EVALUATED
    tensors = sum(1 if c.members is None else len(c.members) for c in everyone)
    per_image = settings.per_image() * tensors
    per_image_defended = len(defended) * tensors * replace(settings, protocols=under_defence).per_image()
    bar = None
    if progress:
        from tqdm import tqdm

        total = (per_image + per_image_defended) * sum(len(split_images[s]) for s in measured_splits)
        bar = tqdm(total=total, unit="img", desc="evaluate")
    job = _Job(classifier, everyone, source, target, settings, gen, physical_gen, tuple(defended), under_defence, bar)
    t1 = time.perf_counter()
    try:
        measured = {s: job.measure(split_images[s], split_names[s], s) for s in measured_splits}
    finally:
        if bar is not None:
            bar.close()
    if shared:
        conf = measured[CONFIRMATION]
        measured[SELECTION] = replace(conf, rows=[dict(r, split=SELECTION) for r in conf.rows], defended={
            k: replace(d, rows=[dict(r, split=SELECTION) for r in d.rows]) for k, d in conf.defended.items()})
    if classifier.device.type == "cuda":
        torch.cuda.synchronize(classifier.device)
    t_eval = time.perf_counter() - t1
    results = pd.DataFrame([r for s in EVALUATED for r in measured[s].rows], columns=RESULT_COLUMNS)
    defended_results = pd.DataFrame([r for s in EVALUATED for d in measured[s].defended.values() for r in d.rows],
                                    columns=DEFENDED_COLUMNS)
    costs = _costs(measured, measured_splits)
    looks = {c.name: reads_as(classifier, c.patch, target, source) for c in everyone}
    conf = measured[CONFIRMATION]
    ev = Evaluation(
        results=results, summary=summarize(results, everyone, looks, primary, defended_results), source=source,
        target=target, source_name=classifier.classes.label(source) if source is not None else "any",
        target_name=classifier.classes.label(target), n_images=conf.n_images, denominator=conf.denominator,
        candidates=list(candidates), controls=list(controls or []), config=config, timings={},
        image_names=list(split_names[CONFIRMATION]), primary_protocol=primary,
        splits={s: {"n_images": measured[s].n_images, "denominator": measured[s].denominator,
                    **measured[s].confidence, "files": list(split_names[s])} for s in EVALUATED},
        defended_results=defended_results, defenses=[c.as_dict(source is not None) for c in costs],
    )
    best = ev.best()
    if best is not None and n_examples:
        cand = next(c for c in candidates if c.name == best["name"])
        ev.examples = examples(classifier, conf.kept, conf.kept_names, cand, best, n_examples, target)
    if area_grid and primary in ("random", PHYSICAL):
        t_area = time.perf_counter()
        rows, ev.area50 = _area50(classifier, conf, candidates, ev.summary, settings, primary, defended,
                                  stage_generator(gen.initial_seed(), "area50"), area_grid)
        ev.area_results = pd.DataFrame(rows, columns=DEFENDED_COLUMNS)
        ev.timings["area50_s"] = round(time.perf_counter() - t_area, 4)
    forwards = per_image * sum(measured[s].n_images for s in measured_splits)
    t_defended = sum(c.seconds for c in costs)
    t_bare = t_eval - t_defended
    ev.timings |= {
        "eval_s": round(t_bare, 4), "total_s": round(time.perf_counter() - t0, 4),
        "patched_images": forwards, "images_per_s": round(forwards / t_bare, 2) if t_bare > 0 else None,
    }
    if costs:
        ev.timings["defended_s"] = {c.defense: round(c.seconds, 4) for c in costs}
    return ev


def _area50(classifier, conf: _Measured, candidates: Sequence[Candidate], summary: list[dict[str, Any]],
            settings: TrialSettings, primary: str, defended: Sequence[DefendedClassifier], generator: torch.Generator,
            grid: Sequence[float]) -> tuple[list[dict], list[dict]]:
    """Results rows and area50 rows of every kind, bare and through each defence, on one table of trials
    laid out on the confirmation images the bare model counts (`area50`)."""
    trials = grid_trials(classifier, conf.kept, conf.clean.target, settings, primary, generator, grid)
    rows, found = area50(trials, candidates, summary, conf.clean, primary)
    for d in defended:
        split = conf.defended[str(d.defense)]
        if split.clean is not None:
            more, more_found = area50(trials.through(d, (primary,)), candidates, summary, split.clean, primary,
                                      split.counted, str(d.defense))
            rows, found = rows + more, found + more_found
    for r in rows:
        r["split"] = CONFIRMATION
    return rows, found


def _costs(measured: dict[str, _Measured], splits: Sequence[str]) -> list[DefenceCost]:
    """Each defence's cost summed over the splits measured (selection and confirmation, or the one shared set)."""
    out = []
    for spec in measured[splits[0]].defended:
        parts = [measured[s].defended[spec].cost for s in splits]
        out.append(sum(parts[1:], parts[0]))
    return out
