"""`evaluate_patches`: the Python function behind `patchlab evaluate`. Loads a
model, held-out images (a data folder, else synthesized exemplars) and patch
files, builds the controls, evaluates, and writes a run folder with report."""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..devices import generator as make_generator
from ..errors import UserError
from ..patches.candidate import KINDS, Candidate, load_patch
from .controls import make_controls
from .core import DEFAULT_SIZES, PROTOCOLS, evaluate

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
        kind = meta.get("kind") if meta.get("kind") in KINDS and meta.get("kind") != "control" else "natural"
        prov = dict(meta.get("provenance") or {}, file=str(p))
        out.append(Candidate(load_patch(p), kind, _safe_name(str(meta.get("name") or p.stem), taken), prov))
    return out


def _exemplar_images(classifier, cls: int, n: int, near: int | None, seed: int):
    try:
        from ..exemplars import describe, exemplars
    except ImportError:
        raise UserError("no --data given and synthesized exemplars are not available; pass --data DIR") from None
    ex = exemplars(classifier, cls, n, near=near, seed=seed)
    return ex.images, [f"exemplar {classifier.classes.label(cls)} #{i}" for i in range(len(ex.images))], describe(ex.settings)


def _load_data(classifier, data: Path, source: int | None, target: int, max_images: int):
    """Held-out source images (+ names), a separate pool for the source-crop control, target images."""
    from ..data import discover, load_images, select

    records = discover(data, classifier.classes)
    if source is None:
        src = [r for r in records if r.label != target]
    else:
        src = select(records, source, classifier.classes, data)
    if len(src) < 2:
        raise UserError(f"need at least 2 source images in {data} (one is kept aside for a control)")
    pool, held = src[:1], src[1 : 1 + max_images]
    loaded = load_images(held, classifier.input_size, classifier.crop_pct)
    pool_imgs = load_images(pool, classifier.input_size, classifier.crop_pct).images if pool else None
    tgt = [r for r in records if r.label == target][:16]
    tgt_imgs = load_images(tgt, classifier.input_size, classifier.crop_pct).images if tgt else None
    root = Path(data)

    def rel(p) -> str:
        try:
            return str(Path(p).relative_to(root))
        except ValueError:
            return str(p)

    names = [rel(p) for p in loaded.paths]
    info = {"kind": "real", "how": f"image folder {data}", "skipped": list(loaded.skipped),
            "control_files": [rel(r.path) for r in pool + tgt]}
    return loaded.images, names, pool_imgs, tgt_imgs, info


def default_run_dir(classifier, source: int | None, target: int, root: str | Path = "reports") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    src = classifier.classes.slug(source) if source is not None else "any"
    return Path(root) / f"{stamp}-{src}-to-{classifier.classes.slug(target)}"


def evaluate_patches(
    classes: tuple[str, str],
    patches: Sequence[str | Path],
    data: str | Path | None = None,
    sizes: Sequence[float] | None = None,
    protocols: Sequence[str] | None = None,
    out: str | Path | None = None,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    max_images: int = 500,
    n_exemplars: int = 32,
    random_placements: int = 8,
    batch_size: int = 128,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate patch files on held-out images of `classes` = (SOURCE, TARGET)
    (SOURCE 'any' = every non-target image) and write a run folder. `sizes` in
    % of the image area. Returns {run_dir, report, summary}."""
    from ..models import load_classifier
    from ..report import start_run, update_index, write_run
    from ..runio import new_manifest

    t0 = time.perf_counter()
    sizes_pct = list(sizes) if sizes else [100 * a for a in DEFAULT_SIZES]
    if any(not 0 < s < 100 for s in sizes_pct):
        raise UserError("--sizes are percentages of the image area between 0 and 100 (e.g. 5 10 25)")
    protocols = list(dict.fromkeys(protocols or PROTOCOLS))
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise UserError(f"unknown protocol {', '.join(bad)}; use {', '.join(PROTOCOLS)}")
    cands = load_candidates(patches)
    clf = load_classifier(model, device, weights=str(weights) if weights else None)
    source = None if classes[0].strip().lower() == "any" else clf.classes.resolve(classes[0])
    target = clf.classes.resolve(classes[1])
    if source == target:
        raise UserError("source and target must be different classes")
    run_dir = Path(out) if out else default_run_dir(clf, source, target)
    config = {"classes": list(classes), "patches": [str(p) for p in patches], "data": str(data) if data else None,
              "sizes_pct": sizes_pct, "protocols": protocols, "max_images": max_images,
              "random_placements": random_placements}
    manifest = new_manifest("evaluate", config, seed, clf.spec)
    start_run(run_dir, manifest)  # drops any old COMPLETE marker before work starts
    gen = make_generator(seed, clf.device)
    if data:
        images, names, pool, tgt_imgs, info = _load_data(clf, Path(data), source, target, max_images)
        if tgt_imgs is None:
            log.warning("no %s images in %s; the target-crop control uses a synthesized exemplar",
                        clf.classes.label(target), data)
            try:
                tgt_imgs = _exemplar_images(clf, target, 2, None, seed)[0]
            except UserError as exc:
                log.warning("%s; the target-crop control is skipped", exc)
    else:
        if source is None:
            raise UserError("source 'any' needs --data DIR")
        imgs, names, how = _exemplar_images(clf, source, n_exemplars + 1, target, seed)
        images, pool, names = imgs[1:], imgs[:1], names[1:]
        tgt_imgs = _exemplar_images(clf, target, 2, None, seed)[0]
        info = {"kind": "synthesized", "how": how, "skipped": []}
    t_data = time.perf_counter() - t0
    controls = make_controls(clf, pool, tgt_imgs, gen, source=source, target=target)
    ev = evaluate(clf, cands, images, source, target, sizes=[s / 100 for s in sizes_pct], protocols=protocols,
                  random_placements=random_placements, controls=controls, generator=gen, batch_size=batch_size,
                  progress=progress, image_names=names)
    context = {
        "model": clf.spec, "seed": seed, "manifest": manifest, "donors": [],
        "data": dict(info, counts={"train": 0, "control_pool": 0 if pool is None else len(pool)}, files=names),
        "timings": {"data_s": round(t_data, 3)},
    }
    report = write_run(run_dir, ev, context)
    update_index(run_dir.parent)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run_dir": str(run_dir), "report": str(report), "summary": summary}
