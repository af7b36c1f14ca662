"""`evaluate_patches`: the Python function behind `patchlab evaluate`. Loads a
model, the pair's images (`patchlab.pairdata`) and patch files, builds the null
controls and the target reference, evaluates, and writes a run folder with report.

Which images are counted: the static placement is always chosen on the selection
images. Patches from outside (nothing of them was made from these images) are
counted on every other image, the train split included; patches that a probe,
synth or paste run made from these same images (found through the run folder
they sit in) are counted on the confirmation images only, as that run counted
them. The split itself is pairdata's deterministic rule either way.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Unpack

import torch

from ..devices import stage_generator
from ..errors import UserError
from ..evaluation.controls import make_controls
from ..evaluation.core import evaluate, resolve_defenses
from ..generators.registry import generated_kinds
from ..pairdata import CONFIRMATION, PHOTO_FACTOR, SELECTION, TRAIN, PairData, SourceBands, SplitSizes, load_pair
from ..patches.candidate import Candidate, load_patch
from ..patches.physical import PhysicalRanges, read_ranges
from ..protocols import ALL_PROTOCOLS, DEFAULT_SIZES, PROTOCOLS
from ..report import update_index, write_run
from ..runfolder import REAL, DataSource, Manifest, RunFolder
from .common import ModelOptions, check_inputs, load_model, resolve_pair, run_config, run_dir_name

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
        kind = meta.get("kind") if meta.get("kind") in generated_kinds() else "natural"
        prov = dict(meta.get("provenance") or {}, file=str(p))
        out.append(Candidate(load_patch(p), kind, _safe_name(str(meta.get("name") or p.stem), taken), prov))
    return out


MAKING_COMMANDS = ("probe", "synth", "paste")  # commands whose run folders hold patches made from their images


def made_from(patches: Sequence[str | Path], data: DataSource, model: str) -> list[dict[str, Any]]:
    """The runs that made any of `patches` from these images: a probe, synth or paste run folder
    holding the patch (in it or in its patches/ folder) whose recorded images are `data` (photos:
    the same folder; synthesized: exemplars of the same model). [{run, seed}], one per run."""
    runs: dict[str, dict[str, Any]] = {}
    for path in map(Path, patches):
        for folder in (path.parent, path.parent.parent):
            run = RunFolder(folder)
            if not run.has_manifest():
                continue
            try:
                m = run.manifest()
            except UserError:  # an unreadable manifest says nothing about the patch
                continue
            same = m.config.data == data and (data.kind == REAL or m.model == model)
            if m.command in MAKING_COMMANDS and same:
                runs.setdefault(str(folder.resolve()), {"run": str(folder.resolve()), "seed": m.seed})
    return list(runs.values())


@dataclass(frozen=True)
class Counted:
    """Which of a pair's images an evaluation counts, and why (recorded in the summary's data block)."""

    splits: tuple[str, ...]  # the pairdata splits counted together
    runs: list[dict[str, Any]]  # the runs that made the patches from these images (empty: outside patches)

    @classmethod
    def for_patches(cls, runs: list[dict[str, Any]]) -> Counted:
        """Outside patches: everything but the selection images; patches made from these images:
        the confirmation images only."""
        return cls((CONFIRMATION,) if runs else (TRAIN, CONFIRMATION), runs)

    def sizes(self, plan_sizes: SplitSizes, photos: bool) -> SplitSizes:
        """The split sizes to load: with photos and the train split counted, up to PHOTO_FACTOR x its size
        (as many as selection and confirmation take)."""
        if photos and TRAIN in self.splits:
            return replace(plan_sizes, train=plan_sizes.train * PHOTO_FACTOR)
        return plan_sizes

    def images(self, pair: PairData) -> tuple[torch.Tensor, list[str]]:
        """The counted images and their names."""
        return torch.cat([pair.images[s] for s in self.splits]), [n for s in self.splits for n in pair.names[s]]

    def record(self, pair: PairData, seed: int) -> dict[str, Any]:
        """{splits, images, set_aside, total, made_from, text}: how many images were counted and why."""
        noun = "photos" if pair.kind == REAL else "synthesized images"
        n = sum(len(pair.images[s]) for s in self.splits)
        total = sum(len(pair.images[s]) for s in (TRAIN, SELECTION, CONFIRMATION))
        aside = total - n
        if not self.runs:
            text = (f"counted on {n} {noun}: {aside} of {total} set aside to choose the static placement; "
                    f"the patches were not made from these {noun}")
        else:
            text = (f"counted on {n} {noun}: {aside} of {total} set aside ({len(pair.train)} train {noun}, which "
                    f"{self.runs[0]['run']} made the patches from, and {len(pair.selection)} selection {noun} that "
                    "choose the static placement)")
            other = sorted({r["seed"] for r in self.runs} - {seed})
            if other:
                text += (f"; that run split them with seed {other[0]}, so with seed {seed} some of its train "
                         f"{noun} may be counted (use --seed {other[0]})")
        return {"splits": list(self.splits), "images": n, "set_aside": aside, "total": total,
                "made_from": self.runs, "text": text}


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
    bands: SourceBands | None = None,
    **options: Unpack[ModelOptions],
) -> dict[str, Any]:
    """Evaluate patch files on SOURCE (or 'any') -> TARGET and write a run folder.

    Images come from `patchlab.pairdata` (photos from `data`, else pair-aware
    exemplars) with the split sizes of `budget`: sizes and placements are chosen
    on the selection split; rates are counted on every other image for outside
    patches, or on the confirmation split only for patches a run made from these
    images (see the module docstring and `Counted`). `sizes` in % of the image
    area. protocols: default static, dynamic, random; 'physical' is measured with
    the ranges of the JSON file `physical_ranges` (else the defaults). defenses:
    specs whose defended models re-count every patch. bands: how sure the model must be of the
    source images (`SourceBands`). options: labels file and
    preprocessing overrides (`ModelOptions`). Returns {run_dir, report, summary}."""
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
    clf = load_model(model, device, weights, **options)
    classes = resolve_pair(clf, source, target, allow_any=True)
    src, tgt = classes.source, classes.target
    if src is None and data is None:
        raise UserError("source 'any' needs --data DIR")
    counted = Counted.for_patches(made_from(patches, DataSource.of(data), clf.spec))
    splits = counted.sizes(plan.splits(), data is not None)
    folder = RunFolder(out or Path("reports") / run_dir_name(classes.slug()))
    config = run_config(classes.source_label, classes.target_label, data=data, budget=budget, splits=splits,
                        weights=weights, classifier=clf, labels=options.get("labels"),
                        patches=[str(p) for p in patches], sizes_pct=sizes_pct, protocols=protocols,
                        random_placements=random_placements, batch_size=batch_size, counted=list(counted.splits),
                        made_from=[r["run"] for r in counted.runs],
                        **({"defenses": [str(d) for d in defended]} if defended else {}),
                        **({"source_bands": bands.as_dict()} if bands is not None else {}))
    manifest = Manifest.new("evaluate", config, seed, clf.spec)
    with folder.preparing("evaluate", manifest):  # an unusable --out fails before the images are made
        pair = load_pair(clf, src, tgt, splits, data=data, seed=seed, progress=progress, bands=bands)
    folder.start(manifest)  # drops any old COMPLETE marker once the inputs are good
    t_data = time.perf_counter() - t0
    images, names = counted.images(pair)
    # the source-crop control comes from an image that is not counted
    pool = pair.selection if TRAIN in counted.splits else pair.train
    controls = make_controls(clf, pool, pair.target_images, stage_generator(seed, "controls"), source=src, target=tgt)
    ev = evaluate(clf, cands, {"selection": pair.selection, "confirmation": images}, src, tgt,
                  sizes=[s / 100 for s in sizes_pct], protocols=protocols, random_placements=random_placements,
                  controls=controls, generator=stage_generator(seed, "evaluate"), batch_size=batch_size,
                  progress=progress, image_names={"selection": pair.names["selection"], "confirmation": names},
                  physical=ranges, defenses=defended)
    data_record = dict(pair.manifest(), counted=counted.record(pair, seed))
    summary, report = write_run(folder.path, ev, model=clf.spec, seed=seed, manifest=manifest, data=data_record,
                                timings={"data_s": round(t_data, 3)})
    update_index(folder.path.parent)
    return {"run_dir": str(folder.path), "report": str(report), "summary": summary.as_dict()}
