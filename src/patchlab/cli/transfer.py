"""`patchlab transfer RUN_DIR --models A B ...`: a finished run's patches re-measured on other
models (transferability as in ImageNet-Patch, Pintor et al. 2022)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..pipelines.transfer import transfer
from ..runfolder import Rate
from .app import DeviceOpt, JsonOpt, LabelsOpt, VerboseOpt, app, emit_json, setup
from .format import rate_text


def _cell(row: dict, prefix: str = "") -> str:
    """A table row's {prefix}rate with its interval, as `probe` prints rates."""
    return rate_text(Rate(row[f"{prefix}rate"], [row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]]))


def print_transfer(result: dict) -> None:
    """Candidates x models: the primary-protocol confirmation rate with its Wilson interval, the run's own first."""
    models = [m["model"] for m in result["models"]]
    by = {(r["candidate"], r["model"]): r for r in result["table"]}
    names = list(dict.fromkeys(r["candidate"] for r in result["table"]))
    cols = [f"{result['source_model']} (run)"] + models
    width = [max(15, min(len(c), 32)) for c in cols]
    typer.echo(f"\n{result['source']['name']} -> {result['target']['name']}: {result['primary_protocol']} protocol, "
               f"confirmation images ({result['data']['kind']}); patches made on {result['source_model']}")
    typer.echo(f"{'candidate':<38} {'kind':<9} " + " ".join(f"{c[:w]:>{w}}" for c, w in zip(cols, width)))
    for name in names:
        first = by[(name, models[0])]
        cells = [_cell(first, "source_")] + [_cell(by[(name, m)]) for m in models]
        typer.echo(f"{name[:38]:<38} {first['kind']:<9} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, width)))
    for m in result["models"]:
        if m.get("error"):
            typer.echo(f"{m['model']}: {m['error']}")
    if result["data"].get("note"):
        typer.echo(f"note: images {result['data']['note']}")
    for note in result["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(f"report: {result['files']['html']}")


@app.command("transfer")
def transfer_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder of `patchlab probe` (or `evaluate`).")],
    models: Annotated[list[str], typer.Option(
        "--models", help="Models to transfer to: specs (see `patchlab models`), or SPEC=WEIGHTS_FILE for any "
                         "timm/torchvision architecture with a local .pth/.safetensors file, e.g. "
                         "--models efficientnet_lite1 efficientnet_lite2 torchvision:resnet18=r18.pth.")],
    extra: Annotated[Optional[list[str]], typer.Argument(hidden=True, help="More values for --models.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="The run's photo folder, when it has moved.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default RUN_DIR/transfer).")] = None,
    labels: LabelsOpt = None,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Added to the run's seed for random placements "
                                                     "(0: the run's own draws).")] = 0,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Re-measure every patch of a finished run on other models, with the run's protocols, sizes,
    placements and images; write transfer.csv/.json, a heatmap and transfer.html. RUN_DIR comes
    first; --models takes several values. The source model, its weights, labels file and preprocessing
    come from the run; --labels names the other models' outputs (default: the run's labels file)."""
    setup(verbose, seed)
    result = transfer(run_dir, models=list(models) + list(extra or []), device=device, seed=seed, data=data, out=out,
                      progress=not json_out and sys.stderr.isatty(), labels=labels)
    if json_out:
        emit_json(result)
    else:
        print_transfer(result)
