"""Error types shared by every module.

A `UserError` is a problem with what the user asked for (unknown class, bad
file, unwritable folder). The CLI prints its message as one line on stderr and
exits with code 2; anything else is an internal error (exit code 1).
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; shown as one line, exit code 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
