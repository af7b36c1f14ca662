"""Run directories of an evaluation: results.csv, summary.json, patches,
examples, seaborn figures and a self-contained report.html, plus
reports/index.html listing runs.

Layout of a run directory:
  manifest.json      config, seed, model, versions (runio)
  results.csv        one row per candidate x size x placement x protocol
  summary.json       the parseable summary (schema: `build_summary`)
  patches/NAME.png   every candidate and control (+ .pt, .json)
  examples/*.png     before/after images
  figures/*.png      success_vs_area, placement_heatmap, patch_gallery, examples
  report.html        everything above in one offline page
  COMPLETE           written last (runio.mark_complete)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError, first_line
from ..runio import (
    COMPLETE_MARKER, atomic_write_bytes, atomic_write_json, atomic_write_text, check_run_dir, is_complete,
    mark_complete, new_manifest, save_png, versions,
)
from ..patches.candidate import NULL_KIND, REFERENCE_KIND, is_generated
from . import figures as figs
from .html import index_page, run_page

log = logging.getLogger("patchlab")
SCHEMA = "patchlab.summary/2"
FIGURES = ("success_vs_area", "placement_heatmap", "patch_gallery", "examples")


def start_run(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Create (or reuse: the same command's) run folder, drop any old COMPLETE marker, write the manifest."""
    run_dir = check_run_dir(run_dir, manifest["command"])
    (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    atomic_write_json(run_dir / "manifest.json", dict(manifest, complete=False))
    return run_dir


def _class(index: int | None, name: str) -> dict[str, Any]:
    return {"index": index, "name": name}


def _headline(s: dict | None, primary: str) -> dict | None:
    """The headline of a chosen candidate: its confirmation count, the selection figure beside it."""
    if s is None:
        return None
    r, sel = s[primary], s["selection"][primary]
    return {"name": s["name"], "kind": s["kind"], "protocol": primary, "rate": r["rate"], "ci": r["ci"], "n": r["n"],
            "size": r.get("size"), "selection_rate": sel["rate"], "selection_ci": sel["ci"],
            "reads_as": (s.get("reads_as") or {}).get("name"), "donor": s.get("donor")}


def _data_block(evaluation, context: dict[str, Any]) -> dict[str, Any]:
    data = dict(context.get("pair") or context.get("data") or {})
    data.setdefault("kind", "real")
    data.setdefault("how", "")
    counts = dict(data.get("counts") or {})
    for split, info in evaluation.splits.items():
        counts[split] = info["n_images"]
        counts[f"{split}_denominator"] = info["denominator"]
    counts.setdefault("train", 0)
    data["counts"] = counts
    data.setdefault("files", {split: info["files"][:2000] for split, info in evaluation.splits.items()})
    data.setdefault("skipped", [])
    return data


def build_summary(evaluation, context: dict[str, Any]) -> dict[str, Any]:
    """summary.json (schema SCHEMA): source, target, model, data {kind, how, rule,
    counts {train, selection, confirmation, target, *_denominator}, files {split: [...]},
    skipped}, selection and confirmation {n_images, denominator}, donors, protocols,
    primary_protocol, config, candidates / controls (null) / references [{name, kind,
    reads_as, donor, static|dynamic|random: confirmation {rate, ci, n, size, placement},
    selection {protocol: same, counted on selection}, lift_over_best_control {value, ci,
    control, protocol}, lift_by_protocol, patch_file}], best_candidate and
    best_disguised_candidate {name, kind, protocol, rate, ci, n, size, selection_rate,
    selection_ci, reads_as, donor}, reference (the target photo's headline), examples,
    generator_notes, timings, versions, seed, complete."""
    ev = evaluation
    primary = ev.primary_protocol
    entries = [dict(s, patch_file=f"patches/{s['name']}.png") for s in ev.summary]
    refs = [e for e in entries if e["kind"] == REFERENCE_KIND]
    return {
        "schema": SCHEMA,
        "source": _class(ev.source, ev.source_name), "target": _class(ev.target, ev.target_name),
        "model": context.get("model"), "data": _data_block(ev, context),
        "selection": {k: v for k, v in ev.splits.get("selection", {}).items() if k != "files"},
        "confirmation": {k: v for k, v in ev.splits.get("confirmation", {}).items() if k != "files"},
        "donors": list(context.get("donors") or []),
        "protocols": list(ev.config["protocols"]), "primary_protocol": primary, "config": ev.config,
        "candidates": [e for e in entries if is_generated(e["kind"])],
        "controls": [e for e in entries if e["kind"] == NULL_KIND], "references": refs,
        "best_candidate": _headline(ev.best(), primary), "best_disguised_candidate": _headline(ev.best(disguised=True), primary),
        "reference": _headline(refs[0], primary) if refs and refs[0].get(primary) else None,
        "examples": [], "generator_notes": context.get("generator_notes") or {},
        "timings": dict(ev.timings, **(context.get("timings") or {})),
        "versions": versions(), "seed": context.get("seed"), "complete": True,
    }


def write_run(run_dir: str | Path, evaluation, context: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """Write a whole run folder atomically, file by file; COMPLETE goes last.

    context: model, pair (PairData.manifest()) or data {kind, how, counts, files,
    skipped}, donors, seed, timings, generator_notes, manifest (from
    runio.new_manifest; made here when absent). Returns (summary, report.html path)."""
    context = dict(context or {})
    run_dir = Path(run_dir)
    manifest = context.get("manifest") or new_manifest(
        "evaluate", evaluation.config, context.get("seed") or 0, str(context.get("model")))
    start_run(run_dir, manifest)
    summary = build_summary(evaluation, context)
    for cand in list(evaluation.candidates) + list(evaluation.controls):
        cand.save(run_dir / "patches")
    for i, ex in enumerate(evaluation.examples):
        files = {}
        for key in ("before", "after"):
            files[f"{key}_file"] = f"examples/{i:02d}-{key}.png"
            save_png(run_dir / files[f"{key}_file"], ex[key])
        summary["examples"].append(dict({k: v for k, v in ex.items() if k not in ("before", "after")}, **files))
    atomic_write_text(run_dir / "results.csv", evaluation.results.to_csv(index=False))
    atomic_write_json(run_dir / "summary.json", summary)  # complete=True is only believed with COMPLETE beside it
    html_path = rebuild_report(run_dir)
    mark_complete(run_dir, manifest)
    return summary, html_path


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        results = pd.read_csv(run_dir / "results.csv")
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{run_dir} is not a patchlab run folder (no summary.json / results.csv)") from None
    except OSError as exc:
        raise UserError(f"cannot read the run in {run_dir}: {exc.strerror or exc}") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read the run in {run_dir}: {first_line(exc)}") from None
    if not isinstance(summary, dict):
        raise UserError(f"{run_dir}/summary.json is not a patchlab summary (a JSON object)")
    return summary, results


def rebuild_report(run_dir: str | Path) -> Path:
    """Remake figures/*.png and report.html from results.csv, summary.json and
    the saved patch and example PNGs. Returns the path of report.html."""
    run_dir = Path(run_dir)
    summary, results = load_run(run_dir)
    try:
        return _rebuild(run_dir, summary, results)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise UserError(f"the run in {run_dir} does not have the layout this version of patchlab writes "
                        f"({type(exc).__name__}: {exc}); re-run the command that made it") from None


def _rebuild(run_dir: Path, summary: dict[str, Any], results: pd.DataFrame) -> Path:
    entries = summary.get("candidates", []) + summary.get("controls", []) + summary.get("references", [])
    primary = summary.get("primary_protocol")
    def by_rate(rows: list[dict]) -> list[str]:
        return [e["name"] for e in sorted(rows, key=lambda e: -((e.get(primary) or {}).get("rate") or 0))]

    attacks, controls = by_rate(summary.get("candidates", [])), by_rate(summary.get("controls", []))
    order = attacks[:5] + controls[:1] + [e["name"] for e in summary.get("references", [])]
    made = {
        "success_vs_area": figs.success_vs_area(results),
        "placement_heatmap": figs.placement_heatmap(results, order),
        "patch_gallery": figs.patch_gallery(entries, run_dir),
        "examples": figs.before_after(summary.get("examples", []), run_dir),
    }
    for key, png in made.items():
        if png:
            atomic_write_bytes(run_dir / "figures" / f"{key}.png", png)
    thumbs, views = {}, {}
    for e in entries:
        p = run_dir / e.get("patch_file", "")
        if e.get("patch_file") and p.is_file():
            thumbs[e["name"]] = p.read_bytes()
            view = p.with_name(f"{e['name']}.source.png")
            if view.is_file():
                views[e["name"]] = view.read_bytes()
    return atomic_write_text(run_dir / "report.html", run_page(summary, made, thumbs, views))


def _field(summary: dict[str, Any], key: str) -> dict[str, Any]:
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def update_index(reports_root: str | Path) -> Path | None:
    """Write reports_root/index.html listing every run folder in it (newest first). Folders
    without a readable summary are left out; when the index cannot be written, a warning
    says so and None is returned (the runs themselves are already written)."""
    root = Path(reports_root)
    rows = []
    for d in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []:
        try:
            s = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(s, dict):
            continue
        best = _field(s, "best_candidate")
        rows.append({
            "dir": d.name, "source": _field(s, "source").get("name"), "target": _field(s, "target").get("name"),
            "model": s.get("model"), "best": best.get("name"), "complete": is_complete(d),
            "rate": best.get("rate") if isinstance(best.get("rate"), (int, float)) else None,
        })
    try:
        return atomic_write_text(root / "index.html", index_page(rows))
    except OSError as exc:
        log.warning("could not update the reports index in %s: %s", root, exc.strerror or exc)
        return None
