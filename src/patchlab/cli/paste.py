"""`patchlab paste`: copy/paste search for natural patches (donor crops)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError
from .app import ModelArgs, emit_json, model_command


def run_paste(
    source: str, target: str, donors: list[str] | None = None, donor_data: Path | None = None,
    data: Path | None = None, out: Path | None = None, top_k: int = 6, donor_images: int = 3,
    n_donors: int = 3, model: str = "efficientnet_lite0", weights: Path | None = None, device: str = "auto",
    seed: int = 0,
) -> dict:
    """Search donor crops that push SOURCE images toward TARGET; save the top-k as candidates.

    Donor classes: given, else the top of the head-alignment ranking (atlas signal ii).
    Source images: --data photos (training split only), else pair-aware exemplars."""
    from dataclasses import replace

    from ..atlas.donors import head_alignment, shortlist
    from ..devices import generator
    from ..models import load_classifier
    from ..patches.feature import pair_direction
    from ..patches.natural import natural_patches
    from ..probe import BUDGETS, donor_images as get_donor_images, source_images
    from ..runio import atomic_write_json, ensure_writable_dir, mark_complete, new_manifest

    clf = load_classifier(model, device, weights=str(weights) if weights else None)
    s, t = clf.classes.resolve(source), clf.classes.resolve(target)
    if s == t:
        raise UserError("source and target must be different classes")
    if clf.head is None:
        raise UserError(f"model {clf.spec} has no linear head: use `patchlab probe`, which takes the direction from the atlas")
    ids = [clf.classes.resolve(d) for d in donors] if donors else shortlist(head_alignment(clf.head.weight, s, t), n_donors, (s, t))
    if set(ids) & {s, t}:
        raise UserError("a donor class cannot be the source or the target")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ensure_writable_dir(out or Path("reports") / f"paste-{clf.classes.slug(s)}-to-{clf.classes.slug(t)}-{stamp}")
    config = {"source": clf.classes.label(s), "target": clf.classes.label(t), "donors": [clf.classes.label(i) for i in ids],
              "donor_data": str(donor_data) if donor_data else None, "data": str(data) if data else None, "top_k": top_k}
    manifest = new_manifest("paste", config, seed, clf.spec)
    atomic_write_json(out / "manifest.json", manifest)
    plan = replace(BUDGETS["quick"], n_held_out=0)
    train, _, _, _, info, _ = source_images(clf, s, t, data, plan, seed)
    d_imgs, d_labels, d_names = get_donor_images(clf, ids, donor_images, seed, donor_data)
    cands, stats = natural_patches(clf, s, t, train, d_imgs, d_labels, pair_direction(clf, s, t),
                                   donor_names=[str(n) for n in d_names], top_k=top_k, generator=generator(seed, clf.device))
    rows = []
    for c in cands:
        files = c.save(out)
        rows.append(dict(c.meta(), files=files))
    manifest.update(result={"candidates": rows, "search": stats, "source_images": info})
    mark_complete(out, manifest)
    return {"out": str(out), "candidates": rows, "search": stats}


@model_command("paste")
def paste_cmd(
    classes: Annotated[tuple[str, str], typer.Option("--classes", help="SOURCE TARGET.")],
    donor: Annotated[Optional[list[str]], typer.Option("--donor", help="Donor class (repeatable); default: atlas ranking.")] = None,
    donor_data: Annotated[Optional[Path], typer.Option("--donor-data", help="Photos of donor classes to cut from.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Photos of the source class to score crops on.")] = None,
    top_k: Annotated[int, typer.Option("--top", min=1, help="How many distinct crops to keep.")] = 6,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder.")] = None,
    *,
    opts: ModelArgs,
) -> None:
    """Copy/paste search: natural patches cut from donor images, ranked by measured gain."""
    result = run_paste(classes[0], classes[1], donor, donor_data, data, out, top_k, model=opts.model, weights=opts.weights,
                       device=opts.device, seed=opts.seed)
    if opts.json_out:
        emit_json(result)
        return
    for c in result["candidates"]:
        p = c["provenance"]
        typer.echo(f"{c['name']:<18} gain {p['score_gain_logodds']:+.3f}  train success {100 * p['train_success']:5.1f}%  "
                   f"donor {p['donor_name']}  reads as {c['reads_as']['name']}")
    typer.echo(f"search: {result['search']['crops_scored']} crops, {result['search']['crops_per_s_coarse']} crops/s (coarse)")
    typer.echo(f"saved in {result['out']}")
