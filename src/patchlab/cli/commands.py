"""Which modules hold the commands, in the order `patchlab --help` lists them."""
from __future__ import annotations

import importlib

COMMAND_MODULES = ["models", "classes", "predict", "layers", "probe", "dream", "atlas", "synth", "paste", "apply_cmd",
                   "evaluate", "report_cmd", "audit", "transfer"]


def load_commands() -> None:
    """Import every command module; each registers its command on the shared typer `app`."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")
