"""How far a headline chosen on the images that count it sits above an honest one.

For each pair and budget, run probe (or read finished run folders) and print, for
the best candidate (chosen on selection), its selection figure against its
confirmation figure under every protocol, plus the mean gap over all generated
candidates: the winner's-curse bias that counting on separate confirmation
images removes.

    python experiments/selection_bias.py --pairs "snorkel,scuba diver" "frying pan,wok" --budgets quick standard
    python experiments/selection_bias.py --runs reports/RUN1 reports/RUN2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def gaps(summary: dict) -> dict:
    primary = summary["primary_protocol"]
    best = summary["best_candidate"]
    out = {"pair": f"{summary['source']['name']} -> {summary['target']['name']}", "best": best["name"],
           "n_selection": summary["selection"]["denominator"], "n_confirmation": summary["confirmation"]["denominator"]}
    by_name = {c["name"]: c for c in summary["candidates"]}
    for proto in summary["protocols"]:
        b = by_name[best["name"]]
        out[f"{proto}_selection"] = b["selection"][proto]["rate"]
        out[f"{proto}_confirmation"] = b[proto]["rate"]
        diffs = [c["selection"][proto]["rate"] - c[proto]["rate"] for c in summary["candidates"] if c.get(proto)]
        out[f"{proto}_mean_gap_all"] = sum(diffs) / len(diffs) if diffs else None
    out["primary"] = primary
    return out


def show(row: dict, budget: str, seconds: float | None) -> None:
    print(f"{row['pair']}  [{budget}; selection n={row['n_selection']}, confirmation n={row['n_confirmation']}"
          + (f"; {seconds:.0f} s" if seconds else "") + "]")
    print(f"  best candidate (chosen on selection): {row['best']}")
    for proto in ("static", "dynamic", "random"):
        if f"{proto}_selection" in row:
            s, c, m = row[f"{proto}_selection"], row[f"{proto}_confirmation"], row[f"{proto}_mean_gap_all"]
            print(f"  {proto:<8} selection {100 * s:5.1f} %  confirmation {100 * c:5.1f} %  gap {100 * (s - c):+5.1f} pts"
                  f"   (mean gap over all candidates {100 * m:+.1f} pts)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="*", default=["snorkel,scuba diver", "frying pan,wok"])
    ap.add_argument("--budgets", nargs="*", default=["quick"])
    ap.add_argument("--runs", nargs="*", help="read finished probe run folders instead of probing")
    ap.add_argument("--out", default="reports/selection-bias")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.runs:
        for run in args.runs:
            s = json.loads((Path(run) / "summary.json").read_text())
            show(gaps(s), s["data"].get("how", "")[:40], (s.get("timings") or {}).get("total"))
        return
    from patchlab import probe

    for budget in args.budgets:
        for pair in args.pairs:
            src, tgt = (x.strip() for x in pair.split(","))
            t0 = time.perf_counter()
            s = probe(src, tgt, budget=budget, out=Path(args.out) / budget, device=args.device, seed=args.seed)
            show(gaps(s), budget, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
