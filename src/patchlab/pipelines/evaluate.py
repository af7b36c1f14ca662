"""`evaluate_patches`: the Python function behind `patchlab evaluate`. Loads a
model, the pair's selection and confirmation images (`patchlab.pairdata`) and
patch files, builds the null controls and the target reference, evaluates, and
writes a run folder with report."""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..devices import stage_generator
from ..errors import UserError
from ..evaluation.controls import make_controls
from ..evaluation.core import evaluate, resolve_defenses
from ..pairdata import load_pair
from ..patches.candidate import GENERATED_KINDS, Candidate, load_patch
from ..patches.physical import PhysicalRanges, read_ranges
from ..protocols import ALL_PROTOCOLS, DEFAULT_SIZES, PROTOCOLS
from ..report import update_index, write_run
from ..runfolder import Manifest, RunFolder
from .common import check_inputs, load_model, resolve_pair, run_config, run_dir_name

log = logging.getLogger("patchlab")


def _safe_name(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60] or "patch"
    base = base if not base.startswith("control-") else "c-" + base
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def load_candidates(paths: Sequence[str | Path]) -> list[Candidate]:
    """Candidates from patch files; a NAME.json beside NAME.png (Candidate.save) restores kind and provenance."""
    if not paths:
        raise UserError("give at least one --patch FILE")
    out, taken = [], set()
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"no such patch file: {p}")
        meta: dict[str, Any] = {}
        side = p.with_suffix(".json")
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
            except (OSError, ValueError):
                meta = {}
        kind = meta.get("kind") if meta.get("kind") in GENERATED_KINDS else "natural"
        prov = dict(meta.get("provenance") or {}, file=str(p))
        out.append(Candidate(load_patch(p), kind, _safe_name(str(meta.get("name") or p.stem), taken), prov))
    return out


def evaluate_patches(
    source: str,
    target: str,
    patches: Sequence[str | Path],
    *,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    data: str | Path | None = None,
    budget: str = "quick",
    sizes: Sequence[float] | None = None,
    protocols: Sequence[str] | None = None,
    out: str | Path | None = None,
    random_placements: int = 8,
    batch_size: int = 128,
    progress: bool = False,
    defenses: Sequence[str] = (),
    physical_ranges: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate patch files on SOURCE (or 'any') -> TARGET and write a run folder.

    Images come from `patchlab.pairdata` (photos from `data`, else pair-aware
    exemplars) with the split sizes of `budget`: sizes and placements are chosen
    on the selection split, rates counted on the confirmation split, and the
    train split (which `synth` and `probe` learn from) is never used. `sizes`
    in % of the image area. protocols: default static, dynamic, random; 'physical'
    is measured with the ranges of the JSON file `physical_ranges` (else the defaults).
    defenses: specs whose defended models re-count every patch. Returns {run_dir, report, summary}."""
    t0 = time.perf_counter()
    defended = resolve_defenses(defenses)
    ranges = read_ranges(physical_ranges) if physical_ranges is not None else PhysicalRanges()
    sizes_pct = list(sizes) if sizes else [100 * a for a in DEFAULT_SIZES]
    if any(not 0 < s < 100 for s in sizes_pct):
        raise UserError("--sizes are percentages of the image area between 0 and 100 (e.g. 5 10 25)")
    protocols = list(dict.fromkeys(protocols or PROTOCOLS))
    bad = [p for p in protocols if p not in ALL_PROTOCOLS]
    if bad:
        raise UserError(f"unknown protocol {', '.join(bad)}; use {', '.join(ALL_PROTOCOLS)}")
    plan = check_inputs(budget, data=data)
    cands = load_candidates(patches)
    clf = load_model(model, device, weights)
    classes = resolve_pair(clf, source, target, allow_any=True)
    src, tgt = classes.source, classes.target
    if src is None and data is None:
        raise UserError("source 'any' needs --data DIR")
    folder = RunFolder(out or Path("reports") / run_dir_name(classes.slug()))
    config = run_config(classes.source_label, classes.target_label, data=data, budget=budget, splits=plan.splits(),
                        weights=weights, patches=[str(p) for p in patches], sizes_pct=sizes_pct, protocols=protocols,
                        random_placements=random_placements, batch_size=batch_size,
                        **({"defenses": [str(d) for d in defended]} if defended else {}))
    manifest = Manifest.new("evaluate", config, seed, clf.spec)
    folder.check("evaluate", manifest)  # an unusable --out fails before the images are made
    pair = load_pair(clf, src, tgt, plan.splits(), data=data, seed=seed, progress=progress)
    folder.start(manifest)  # drops any old COMPLETE marker once the inputs are good
    t_data = time.perf_counter() - t0
    controls = make_controls(clf, pair.train, pair.target_images, stage_generator(seed, "controls"), source=src, target=tgt)
    ev = evaluate(clf, cands, {"selection": pair.selection, "confirmation": pair.confirmation}, src, tgt,
                  sizes=[s / 100 for s in sizes_pct], protocols=protocols, random_placements=random_placements,
                  controls=controls, generator=stage_generator(seed, "evaluate"), batch_size=batch_size,
                  progress=progress, image_names={"selection": pair.names["selection"], "confirmation": pair.names["confirmation"]},
                  physical=ranges, defenses=defended)
    summary, report = write_run(folder.path, ev, model=clf.spec, seed=seed, manifest=manifest, data=pair.manifest(),
                                timings={"data_s": round(t_data, 3)})
    update_index(folder.path.parent)
    return {"run_dir": str(folder.path), "report": str(report), "summary": summary.as_dict()}
