"""Model specs naming your own code: `FILE.py:FUNCTION` or `package.module:FUNCTION`.

The function (called with the spec's model options as keyword arguments) returns an nn.Module that maps
normalised images to logits, or a ready Classifier (see `patchlab.models.wrap`). As with torch.hub, this
RUNS the file or imports the module: only name code you trust. While the file runs and the function is
called, the file's folder (for a module: the current folder) is first on sys.path, so it can import
modules next to it.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ..errors import UserError, first_line
from ..labels import placeholder_warning_deferred
from ..weights import load_state_dict_file, load_strict
from .classifier import Classifier
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .wrap import classifier_for

CODE_SPEC = "FILE.py:FUNCTION"
CODE_DESCRIPTION = ("your own code: a function in FILE.py (or package.module:FUNCTION) returning an nn.Module "
                    "or Classifier; runs the file, as torch.hub does")
_SPEC = re.compile(r"^(?P<source>[^:]+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)$")
DEFAULT_PREPROCESSING = Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, 0.875, "bicubic")


def is_code_spec(spec: str) -> bool:
    """True for `FILE.py:FUNCTION` and `package.module:FUNCTION`."""
    return _SPEC.match(spec) is not None


@contextmanager
def _first_on_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))


def _run_file(path: Path) -> ModuleType:
    """Execute a Python file as a module of its own; UserError when it is missing or fails."""
    if not path.is_file():
        raise UserError(f"model file {path} not found")
    stem, digest = re.sub(r"\W", "_", path.stem), hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"patchlab_user_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"model file {path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: report any failure as one line
        del sys.modules[name]
        raise UserError(f"running model file {path} failed: {type(exc).__name__}: {first_line(exc)}") from None
    return module


def _import(name: str, spec: str) -> ModuleType:
    """Import `name`; UserError when it is not there or fails."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise UserError(f"unknown model spec {spec!r}: no Python module {exc.name!r} (your own code is "
                            "FILE.py:FUNCTION or package.module:FUNCTION; see `patchlab models`)") from None
        raise UserError(f"importing {name} failed: ModuleNotFoundError: {first_line(exc)}") from None
    except Exception as exc:  # the user's code: report any failure as one line
        raise UserError(f"importing {name} failed: {type(exc).__name__}: {first_line(exc)}") from None


def _function(module: ModuleType, name: str, where: str) -> Callable[..., Any]:
    """The callable `name` in `module`; UserError with close names when it is missing."""
    fn = getattr(module, name, None)
    if callable(fn):
        return fn
    defined = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
    close = difflib.get_close_matches(name, defined, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else (f"; it defines {', '.join(sorted(defined)[:8])}"
                                                               if defined else "")
    raise UserError(f"{where} has no function {name!r}{hint}")


def build_from_code(spec: str, weights: str | None, *, preprocessing_overrides: Mapping[str, Any] | None = None,
                    **options: Any) -> Classifier:
    """The `FILE.py:FUNCTION` / `package.module:FUNCTION` spec: call FUNCTION(**options), wrap the
    nn.Module it returns (preprocessing from its timm-style `pretrained_cfg` at the size its patch
    embedding was built for, else 224 px ImageNet statistics; then `preprocessing_overrides`, so a
    network made for 32 px is first run at 32 px), load a weights file into it when given."""
    found = _SPEC.match(spec)
    if found is None:
        raise UserError(f"model spec {spec!r} is not FILE.py:FUNCTION or package.module:FUNCTION")
    source, fn_name = found["source"], found["function"]
    is_file = source.endswith(".py")
    folder = Path(source).resolve().parent if is_file else Path.cwd()
    with _first_on_path(folder):
        module = _run_file(Path(source)) if is_file else _import(source, spec)
        fn = _function(module, fn_name, source)
        try:
            with placeholder_warning_deferred():  # load_classifier warns once for what it returns
                made = fn(**options)
        except Exception as exc:  # the user's code: report any failure as one line
            raise UserError(f"{spec}: calling {fn_name}() failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(made, nn.Module):
        raise UserError(f"{spec} returned a {type(made).__name__}, not a torch nn.Module (or a patchlab Classifier)")
    net = made.net if isinstance(made, Classifier) else made
    if weights:
        load_strict(net, load_state_dict_file(weights), weights)
    if isinstance(made, Classifier):
        return made
    cfg = getattr(made, "pretrained_cfg", None)
    built_for = getattr(getattr(made, "patch_embed", None), "img_size", None)  # a timm transformer's own size
    prep = Preprocessing.from_timm_cfg(cfg, built_for) if isinstance(cfg, dict) else DEFAULT_PREPROCESSING
    return classifier_for(made, prep.with_overrides(preprocessing_overrides or {}), spec)
