"""`patchlab classes QUERY`: class names, WordNet ids and indices of a model (its labels file's names
with --labels)."""
from __future__ import annotations

from typing import Annotated

import typer

from ..classes import imagenet_classes
from ..pipelines.common import load_model
from .app import ModelArgs, emit_json, model_command

IMAGENET_SPECS = ("efficientnet_lite0", "tiny")  # ImageNet's classes, known without loading the model


@model_command("classes", seed=False)
def classes_cmd(
    query: Annotated[str, typer.Argument(help="Name, WordNet id (n04251144) or index.")],
    *,
    opts: ModelArgs,
) -> None:
    """Look up class names, WordNet ids and indices (of your labels file with --labels)."""
    if opts.model in IMAGENET_SPECS and opts.labels is None and opts.weights is None:
        index = imagenet_classes()
    else:
        index = load_model(**opts.model_kwargs()).classes
    found = index.search(query)
    if not found:
        index.resolve(query)  # raises UserError with suggestions
    if opts.json_out:
        emit_json([m.as_dict() for m in found])
        return
    for m in found:
        typer.echo(f"{m.index:>5}  {m.name}" + (f"  {m.wnid}" if m.wnid else ""))
