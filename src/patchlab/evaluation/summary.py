"""Per-candidate summary of a results table, chosen on selection, counted on confirmation.

For each candidate and protocol the setting (static: size x placement; random:
size; dynamic: all sizes and placements) is chosen on the `selection` rows; the
headline rate and Wilson interval are the `confirmation` rows at that setting,
so no headline is counted on the images that chose it. The selection figure
is kept beside it (`selection`), labelled. Lift is measured against the best
NULL control (noise, gray, source photo, library photo; chosen on selection),
never against the target-photo reference. Rows of defended models (a `defense`
column) are summarised the same way, per defence, beside the candidate's own.
Every entry also carries its patch's non-printability score (Sharif et al. 2016).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..pairdata import CONFIRMATION, SELECTION
from ..patches.candidate import NULL_KIND, Candidate
from ..patches.physical import non_printability
from ..stats import difference_interval, wilson_interval

DONOR_KEYS = ("donor_name", "donor", "donor_class")


def rate_dict(row: pd.Series, with_setting: bool) -> dict[str, Any]:
    """One results row as {rate, ci, n, successes, trials, ...} (+ size, placement)."""
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


def chosen_rows(results: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    """(candidate, protocol) -> the selection row that fixes the setting: static and
    random at the best size (and placement; ties: smaller patch), dynamic over all sizes."""
    sel = results[results["split"] == SELECTION]
    out: dict[tuple[str, str], pd.Series] = {}
    for (name, proto), g in sel.groupby(["candidate", "protocol"], sort=False):
        if proto == "dynamic":
            overall = g[g["size"].isna()]
            out[(name, proto)] = (overall if len(overall) else g).iloc[0]
        else:
            out[(name, proto)] = g.sort_values(["success_rate", "size"], ascending=[False, True], kind="stable").iloc[0]
    return out


_KEYS = ["candidate", "protocol", "size", "placement"]


def pool_selection(results: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    """`results` with every selection row pooled with the row of `extra` at the same candidate,
    protocol, size and placement (`extra`: results of other images that count nothing, such as
    the train images a search ranked on; its split column is ignored). Counts add up, rates are
    re-weighted by trials (p_target_before by images), the interval is recomputed; confirmation
    rows are kept as they are. More images fix each setting, so the winner of a noisy choice
    among sizes x placements is less often a lucky one."""
    sel = results[results["split"] == SELECTION]
    other = extra.drop(columns="split").drop_duplicates(_KEYS)
    key = lambda df: df.assign(size=df["size"].fillna(-1.0))  # NaN (dynamic over all sizes) joins as a value
    both = key(sel).merge(key(other), on=_KEYS, how="left", suffixes=("", "_x"), validate="one_to_one")
    if both["n_x"].isna().any():
        missing = both.loc[both["n_x"].isna(), "candidate"].unique()[:3]
        raise ValueError(f"no rows to pool with for {', '.join(map(str, missing))}")
    trials = both["trials"] + both["trials_x"]
    for col in ("untargeted_rate", "top5_rate", "p_target_after"):
        both[col] = (both[col] * both["trials"] + both[f"{col}_x"] * both["trials_x"]) / trials
    both["p_target_before"] = (both["p_target_before"] * both["n"] + both["p_target_before_x"] * both["n_x"]) / (
        both["n"] + both["n_x"])
    for col in ("n", "trials", "successes"):
        both[col] = (both[col] + both[f"{col}_x"]).astype(int)
    both["success_rate"] = both["successes"] / trials
    lo, hi = wilson_interval(both["success_rate"].to_numpy() * both["n"].to_numpy(), both["n"].to_numpy())
    both["ci_low"], both["ci_high"] = np.asarray(lo), np.asarray(hi)
    both["size"] = sel["size"].to_numpy()
    pooled = both[list(results.columns)]
    return pd.concat([pooled, results[results["split"] != SELECTION]], ignore_index=True)


def _confirmation_row(conf: pd.DataFrame, chosen: pd.Series) -> pd.Series | None:
    same = conf[(conf["candidate"] == chosen["candidate"]) & (conf["protocol"] == chosen["protocol"])
                & (conf["placement"] == chosen["placement"])]
    size = chosen["size"]
    same = same[same["size"].isna()] if pd.isna(size) else same[(same["size"] - size).abs() < 1e-9]
    return same.iloc[0] if len(same) else None


def counted_rows(results: pd.DataFrame) -> dict[tuple[str, str], tuple[pd.Series, pd.Series]]:
    """(candidate, protocol) -> (selection row, confirmation row at the same setting)."""
    conf = results[results["split"] == CONFIRMATION]
    out = {}
    for key, chosen in chosen_rows(results).items():
        row = _confirmation_row(conf, chosen)
        if row is not None:
            out[key] = (chosen, row)
    return out


def donor_of(cand: Candidate) -> Any:
    return next((cand.provenance[k] for k in DONOR_KEYS if k in cand.provenance), None)


def _best_null(counted, nulls: list[str], proto: str):
    """The null control with the highest SELECTION rate under `proto` (its rows), or None."""
    rows = [counted[(c, proto)] for c in nulls if (c, proto) in counted]
    return max(rows, key=lambda r: r[0]["success_rate"], default=None)


def _lift(mine: pd.Series, ctrl: pd.Series) -> dict[str, Any]:
    n1, n2 = int(mine["n"]), int(ctrl["n"])
    d, lo, hi = difference_interval(mine["success_rate"] * n1, n1, ctrl["success_rate"] * n2, n2)
    return {"value": d, "ci": [lo, hi], "control": str(ctrl["candidate"])}


def chosen_and_counted(results: pd.DataFrame, name: str) -> dict[str, Any]:
    """{selection: {protocol: rate}, protocol: rate}: one candidate's confirmation count per protocol at the
    setting chosen on selection, the selection figures beside them (the layout of a summary entry)."""
    counted = counted_rows(results[results["candidate"] == name])
    out: dict[str, Any] = {"selection": {}}
    for (_, proto), (sel, conf) in counted.items():
        out[proto] = rate_dict(conf, with_setting=proto != "dynamic")
        out["selection"][proto] = rate_dict(sel, with_setting=proto != "dynamic")
    return out


def summarize(
    results: pd.DataFrame, candidates: Sequence[Candidate], looks: dict[str, dict], primary: str,
    defended: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """One dict per candidate/control/reference: name, kind, reads_as, donor,
    provenance, {static, dynamic, random, physical}: the confirmation count at the setting
    chosen on selection ({rate, ci, n, size, placement, ...}), selection: the same
    keys as counted on selection, lift_by_protocol {protocol: {value, ci, control}}
    on confirmation against the best null control, lift_over_best_control (primary),
    non_printability, and with `defended` rows (a `defense` column) defended
    {defence: {selection: {...}, protocol: rate}} chosen and counted the same way."""
    counted = counted_rows(results)
    protocols = list(dict.fromkeys(results["protocol"]))
    nulls = [c.name for c in candidates if c.kind == NULL_KIND]
    best_null = {p: _best_null(counted, nulls, p) for p in protocols}
    by_defence = {} if defended is None else dict(tuple(defended.groupby("defense", sort=False)))
    out = []
    for cand in candidates:
        entry: dict[str, Any] = {"name": cand.name, "kind": cand.kind, "reads_as": looks.get(cand.name),
                                 "donor": donor_of(cand), "provenance": cand.provenance, "selection": {}}
        lifts = {}
        for proto in protocols:
            if (cand.name, proto) not in counted:
                continue
            sel, conf = counted[(cand.name, proto)]
            entry[proto] = rate_dict(conf, with_setting=proto != "dynamic")
            entry["selection"][proto] = rate_dict(sel, with_setting=proto != "dynamic")
            ctrl = best_null.get(proto)
            if cand.kind != NULL_KIND and ctrl is not None:
                lifts[proto] = _lift(conf, ctrl[1])
        entry["lift_by_protocol"] = lifts
        entry["lift_over_best_control"] = dict(lifts[primary], protocol=primary) if primary in lifts else None
        entry["non_printability"] = non_printability(cand.patch)
        if defended is not None and not defended.empty:
            entry["defended"] = {spec: chosen_and_counted(rows, cand.name) for spec, rows in by_defence.items()}
        out.append(entry)
    return out
