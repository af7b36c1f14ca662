"""`patchlab predict`: the top-k classes of image files (`patchlab.pipelines.predict`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..pipelines.predict import predict_files
from .app import ModelArgs, emit_json, model_command


@model_command("predict", seed=False)
def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top: Annotated[int, typer.Option("--top", min=1, help="How many classes to show.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    *,
    opts: ModelArgs,
) -> None:
    """Classify images: top-k classes and probabilities for each file."""
    result = predict_files(paths, top=top, **opts.model_kwargs(), batch_size=batch_size)
    if opts.json_out:
        emit_json(result)
        return
    for p in result["predictions"]:
        best = ", ".join(f"{t['name']} {t['prob']:.3f}" for t in p["top"])
        typer.echo(f"{p['path']}: {best}")
    if result["skipped"]:
        typer.echo(f"{len(result['skipped'])} file(s) skipped (see warnings above)", err=True)
