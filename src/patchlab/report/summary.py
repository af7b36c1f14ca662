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
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..evaluation.core import Evaluation
from ..patches.candidate import NULL_KIND, REFERENCE_KIND, is_generated
from ..runfolder import SUMMARY_SCHEMA, ClassRef, DataInfo, Entry, Headline, SplitCount, Summary
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
        seed=seed, complete=True,
    )
