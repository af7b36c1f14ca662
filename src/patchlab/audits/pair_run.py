"""Run `probe` for one pair of an audit and record how it ended.

Used the same way in-process and inside a Ray task, so both give the same
results. A pair's folder is an ordinary probe run directory; a pair that
failed leaves `failures/<key>.json` beside it with its error, and is retried
by the next run of the audit. A multi-model audit puts each model's folders
one level down: pairs/<model>/<key>/ and failures/<model>/<key>.json.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..pairdata import SourceBands
from ..pipelines.probe import probe
from ..runfolder import RunFolder
from ..runio import atomic_write_json
from .pairs import Pair

log = logging.getLogger("patchlab")


def run_pair(pair: Pair, settings: dict[str, Any], pair_dir: Path, classifier: Any = None,
             echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Probe one pair into pair_dir (resuming its finished stages) with the audit's settings (model,
    weights, labels, layer, preprocessing overrides, photos, budget, seed, defences, physical
    protocol). Never raises for a
    failed pair (except KeyboardInterrupt): returns {status, error, traceback, seconds}."""
    start = time.perf_counter()
    resume = pair_dir if RunFolder(pair_dir).has_manifest() else None
    try:
        probe(str(pair.source), str(pair.target), model=settings["model"], weights=settings.get("weights"),
              data=settings.get("data"), library=settings.get("library"), donor_data=settings.get("donor_data"),
              budget=settings["budget"],
              device=settings.get("device", "auto"), seed=settings["seed"], resume=resume,
              run_dir=None if resume else pair_dir, classifier=classifier, echo=echo, layer=settings.get("layer"),
              defenses=settings.get("defenses") or (), physical=bool(settings.get("physical")),
              physical_ranges=settings.get("physical_ranges"), labels=settings.get("labels"),
              bands=SourceBands.of(**settings["source_bands"]) if settings.get("source_bands") else None,
              **settings.get("preprocessing") or {})
        return {"status": "ok", "seconds": round(time.perf_counter() - start, 3)}
    except UserError as exc:
        return {"status": "failed", "error": str(exc), "traceback": None,
                "seconds": round(time.perf_counter() - start, 3)}
    except Exception as exc:  # one broken pair must not stop the audit
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                "seconds": round(time.perf_counter() - start, 3)}


@dataclass(frozen=True)
class Job:
    """One (model, pair) probe of an audit. `slug` names the model's folder under pairs/ and
    failures/ in a multi-model audit; None keeps the single-model layout pairs/<pair key>/."""

    model: str
    pair: Pair
    slug: str | None = None

    def rel(self) -> str:
        """The probe run folder, relative to the audit folder."""
        return f"pairs/{self.slug}/{self.pair.key()}" if self.slug else f"pairs/{self.pair.key()}"

    def name(self) -> str:
        """'goldfish -> scuba diver', prefixed with the model in a multi-model audit."""
        pair = f"{self.pair.source_name} -> {self.pair.target_name}"
        return f"{self.model}: {pair}" if self.slug else pair


def failure_path(audit_dir: Path, job: Job) -> Path:
    sub = audit_dir / "failures" / job.slug if job.slug else audit_dir / "failures"
    return sub / f"{job.pair.key()}.json"


def record_outcome(audit_dir: Path, job: Job, outcome: dict[str, Any]) -> None:
    """Write or clear the job's failure record."""
    path = failure_path(audit_dir, job)
    if outcome["status"] == "ok":
        path.unlink(missing_ok=True)
    else:
        atomic_write_json(path, dict(outcome, pair=job.pair.as_row(), model=job.model))


def is_finished(audit_dir: Path, job: Job) -> bool:
    return RunFolder(audit_dir / job.rel()).is_complete()


def read_failure(audit_dir: Path, job: Job) -> dict[str, Any] | None:
    path = failure_path(audit_dir, job)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- moving a pair folder between machines (Ray workers need no shared disk) ------
def pack_dir(folder: Path) -> bytes | None:
    """A gzip'd tar of folder's contents, or None when it does not exist."""
    if not folder.is_dir():
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buf.getvalue()


def recover(folder: Path) -> None:
    """Put back a pair folder that unpack_dir had moved aside when the process died."""
    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and old.is_dir():
        old.rename(folder)


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Plain files with relative paths inside the folder (for Pythons without tarfile's data filter)."""
    members = tar.getmembers()
    for m in members:
        p = Path(m.name)
        if not m.isfile() or p.is_absolute() or ".." in p.parts:
            raise ValueError(f"refusing archive member {m.name!r}")
    return members


def unpack_dir(blob: bytes, folder: Path) -> None:
    """Replace folder's contents with a pack_dir archive (plain files only, no paths outside it)."""
    recover(folder)
    tmp = folder.with_name(folder.name + ".incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        members = _safe_members(tar)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, members=members, filter="data")
        else:  # Python < 3.10.12 / 3.11.4: members were checked above
            tar.extractall(tmp, members=members)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
