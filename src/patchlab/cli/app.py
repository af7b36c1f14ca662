"""The typer app and the options commands share. Every command lives in its own module beside
this file and registers itself on `app` when imported (`commands.load_commands`)."""
from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from ..runio import to_json

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Find and measure adversarial patches for PyTorch image classifiers.",
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model spec (see `patchlab models`), e.g. timm:resnet50 or your own my_net.py:build.")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Weights file (.pth state dict or .safetensors).")]
LabelsOpt = Annotated[Optional[Path], typer.Option("--labels", help="Labels file naming the model's outputs: one name per line, or a CSV with index,name columns.")]
LayerOpt = Annotated[Optional[str], typer.Option("--layer", help="Feature layer (see `patchlab layers`); default: the model's last spatial map.")]
InputSizeOpt = Annotated[Optional[int], typer.Option("--input-size", min=16, help="Input size in pixels (default: the model's).")]
MeanOpt = Annotated[Optional[tuple[float, float, float]], typer.Option("--mean", help="Normalisation mean R G B (or R,G,B) of [0,1] pixels (default: the model's).")]
StdOpt = Annotated[Optional[tuple[float, float, float]], typer.Option("--std", help="Normalisation std R G B (or R,G,B) (default: the model's).")]
CropPctOpt = Annotated[Optional[float], typer.Option("--crop-pct", help="Eval centre crop: photos resized to input-size / crop-pct, then cropped (default: the model's).")]
InterpolationOpt = Annotated[Optional[str], typer.Option("--interpolation", help="Photo resize filter: bilinear | bicubic | nearest (default: the model's).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (auto = CUDA when present).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More logging; tracebacks on internal errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
LibraryOpt = Annotated[Optional[Path], typer.Option("--library", help="Any photo folder searched for natural patches (whole photos and crops).")]
DonorDataOpt = Annotated[Optional[Path], typer.Option("--donor-data", help="Photos of donor classes to cut natural patches from.")]
SourceBandOpt = Annotated[Optional[tuple[float, float]], typer.Option(
    "--source-band", help="Count only sources with p(source) in LO HI, e.g. 0.85 1 for images the model is sure of "
                          "(photos: measured; synthesized: rendered so). Default: every photo; synthesized sources "
                          "near the boundary (p(source) 0.5-0.9, p(target) 0.02-0.15).")]
TargetBandOpt = Annotated[Optional[tuple[float, float]], typer.Option(
    "--target-band", help="And with p(target) in LO HI, e.g. 0 0.01.")]


@dataclass(frozen=True)
class ModelArgs:
    """The options every model command shares (see `model_command`); `layer` only where the command
    reads a layer (None elsewhere)."""

    model: str
    weights: Path | None
    labels: Path | None
    input_size: int | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    crop_pct: float | None
    interpolation: str | None
    device: str
    json_out: bool
    verbose: bool
    seed: int = 0
    layer: str | None = None

    def model_options(self) -> dict[str, Any]:
        """The labels file and preprocessing overrides, as the pipeline functions take them
        (`patchlab.pipelines.common.ModelOptions`)."""
        return {"labels": self.labels, "input_size": self.input_size, "mean": self.mean, "std": self.std,
                "crop_pct": self.crop_pct, "interpolation": self.interpolation}

    def model_kwargs(self) -> dict[str, Any]:
        """model, weights, device and the model options (with the layer where the command reads one)."""
        layer = {"layer": self.layer} if self.layer is not None else {}
        return {"model": self.model, "weights": self.weights, "device": self.device, **layer, **self.model_options()}


def _parameters(*specs: tuple[str, Any, Any]) -> list[inspect.Parameter]:
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            for name, annotation, default in specs]


_SHARED = _parameters(
    ("model", ModelOpt, "efficientnet_lite0"), ("weights", WeightsOpt, None), ("labels", LabelsOpt, None),
    ("input_size", InputSizeOpt, None), ("mean", MeanOpt, None), ("std", StdOpt, None), ("crop_pct", CropPctOpt, None),
    ("interpolation", InterpolationOpt, None), ("device", DeviceOpt, "auto"), ("json_out", JsonOpt, False),
    ("verbose", VerboseOpt, False),
)
_SEED = _parameters(("seed", SeedOpt, 0))
_LAYER = _parameters(("layer", LayerOpt, None))


def model_command(name: str, *, layer: bool = False, seed: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command that takes --model, --weights, --labels, the preprocessing overrides
    (--input-size, --mean, --std, --crop-pct, --interpolation), --device, --json, --verbose, with
    `seed` --seed and with `layer` --layer. The command's own options come first; the shared ones
    reach it as one `opts: ModelArgs` argument, after `setup(verbose, seed)` has run."""
    shared = _SHARED + (_SEED if seed else []) + (_LAYER if layer else [])

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "opts"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            opts = ModelArgs(**{p.name: kwargs.pop(p.name) for p in shared})
            setup(opts.verbose, opts.seed if seed else None)
            fn(opts=opts, **kwargs)

        params = own + shared
        command.__signature__ = inspect.Signature(params)  # what typer reads the options from
        command.__annotations__ = {p.name: p.annotation for p in params}
        app.command(name)(command)
        return command

    return register


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def setup(verbose: bool = False, seed: int | None = None) -> None:
    """Logging to stderr, and a global seed for libraries we do not pass generators to."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True
    )
    for noisy in ("PIL", "matplotlib", "numba", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if seed is not None:
        torch.manual_seed(seed)


TRIPLE_OPTIONS = ("--mean", "--std")  # three numbers: R G B, or one R,G,B value


def split_triples(args: list[str]) -> list[str]:
    """Command-line arguments with a comma-separated `--mean R,G,B` (or `--std=R,G,B`) given as the
    three values the option takes; `--mean R G B` is left as it is."""
    out: list[str] = []
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        if name in TRIPLE_OPTIONS and not eq and i + 1 < len(args) and "," in args[i + 1]:
            eq, value, i = "=", args[i + 1], i + 1
        if name in TRIPLE_OPTIONS and eq:
            out += [name, *value.replace(",", " ").split()]
        else:
            out.append(args[i])
        i += 1
    return out


def emit_json(obj) -> None:
    typer.echo(to_json(obj))
