"""The console entry point: runs a command, turns user errors into one line and exit code 2,
internal errors into exit code 1 (traceback with --verbose)."""
from __future__ import annotations

import sys
import traceback

import typer

from ..errors import UserError
from .app import app, split_triples
from .commands import load_commands


try:
    from typer.exceptions import TyperException
except ImportError:  # older typer raises click's exceptions only
    TyperException = None
try:
    from click.exceptions import ClickException
except ImportError:  # typer >= 0.20 vendors click
    ClickException = None
USAGE_ERRORS = tuple(t for t in (TyperException, ClickException) if t is not None)  # command-line usage errors


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
    verbose = "--verbose" in sys.argv or "-v" in sys.argv
    try:
        load_commands()
        rc = app(args=split_triples(sys.argv[1:]), standalone_mode=False)
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
    except USAGE_ERRORS as exc:
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
