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

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model spec (see `patchlab models`).")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Weights file (.pth state dict or .safetensors).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (auto = CUDA when present).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More logging; tracebacks on internal errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
LibraryOpt = Annotated[Optional[Path], typer.Option("--library", help="Any photo folder searched for natural patches (whole photos and crops).")]
DonorDataOpt = Annotated[Optional[Path], typer.Option("--donor-data", help="Photos of donor classes to cut natural patches from.")]


@dataclass(frozen=True)
class ModelArgs:
    """The options every model command shares (see `model_command`)."""

    model: str
    weights: Path | None
    device: str
    seed: int
    json_out: bool
    verbose: bool


_SHARED = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, annotation, default in (
        ("model", ModelOpt, "efficientnet_lite0"), ("weights", WeightsOpt, None), ("device", DeviceOpt, "auto"),
        ("seed", SeedOpt, 0), ("json_out", JsonOpt, False), ("verbose", VerboseOpt, False),
    )
]


def model_command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command that takes --model, --weights, --device, --seed, --json and
    --verbose. The command's own options come first; the shared ones reach it as one
    `opts: ModelArgs` argument, after `setup(verbose, seed)` has run."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "opts"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            opts = ModelArgs(**{p.name: kwargs.pop(p.name) for p in _SHARED})
            setup(opts.verbose, opts.seed)
            fn(opts=opts, **kwargs)

        params = own + _SHARED
        command.__signature__ = inspect.Signature(params)  # what typer reads the options from
        command.__annotations__ = {p.name: p.annotation for p in params}
        app.command(name)(command)
        return command

    return register


def setup(verbose: bool = False, seed: int | None = None) -> None:
    """Logging to stderr, and a global seed for libraries we do not pass generators to."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True
    )
    for noisy in ("PIL", "matplotlib", "numba", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if seed is not None:
        torch.manual_seed(seed)


def emit_json(obj) -> None:
    typer.echo(to_json(obj))
