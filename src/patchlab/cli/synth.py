"""`patchlab synth`: train a universal targeted EOT patch (Brown et al. 2017) and
measure it on held-out images against a uniform-noise patch of the same size.

`run_synth` is the Python function behind the command (same arguments)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from ..errors import UserError
from .app import ModelArgs, emit_json, model_command

log = logging.getLogger("patchlab")

EVAL_AREAS = (0.05, 0.10, 0.15, 0.20, 0.25)
ANY = "any"
ANY_CLASSES = 8  # classes drawn for exemplars when the source is `any`


def _split(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded 50/50 permutation split into (train, held-out) indices (train gets the odd one)."""
    if n < 2:
        raise UserError(f"need at least 2 source images to split train/held-out, found {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = (n + 1) // 2
    return sorted(perm[:cut]), sorted(perm[cut:])


def _images_from_data(clf, data: Path, source: int | None, target: int) -> tuple[torch.Tensor, list[str], list[str]]:
    from ..data import discover, load_images, select

    records = discover(data, clf.classes)
    if source is not None:
        records = select(records, source, clf.classes, data)
    else:
        records = [r for r in records if r.label != target]
        if not records:
            raise UserError(f"no images in {data} outside the target class")
    loaded = load_images(records, clf.input_size, clf.crop_pct)
    return loaded.images, loaded.paths, loaded.skipped


def _images_from_exemplars(clf, source: int | None, target: int, n: int, seed: int, progress: bool = False) -> tuple[torch.Tensor, list[str]]:
    try:
        from ..exemplars import exemplars
    except ImportError:
        raise UserError("no --data given and calibrated exemplars (patchlab.exemplars) are not available; "
                        "pass --data DIR with source-class images") from None

    def as_tensor(x) -> torch.Tensor:
        return x.images if hasattr(x, "images") else x

    if source is not None:
        imgs = as_tensor(exemplars(clf, source, n, near=target, seed=seed, progress=progress))
        return imgs, [f"exemplar:{clf.classes.slug(source)}:{i}" for i in range(len(imgs))]
    # Brown's universal setting: variety across many classes is what makes the patch transfer.
    g = torch.Generator().manual_seed(seed)
    pool = [c for c in torch.randperm(clf.num_classes, generator=g).tolist() if c != target][:ANY_CLASSES]
    per = max(1, -(-n // len(pool)))
    parts, names = [], []
    for c in pool:
        x = as_tensor(exemplars(clf, c, per, seed=seed, progress=progress))
        parts.append(x)
        names += [f"exemplar:{clf.classes.slug(c)}:{i}" for i in range(len(x))]
    return torch.cat(parts), names


@torch.no_grad()
def _heldout_success(clf, images: torch.Tensor, patch: torch.Tensor, target: int, areas, batch_size: int = 64) -> dict:
    """Fraction of (image, position) pairs whose top-1 is the target, per area (4 corners + center)."""
    from ..patches.apply import POSITIONS, apply_at

    images = images.to(clf.device)
    patch = patch.to(clf.device)
    out = {}
    for a in areas:
        hits = 0
        for pos in POSITIONS:
            for i in range(0, len(images), batch_size):
                pred = clf(apply_at(images[i:i + batch_size], patch, a, pos)).argmax(1)
                hits += int((pred == target).sum())
        out[f"{a:.2f}"] = hits / (len(images) * len(POSITIONS))
    return out


def run_synth(
    source: str, target: str, area: tuple[float, float] = (0.05, 0.25), steps: int = 100, patch_px: int = 64,
    batch_size: int = 8, data: str | Path | None = None, out: str | Path | None = None,
    model: str = "efficientnet_lite0", weights: str | None = None, device: str = "auto", seed: int = 0,
    exemplars_n: int = 32, progress: bool = False,
) -> dict:
    """Train a synth patch for SOURCE (or 'any') -> TARGET, save it with its curve and manifest,
    and measure targeted success on the held-out split against a same-size noise patch."""
    from ..devices import generator
    from ..models import load_classifier
    from ..patches.synth import synthesize_patch
    from ..runio import atomic_write_json, ensure_writable_dir, mark_complete, new_manifest

    lo, hi = area
    if not 0 < lo <= hi < 1:
        raise UserError(f"--area needs 0 < LO <= HI < 1, got {lo} {hi}")
    if steps < 1 or patch_px < 2 or batch_size < 1:
        raise UserError("--steps and --batch-size must be >= 1, --patch-px >= 2")
    clf = load_classifier(model, device, weights)
    tgt = clf.classes.resolve(target)
    src = None if source.strip().lower() == ANY else clf.classes.resolve(source)
    if src == tgt:
        raise UserError("source and target are the same class")
    src_slug = ANY if src is None else clf.classes.slug(src)
    run_dir = Path(out) if out else Path("reports") / f"synth-{src_slug}-to-{clf.classes.slug(tgt)}-{time.strftime('%Y%m%d-%H%M%S')}"
    ensure_writable_dir(run_dir)

    skipped: list[str] = []
    if data:
        images, names, skipped = _images_from_data(clf, Path(data), src, tgt)
        origin = str(data)
    else:
        images, names = _images_from_exemplars(clf, src, tgt, exemplars_n, seed, progress)
        origin = "exemplars"
    train_idx, held_idx = _split(len(images), seed)
    config = {
        "source": src_slug, "target": clf.classes.slug(tgt), "area": [lo, hi], "steps": steps, "patch_px": patch_px,
        "batch_size": batch_size, "images": origin, "weights": weights, "device": str(clf.device),
        "split": {"train": [names[i] for i in train_idx], "heldout": [names[i] for i in held_idx]},
        "skipped": skipped,
    }
    manifest = new_manifest("synth", config, seed, model)
    atomic_write_json(run_dir / "manifest.json", manifest)

    cand = synthesize_patch(
        clf, images[train_idx], tgt, src, steps=steps, patch_px=patch_px, area=(lo, hi), batch_size=batch_size,
        generator=generator(seed, clf.device), progress=progress,
    )
    files = cand.save(run_dir)
    held = images[held_idx]
    noise = torch.rand(3, patch_px, patch_px, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        clean = float((clf.logits(held).argmax(1) == tgt).float().mean())
    heldout = {
        "images": len(held_idx), "positions": "4 corners + center", "clean": clean,
        "patch": _heldout_success(clf, held, cand.patch, tgt, EVAL_AREAS),
        "noise": _heldout_success(clf, held, noise, tgt, EVAL_AREAS),
    }
    result = {
        "run_dir": str(run_dir), "candidate": cand.meta(), "files": files, "heldout": heldout,
        "train_success_last": cand.score, "sec_per_step": cand.provenance["sec_per_step"],
    }
    atomic_write_json(run_dir / "results.json", result)
    mark_complete(run_dir, dict(manifest, results="results.json"))
    return result


@model_command("synth")
def synth_cmd(
    classes: Annotated[tuple[str, str], typer.Option("--classes", help="SOURCE TARGET (SOURCE may be `any`).")],
    area: Annotated[tuple[float, float], typer.Option("--area", help="EOT area range, fraction of image area.")] = (0.05, 0.25),
    steps: Annotated[int, typer.Option("--steps", min=1)] = 100,
    patch_px: Annotated[int, typer.Option("--patch-px", min=2, help="Patch resolution in pixels.")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    data: Annotated[Optional[Path], typer.Option("--data", help="Source images (folder/CSV); else exemplars.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default reports/synth-...).")] = None,
    *,
    opts: ModelArgs,
) -> None:
    """Synthesize a universal targeted patch with EOT (Brown et al. 2017) and test it on held-out images."""
    res = run_synth(
        classes[0], classes[1], area, steps, patch_px, batch_size, data, out, opts.model,
        str(opts.weights) if opts.weights else None, opts.device, opts.seed, progress=opts.verbose,
    )
    if opts.json_out:
        emit_json(res)
        return
    h = res["heldout"]
    c = res["candidate"]
    typer.echo(f"patch: {res['files']['png']}  (alone reads as {c['reads_as']['name']} {c['reads_as']['prob']:.2f}; "
               f"{res['sec_per_step']:.3f} s/step)")
    typer.echo(f"held-out targeted success on {h['images']} images, {h['positions']} (clean {h['clean']:.0%}):")
    typer.echo(f"{'area':>6}  {'patch':>6}  {'noise':>6}")
    for a in h["patch"]:
        typer.echo(f"{float(a):>6.0%}  {h['patch'][a]:>6.0%}  {h['noise'][a]:>6.0%}")
    typer.echo(f"run folder: {res['run_dir']}")
