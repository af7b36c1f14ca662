"""reports/index.html: every run folder under a reports folder, newest first."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..runfolder import RunFolder
from ..runio import atomic_write_text
from .html import index_page

log = logging.getLogger("patchlab")


def update_index(reports_root: str | Path) -> Path | None:
    """Write reports_root/index.html listing every run folder in it (newest first). Folders
    without a readable summary are left out; when the index cannot be written, a warning
    says so and None is returned (the runs themselves are already written)."""
    root = Path(reports_root)
    rows = []
    for d in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []:
        folder = RunFolder(d)
        try:
            s = folder.summary()
        except UserError:
            continue
        best = s.best_candidate
        rows.append({"dir": d.name, "source": s.source.name, "target": s.target.name, "model": s.model,
                     "best": best and best.name, "complete": folder.is_complete(), "rate": best and best.rate})
    try:
        return atomic_write_text(root / "index.html", index_page(rows))
    except OSError as exc:
        log.warning("could not update the reports index in %s: %s", root, exc.strerror or exc)
        return None
