"""The typer app, shared options, error handling, and the foundation commands
(models, classes, predict, layers). Other commands live beside this file,
one module each, and register themselves on `app`."""
from __future__ import annotations

import functools
import inspect
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UserError

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
        import torch

        torch.manual_seed(seed)


def emit_json(obj) -> None:
    from ..runio import to_json

    typer.echo(to_json(obj))


@app.command("models")
def models_cmd(
    check: Annotated[Optional[Path], typer.Option(
        "--check", help="Photo folder (ImageNet tree: WordNet-id or class-name folders): top-1 accuracy of each "
                        "zoo model installed (efficientnet_lite0/1/2).")] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List the model specs patchlab can load; with --check DIR, measure the offline zoo on photos."""
    from ..models import available_models

    setup(verbose)
    if check is not None:
        _check_zoo(check, json_out)
        return
    entries = [{"spec": e.name + ("NAME" if e.name.endswith(":") else ""), "description": e.description} for e in available_models()]
    if json_out:
        emit_json(entries)
        return
    for e in entries:
        typer.echo(f"{e['spec']:<22} {e['description']}")


def _check_zoo(folder: Path, json_out: bool) -> None:
    """`models --check DIR`: one line per zoo model (accuracy, photos, seconds, or how to install it)."""
    from ..models import check_models

    result = check_models(folder)
    if json_out:
        emit_json(result)
        return
    unread = result["n_files"] - result["n_photos"]
    typer.echo(f"top-1 accuracy on {result['n_photos']} photos in {folder}"
               + (f" ({unread} unreadable files skipped):" if unread else ":"))
    for r in result["models"]:
        if not r["installed"]:
            typer.echo(f"{r['model']:<20} not installed ({r['install']})")
            continue
        acc = "-" if r["top1"] is None else f"{100 * r['top1']:.1f} %"
        typer.echo(f"{r['model']:<20} {acc:>7}  ({r['correct']}/{r['n']}, {r['input_size']} px, {r['seconds']:.0f} s)")


@app.command("classes")
def classes_cmd(
    query: Annotated[str, typer.Argument(help="Name, WordNet id (n04251144) or index.")],
    model: ModelOpt = "efficientnet_lite0",
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Look up class names, WordNet ids and indices."""
    from ..classes import imagenet_classes

    setup(verbose)
    if model not in ("efficientnet_lite0", "tiny"):
        from ..models import load_classifier

        index = load_classifier(model, "cpu").classes
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


@model_command("predict")
def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top: Annotated[int, typer.Option("--top", min=1, help="How many classes to show.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    *,
    opts: ModelArgs,
) -> None:
    """Classify images: top-k classes and probabilities for each file."""
    from ..pipelines.predict import predict_files

    result = predict_files(paths, top=top, model=opts.model, weights=opts.weights, device=opts.device, batch_size=batch_size)
    if opts.json_out:
        emit_json(result)
        return
    for p in result["predictions"]:
        best = ", ".join(f"{t['name']} {t['prob']:.3f}" for t in p["top"])
        typer.echo(f"{p['path']}: {best}")
    if result["skipped"]:
        typer.echo(f"{len(result['skipped'])} file(s) skipped (see warnings above)", err=True)


@app.command("layers")
def layers_cmd(
    model: ModelOpt = "efficientnet_lite0",
    weights: WeightsOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List a model's hookable layers with their output shapes."""
    from ..models import load_classifier

    setup(verbose)
    clf = load_classifier(model, "cpu", weights=str(weights) if weights else None)
    shapes = clf.layer_shapes()
    if json_out:
        emit_json({"feature_layer": clf.feature_layer, "layers": [{"name": n, "shape": list(s)} for n, s in shapes.items()]})
        return
    for name, shape in shapes.items():
        mark = "  <- default feature layer" if name == clf.feature_layer else ""
        typer.echo(f"{name:<40} {'x'.join(map(str, shape))}{mark}")


def _cli_error_types() -> tuple[type[BaseException], ...]:
    """Usage-error base classes: typer >= 0.20 vendors click, older typer uses click itself."""
    types: list[type[BaseException]] = []
    try:
        from typer.exceptions import TyperException

        types.append(TyperException)
    except ImportError:
        pass
    try:
        import click

        types.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(types)


def _usage_line(exc: BaseException) -> str:
    """One line for a command-line usage error, pointing at the command's --help."""
    msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    msg = " ".join(msg.split())
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"error: {msg}{where}"


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation the machine could not serve: on the CPU or the GPU."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def main() -> None:
    """Console entry point: user errors -> one line + exit 2; internal -> exit 1.

    Command bodies return None: the app runs with standalone_mode=False, where
    click hands back an explicit `typer.Exit(code)` as the return value.
    """
    from . import load_commands

    verbose = "--verbose" in sys.argv or "-v" in sys.argv
    try:
        load_commands()
        rc = app(standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        rc = 130
    except typer.Exit as exc:
        rc = exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except _cli_error_types() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `patchlab`: show help, not an error
            typer.echo(exc.format_message())
            sys.exit(0)
        typer.echo(_usage_line(exc), err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        if _out_of_memory(exc):
            typer.echo("error: these settings need more memory than this machine has; use fewer or smaller "
                       "images, patches or batches", err=True)
            sys.exit(2)
        detail = " ".join(str(exc).split())
        typer.echo(f"internal error: {type(exc).__name__}: {detail} (run with --verbose for the traceback)", err=True)
        sys.exit(1)
    if rc == 130:  # click turns Ctrl-C into Exit(130)
        typer.echo("interrupted; finished work was kept", err=True)
    sys.exit(rc if isinstance(rc, int) and not isinstance(rc, bool) else 0)
