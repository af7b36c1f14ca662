"""`audit`: probe many class pairs and rank them by how easily they flip.

pairs (head similarity, confusion on --data, or a file, chosen on the first
model) -> one probe run per (model, pair) in OUT/pairs/<key>/ (one model) or
OUT/pairs/<model>/<key>/ (several models), in-process or one Ray task each ->
leaderboard.

Resumable: re-running the same command on the same OUT skips finished pairs,
resumes a half-finished pair from its saved stages, and retries failed ones.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence, Unpack

import pandas as pd

from ..classes import slugify
from ..errors import UserError
from ..evaluation.core import resolve_defenses
from ..identity import check_same_run, run_identity
from ..pairdata import SourceBands
from ..patches.physical import PhysicalRanges, read_ranges
from ..pipelines.common import (
    ModelOptions, check_inputs, load_model, model_identity, model_record, preprocessing_overrides,
)
from ..runfolder import DataSource, Manifest, RunConfig, RunFolder
from ..runio import atomic_write_text, ensure_writable_dir
from .leaderboard import write_report
from .pair_run import Job, is_finished, record_outcome, run_pair, unpack_dir
from .pairs import Pair, confusion_pairs, head_pairs, read_pairs_file
from .survival import check_rank_by
from .ray_backend import check_reachable, run_pairs

log = logging.getLogger("patchlab")
DEFAULT_MODEL = "efficientnet_lite0"


def select_pairs(clf, n: int | None, pairs_file: str | Path | None, data: str | Path | None, seed: int = 0) -> list[Pair]:
    if pairs_file is not None:
        if n is not None:
            raise UserError("give --pairs N or --pairs-file, not both")
        return read_pairs_file(clf, pairs_file)
    n = 10 if n is None else n
    return confusion_pairs(clf, data, n, seed=seed) if data is not None else head_pairs(clf, n)


def model_list(model: str | None, models: Sequence[str] | None) -> list[str]:
    """The audited model specs: --models (commas also split), else --model, else the default."""
    if model is not None and models:
        raise UserError("give --model or --models, not both")
    if not models:
        return [model or DEFAULT_MODEL]
    specs = [s.strip() for m in models for s in str(m).split(",") if s.strip()]
    if not specs:
        raise UserError("--models lists no model")
    seen: dict[str, str] = {}
    for spec in specs:
        if slugify(spec) in seen:
            other = seen[slugify(spec)]
            raise UserError(f"--models lists {spec!r} twice" if other == spec
                            else f"--models: {other!r} and {spec!r} would share the folder pairs/{slugify(spec)}/")
        seen[slugify(spec)] = spec
    return specs


def load_models(specs: list[str], device: str, weights: str | None, layer: str | None = None,
                **options: Unpack[ModelOptions]) -> list[Any]:
    """Load every model (a bad name, weights or labels file or layer fails here, before anything is
    written); each keeps its own input size unless `options` set one. All must have the first model's classes."""
    clfs = [load_model(spec, device, weights, layer=layer, direction=True, **options) for spec in specs]
    first = clfs[0]
    for clf in clfs[1:]:
        if clf.classes.names != first.classes.names:
            raise UserError(f"model {clf.spec} has other classes than {first.spec} ({clf.num_classes} vs "
                            f"{first.num_classes} outputs); an audit compares models on the same classes")
    return clfs


def make_jobs(specs: list[str], pairs: list[Pair]) -> list[Job]:
    """Every (model, pair), model by model; one model keeps the old pairs/<key>/ layout."""
    if len(specs) == 1:
        return [Job(specs[0], p) for p in pairs]
    return [Job(spec, p, slugify(spec)) for spec in specs for p in pairs]


def _check_same_audit(audit_dir: Path, identity: dict[str, Any]) -> None:
    folder = RunFolder(audit_dir)
    if not folder.has_manifest():
        if audit_dir.is_dir() and any(audit_dir.iterdir()):
            raise UserError(f"{audit_dir} is not empty and holds no audit; give a new or empty folder as --out")
        return
    old = folder.manifest()
    if old.command != "audit":
        raise UserError(f"{audit_dir} holds a patchlab {old.command} run, not an audit; use another --out")
    check_same_run(old.config.extra.get("identity"), identity, f"the audit in {audit_dir}")


def _reporter(audit_dir: Path, jobs: list[Job], todo: list[Job], config: dict[str, Any], say):
    """Record a job's outcome, rewrite the report, and say one line about it."""
    def finished(i: int, job: Job, outcome: dict[str, Any]) -> None:
        record_outcome(audit_dir, job, outcome)
        doc = write_report(audit_dir, jobs, config)
        row = next(r for r in doc["leaderboard"] if r["model"] == job.model and
                   r["source_index"] == job.pair.source and r["target_index"] == job.pair.target)
        if outcome["status"] == "ok":
            say(f"[{i}/{len(todo)}] {job.name()}: best {row['best_candidate']} "
                f"{100 * (row['success'] or 0):.1f}% ({outcome['seconds']:.0f} s)")
        else:
            say(f"[{i}/{len(todo)}] {job.name()}: FAILED: {outcome['error']}")

    return finished


def _run_in_process(todo, jobs, settings, audit_dir, config, loaded, ray, cpus_per_pair, say) -> None:
    """Jobs one after another on this process's device, sharing each model loaded once."""
    finished = _reporter(audit_dir, jobs, todo, config, say)
    for i, job in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] probing {job.name()} ...")
        finished(i, job, run_pair(job.pair, dict(settings, model=job.model), audit_dir / job.rel(),
                                  classifier=loaded.get(job.model), echo=lambda m: say("  " + m)))


def _run_with_ray(todo, jobs, settings, audit_dir, config, loaded, ray, cpus_per_pair, say) -> None:
    """One Ray task per job; each finished folder comes back as an archive and is unpacked here."""
    finished = _reporter(audit_dir, jobs, todo, config, say)
    for i, (job, outcome) in enumerate(run_pairs(todo, settings, audit_dir, ray, cpus_per_pair, say), 1):
        files = outcome.pop("files", None)
        if files:
            try:
                unpack_dir(files, audit_dir / job.rel())
            except (OSError, ValueError, tarfile.TarError) as exc:
                outcome = {"status": "failed", "error": f"could not unpack the pair's results: {exc}",
                           "traceback": None, "seconds": outcome.get("seconds")}
        finished(i, job, outcome)


def _config(settings: dict[str, Any], identity: dict[str, Any], clfs: list[Any], pairs: list[Pair],
            pairs_file: Any, data: Any, ray: str | None) -> RunConfig:
    model = model_record(clfs[0], labels=settings["labels"], layers=True)
    return RunConfig(data=DataSource.of(data), budget=settings["budget"], weights=settings["weights"], **model, extra={
        "settings": settings, "identity": identity, "models": [c.spec for c in clfs],
        "input_sizes": {c.spec: c.input_size for c in clfs},
        "selection": "file" if pairs_file else ("confusion" if data else "head"),
        "pairs": [p.as_row() for p in pairs], "execution": f"ray {ray}" if ray else "in-process"})


def _absolute(path: str | Path | None) -> str | None:  # Ray workers do not share the driver's cwd
    return str(Path(path).resolve()) if path else None


def _check_args(n_pairs, cpus_per_pair, budget, data, donor_data, library, ray) -> None:
    check_inputs(budget, data=data, donor_data=donor_data, library=library)
    if n_pairs is not None and n_pairs < 1:
        raise UserError("--pairs must be at least 1")
    if cpus_per_pair < 1:
        raise UserError("--cpus-per-pair must be at least 1")
    if ray:
        check_reachable(ray)


def audit(
    n_pairs: int | None = None,
    pairs_file: str | Path | None = None,
    *,
    model: str | None = None,
    models: Sequence[str] | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    data: str | Path | None = None,
    library: str | Path | None = None,
    donor_data: str | Path | None = None,
    budget: str = "quick",
    out: str | Path = "reports/audit",
    ray: str | None = None,
    cpus_per_pair: int = 2,
    echo: Callable[[str], None] | None = None,
    defenses: Sequence[str] = (),
    physical: bool = False,
    physical_ranges: str | Path | None = None,
    rank_by: str = "success",
    bands: SourceBands | None = None,
    layer: str | None = None,
    **options: Unpack[ModelOptions],
) -> dict[str, Any]:
    """Probe the chosen pairs on each model (skipping finished ones) and write the audit report;
    returns audit.json's content. model: one spec (default efficientnet_lite0); models: several
    (pairs are chosen on the first; not together with model); weights, layer and options (labels
    file, preprocessing overrides) apply to every model. defenses, physical, physical_ranges:
    passed to every probe (see `probe`); a resumed audit must ask for the same. rank_by: the
    leaderboard's order (see `survival.RANKS`). bands: how sure the model must be of every pair's
    sources (`SourceBands`)."""
    say = echo or (lambda msg: log.info(msg))
    defended = [str(d) for d in resolve_defenses(defenses)]
    rank_by = check_rank_by(rank_by, defended)
    physical = physical or physical_ranges is not None
    ranges = read_ranges(physical_ranges) if physical_ranges is not None else PhysicalRanges()
    specs = model_list(model, models)
    _check_args(n_pairs, cpus_per_pair, budget, data, donor_data, library, ray)
    settings = {"model": specs[0], "weights": _absolute(weights), "labels": _absolute(options.get("labels")),
                "layer": layer, "preprocessing": preprocessing_overrides(options), "data": _absolute(data),
                "library": _absolute(library), "donor_data": _absolute(donor_data), "budget": budget, "seed": seed}
    if defended or physical:  # only then: an audit without them keeps the settings older versions wrote
        settings |= {"defenses": defended, "physical": physical, "physical_ranges": _absolute(physical_ranges)}
    if bands is not None:
        settings["source_bands"] = bands.as_dict()
    # Ray workers load their own models; the driver only needs them to check names and choose pairs (and
    # a bad weights or labels file, layer or preprocessing fails here, before anything is read or written)
    clfs = load_models(specs, "cpu" if ray else device, settings["weights"], layer, **options)
    identity = run_identity(model=specs[0], weights=weights, data=data, donor_data=donor_data, library=library,
                            budget=budget, seed=seed, bands=settings.get("source_bands"),
                            **model_identity(layer, **options))
    if defended or physical:
        identity |= {"defenses": defended,
                     "physical": json.dumps(ranges.as_dict(), sort_keys=True) if physical else None}
    if len(specs) > 1:  # a resumed audit with other models (or another order) is refused
        identity["model"] = specs
    _check_same_audit(Path(out), identity)
    fresh = not Path(out).exists()
    audit_dir = ensure_writable_dir(out)
    try:
        pairs = select_pairs(clfs[0], n_pairs, pairs_file, data, seed)
    except UserError:
        if fresh:  # a bad --pairs-file or --data leaves no empty audit folder behind
            with contextlib.suppress(OSError):
                audit_dir.rmdir()
        raise
    jobs = make_jobs(specs, pairs)
    manifest = Manifest.new("audit", _config(settings, identity, clfs, pairs, pairs_file, data, ray), seed, ", ".join(specs))
    folder = RunFolder(audit_dir).start(manifest)
    config = manifest.config.as_dict() | {"rank_by": rank_by}  # how to show it, not what was measured
    atomic_write_text(audit_dir / "pairs.csv", pd.DataFrame([p.as_row() for p in pairs]).to_csv(index=False))
    todo = [j for j in jobs if not is_finished(audit_dir, j)]
    what = f"{len(pairs)} pairs x {len(specs)} models" if len(specs) > 1 else f"{len(pairs)} pairs"
    say(f"audit of {what} in {audit_dir}: {len(jobs) - len(todo)} finished earlier, {len(todo)} to run")
    write_report(audit_dir, jobs, config)
    start = time.perf_counter()
    run = _run_with_ray if ray else _run_in_process
    loaded = {} if ray else dict(zip(specs, clfs))
    del clfs  # Ray: the driver's copies are not needed any more
    run(todo, jobs, dict(settings, device=device), audit_dir, config, loaded, ray, cpus_per_pair, say)
    doc = write_report(audit_dir, jobs, config)
    doc.update(seconds=round(time.perf_counter() - start, 3), report=str(audit_dir / "index.html"),
               audit_dir=str(audit_dir))
    if doc["complete"]:
        folder.mark_complete(manifest)
    return doc
