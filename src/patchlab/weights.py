"""Safe loading of weight files: safetensors, or torch.load(weights_only=True).

A .pth/.pt file whose pickle would build arbitrary objects (and so could run
code) is refused before anything in it executes.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from .errors import UserError, first_line

_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def safe_torch_load(path: Path, what: str, instead: str):
    """torch.load(weights_only=True) with one-line UserErrors: a pickle that would build objects
    beyond tensors (and so might run code) is refused before anything in it runs.
    what: the kind of file, for messages; instead: what to save in its place."""
    try:
        with warnings.catch_warnings():  # torch warns about legacy pickle protocols; the refusal below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # an opcode the loader lacks: random bytes, or a raw pickle.dump (may hold code)
            raise UserError(f"refused to load {path}: not a file torch.save writes (other bytes, or a raw pickle "
                            f"that may hold code); save {instead}") from None
        raise UserError(f"refused to load {path}: it holds pickled objects beyond tensors (possibly code); "
                        f"save {instead}") from None
    except Exception as exc:  # garbage bytes surface as KeyError, struct.error, ...; weights_only ran no code
        raise UserError(f"cannot read {what} {path}: {type(exc).__name__}: {first_line(exc).split('. ')[0][:200]}") from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a weights-only .pth/.pt/.bin file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise UserError(f"cannot read safetensors file {path}: {first_line(exc)}") from None
        return _refuse_nan(path, state)
    obj = safe_torch_load(path, "weights file", "a plain state_dict or use .safetensors")
    for key in _CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return _refuse_nan(path, {k.removeprefix("module."): v for k, v in obj.items()})


def _refuse_nan(path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict; UserError when a float tensor holds NaN (damaged weights). An inf may be
    meant (a -inf attention mask buffer), so only NaN is refused."""
    bad = [k for k, v in state.items() if v.is_floating_point() and bool(torch.isnan(v).any())]
    if bad:
        raise UserError(f"{path}: {len(bad)} tensors hold NaN values (first: {bad[0]}); the weights are damaged")
    return state


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) with a one-line error naming the first missing, unexpected and
    misshapen keys (a file of another architecture shows all three)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (first: {missing[0]})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys (first: {unexpected[0]})")
    if misshapen:
        k = misshapen[0]
        problems.append(f"size mismatch for {len(misshapen)} keys (first: {k}, {tuple(state[k].shape)} in the file, "
                        f"{tuple(own[k].shape)} in the model)")
    if problems:
        hint = "; is it a file of another architecture?" if missing and unexpected else ""
        raise UserError(f"weights in {source} do not fit the model: {'; '.join(problems)}{hint}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype the parameter cannot take
        raise UserError(f"weights in {source} do not fit the model: {first_line(exc)}") from None
