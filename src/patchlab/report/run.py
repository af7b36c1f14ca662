"""Writing an evaluated run folder, and remaking its figures and report.html from the files.

Layout of a run directory (`patchlab.runfolder`):
  manifest.json      config, seed, model, versions
  results.csv        one row per candidate x size x placement x protocol
  results_defended.csv  the same through each defended model (a `defense` column), when defences were given
  results_area.csv   each kind's chosen candidate on the area grid, bare and per defence (area50), when measured
  summary.json       the parseable summary (`report.summary`)
  patches/NAME.png   every candidate and control (+ .pt, .json)
  examples/*.png     before/after images
  figures/*.png      success_vs_area, placement_heatmap, patch_gallery, examples
  report.html        everything above in one offline page
  COMPLETE           written last
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError
from ..evaluation.core import Evaluation
from ..runfolder import Manifest, RunConfig, RunFolder, Summary
from ..runio import atomic_write_bytes, atomic_write_text, save_png
from . import figures as figs
from .html import run_page
from .summary import build_summary

DEFENDED_RESULTS = "results_defended.csv"
AREA_RESULTS = "results_area.csv"


def write_run(run_dir: str | Path, evaluation: Evaluation, *, model: str | None, seed: int | None = None,
              manifest: Manifest | None = None, data: dict[str, Any] | None = None, donors: list[Any] = (),
              timings: dict[str, Any] | None = None, generator_notes: dict[str, Any] | None = None,
              ) -> tuple[Summary, Path]:
    """Write a whole run folder atomically, file by file; COMPLETE goes last.

    manifest: the command's (an `evaluate` manifest of the evaluation's config when None);
    data, donors, timings, generator_notes: see `build_summary`. Returns (summary, report.html path)."""
    folder = RunFolder(run_dir)
    manifest = manifest or Manifest.new("evaluate", RunConfig.from_dict(evaluation.config), seed or 0, str(model))
    folder.start(manifest)
    summary = build_summary(evaluation, model=model, seed=seed, data=data, donors=donors, timings=timings,
                            generator_notes=generator_notes)
    for cand in list(evaluation.candidates) + list(evaluation.controls):
        cand.save(folder.path / "patches")
    examples = []
    for i, ex in enumerate(evaluation.examples):
        files = {}
        for key in ("before", "after"):
            files[f"{key}_file"] = f"examples/{i:02d}-{key}.png"
            save_png(folder.path / files[f"{key}_file"], ex[key])
        examples.append(dict({k: v for k, v in ex.items() if k not in ("before", "after")}, **files))
    summary = replace(summary, examples=examples)
    folder.write_results(evaluation.results)
    for name, table in ((DEFENDED_RESULTS, evaluation.defended_results), (AREA_RESULTS, evaluation.area_results)):
        if not table.empty:
            atomic_write_text(folder.path / name, table.to_csv(index=False))
    folder.write_summary(summary)  # complete=True is only believed with COMPLETE beside it
    html_path = rebuild_report(folder.path)
    folder.mark_complete(manifest)
    return summary, html_path


def load_run(run_dir: str | Path) -> tuple[Summary, pd.DataFrame]:
    """A run folder's summary and results table; UserError when either cannot be read."""
    folder = RunFolder(run_dir)
    return folder.summary(), folder.results()


def rebuild_report(run_dir: str | Path) -> Path:
    """Remake figures/*.png and report.html from results.csv, summary.json and
    the saved patch and example PNGs. Returns the path of report.html."""
    run_dir = Path(run_dir)
    summary, results = load_run(run_dir)
    if not summary.target.name:
        raise UserError(_other_layout(run_dir, "the summary names no target class"))
    try:
        return _rebuild(run_dir, summary, results)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise UserError(_other_layout(run_dir, f"{type(exc).__name__}: {exc}")) from None


def _other_layout(run_dir: Path, why: str) -> str:
    return f"the run in {run_dir} does not have the layout this version of patchlab writes ({why}); re-run the command that made it"


def _rebuild(run_dir: Path, summary: Summary, results: pd.DataFrame) -> Path:
    primary = summary.primary_protocol

    def by_rate(rows: list) -> list[str]:
        return [e.name for e in sorted(rows, key=lambda e: -(e.confirmation_rate(primary) or 0))]

    attacks, controls = by_rate(summary.candidates), by_rate(summary.controls)
    order = attacks[:5] + controls[:1] + [e.name for e in summary.references]
    made = {
        "success_vs_area": figs.success_vs_area(results),
        "placement_heatmap": figs.placement_heatmap(results, order),
        "patch_gallery": figs.patch_gallery(summary.entries, run_dir),
        "examples": figs.before_after(summary.examples, run_dir),
    }
    for key, png in made.items():
        if png:
            atomic_write_bytes(run_dir / "figures" / f"{key}.png", png)
    thumbs, views = {}, {}
    for e in summary.entries:
        p = run_dir / (e.patch_file or "")
        if e.patch_file and p.is_file():
            thumbs[e.name] = p.read_bytes()
            view = p.with_name(f"{e.name}.source.png")
            if view.is_file():
                views[e.name] = view.read_bytes()
    return atomic_write_text(run_dir / "report.html", run_page(summary, made, thumbs, views))
