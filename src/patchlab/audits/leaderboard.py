"""The audit report: a leaderboard of (model, pair) runs by best attack success,
audit.csv, audit.json, two figures and index.html linking each run's probe
report; a multi-model audit adds, per pair, its most vulnerable model.

Rows are rebuilt from the pair folders every time, so the report is always
what the folders hold (a resumed or a Ray audit writes the same table)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError
from ..evaluation.summary import CONFIRMATION, SELECTION
from ..generators.registry import generated_kinds
from ..patches.candidate import NULL_KIND, REFERENCE_KIND, is_generated
from ..runfolder import Entry, Headline, Lift, RunFolder
from ..runio import atomic_write_bytes, atomic_write_json, atomic_write_text, plain, versions
from . import figures
from .html import audit_page
from .pair_run import Job, is_finished, read_failure
from .survival import sort_order, survival_columns

SCHEMA = "patchlab.audit/2"
HEAD_COLUMNS = [
    "rank", "model", "source", "target", "source_index", "target_index", "similarity", "confusion", "chosen_by",
    "status",
    "best_candidate", "best_kind", "protocol", "success", "ci_low", "ci_high", "p_source", "p_target",
    "selection_success", "min_area",
    "min_area_success",
    "min_area_candidate", "lift", "lift_ci_low",
    "lift_ci_high", "best_control", "best_disguised", "disguised_success", "disguised_ci_low", "disguised_ci_high",
]
TAIL_COLUMNS = ["confirmation", "seconds", "report", "error"]


def kind_columns() -> list[str]:
    """One column per candidate kind (each registered generator's, then the best null control and
    the reference): the confirmation rate of that kind's candidate best on selection."""
    return [*generated_kinds(), NULL_KIND, REFERENCE_KIND]


def columns() -> list[str]:
    """The leaderboard's columns (audit.csv), with a column for every registered generator's kind."""
    return HEAD_COLUMNS + kind_columns() + TAIL_COLUMNS


def smallest_patch(results: pd.DataFrame, protocol: str) -> dict[str, Any]:
    """The generated candidate and placement best at the smallest patch area evaluated, chosen
    on selection and counted on confirmation: it separates pairs whose best success
    saturates at the larger areas."""
    r = results[(results["protocol"] == protocol) & results["kind"].map(is_generated)]
    if r.empty:
        return {}
    r = r[r["size"] == r["size"].min()]
    sel = r[r["split"] == SELECTION].sort_values("success_rate", ascending=False, kind="stable")
    if sel.empty:
        return {}
    top = sel.iloc[0]
    conf = r[(r["split"] == CONFIRMATION) & (r["candidate"] == top["candidate"]) & (r["placement"] == top["placement"])]
    if conf.empty:
        return {}
    return {"min_area": float(top["size"]), "min_area_success": float(conf.iloc[0]["success_rate"]),
            "min_area_candidate": top["candidate"]}


def best_of_kind(entries: list[Entry], protocol: str) -> float | None:
    """Confirmation rate of the entry with the best SELECTION rate (never the max over confirmation)."""
    rated = [e for e in entries if e.selection_rate(protocol) is not None and e.rate(protocol)]
    best = max(rated, key=lambda e: e.selection_rate(protocol), default=None)
    return None if best is None else best.confirmation_rate(protocol)


def pair_row(audit_dir: Path, job: Job) -> dict[str, Any]:
    """One leaderboard row for a (model, pair): its probe summary, or its failure, or 'pending' / 'broken'."""
    pair = job.pair
    row: dict[str, Any] = dict.fromkeys(columns())
    row.update(model=job.model, source=pair.source_name, target=pair.target_name, source_index=pair.source,
               target_index=pair.target, similarity=pair.similarity, confusion=pair.confusion,
               chosen_by=pair.chosen_by)
    if not is_finished(audit_dir, job):
        failure = read_failure(audit_dir, job)
        row["status"] = "failed" if failure else "pending"
        row["error"] = failure.get("error") if failure else None
        return row
    folder = RunFolder(audit_dir / job.rel())
    try:
        s, results = folder.summary(), folder.results()
    except UserError as exc:
        row["status"] = "broken"
        row["error"] = f"{folder.path} is marked complete but unreadable ({exc}); delete it to probe again"
        return row
    protocol = s.primary_protocol
    best, dis = s.best_candidate or Headline(), s.best_disguised_candidate or Headline()
    best_entry = next((c for c in s.candidates if c.name == best.name), None)
    lift = (best_entry and best_entry.lift) or Lift()
    controls = sorted(s.controls, key=lambda c: -(c.selection_rate(protocol) or 0))
    row.update(status="ok", best_candidate=best.name, best_kind=best.kind, protocol=protocol,
               success=best.rate, ci_low=best.ci[0], ci_high=best.ci[1], selection_success=best.selection_rate,
               lift=lift.value, lift_ci_low=lift.ci[0], lift_ci_high=lift.ci[1],
               best_control=controls[0].name if controls else None, best_disguised=dis.name,
               disguised_success=dis.rate, disguised_ci_low=dis.ci[0], disguised_ci_high=dis.ci[1],
               confirmation=s.confirmation.denominator, p_source=s.confirmation.p_source,
               p_target=s.confirmation.p_target, seconds=s.timings.get("total"),
               report=f"{job.rel()}/report.html")
    row.update(smallest_patch(results, protocol))
    row.update(survival_columns(s))
    everyone = s.entries
    for kind in kind_columns():
        row[kind] = best_of_kind([c for c in everyone if c.kind == kind], protocol)
    return row


def leaderboard(audit_dir: Path, jobs: list[Job], rank_by: str = "success") -> pd.DataFrame:
    """Finished (model, pair) runs by best success (or first by the `rank_by` column: see
    `survival.sort_order`), then success with the smallest patch, then interval low end, then
    similarity; failed and pending runs last. Survival columns follow `columns()`."""
    rows = [pair_row(audit_dir, j) for j in jobs]
    base = columns()
    df = pd.DataFrame(rows, columns=base + list(dict.fromkeys(k for r in rows for k in r if k not in base)))
    df["_ok"] = df["status"].eq("ok")
    by, ascending = sort_order(rank_by)
    df[by[0]] = pd.to_numeric(df[by[0]], errors="coerce") if by[0] in df else float("nan")
    df = df.sort_values(["_ok"] + by, ascending=[False] + ascending, na_position="last",
                        kind="stable").drop(columns="_ok").reset_index(drop=True)
    df["rank"] = range(1, len(df) + 1)
    return df


def most_vulnerable(rows: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """Per pair (in leaderboard order of its best run): the model with the highest confirmation
    success (ties as the leaderboard ranks them) and every model's figures side by side."""
    by_pair: dict[tuple[int, int], dict[str, Any]] = {}
    for r in rows:  # rows are in rank order: the first finished run of a pair is its most vulnerable model
        entry = by_pair.setdefault((r["source_index"], r["target_index"]), {
            "source": r["source"], "target": r["target"], "source_index": r["source_index"],
            "target_index": r["target_index"], "similarity": r["similarity"], "model": None, "success": None,
            "models": {}})
        entry["models"][r["model"]] = {k: r[k] for k in ("status", "success", "ci_low", "ci_high", "best_candidate",
                                                         "best_kind", "rank", "report", "error")}
        if entry["model"] is None and r["status"] == "ok" and r["success"] is not None:
            entry.update(model=r["model"], success=r["success"])
    out = list(by_pair.values())
    for entry in out:
        entry["models"] = {m: entry["models"][m] for m in models if m in entry["models"]}
    return out


def write_report(audit_dir: Path, jobs: list[Job], config: dict[str, Any]) -> dict[str, Any]:
    """Write audit.csv, audit.json, figures/*.png and index.html; returns audit.json's content."""
    df = leaderboard(audit_dir, jobs, config.get("rank_by") or "success")
    rows = plain(df.to_dict(orient="records"))
    models = list(dict.fromkeys(j.model for j in jobs))
    counts = df["status"].value_counts().to_dict()
    made = {"success_distribution": figures.success_distribution(df),
            "vulnerability_vs_similarity": figures.vulnerability_vs_similarity(df)}
    files = {}
    for key, png in made.items():
        if png:
            files[key] = f"figures/{key}.png"
            atomic_write_bytes(audit_dir / files[key], png)
    doc = {
        "schema": SCHEMA, "config": config,
        "counts": {"pairs": len(df), "ok": int(counts.get("ok", 0)),
                   "failed": int(counts.get("failed", 0)) + int(counts.get("broken", 0)),
                   "pending": int(counts.get("pending", 0))},
        "complete": int(counts.get("pending", 0)) == 0,
        "leaderboard": rows, "most_vulnerable": most_vulnerable(rows, models) if len(models) > 1 else None,
        "figures": files, "versions": versions(),
    }
    atomic_write_text(audit_dir / "audit.csv", df.to_csv(index=False))
    atomic_write_json(audit_dir / "audit.json", doc)
    atomic_write_text(audit_dir / "index.html", audit_page(doc, made))
    return doc
