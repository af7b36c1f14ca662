"""`paste`: the copy/paste search alone (the natural generator of the registry): natural
patches from a photo library, or crops of donor images, ranked by measured gain on the
pair's train split (Carter et al. 2019; Casper et al. 2022, "SNAFUE")."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..atlases.donors import head_alignment, shortlist
from ..devices import stage_generator
from ..errors import UserError
from ..generators.registry import GeneratorJob, registered
from ..models import load_classifier
from ..pairdata import load_pair
from ..runio import atomic_write_json, check_run_dir, mark_complete, new_manifest
from .probe import check_inputs


def paste(
    source: str,
    target: str,
    *,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    data: str | Path | None = None,
    library: str | Path | None = None,
    donors: list[str] | None = None,
    donor_data: str | Path | None = None,
    budget: str = "quick",
    top_k: int = 6,
    donor_images: int = 3,
    n_donors: int = 3,
    out: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Search natural patches for SOURCE -> TARGET and save the top-k as candidate files.

    library: any photo folder (searched whole photos and crops); else donor classes
    (given, else the top of the head-alignment ranking) cut from donor_data photos
    or exemplars. Scored on the train split of `patchlab.pairdata` only.
    Returns {out, candidates, search}."""
    budget_plan = check_inputs(budget, data=data, donor_data=donor_data, library=library)
    clf = load_classifier(model, device, weights=str(weights) if weights else None)
    s, t = clf.classes.resolve(source), clf.classes.resolve(target)
    if s == t:
        raise UserError("source and target must be different classes")
    if clf.head is None:
        raise UserError(f"model {clf.spec} has no linear head, so there is no pair direction to search by")
    ids = [clf.classes.resolve(d) for d in donors] if donors else shortlist(head_alignment(clf.head.weight, s, t), n_donors, (s, t))
    if set(ids) & {s, t}:
        raise UserError("a donor class cannot be the source or the target")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = check_run_dir(out or Path("reports") / f"paste-{clf.classes.slug(s)}-to-{clf.classes.slug(t)}-{stamp}", "paste")
    config = {"source": clf.classes.label(s), "target": clf.classes.label(t), "donors": [clf.classes.label(i) for i in ids],
              "library": str(library) if library else None, "donor_data": str(donor_data) if donor_data else None,
              "data": str(data) if data else None, "top_k": top_k, "budget": budget}
    manifest = new_manifest("paste", config, seed, clf.spec)
    atomic_write_json(out / "manifest.json", manifest)
    natural = registered()["natural"]
    plan = replace(budget_plan, donor_images=donor_images, n_donors_used=len(ids)).with_settings(
        natural.name, budget_plan.settings[natural.name].with_top_k(top_k))
    pair = load_pair(clf, s, t, plan.splits(), data=data, seed=seed, progress=progress)
    job = GeneratorJob(pair=pair, classifier=clf, plan=plan, rng=stage_generator(seed, natural.name), donors=ids,
                       donor_data=Path(donor_data) if donor_data else None, library=Path(library) if library else None,
                       seed=seed, progress=progress)
    rows = [dict(c.meta(), files=c.save(out)) for c in natural.run(job)]
    manifest.update(result={"candidates": rows, "search": job.notes.get("search"), "pair": pair.manifest()})
    mark_complete(out, manifest)
    return {"out": str(out), "candidates": rows, "search": job.notes.get("search")}
