"""`probe`: the whole mission for one class pair in one call.

resolve classes -> source images (real photos from --data, else calibrated
pair-aware exemplars) split into train / held-out -> atlas donors -> candidate
patches of three kinds (synth: Brown et al. 2017; feature and donor-disguised
feature: Carter et al. 2019 atlas directions; natural: donor crops) ->
evaluation with controls on held-out images only -> report.

Each stage is saved in the run directory as it finishes (see `stages`), so
Ctrl-C keeps finished stages and `resume=RUN_DIR` continues from the first
unfinished one. Exemplars are cached across runs (see `patchlab.cache`).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .devices import generator as make_generator
from .errors import UserError
from .patches.candidate import Candidate
from .stages import StageStore

log = logging.getLogger("patchlab")


@dataclass(frozen=True)
class Budget:
    """How much work each stage does. quick: <= 5 min on a 2-core CPU with the default model."""

    n_train: int
    n_held_out: int
    n_target: int
    shortlist: int
    donor_images: int
    n_donors_used: int
    synth_steps: int
    feature_plain: int
    feature_steps: int
    tune_steps: int
    natural_top: int
    sizes: tuple[float, ...]
    protocols: tuple[str, ...] = ("static", "dynamic", "random")
    positions: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
    random_placements: int = 4
    icons: bool = False
    evaluate_untuned_disguised: bool = True  # also measure disguised feature patches before EOT tuning
    natural: dict[str, Any] = field(default_factory=dict)  # extra arguments for natural_patches


BUDGETS: dict[str, Budget] = {
    "quick": Budget(n_train=8, n_held_out=16, n_target=2, shortlist=6, donor_images=2, n_donors_used=2,
                    synth_steps=100, feature_plain=1, feature_steps=96, tune_steps=40, natural_top=3,
                    sizes=(0.10, 0.25), positions=("top-left", "top-right", "bottom-left", "bottom-right"),
                    random_placements=1, evaluate_untuned_disguised=False,
                    natural={"coarse_images": 3, "fine_keep": 12, "fine_areas": (0.2,)}),
    "standard": Budget(n_train=16, n_held_out=64, n_target=4, shortlist=12, donor_images=3, n_donors_used=3,
                       synth_steps=200, feature_plain=2, feature_steps=160, tune_steps=80, natural_top=6,
                       sizes=(0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40), random_placements=4),
    "thorough": Budget(n_train=32, n_held_out=200, n_target=8, shortlist=24, donor_images=4, n_donors_used=4,
                       synth_steps=500, feature_plain=4, feature_steps=256, tune_steps=160, natural_top=10,
                       sizes=(0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40), random_placements=8, icons=True),
}


def _pack(cands: list[Candidate]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"patch{i}": c.patch for i, c in enumerate(cands)}
    meta = {"candidates": [{"kind": c.kind, "name": c.name, "provenance": c.provenance, "curve": c.curve,
                            "score": c.score, "reads_as": c.reads_as} for c in cands]}
    return tensors, meta


def _unpack(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> list[Candidate]:
    return [Candidate(tensors[f"patch{i}"].cpu(), **m) for i, m in enumerate(meta["candidates"])]


def source_images(clf, source: int, target: int, data: str | Path | None, budget: Budget, seed: int):
    """(train, held_out, control_pool, target_images, info) tensors on CPU."""
    if data is None:
        from .exemplars import describe, exemplars

        n = budget.n_train + budget.n_held_out + 1
        ex = exemplars(clf, source, n, near=target, seed=seed)
        tgt = exemplars(clf, target, budget.n_target, seed=seed + 1)
        imgs = ex.images.cpu()
        info = {"kind": "synthesized", "how": describe(ex.settings), "settings": ex.settings}
        names = [f"exemplar {clf.classes.label(source)} #{i}" for i in range(n)]
        return imgs[: budget.n_train], imgs[budget.n_train : -1], imgs[-1:], tgt.images.cpu(), info, names[budget.n_train : -1]
    from .data import discover, load_images, select

    records = discover(data, clf.classes)
    src = select(records, source, clf.classes, data)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(src), generator=g).tolist()
    src = [src[i] for i in order]
    if len(src) < 3:
        raise UserError(f"need at least 3 images of {clf.classes.label(source)!r} in {data} (train, held-out, control)")
    n_train = min(budget.n_train, max(1, len(src) // 3))
    train = load_images(src[:n_train], clf.input_size, clf.crop_pct)
    pool = load_images(src[n_train : n_train + 1], clf.input_size, clf.crop_pct)
    held_recs = src[n_train + 1 : n_train + 1 + budget.n_held_out * 4]  # real photos: up to 4x the exemplar count
    held = load_images(held_recs, clf.input_size, clf.crop_pct) if held_recs else None
    tgt_recs = [r for r in records if r.label == target][: budget.n_target]
    if tgt_recs:
        tgt = load_images(tgt_recs, clf.input_size, clf.crop_pct).images
    else:
        from .exemplars import exemplars

        log.warning("no %s images in %s: the target control uses synthesized exemplars", clf.classes.label(target), data)
        tgt = exemplars(clf, target, budget.n_target, seed=seed + 1).images.cpu()
    info = {"kind": "real", "how": f"photos from {data}", "skipped": train.skipped + (held.skipped if held else []),
            "train_files": train.paths}
    if held is None:
        return train.images, train.images[:0], pool.images, tgt, info, []
    return train.images, held.images, pool.images, tgt, info, held.paths


def donor_images(clf, donors: list[int], per_class: int, seed: int, donor_data: str | Path | None):
    """Images of the donor classes: real photos from donor_data, else exemplars (cached by the atlas run)."""
    if donor_data is not None:
        from .data import discover, load_images

        records = [r for r in discover(donor_data, clf.classes) if r.label in donors]
        picked = []
        for d in donors:
            picked += [r for r in records if r.label == d][: per_class * 4]
        if picked:
            got = load_images(picked, clf.input_size, clf.crop_pct)
            return got.images, got.labels, got.paths
        log.warning("no images of the donor classes in %s: using synthesized donor exemplars", donor_data)
    from .exemplars import exemplars

    imgs, labels, names = [], [], []
    for d in donors:
        ex = exemplars(clf, d, per_class, seed=seed + d)
        imgs.append(ex.images.cpu())
        labels += [d] * len(ex.images)
        names += [f"exemplar {clf.classes.label(d)} #{i}" for i in range(len(ex.images))]
    return torch.cat(imgs), torch.tensor(labels), names


def check_inputs(budget: str, data: str | Path | None, donor_data: str | Path | None) -> Budget:
    """The Budget named `budget`; UserError for an unknown budget or a missing photo folder."""
    if budget not in BUDGETS:
        raise UserError(f"unknown budget {budget!r}; use {', '.join(BUDGETS)}")
    for path, what in ((data, "--data"), (donor_data, "--donor-data")):
        if path is not None and not Path(path).exists():
            raise UserError(f"{what} path does not exist: {path}")
    return BUDGETS[budget]


def probe(
    source: str,
    target: str,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    data: str | Path | None = None,
    donor_data: str | Path | None = None,
    budget: str = "quick",
    out: str | Path = "reports",
    device: str = "auto",
    seed: int = 0,
    resume: str | Path | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    run_dir: str | Path | None = None,
    classifier: Any = None,
) -> dict[str, Any]:
    """Run the probe pipeline and write a report; returns summary.json's content (plus run_dir).

    run_dir: write into this folder instead of a new time-stamped one under `out`
    (an audit's per-pair folder). classifier: an already loaded Classifier for
    `model` (an audit loads it once for all pairs)."""
    from .models import load_classifier
    from .runio import atomic_write_json, ensure_writable_dir, is_complete, new_manifest

    say = echo or (lambda msg: log.info(msg))
    plan = check_inputs(budget, data, donor_data)
    clf = classifier if classifier is not None else load_classifier(model, device, weights=str(weights) if weights else None)
    s, t = clf.classes.resolve(source), clf.classes.resolve(target)
    if s == t:
        raise UserError(f"source and target are the same class ({clf.classes.label(s)!r})")
    config = {"source": clf.classes.label(s), "target": clf.classes.label(t), "model": clf.spec,
              "weights": str(weights) if weights else None, "data": str(data) if data else None,
              "donor_data": str(donor_data) if donor_data else None, "budget": budget, "plan": asdict(plan)}
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "manifest.json").is_file():
            raise UserError(f"--resume {run_dir}: not a probe run directory (no manifest.json)")
        old = json.loads((run_dir / "manifest.json").read_text())
        if old.get("command") != "probe" or old.get("config", {}).get("source") != config["source"] \
                or old.get("config", {}).get("target") != config["target"]:
            raise UserError(f"--resume {run_dir}: that run is not a probe of {config['source']} -> {config['target']}")
        if is_complete(run_dir):
            say(f"{run_dir} is already complete; rebuilding nothing")
        config = old["config"]
        plan = Budget(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["plan"].items()})
        seed = old.get("seed", seed)
    elif run_dir is not None:
        run_dir = Path(run_dir)
    else:
        ensure_writable_dir(out)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(out) / f"{stamp}-{clf.classes.slug(s)}-to-{clf.classes.slug(t)}"
    ensure_writable_dir(run_dir)
    manifest = new_manifest("probe", config, seed, clf.spec)
    if resume is None:
        atomic_write_json(run_dir / "manifest.json", manifest)
    store = StageStore(run_dir)
    dev = clf.device
    t_start = time.perf_counter()

    # 1. images
    def images_stage():
        train, held, pool, tgt, info, held_names = source_images(clf, s, t, data, plan, seed)
        return ({"train": train, "held_out": held, "control_pool": pool, "target": tgt},
                {"info": info, "held_out_names": [str(n) for n in held_names]})

    imgs, img_meta = store.run("images", images_stage, "cpu", say)
    info = img_meta["info"]
    if len(imgs["train"]) == 0 or len(imgs["held_out"]) == 0:
        raise UserError("not enough source images for a train / held-out split")

    # 2. atlas donors
    def donors_stage():
        from .atlas.run import build_atlas

        res = build_atlas(clf, s, t, images=torch.cat([imgs["train"], imgs["target"]]), grid=8,
                          n_donors=max(plan.shortlist, plan.n_donors_used), out=run_dir / "atlas", seed=seed,
                          icons=plan.icons, shortlist_size=plan.shortlist, donor_exemplars=plan.donor_images,
                          progress=progress)
        rows = [] if res.donors is None else res.donors.to_dict(orient="records")
        return {}, {"donors": rows, "atlas_files": res.files, "notes": res.notes}

    _, donor_meta = store.run("donors", donors_stage, "cpu", say)
    donors = donor_meta["donors"]
    donor_ids = [int(d["index"]) for d in donors][: plan.n_donors_used]
    def stage_generator(offset: int) -> torch.Generator:
        """Each stage its own seeded generator, so a resumed run equals an uninterrupted one."""
        return make_generator(seed + offset, dev)

    # 3. candidates
    def synth_stage():
        from .patches.synth import synthesize_patch

        c = synthesize_patch(clf, imgs["train"], t, s, steps=plan.synth_steps, generator=stage_generator(101),
                             progress=progress)
        return _pack([c])

    synth = _unpack(*store.run("synth", synth_stage, "cpu", say))

    def feature_stage():
        from .patches.feature import feature_patches, tune_feature_patches

        g = stage_generator(102)
        rendered = feature_patches(clf, s, t, n_plain=plan.feature_plain, donors=donor_ids,
                                   steps=plan.feature_steps, generator=g, progress=progress)
        tuned = tune_feature_patches(clf, rendered, imgs["train"], s, t, steps=plan.tune_steps, generator=g,
                                     progress=progress) if plan.tune_steps else []
        return _pack(rendered + tuned)

    feature = _unpack(*store.run("feature", feature_stage, "cpu", say))

    def natural_stage():
        from .patches.feature import pair_direction
        from .patches.natural import natural_patches

        ids = [int(d["index"]) for d in donors][: plan.n_donors_used]
        d_imgs, d_labels, d_names = donor_images(clf, ids, plan.donor_images, seed, donor_data)
        cands, stats = natural_patches(clf, s, t, imgs["train"], d_imgs, d_labels, pair_direction(clf, s, t),
                                       donor_names=[str(n) for n in d_names], top_k=plan.natural_top,
                                       generator=stage_generator(103),
                                       **plan.natural)
        tensors, meta = _pack(cands)
        meta["search"] = stats
        return tensors, meta

    nat_t, nat_meta = store.run("natural", natural_stage, "cpu", say)
    natural = _unpack(nat_t, nat_meta)

    # 4. evaluation and report
    from .evaluate.controls import make_controls
    from .evaluate.core import evaluate
    from .report import update_index, write_run

    if not plan.evaluate_untuned_disguised:  # their tuned versions are evaluated instead
        feature = [c for c in feature if "donor_class" not in c.provenance or "tune_steps" in c.provenance]
    candidates = synth + feature + natural
    controls = make_controls(clf, imgs["control_pool"], imgs["target"], make_generator(seed, "cpu"), source=s, target=t)
    t0 = time.perf_counter()
    ev = evaluate(clf, candidates, imgs["held_out"], s, t, sizes=plan.sizes, positions=plan.positions,
                  protocols=plan.protocols,
                  random_placements=plan.random_placements, controls=controls, generator=make_generator(seed + 7, dev),
                  progress=progress, image_names=img_meta["held_out_names"])
    store.timings["evaluate"] = round(time.perf_counter() - t0, 3)
    store.timings["total"] = round(time.perf_counter() - t_start, 3)
    info = dict(info)
    info["counts"] = {"train": len(imgs["train"]), "control_pool": len(imgs["control_pool"])}
    context = {"model": clf.spec, "seed": seed, "manifest": manifest, "donors": donors,
               "data": info, "timings": dict(store.timings), "budget": budget,
               "natural_search": nat_meta.get("search")}
    report = write_run(run_dir, ev, context)
    update_index(run_dir.parent)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["run_dir"] = str(run_dir)
    summary["report"] = str(report)
    return summary
