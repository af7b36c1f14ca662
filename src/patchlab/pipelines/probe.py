"""`probe`: the whole mission for one class pair in one call.

resolve classes -> PairData (photos from `data`, else calibrated pair-aware
exemplars; split train / selection / confirmation by one rule) -> atlas donors
-> every generator of the registry (synth: Brown et al. 2017; feature:
Carter et al. 2019 atlas directions; natural: donor crops or a photo-library
search) -> evaluation: settings and the winner chosen on selection, headline
counted on confirmation, against null controls, with the target photo as a
reference -> report.

Each stage is saved in the run directory as it finishes (see `stages`), so
Ctrl-C keeps finished stages and `resume=RUN_DIR` continues from the first
unfinished one; a resumed run must have the same identity (`patchlab.identity`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Unpack

import torch

from ..atlases.run import build_atlas
from ..devices import stage_generator
from ..errors import UserError
from ..evaluation.controls import library_collage_control, library_photo_control, make_controls
from ..evaluation.area50 import AREA_GRID
from ..evaluation.core import evaluate, resolve_defenses
from ..generators.plan import Plan
from ..generators.registry import GeneratorJob, GeneratorSpec, registered
from ..identity import check_same_run, run_identity
from ..pairdata import PairData, SourceBands, load_pair
from ..patches.candidate import Candidate
from ..patches.physical import PhysicalRanges, read_ranges
from ..protocols import PHYSICAL
from ..report import update_index, write_run
from ..runfolder import Manifest, RunFolder
from ..runio import claim_new_dir, ensure_writable_dir
from .common import ClassPair, ModelOptions, check_inputs, load_model, model_identity, resolve_pair, run_config, run_dir_name

log = logging.getLogger("patchlab")
__all__ = ["probe"]


def pack_candidates(cands: list[Candidate]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of candidates for a StageStore."""
    tensors = {f"patch{i}": c.patch for i, c in enumerate(cands)}
    tensors |= {f"view{i}": c.source_view for i, c in enumerate(cands) if c.source_view is not None}
    meta = {"candidates": [{"kind": c.kind, "name": c.name, "provenance": c.provenance, "curve": c.curve,
                            "score": c.score, "reads_as": c.reads_as} for c in cands]}
    return tensors, meta


def unpack_candidates(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> list[Candidate]:
    return [Candidate(tensors[f"patch{i}"].cpu(), **m, source_view=tensors.get(f"view{i}"))
            for i, m in enumerate(meta["candidates"])]


def _run_folder(pair: ClassPair, out, run_dir, resume, identity: dict, say) -> tuple[RunFolder, bool]:
    """(run folder, resumed?) after checking a resumed run's identity."""
    if resume is not None:
        folder = RunFolder(resume)
        try:
            old = folder.manifest()
        except UserError:
            raise UserError(f"--resume {folder.path}: not a probe run directory (no readable manifest.json)") from None
        if old.command != "probe" or (old.config.source, old.config.target) != (pair.source_label, pair.target_label):
            raise UserError(f"--resume {folder.path}: that run is not a probe of {pair.source_label} -> {pair.target_label}")
        check_same_run(old.config.extra.get("identity"), identity, f"--resume {folder.path}")
        if folder.is_complete():
            say(f"{folder.path} is already complete; rebuilding nothing")
        ensure_writable_dir(folder.path)
        return folder, True
    if run_dir is None:
        ensure_writable_dir(out)
        return RunFolder(claim_new_dir(Path(out) / run_dir_name(pair.slug()))), False
    return RunFolder(ensure_writable_dir(run_dir)), False


def _discard_new_run(run_dir: Path) -> None:
    """Remove a run folder this call created that holds only its manifest (and an empty stages/)."""
    (run_dir / "manifest.json").unlink(missing_ok=True)
    for folder in (run_dir / "stages", run_dir):
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): keep what is there
            pass


def _donor_stage(clf, pair: PairData, plan: Plan, run_dir: Path, seed: int, progress: bool):
    def compute():
        if clf.head is None:
            return {}, {"donors": [], "atlas_files": {}, "notes": ["no linear head: no donor ranking"]}
        res = build_atlas(clf, pair.source, pair.target, images=torch.cat([pair.train, pair.target_images]), grid=8,
                          n_donors=max(plan.shortlist, plan.n_donors_used), out=run_dir / "atlas", seed=seed,
                          icons=plan.icons, shortlist_size=plan.shortlist, donor_exemplars=plan.donor_images,
                          progress=progress)
        rows = [] if res.donors is None else res.donors.to_dict(orient="records")
        return {}, {"donors": rows, "atlas_files": res.files, "notes": res.notes}

    return compute


def _generator_stage(spec: GeneratorSpec, job_args: dict[str, Any]):
    def compute():
        job = GeneratorJob(rng=stage_generator(job_args["seed"], spec.name), **job_args)
        tensors, meta = pack_candidates(spec.run(job))
        meta["notes"] = job.notes
        return tensors, meta

    return compute


def _controls(clf, pair: PairData, plan: Plan, library: Path | None, seed: int) -> list[Candidate]:
    controls = make_controls(clf, pair.train, pair.target_images, stage_generator(seed, "controls"),
                             source=pair.source, target=pair.target)
    if library is not None and plan.library_controls:
        controls.append(library_photo_control(clf, library, plan.library_controls, stage_generator(seed, "library-control"),
                                              exclude=(pair.source, pair.target)))
        natural = plan.settings.get("natural")
        if natural is not None and natural.search.makes_collages:  # the search may return collages: their own null
            controls.append(library_collage_control(clf, library, plan.library_controls,
                                                    stage_generator(seed, "library-collage-control"),
                                                    exclude=(pair.source, pair.target)))
    return controls


def probe(
    source: str,
    target: str,
    *,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    data: str | Path | None = None,
    library: str | Path | None = None,
    donor_data: str | Path | None = None,
    budget: str = "quick",
    out: str | Path = "reports",
    resume: str | Path | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    run_dir: str | Path | None = None,
    classifier: Any = None,
    layer: str | None = None,
    defenses: Sequence[str] = (),
    physical: bool = False,
    physical_ranges: str | Path | None = None,
    bands: SourceBands | None = None,
    **options: Unpack[ModelOptions],
) -> dict[str, Any]:
    """Run the probe pipeline and write a report; returns summary.json's content (plus run_dir, report).

    library: a photo folder searched for natural patches (`patchlab.library`);
    without one, natural candidates are crops of donor images (donor_data
    photos, else exemplars). run_dir: write into this folder instead of a new
    time-stamped one under `out` (an audit's per-pair folder). classifier: an
    already loaded Classifier for `model` (an audit loads it once). layer: the feature layer (None: the
    model's last spatial map); options: labels file and preprocessing overrides (`ModelOptions`).
    defenses: specs ('jpeg:75', 'patchcleanser:0.1', ...) whose defended models re-count every
    candidate. physical: also measure the physical protocol, with the ranges of the JSON file
    `physical_ranges` (else PhysicalRanges' defaults). bands: how sure the model must be of the
    sources (`SourceBands`; None: every photo, or pair-aware exemplars near the boundary)."""

    say = echo or (lambda msg: log.info(msg))
    defended = resolve_defenses(defenses)  # bad specs and ranges fail before anything is loaded or written
    ranges = read_ranges(physical_ranges) if physical_ranges is not None else PhysicalRanges()
    plan = check_inputs(budget, data=data, donor_data=donor_data, library=library)
    clf = classifier if classifier is not None else load_model(model, device, weights, layer=layer, direction=True, **options)
    classes = resolve_pair(clf, source, target)
    s, t = classes.source, classes.target
    identity = run_identity(model=clf.spec, weights=weights, data=data, donor_data=donor_data, library=library,
                            budget=budget, seed=seed, bands=None if bands is None else bands.as_dict(),
                            **model_identity(layer, **options))
    folder, resumed = _run_folder(classes, out, run_dir, resume, identity, say)
    config = run_config(classes.source_label, classes.target_label, data=data, budget=budget, splits=plan.splits(),
                        weights=weights, classifier=clf, labels=options.get("labels"), layers=True, identity=identity,
                        plan=plan.as_dict(), generators=list(registered()),
                        **({"source_bands": bands.as_dict()} if bands is not None else {}))
    manifest = Manifest.new("probe", config, seed, clf.spec)
    if not resumed:
        folder.write_manifest(manifest)
    store = folder.stages
    t_start = time.perf_counter()

    try:
        pair = PairData.unpack(*store.run("images", lambda: load_pair(clf, s, t, plan.splits(), data=data, seed=seed, bands=bands,
                                                                      progress=progress).pack(), "cpu", say))
    except UserError:
        if not resumed and run_dir is None:  # the photos are unusable: leave no empty run behind
            _discard_new_run(folder.path)
        raise
    _, donor_meta = store.run("donors", _donor_stage(clf, pair, plan, folder.path, seed, progress), "cpu", say)
    donors = donor_meta["donors"]
    job_args = {"pair": pair, "classifier": clf, "plan": plan, "donors": [int(d["index"]) for d in donors],
                "donor_data": Path(donor_data) if donor_data else None, "library": Path(library) if library else None,
                "seed": seed, "progress": progress}
    candidates: list[Candidate] = []
    notes: dict[str, Any] = {}
    for name, spec in registered().items():
        tensors, meta = store.run(name, _generator_stage(spec, job_args), "cpu", say)
        candidates += unpack_candidates(tensors, meta)
        notes[name] = meta.get("notes", {})

    t0 = time.perf_counter()
    ev = evaluate(clf, candidates, {"selection": pair.selection, "confirmation": pair.confirmation}, s, t,
                  sizes=plan.sizes, positions=plan.positions,
                  protocols=tuple(plan.protocols) + ((PHYSICAL,) if physical else ()),
                  random_placements=plan.random_placements, controls=_controls(clf, pair, plan, job_args["library"], seed),
                  generator=stage_generator(seed, "evaluate"), progress=progress,
                  image_names={"selection": pair.names["selection"], "confirmation": pair.names["confirmation"]},
                  physical=ranges, defenses=defended, area_grid=AREA_GRID)
    store.timings["evaluate"] = round(time.perf_counter() - t0, 3)
    store.timings["total"] = round(time.perf_counter() - t_start, 3)
    summary, report = write_run(folder.path, ev, model=clf.spec, seed=seed, manifest=manifest, data=pair.manifest(),
                                donors=donors, timings=dict(store.timings), generator_notes=notes)
    update_index(folder.path.parent)
    return dict(summary.as_dict(), run_dir=str(folder.path), report=str(report))
