"""`patchlab report RUN_DIR`: rebuild a run's figures and report.html from its results."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..report import rebuild_report, update_index
from .app import JsonOpt, VerboseOpt, app, emit_json, setup


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `patchlab evaluate` or `probe`.")],
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rebuild figures and report.html from results.csv + summary.json (and refresh the reports index)."""
    setup(verbose)
    path = rebuild_report(run_dir)
    index = update_index(Path(run_dir).resolve().parent)
    if json_out:
        emit_json({"report": str(path), "index": str(index) if index else None})
        return
    typer.echo(f"report: {path}")
