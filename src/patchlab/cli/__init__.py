"""`patchlab` command line. Each command module beside app.py registers itself
on the shared typer `app` when imported; `load_commands` imports them all."""
from __future__ import annotations

import importlib
import pkgutil

from .app import app, main

COMMAND_ORDER = ["probe", "dream", "atlas", "synth", "paste", "apply_cmd", "evaluate", "report_cmd", "audit"]


def load_commands() -> None:
    """Import every command module (probe first, so --help lists the main job first)."""
    found = {m.name for m in pkgutil.iter_modules(__path__) if m.name != "app"}
    for name in [n for n in COMMAND_ORDER if n in found] + sorted(found - set(COMMAND_ORDER)):
        importlib.import_module(f"{__name__}.{name}")


__all__ = ["app", "load_commands", "main"]
