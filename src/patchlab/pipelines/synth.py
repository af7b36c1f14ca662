"""`synth`: a universal targeted EOT patch (Brown et al. 2017) for SOURCE (or any) -> TARGET,
trained on the pair's train split and measured by the evaluator (sizes and placements
chosen on selection, rates counted on confirmation), written as a run folder with report."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

from ..devices import stage_generator
from ..errors import UserError
from ..evaluation.controls import make_controls
from ..evaluation.core import evaluate
from ..pairdata import PairData, SplitSizes, load_pair, synthesized_sources
from ..patches.physical import PhysicalRanges, read_ranges
from ..patches.synth import averaging_decay, synthesize_patch
from ..protocols import PHYSICAL, PROTOCOLS
from ..report import write_run
from ..runfolder import Manifest, RunFolder
from .common import ModelOptions, check_inputs, load_model, resolve_pair, run_config, run_dir_name, slugs

SYNTH_SIZES = (0.05, 0.10, 0.25, 0.40)  # Brown et al.'s success-vs-area curve, sampled
# The training recipe, chosen on selection photos only (experiments/universal_recipes.py):
# on 16 selection photos, toaster at 10 % area went 8.8 % (100 steps, uniform 5-25 %)
# -> 33.8 % (400) -> 38.8 % (400, log-uniform 5-30 %) -> 65.0 % (800, log-uniform 5-30 %)
# -> 66.2 % (1200) -> 68.8 % (1200, the patch averaged over the steps with decay 0.99)
# -> 80.0 % (the same with half the placements unrotated at the four corners or the centre;
# a quarter gave 61.3 %: one training run per recipe, so single figures move by ~10 points).
SYNTH_STEPS = 1200
SYNTH_AREA = (0.05, 0.30)
SYNTH_AREA_SAMPLING = "log"
SYNTH_AVERAGE_WINDOW = 1 / 12  # the average spans the last ~1/12 of the steps: decay 0.99 at 1200 steps
# Shorter runs return the last iterate: on selection photos (experiments/synth_steps.py, any class ->
# scuba diver) the last iterate led the average at 100 and 300 steps and trailed it at 1200.
SYNTH_AVERAGE_FROM = SYNTH_STEPS
SYNTH_FIXED_FRACTION = 0.5
SYNTH_PHOTO_FACTOR = 2  # selection / confirmation take up to 2x the budget's sizes of photos


def synth_average(steps: int) -> float:
    """The decay of `synth`'s average of iterates (Polyak & Juditsky 1992) for a run of `steps`: an
    average over the last SYNTH_AVERAGE_WINDOW of the steps from SYNTH_AVERAGE_FROM steps on, the
    plain last iterate (0) below."""
    return averaging_decay(steps, SYNTH_AVERAGE_WINDOW) if steps >= SYNTH_AVERAGE_FROM else 0.0


def synth_splits(plan, data) -> SplitSizes:
    """The split sizes `synth` asks for: with photos every train photo of the split rule trains."""
    return replace(plan.splits(), train=10**9) if data else plan.splits()


def synth_pair(classifier, source: int | None, target: int, plan, data, seed: int, progress: bool = False) -> PairData:
    """The PairData `synth` trains and counts on (`synth_splits`); with photos, selection and
    confirmation take up to SYNTH_PHOTO_FACTOR x the budget's sizes."""
    return load_pair(classifier, source, target, synth_splits(plan, data), data=data, seed=seed,
                     photo_factor=SYNTH_PHOTO_FACTOR, progress=progress)


def synth(
    source: str,
    target: str,
    *,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    data: str | Path | None = None,
    budget: str = "quick",
    area: tuple[float, float] = SYNTH_AREA,
    steps: int = SYNTH_STEPS,
    patch_px: int = 64,
    batch_size: int = 8,
    sizes: tuple[float, ...] = SYNTH_SIZES,
    random_placements: int = 2,
    amp: bool | None = None,
    mix: int = 0,
    out: str | Path | None = None,
    progress: bool = False,
    physical: bool = False,
    physical_ranges: str | Path | None = None,
    **options: Unpack[ModelOptions],
) -> dict[str, Any]:
    """Train the patch on the train split of `patchlab.pairdata` (photos from `data`: every
    train photo; else exemplars) and evaluate it against null controls. amp: bfloat16
    training step (None: where the device runs it natively). mix: with `data`, add this
    many synthesized source images (exemplars) to the train photos; selection and
    confirmation stay photos. physical: optimise through print-and-camera draws (EOT over the
    physical transforms, ranges from the JSON file `physical_ranges` or the defaults) and
    measure the physical protocol beside the others. options: labels file and preprocessing
    overrides (`ModelOptions`). Returns
    {run_dir, report, summary, candidate, sec_per_step}."""
    physical = physical or physical_ranges is not None
    ranges = read_ranges(physical_ranges) if physical_ranges is not None else PhysicalRanges()
    lo, hi = area
    if not 0 < lo <= hi < 1:
        raise UserError(f"--area needs 0 < LO <= HI < 1, got {lo} {hi}")
    if steps < 1 or patch_px < 2 or batch_size < 1:
        raise UserError("--steps and --batch-size must be >= 1, --patch-px >= 2")
    if mix < 0 or (mix and data is None):
        raise UserError("--mix N (N >= 0) adds synthesized images to the photos of --data; give --data")
    plan = check_inputs(budget, data=data)
    clf = load_model(model, device, weights, **options)
    classes = resolve_pair(clf, source, target, allow_any=True)
    src, tgt = classes.source, classes.target
    folder = RunFolder(out or Path("reports") / run_dir_name(classes.slug(), "synth"))
    source_slug, target_slug = slugs(clf, src, tgt)
    config = run_config(source_slug, target_slug, data=data, budget=budget, splits=synth_splits(plan, data),
                        weights=weights, classifier=clf, labels=options.get("labels"), area=[lo, hi],
                        area_sampling=SYNTH_AREA_SAMPLING, average=synth_average(steps),
                        average_window=SYNTH_AVERAGE_WINDOW, average_from=SYNTH_AVERAGE_FROM,
                        fixed_fraction=SYNTH_FIXED_FRACTION, steps=steps, patch_px=patch_px, batch_size=batch_size,
                        mix=mix, sizes=list(sizes), random_placements=random_placements, amp=amp,
                        **({"physical": ranges.as_dict()} if physical else {}))
    manifest = Manifest.new("synth", config, seed, clf.spec)
    with folder.preparing("synth", manifest):  # an unusable --out fails before the images are made
        pair = synth_pair(clf, src, tgt, plan, data, seed, progress)
    folder.start(manifest)  # drops any old COMPLETE marker once the inputs are good
    if mix:
        pair = pair.with_extra_train(*synthesized_sources(clf, src, tgt, mix, seed=seed, progress=progress))
    cand = synthesize_patch(clf, pair.train, tgt, src, steps=steps, patch_px=patch_px, area=(lo, hi),
                            area_sampling=SYNTH_AREA_SAMPLING, average=synth_average(steps),
                            fixed_fraction=SYNTH_FIXED_FRACTION, batch_size=batch_size,
                            generator=stage_generator(seed, "synth"), amp=amp, progress=progress,
                            physical=ranges if physical else None)
    controls = make_controls(clf, pair.train, pair.target_images, stage_generator(seed, "controls"), source=src, target=tgt,
                             side=patch_px)
    ev = evaluate(clf, [cand], {"selection": pair.selection, "confirmation": pair.confirmation}, src, tgt, sizes=sizes,
                  random_placements=random_placements, controls=controls, generator=stage_generator(seed, "evaluate"),
                  progress=progress, image_names={"selection": pair.names["selection"], "confirmation": pair.names["confirmation"]},
                  protocols=PROTOCOLS + ((PHYSICAL,) if physical else ()), physical=ranges)
    summary, report = write_run(folder.path, ev, model=clf.spec, seed=seed, manifest=manifest, data=pair.manifest())
    return {"run_dir": str(folder.path), "report": str(report), "summary": summary.as_dict(), "candidate": cand.meta(),
            "sec_per_step": cand.provenance.get("sec_per_step")}
