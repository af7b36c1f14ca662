"""`patchlab classes QUERY`: class names, WordNet ids and indices."""
from __future__ import annotations

from typing import Annotated

import typer

from ..classes import imagenet_classes
from ..pipelines.common import load_model
from .app import JsonOpt, ModelOpt, VerboseOpt, app, emit_json, setup


@app.command("classes")
def classes_cmd(
    query: Annotated[str, typer.Argument(help="Name, WordNet id (n04251144) or index.")],
    model: ModelOpt = "efficientnet_lite0",
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Look up class names, WordNet ids and indices."""
    setup(verbose)
    if model not in ("efficientnet_lite0", "tiny"):
        index = load_model(model, "cpu").classes
    else:
        index = imagenet_classes()
    found = index.search(query)
    if not found:
        index.resolve(query)  # raises UserError with suggestions
    if json_out:
        emit_json([m.as_dict() for m in found])
        return
    for m in found:
        typer.echo(f"{m.index:>5}  {m.name}" + (f"  {m.wnid}" if m.wnid else ""))
