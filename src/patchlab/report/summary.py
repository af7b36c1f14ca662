"""summary.json of an evaluation (the `Summary` record of `patchlab.runfolder`, schema SUMMARY_SCHEMA).

source, target, model, data {kind, how, rule, seed, counts {train, selection,
confirmation, target, *_denominator}, files {split: [...]}, target_files, skipped},
selection and confirmation {n_images, denominator}, donors, protocols,
primary_protocol, config, candidates / controls (null) / references [{name, kind,
reads_as, donor, provenance, static|dynamic|random: confirmation {rate, ci, n, size,
placement, ...}, selection {protocol: the same, counted on selection},
lift_over_best_control {value, ci, control, protocol}, lift_by_protocol,
patch_file}], best_candidate and best_disguised_candidate {name, kind, protocol,
rate, ci, n, size, selection_rate, selection_ci, reads_as, donor}, reference (the
target photo's headline), examples, generator_notes, timings, versions, seed, complete.

Schema patchlab.summary/3 (was /2) adds: per entry `non_printability` (Sharif et al.
2016) and, with defences, `defended` {defence: {selection: {...}, protocol: rate}};
rates under the `physical` protocol when measured; top-level `defenses` (each
defence's cost: clean accuracy and PatchCleanser's certified share on the source
images), `survives` (per entry: digital, physical and defended rates side by side)
and `area50` (the smallest patch area reaching 50 % success per kind and defence).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..evaluation.core import Evaluation
from ..patches.candidate import NULL_KIND, REFERENCE_KIND, is_generated
from ..protocols import PHYSICAL
from ..runfolder import SUMMARY_SCHEMA, ClassRef, DataInfo, Entry, Headline, Rate, SplitCount, Summary
from ..runio import versions


def data_info(evaluation: Evaluation, data: dict[str, Any] | None) -> DataInfo:
    """The run's data block (PairData.manifest(), or any {kind, how, ...}) with the evaluation's counts per split."""
    info = DataInfo.from_dict(data)
    counts = dict(info.counts)
    for split, measured in evaluation.splits.items():
        counts[split] = measured["n_images"]
        counts[f"{split}_denominator"] = measured["denominator"]
    counts.setdefault("train", 0)
    files = info.files or {split: measured["files"][:2000] for split, measured in evaluation.splits.items()}
    return replace(info, counts=counts, files=files)


def _headline(entry: dict[str, Any] | None, primary: str) -> Headline | None:
    return None if entry is None else Headline.of(Entry.from_dict(entry), primary)


def _brief(r: Rate | None) -> dict[str, Any] | None:
    return None if r is None else {"rate": r.rate, "ci": r.ci, "n": r.n, "size": r.size}


def survival(entries: list[Entry], primary: str, defenses: list[str]) -> list[dict[str, Any]]:
    """The "does it survive?" view, one row per entry: name, kind, protocol (the primary), digital (its
    primary rate), physical (its physical rate, None when not measured), defended {defence: primary rate
    through that defence}, physical_defended (the same under the physical protocol, when measured), and
    non_printability; each rate {rate, ci, n, size} counted on confirmation, or None."""
    rows = []
    for e in entries:
        def under(spec: str, protocol: str) -> dict[str, Any] | None:
            d = e.defended.get(spec)
            return None if d is None else _brief(d.rate(protocol))

        row = {"name": e.name, "kind": e.kind, "protocol": primary, "digital": _brief(e.rate(primary)),
               "physical": _brief(e.rate(PHYSICAL)), "defended": {spec: under(spec, primary) for spec in defenses},
               "non_printability": e.non_printability}
        if e.rate(PHYSICAL) is not None:
            row["physical_defended"] = {spec: under(spec, PHYSICAL) for spec in defenses}
        rows.append(row)
    return rows


def build_summary(evaluation: Evaluation, *, model: str | None, seed: int | None = None,
                  data: dict[str, Any] | None = None, donors: list[Any] = (), timings: dict[str, Any] | None = None,
                  generator_notes: dict[str, Any] | None = None) -> Summary:
    """The summary of `evaluation` (see the module docstring). data: PairData.manifest() or a
    {kind, how, counts, files, skipped} block; timings: added to the evaluation's own."""
    ev = evaluation
    primary = ev.primary_protocol
    entries = [Entry.from_dict(dict(s, patch_file=f"patches/{s['name']}.png")) for s in ev.summary]
    refs = [e for e in entries if e.kind == REFERENCE_KIND]
    return Summary(
        schema=SUMMARY_SCHEMA, source=ClassRef(ev.source, ev.source_name), target=ClassRef(ev.target, ev.target_name),
        model=model, data=data_info(ev, data), selection=SplitCount.from_dict(ev.splits.get("selection")),
        confirmation=SplitCount.from_dict(ev.splits.get("confirmation")), donors=list(donors),
        protocols=list(ev.config["protocols"]), primary_protocol=primary, config=ev.config,
        candidates=[e for e in entries if is_generated(e.kind)], controls=[e for e in entries if e.kind == NULL_KIND],
        references=refs, best_candidate=_headline(ev.best(), primary),
        best_disguised_candidate=_headline(ev.best(disguised=True), primary),
        reference=Headline.of(refs[0], primary) if refs and refs[0].rate(primary) else None,
        generator_notes=dict(generator_notes or {}), timings=dict(ev.timings, **(timings or {})), versions=versions(),
        seed=seed, complete=True, defenses=list(ev.defenses),
        survives=survival(entries, primary, [d["defense"] for d in ev.defenses]), area50=list(ev.area50),
    )
