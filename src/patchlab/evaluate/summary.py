"""Per-candidate summary of a results table: best static setting, dynamic and
random rates with Wilson intervals, and lift over the best control."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..patches.candidate import Candidate
from ..stats import difference_interval

DONOR_KEYS = ("donor_name", "donor", "donor_class")


def _rate(row: pd.Series, with_setting: bool) -> dict[str, Any]:
    out = {
        "rate": float(row["success_rate"]), "ci": [float(row["ci_low"]), float(row["ci_high"])],
        "n": int(row["n"]), "successes": int(row["successes"]), "trials": int(row["trials"]),
        "p_target_after": float(row["p_target_after"]), "untargeted_rate": float(row["untargeted_rate"]),
        "top5_rate": float(row["top5_rate"]),
    }
    if with_setting:
        out["size"] = None if math.isnan(row["size"]) else float(row["size"])
        out["placement"] = str(row["placement"])
    return out


def _best_rows(results: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    """(candidate, protocol) -> headline row: static and random at the best size
    (ties: smaller patch), dynamic over all sizes."""
    out: dict[tuple[str, str], pd.Series] = {}
    for (name, proto), g in results.groupby(["candidate", "protocol"], sort=False):
        if proto == "dynamic":
            overall = g[g["size"].isna()]
            out[(name, proto)] = (overall if len(overall) else g).iloc[0]
        else:
            out[(name, proto)] = g.sort_values(["success_rate", "size"], ascending=[False, True], kind="stable").iloc[0]
    return out


def _donor(cand: Candidate) -> Any:
    return next((cand.provenance[k] for k in DONOR_KEYS if k in cand.provenance), None)


def summarize(
    results: pd.DataFrame, candidates: Sequence[Candidate], looks: dict[str, dict], primary: str
) -> list[dict[str, Any]]:
    """One dict per candidate/control: name, kind, reads_as, donor, static {rate,
    ci, size, placement}, dynamic {rate, ci}, random {rate, ci, size},
    lift_by_protocol {protocol: {value, ci, control}}, lift_over_best_control
    (the primary protocol's lift)."""
    best = _best_rows(results)
    protocols = list(dict.fromkeys(results["protocol"]))
    controls = [c.name for c in candidates if c.kind == "control"]
    best_control = {}
    for proto in protocols:
        rows = [best[(c, proto)] for c in controls if (c, proto) in best]
        if rows:
            best_control[proto] = max(rows, key=lambda r: r["success_rate"])
    out = []
    for cand in candidates:
        entry: dict[str, Any] = {
            "name": cand.name, "kind": cand.kind, "reads_as": looks.get(cand.name), "donor": _donor(cand),
            "provenance": cand.provenance,
        }
        for proto in protocols:
            if (cand.name, proto) in best:
                entry[proto] = _rate(best[(cand.name, proto)], with_setting=proto != "dynamic")
                if proto == "dynamic":
                    entry[proto]["size"] = None
        lifts = {}
        if cand.kind != "control":
            for proto, ctrl in best_control.items():
                mine = best.get((cand.name, proto))
                if mine is None:
                    continue
                n1, n2 = int(mine["n"]), int(ctrl["n"])
                d, lo, hi = difference_interval(mine["success_rate"] * n1, n1, ctrl["success_rate"] * n2, n2)
                lifts[proto] = {"value": d, "ci": [lo, hi], "control": str(ctrl["candidate"])}
        entry["lift_by_protocol"] = lifts
        entry["lift_over_best_control"] = dict(lifts[primary], protocol=primary) if primary in lifts else None
        out.append(entry)
    return out
