"""`patchlab layers`: a model's hookable layers with their output shapes, marking the layer each use
reads (`Classifier.layer_choices`: the atlas, the library index, the pair direction)."""
from __future__ import annotations

import typer

from ..errors import UserError
from ..models import Classifier
from ..pipelines.common import check_direction_layer, load_model
from .app import ModelArgs, emit_json, model_command

USES = {  # which commands read each layer choice
    "atlas": "the atlas command; probe and audit rank donors there",
    "library index": "the --library photo index of probe, paste and audit",
    "pair direction": "feature and natural patches of probe, paste and audit",
}


def _direction_note(clf: Classifier) -> str | None:
    """Why probe, paste and audit would refuse the feature layer (None when they take it)."""
    try:
        check_direction_layer(clf)
    except UserError as exc:
        return f"probe, paste and audit refuse this layer: {exc}"
    return None


@model_command("layers", layer=True, seed=False)
def layers_cmd(*, opts: ModelArgs) -> None:
    """List a model's hookable layers with their output shapes, marking the layer each use reads
    (change it with --layer NAME on probe, atlas, paste and audit)."""
    clf = load_model(**opts.model_kwargs())
    shapes = clf.layer_shapes()
    try:
        choices = clf.layer_choices()
    except UserError as exc:  # no spatial map: the model can still be probed with synthesized patches
        choices, why = {}, str(exc)
    else:
        why = _direction_note(clf)
    marks = {name: [use for use, layer in choices.items() if layer == name] for name in shapes}
    if opts.json_out:
        emit_json({"feature_layer": choices.get("library index"), "choices": choices, "note": why,
                   "layers": [{"name": n, "shape": list(s), "chosen_for": marks[n]} for n, s in shapes.items()]})
        return
    for name, shape in shapes.items():
        mark = f"  <- {', '.join(marks[name])}" if marks[name] else ""
        typer.echo(f"{name:<40} {'x'.join(map(str, shape))}{mark}")
    for use, layer in choices.items():
        typer.echo(f"{use + ':':<15} {layer:<24} {USES[use]}")
    if why:
        typer.echo(f"note: {why}")
