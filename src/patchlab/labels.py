"""A user's own label set: `--labels FILE` for a model whose classes are not (only) ImageNet's.

Two formats, told apart by the first line:
- one name per line, in output order (blank lines and `#` comments are skipped);
- a CSV with a header holding `index` and `name` columns (any order, other
  columns ignored), e.g. exported from a training script's class mapping.
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .classes import ClassIndex, generic_classes
from .errors import UserError

log = logging.getLogger("patchlab")
_DEFERRED: ContextVar[bool] = ContextVar("patchlab_placeholder_warning_deferred", default=False)
MAX_BYTES = 16 * 1024 * 1024  # a labels file is text: refuse anything far larger


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"--labels {path}: {path.stat().st_size} bytes is too large for a labels file")
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"--labels {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"--labels {path}: is a folder, not a labels file") from None
    except UnicodeDecodeError:
        raise UserError(f"--labels {path}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"--labels {path}: cannot read it ({exc.strerror or exc})") from None


def _from_csv(text: str, path: Path) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(text)))
    fields = {f.strip().lower(): f for f in (rows[0].keys() if rows else [])}
    index_col, name_col = fields.get("index"), fields.get("name")
    by_index: dict[int, str] = {}
    for line, row in enumerate(rows, start=2):
        raw_index, name = (row.get(index_col) or "").strip(), (row.get(name_col) or "").strip()
        try:
            i = int(raw_index)
        except ValueError:
            raise UserError(f"--labels {path}, line {line}: index {raw_index!r} is not a whole number") from None
        if not name:
            raise UserError(f"--labels {path}, line {line}: the name is empty")
        if i in by_index:
            raise UserError(f"--labels {path}, line {line}: index {i} is given twice")
        by_index[i] = name
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        raise UserError(f"--labels {path}: indices must run 0..{len(by_index) - 1}; index {missing[0]} is missing")
    return [by_index[i] for i in range(len(by_index))]


def read_labels(path: str | Path) -> list[str]:
    """Class names in output order from a labels file (see the module docstring); UserError on bad input."""
    path = Path(path)
    text = _read_text(path)
    lines = [ln.strip() for ln in text.splitlines()]
    first = next((ln for ln in lines if ln and not ln.startswith("#")), "")
    header = [c.strip().lower() for c in first.split(",")]
    if "index" in header and "name" in header:
        names = _from_csv("\n".join(ln for ln in lines if not ln.startswith("#")), path)
    else:
        names = [ln for ln in lines if ln and not ln.startswith("#")]
    if not names:
        raise UserError(f"--labels {path}: holds no class names")
    return names


def label_index(path: str | Path, n_outputs: int) -> ClassIndex:
    """A ClassIndex for a head with `n_outputs` outputs; UserError when the file's length differs."""
    names = read_labels(path)
    if len(names) != n_outputs:
        raise UserError(f"--labels {path}: {len(names)} names for a model with {n_outputs} outputs")
    return ClassIndex(names=names)


def named_classes(classes: ClassIndex, labels: str | Path | None, model: str) -> ClassIndex:
    """A model's class names: the labels file when one is given (one name per output), else `classes`;
    placeholder names (class_0, class_1, ...) come with one warning saying so."""
    if labels is not None:
        return label_index(labels, len(classes))
    if len(classes) and classes.names == generic_classes(len(classes)).names and not _DEFERRED.get():
        log.warning("%s has %d outputs and no labels file: its classes are named class_0..class_%d "
                    "(give one name per line with --labels FILE)", model, len(classes), len(classes) - 1)
    return classes


@contextmanager
def placeholder_warning_deferred() -> Iterator[None]:
    """Within it `named_classes` does not warn: code that builds a model inside another builder (a
    user's function calling `wrap`) leaves the one warning to the outer builder."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)
