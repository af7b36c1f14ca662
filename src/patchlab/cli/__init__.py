"""`patchlab` command line. Each command lives in its own module and registers itself on the
shared typer `app` (app.py) when imported; `load_commands` imports them all and `main` runs one."""
from __future__ import annotations

from .app import app
from .commands import load_commands
from .main import main

__all__ = ["app", "load_commands", "main"]
