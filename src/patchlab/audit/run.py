"""`audit`: probe many class pairs and rank them by how easily they flip.

pairs (head similarity, confusion on --data, or a file) -> one probe run per
pair in OUT/pairs/<key>/ (in-process, or one Ray task each) -> leaderboard.

Resumable: re-running the same command on the same OUT skips finished pairs,
resumes a half-finished pair from its saved stages, and retries failed ones.
"""
from __future__ import annotations

import logging
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
import pandas as pd

from ..runio import COMPLETE_MARKER, atomic_write_json, atomic_write_text, ensure_writable_dir, mark_complete, new_manifest
from .leaderboard import write_report
from .pair_run import is_finished, record_outcome, run_pair
from ..identity import check_same_run, run_identity
from .pairs import Pair, confusion_pairs, head_pairs, read_pairs_file

log = logging.getLogger("patchlab")
def select_pairs(clf, n: int | None, pairs_file: str | Path | None, data: str | Path | None, seed: int = 0) -> list[Pair]:
    if pairs_file is not None:
        if n is not None:
            raise UserError("give --pairs N or --pairs-file, not both")
        return read_pairs_file(clf, pairs_file)
    n = 10 if n is None else n
    return confusion_pairs(clf, data, n, seed=seed) if data is not None else head_pairs(clf, n)


def _check_same_audit(audit_dir: Path, identity: dict[str, Any]) -> None:
    import json

    path = audit_dir / "manifest.json"
    if not path.is_file():
        if audit_dir.is_dir() and any(audit_dir.iterdir()):
            raise UserError(f"{audit_dir} is not empty and holds no audit; give a new or empty folder as --out")
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not readable JSON; use another --out") from None
    if old.get("command") != "audit":
        raise UserError(f"{audit_dir} holds a patchlab {old.get('command')} run, not an audit; use another --out")
    check_same_run(old.get("config", {}).get("identity"), identity, f"the audit in {audit_dir}")


def _reporter(audit_dir: Path, pairs: list[Pair], todo: list[Pair], config: dict[str, Any], say):
    """Record a pair's outcome, rewrite the report, and say one line about it."""
    def finished(i: int, pair: Pair, outcome: dict[str, Any]) -> None:
        record_outcome(audit_dir, pair, outcome)
        doc = write_report(audit_dir, pairs, config)
        row = next(r for r in doc["leaderboard"] if r["source_index"] == pair.source and r["target_index"] == pair.target)
        if outcome["status"] == "ok":
            say(f"[{i}/{len(todo)}] {pair.source_name} -> {pair.target_name}: best {row['best_candidate']} "
                f"{100 * (row['success'] or 0):.1f}% ({outcome['seconds']:.0f} s)")
        else:
            say(f"[{i}/{len(todo)}] {pair.source_name} -> {pair.target_name}: FAILED: {outcome['error']}")

    return finished


def _run_in_process(todo, pairs, settings, audit_dir, config, clf, ray, cpus_per_pair, say) -> None:
    """Pairs one after another on this process's device, sharing the loaded classifier."""
    finished = _reporter(audit_dir, pairs, todo, config, say)
    for i, pair in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] probing {pair.source_name} -> {pair.target_name} ...")
        finished(i, pair, run_pair(pair, settings, audit_dir / "pairs" / pair.key(), classifier=clf,
                                   echo=lambda m: say("  " + m)))


def _run_with_ray(todo, pairs, settings, audit_dir, config, clf, ray, cpus_per_pair, say) -> None:
    """One Ray task per pair; each finished folder comes back as an archive and is unpacked here."""
    from .pair_run import unpack_dir
    from .ray_backend import run_pairs

    finished = _reporter(audit_dir, pairs, todo, config, say)
    for i, (pair, outcome) in enumerate(run_pairs(todo, settings, audit_dir, ray, cpus_per_pair, say), 1):
        files = outcome.pop("files", None)
        if files:
            try:
                unpack_dir(files, audit_dir / "pairs" / pair.key())
            except (OSError, ValueError, tarfile.TarError) as exc:
                outcome = {"status": "failed", "error": f"could not unpack the pair's results: {exc}",
                           "traceback": None, "seconds": outcome.get("seconds")}
        finished(i, pair, outcome)


def audit(
    n_pairs: int | None = None,
    pairs_file: str | Path | None = None,
    *,
    model: str = "efficientnet_lite0",
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    data: str | Path | None = None,
    library: str | Path | None = None,
    donor_data: str | Path | None = None,
    budget: str = "quick",
    out: str | Path = "reports/audit",
    ray: str | None = None,
    cpus_per_pair: int = 2,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Probe the chosen pairs (skipping finished ones) and write the audit report; returns audit.json's content."""
    from ..models import load_classifier
    from ..probe import check_inputs

    say = echo or (lambda msg: log.info(msg))
    check_inputs(budget, (data, "--data"), (donor_data, "--donor-data"), (library, "--library"))
    if n_pairs is not None and n_pairs < 1:
        raise UserError("--pairs must be at least 1")
    if cpus_per_pair < 1:
        raise UserError("--cpus-per-pair must be at least 1")
    if ray:
        from .ray_backend import check_reachable

        check_reachable(ray)

    def absolute(path: str | Path | None) -> str | None:  # Ray workers do not share the driver's cwd
        return str(Path(path).resolve()) if path else None

    settings = {"model": model, "weights": absolute(weights), "data": absolute(data), "library": absolute(library),
                "donor_data": absolute(donor_data), "budget": budget, "seed": seed}
    identity = run_identity(model=model, weights=weights, data=data, donor_data=donor_data, library=library,
                            budget=budget, seed=seed)
    _check_same_audit(Path(out), identity)
    audit_dir = ensure_writable_dir(out)
    # Ray workers load their own model; the driver only needs the head to choose pairs
    clf = load_classifier(model, "cpu" if ray else device, weights=settings["weights"])
    pairs = select_pairs(clf, n_pairs, pairs_file, data, seed)
    config = {"settings": settings, "identity": identity, "model": clf.spec, "budget": budget, "selection":
              "file" if pairs_file else ("confusion" if data else "head"),
              "pairs": [p.as_row() for p in pairs], "execution": f"ray {ray}" if ray else "in-process"}
    manifest = new_manifest("audit", config, seed, clf.spec)
    atomic_write_json(audit_dir / "manifest.json", manifest)
    (audit_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    atomic_write_text(audit_dir / "pairs.csv", pd.DataFrame([p.as_row() for p in pairs]).to_csv(index=False))
    todo = [p for p in pairs if not is_finished(audit_dir, p)]
    say(f"audit of {len(pairs)} pairs in {audit_dir}: {len(pairs) - len(todo)} finished earlier, {len(todo)} to run")
    write_report(audit_dir, pairs, config)
    start = time.perf_counter()
    run = _run_with_ray if ray else _run_in_process
    run(todo, pairs, dict(settings, device=device), audit_dir, config, clf, ray, cpus_per_pair, say)
    doc = write_report(audit_dir, pairs, config)
    doc["seconds"] = round(time.perf_counter() - start, 3)
    doc["report"] = str(audit_dir / "index.html")
    doc["audit_dir"] = str(audit_dir)
    if doc["complete"]:
        mark_complete(audit_dir, manifest)
    return doc
