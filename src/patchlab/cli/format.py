"""Text the commands print: a rate with its interval, as every table of the command line shows it."""
from __future__ import annotations

from ..runfolder import Rate


def rate_text(r: Rate | None) -> str:
    """'12.5% [4-30]' (percent, Wilson interval), or '   -  ' when nothing was counted."""
    if r is None or r.rate is None:
        return "   -  "
    lo, hi = r.ci
    ci = f" [{100 * lo:.0f}-{100 * hi:.0f}]" if lo is not None else ""
    return f"{100 * r.rate:5.1f}%{ci}"
