"""`patchlab layers`: a model's hookable layers with their output shapes."""
from __future__ import annotations

import typer

from ..pipelines.common import load_model
from .app import JsonOpt, ModelOpt, VerboseOpt, WeightsOpt, app, emit_json, setup


@app.command("layers")
def layers_cmd(
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List a model's hookable layers with their output shapes."""
    setup(verbose)
    clf = load_model(model, "cpu", weights)
    shapes = clf.layer_shapes()
    if json_out:
        emit_json({"feature_layer": clf.feature_layer, "layers": [{"name": n, "shape": list(s)} for n, s in shapes.items()]})
        return
    for name, shape in shapes.items():
        mark = "  <- default feature layer" if name == clf.feature_layer else ""
        typer.echo(f"{name:<40} {'x'.join(map(str, shape))}{mark}")
