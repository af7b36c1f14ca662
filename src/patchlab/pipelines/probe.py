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

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data import check_photo_folder
from ..devices import stage_generator
from ..errors import UserError
from ..generators.plan import Plan, get_plan
from ..generators.registry import GeneratorJob, GeneratorSpec, registered
from ..pairdata import PairData, load_pair
from ..patches.candidate import Candidate
from ..stages import StageStore

log = logging.getLogger("patchlab")
__all__ = ["probe", "check_inputs"]


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


def check_inputs(budget: str, *, data: str | Path | None = None, donor_data: str | Path | None = None,
                 library: str | Path | None = None) -> Plan:
    """The Plan named `budget`; UserError for an unknown budget, a missing path, or a --library
    or --donor-data folder with no readable photo (found before minutes of pair synthesis)."""
    plan = get_plan(budget)
    for path, what in ((data, "--data"), (donor_data, "--donor-data"), (library, "--library")):
        if path is not None and not Path(path).exists():
            raise UserError(f"{what} path does not exist: {path}")
    if library is not None:
        from ..library import check_library

        check_library(library)
    if donor_data is not None and Path(donor_data).is_dir():  # a file may be a labels CSV
        check_photo_folder(Path(donor_data), "--donor-data")
    return plan


def _run_dir(clf, s: int, t: int, out, run_dir, resume, identity: dict, say) -> tuple[Path, bool]:
    """(run folder, resumed?) after checking a resumed run's identity."""
    from ..identity import check_same_run
    from ..runio import claim_new_dir, ensure_writable_dir, is_complete

    if resume is not None:
        run_dir = Path(resume)
        try:
            old = json.loads((run_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            raise UserError(f"--resume {run_dir}: not a probe run directory (no readable manifest.json)") from None
        cfg = old.get("config", {})
        if old.get("command") != "probe" or (cfg.get("source"), cfg.get("target")) != (clf.classes.label(s), clf.classes.label(t)):
            raise UserError(f"--resume {run_dir}: that run is not a probe of {clf.classes.label(s)} -> {clf.classes.label(t)}")
        check_same_run(cfg.get("identity"), identity, f"--resume {run_dir}")
        if is_complete(run_dir):
            say(f"{run_dir} is already complete; rebuilding nothing")
        return ensure_writable_dir(run_dir), True
    if run_dir is None:
        ensure_writable_dir(out)
        return claim_new_dir(Path(out) / f"{time.strftime('%Y%m%d-%H%M%S')}-{clf.classes.slug(s)}-to-{clf.classes.slug(t)}"), False
    return ensure_writable_dir(run_dir), False


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
        from ..atlases.run import build_atlas

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
    from ..evaluation.controls import library_photo_control, make_controls

    controls = make_controls(clf, pair.train, pair.target_images, stage_generator(seed, "controls"),
                             source=pair.source, target=pair.target)
    if library is not None and plan.library_controls:
        controls.append(library_photo_control(clf, library, plan.library_controls, stage_generator(seed, "library-control"),
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
) -> dict[str, Any]:
    """Run the probe pipeline and write a report; returns summary.json's content (plus run_dir, report).

    library: a photo folder searched for natural patches (`patchlab.library`);
    without one, natural candidates are crops of donor images (donor_data
    photos, else exemplars). run_dir: write into this folder instead of a new
    time-stamped one under `out` (an audit's per-pair folder). classifier: an
    already loaded Classifier for `model` (an audit loads it once)."""
    from ..identity import run_identity
    from ..models import load_classifier
    from ..runio import atomic_write_json, new_manifest

    say = echo or (lambda msg: log.info(msg))
    plan = check_inputs(budget, data=data, donor_data=donor_data, library=library)
    clf = classifier if classifier is not None else load_classifier(model, device, weights=str(weights) if weights else None)
    s, t = clf.classes.resolve(source), clf.classes.resolve(target)
    if s == t:
        raise UserError(f"source and target are the same class ({clf.classes.label(s)!r})")
    identity = run_identity(model=clf.spec, weights=weights, data=data, donor_data=donor_data, library=library,
                            budget=budget, seed=seed)
    run_dir_arg = run_dir
    run_dir, resumed = _run_dir(clf, s, t, out, run_dir, resume, identity, say)
    config = {"source": clf.classes.label(s), "target": clf.classes.label(t), "identity": identity,
              "plan": plan.as_dict(), "generators": list(registered())}
    manifest = new_manifest("probe", config, seed, clf.spec)
    if not resumed:
        atomic_write_json(run_dir / "manifest.json", manifest)
    store = StageStore(run_dir)
    t_start = time.perf_counter()

    try:
        pair = PairData.unpack(*store.run("images", lambda: load_pair(clf, s, t, plan.splits(), data=data, seed=seed,
                                                                      progress=progress).pack(), "cpu", say))
    except UserError:
        if not resumed and run_dir_arg is None:  # the photos are unusable: leave no empty run behind
            _discard_new_run(run_dir)
        raise
    _, donor_meta = store.run("donors", _donor_stage(clf, pair, plan, run_dir, seed, progress), "cpu", say)
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

    from ..evaluation.core import evaluate
    from ..report import update_index, write_run

    t0 = time.perf_counter()
    ev = evaluate(clf, candidates, {"selection": pair.selection, "confirmation": pair.confirmation}, s, t,
                  sizes=plan.sizes, positions=plan.positions, protocols=plan.protocols,
                  random_placements=plan.random_placements, controls=_controls(clf, pair, plan, job_args["library"], seed),
                  generator=stage_generator(seed, "evaluate"), progress=progress,
                  image_names={"selection": pair.names["selection"], "confirmation": pair.names["confirmation"]})
    store.timings["evaluate"] = round(time.perf_counter() - t0, 3)
    store.timings["total"] = round(time.perf_counter() - t_start, 3)
    context = {"model": clf.spec, "seed": seed, "manifest": manifest, "donors": donors, "pair": pair.manifest(),
               "timings": dict(store.timings), "budget": budget, "generator_notes": notes}
    summary, report = write_run(run_dir, ev, context)
    update_index(run_dir.parent)
    return dict(summary, run_dir=str(run_dir), report=str(report))
