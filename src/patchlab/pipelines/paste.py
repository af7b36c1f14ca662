"""`paste`: the copy/paste search alone (the natural generator of the registry): natural
patches from a photo library, or crops of donor images, ranked by measured gain on the
pair's train split (Carter et al. 2019; Casper et al. 2022, "SNAFUE")."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Unpack

from ..atlases.donors import head_alignment, shortlist
from ..devices import stage_generator
from ..errors import UserError
from ..generators.registry import GeneratorJob, registered
from ..pairdata import SourceBands, load_pair
from ..runfolder import Manifest, RunFolder
from .common import ModelOptions, check_inputs, load_model, resolve_pair, run_config, run_dir_name


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
    layer: str | None = None,
    bands: SourceBands | None = None,
    **options: Unpack[ModelOptions],
) -> dict[str, Any]:
    """Search natural patches for SOURCE -> TARGET and save the top-k as candidate files.

    library: any photo folder (searched whole photos and crops); else donor classes
    (given, else the top of the head-alignment ranking) cut from donor_data photos
    or exemplars. Scored on the train split of `patchlab.pairdata` only. layer: the feature layer
    (None: the model's last spatial map); options: labels file and preprocessing overrides. bands:
    how sure the model must be of the source images (`SourceBands`). Returns {out, candidates, search}."""
    budget_plan = check_inputs(budget, data=data, donor_data=donor_data, library=library)
    clf = load_model(model, device, weights, layer=layer, direction=True, **options)
    classes = resolve_pair(clf, source, target)
    s, t = classes.source, classes.target
    if clf.head is None:
        raise UserError(f"model {clf.spec} has no linear head, so there is no pair direction to search by")
    if library is None and clf.direction_head is None:
        raise UserError(f"the head of model {clf.spec} does not read its feature layer, so the pair direction "
                        "there is unknown: give --library PHOTOS, whose photos of the two classes estimate it")
    ids = [clf.classes.resolve(d) for d in donors] if donors else shortlist(head_alignment(clf.head.weight, s, t), n_donors, (s, t))
    if set(ids) & {s, t}:
        raise UserError("a donor class cannot be the source or the target")
    folder = RunFolder(out or Path("reports") / run_dir_name(classes.slug(), "paste"))
    out = folder.path
    config = run_config(classes.source_label, classes.target_label, data=data, budget=budget, splits=budget_plan.splits(),
                        weights=weights, classifier=clf, labels=options.get("labels"), layers=True,
                        donors=[clf.classes.label(i) for i in ids],
                        library=str(library) if library else None, donor_data=str(donor_data) if donor_data else None,
                        top_k=top_k, **({"source_bands": bands.as_dict()} if bands is not None else {}))
    manifest = Manifest.new("paste", config, seed, clf.spec)
    natural = registered()["natural"]
    plan = replace(budget_plan, donor_images=donor_images, n_donors_used=len(ids)).with_settings(
        natural.name, budget_plan.settings[natural.name].with_top_k(top_k))
    with folder.preparing("paste"):
        pair = load_pair(clf, s, t, plan.splits(), data=data, seed=seed, progress=progress, bands=bands)
    folder.write_manifest(manifest)
    job = GeneratorJob(pair=pair, classifier=clf, plan=plan, rng=stage_generator(seed, natural.name), donors=ids,
                       donor_data=Path(donor_data) if donor_data else None, library=Path(library) if library else None,
                       seed=seed, progress=progress)
    rows = [dict(c.meta(), files=c.save(out)) for c in natural.run(job)]
    folder.mark_complete(manifest.with_result(result={"candidates": rows, "search": job.notes.get("search"),
                                                      "pair": pair.manifest()}))
    return {"out": str(out), "candidates": rows, "search": job.notes.get("search")}
