"""Which rule picks the library search's top 10? Compared on a development seed, never on the counted one.

`atlas_pairs.py --library --shortlist 10` reports the search's own top 10: the
selection images only choose each patch's size and corner. This script asks
whether letting the selection images choose the 10 among more of the search's
candidates does better, or a pooled estimate of train and selection success.
It runs the search once per pair with a longer shortlist, counts every
candidate on the pair's selection and confirmation images, and scores each rule
by the confirmation rates of the 10 it picks. Run it on pair data of another
seed than the one whose confirmation images the README counts (default: seed 1;
atlas_pairs counts seed 0), so a rule is chosen on development images only.

    python experiments/library_topk_rules.py --library ../shared/realphotos --pairs snorkel --seed 1
    python experiments/library_topk_rules.py --library ../shared/realphotos --pairs snorkel --seed 1 \
        --band 0.45 0.65 --near-band 0.08 0.15 --candidates 60     # sources as close as the issue's

--cell-rules also counts the candidates on the train images and asks which
images should fix each candidate's static size and corner (selection, or train
and selection pooled: `patchlab.evaluation.summary.pool_selection`) and which
should rank them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from atlas_pairs import PAIRS, add_band_args, add_search_arg, natural_candidates, pair_data

from patchlab.devices import stage_generator
from patchlab.evaluation.core import evaluate
from patchlab.evaluation.summary import chosen_rows, pool_selection
from patchlab.models import load_classifier
from patchlab.patches.apply import CORNERS


def rules(entries: list[dict], top: int, n_train: int, n_selection: int) -> dict[str, tuple[int, list[dict]]]:
    """Rule name -> (how many of the search's first entries it looks at, the `top` it picks);
    entries are in search order."""
    def sel(e: dict) -> float:
        return e["selection"]["static"]["rate"]

    def pooled(e: dict) -> float:  # train best-size success and selection static, weighted by their image counts
        train = e["provenance"].get("train_best_size_success", 0.0)
        return (train * n_train + sel(e) * n_selection) / (n_train + n_selection)

    out = {"search order": (top, entries[:top])}
    for k in sorted({2 * top, 3 * top, len(entries)}):
        if k <= len(entries):
            pool = entries[:k]
            out[f"selection from the search's top {k}"] = (k, sorted(pool, key=lambda e: -sel(e))[:top])
            out[f"train + selection pooled, top {k}"] = (k, sorted(pool, key=lambda e: -pooled(e))[:top])
    return out


def static_rates(results: pd.DataFrame, split: str) -> pd.Series:
    """Static success rates of one split by (candidate, size, placement)."""
    rows = results[(results["split"] == split) & (results["protocol"] == "static")]
    return rows.set_index(["candidate", "size", "placement"])["success_rate"]


def cell_rules(results: pd.DataFrame, on_train: pd.DataFrame, names: list[str], top: int) -> dict:
    """Rule name -> mean confirmation rate (%) of the `top` candidates it picks, where each rule
    fixes every candidate's static size and corner on one set of images (selection, or train and
    selection pooled by `pool_selection`; the evaluator's own choice, `chosen_rows`) and ranks the
    candidates on one set, at that cell."""
    frames = {"selection": results, "train + selection": pool_selection(results, on_train)}
    rate = {name: static_rates(frame, "selection") for name, frame in frames.items()}
    conf_rate = static_rates(results, "confirmation")
    out = {}
    for cell_on, frame in frames.items():
        chosen = chosen_rows(frame)
        cells = {n: (n, chosen[(n, "static")]["size"], chosen[(n, "static")]["placement"]) for n in names}
        for rank_on, rank_rate in rate.items():
            picked = sorted(names, key=lambda n: -rank_rate[cells[n]])[:top]
            out[(cell_on, rank_on)] = 100 * sum(conf_rate[cells[n]] for n in picked) / len(picked)
        bound = sorted(names, key=lambda n: -conf_rate[cells[n]])[:top]
        out[(cell_on, "(bound: confirmation itself)")] = 100 * sum(conf_rate[cells[n]] for n in bound) / len(bound)
        out[(cell_on, "(all candidates, mean)")] = 100 * sum(conf_rate[cells[n]] for n in names) / len(names)
    return out


def run(clf, src: str, tgt: str, args) -> None:
    s, t = clf.classes.resolve(src), clf.classes.resolve(tgt)
    pair = pair_data(clf, s, t, args)
    args.shortlist = args.candidates
    cands, _notes, seconds = natural_candidates(clf, pair, args)
    ev = evaluate(clf, cands, {"selection": pair.selection, "confirmation": pair.confirmation}, s, t,
                  sizes=args.sizes, positions=CORNERS, protocols=("static",),
                  generator=stage_generator(args.seed, "evaluate"))
    by_name = {e["name"]: e for e in ev.summary}
    entries = [by_name[c.name] for c in cands]
    print(f"\n{clf.classes.label(s)} -> {clf.classes.label(t)} (seed {args.seed}; {len(cands)} candidates, "
          f"{seconds:.0f} s search; {len(pair.train)} train / {len(pair.selection)} selection / "
          f"{len(pair.confirmation)} confirmation images)")
    print("| rule | top-10 mean static, confirmation | on selection | best disguised by selection, confirmation |")
    print("|---|---|---|---|")
    for name, (k, picked) in rules(entries, args.top, len(pair.train), len(pair.selection)).items():
        conf = 100 * sum(e["static"]["rate"] for e in picked) / len(picked)
        on_sel = 100 * sum(e["selection"]["static"]["rate"] for e in picked) / len(picked)
        disguised = [e for e in entries[:k] if e["reads_as"]["index"] != t]
        best = max(disguised, key=lambda e: e["selection"]["static"]["rate"], default=None)
        best_txt = "–" if best is None else f"{100 * best['static']['rate']:.1f} % ({best['name']})"
        print(f"| {name} | {conf:.1f} % | {on_sel:.1f} % | {best_txt} |", flush=True)
    bound = sorted(entries, key=lambda e: -e["static"]["rate"])[: args.top]  # not a rule: chosen on what it counts
    print(f"| (bound, not a rule: the {args.top} best by their confirmation rate itself) | "
          f"{100 * sum(e['static']['rate'] for e in bound) / len(bound):.1f} % | – | – |")
    if args.cell_rules:
        on_train = evaluate(clf, cands, pair.train, s, t, sizes=args.sizes, positions=CORNERS, protocols=("static",),
                            generator=stage_generator(args.seed, "evaluate"), n_examples=0)
        names = [c.name for c in cands]
        table = cell_rules(ev.results, on_train.results, names, args.top)
        print(f"\nstatic cell (size x corner) and top {args.top} chosen on: mean confirmation static of the {args.top}")
        print("| cell chosen on | ranked on | top-10 mean static, confirmation |")
        print("|---|---|---|")
        for (cell_on, rank_on), value in table.items():
            print(f"| {cell_on} | {rank_on} | {value:.1f} % |")
    print("\ncandidates in search order: selection / confirmation static (%), file, reads as")
    for e in entries:
        print(f"  {e['name']}: {100 * e['selection']['static']['rate']:.1f} / {100 * e['static']['rate']:.1f}, "
              f"{e['provenance'].get('file')}, {e['provenance'].get('method')}, {e['reads_as']['name']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, required=True)
    ap.add_argument("--pairs", nargs="*", default=None, help="source prefixes (default: all three)")
    ap.add_argument("--seed", type=int, default=1, help="pair-data seed: a development seed, not the counted one")
    ap.add_argument("--train", type=int, default=24)
    ap.add_argument("--selection", type=int, default=24)
    ap.add_argument("--confirmation", type=int, default=48)
    ap.add_argument("--candidates", type=int, default=30, help="search candidates the rules choose from")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--cell-rules", action="store_true",
                    help="also count the candidates on the train images and compare rules that fix each static "
                         "size x corner on selection or on train + selection pooled")
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    add_band_args(ap)
    add_search_arg(ap)
    args = ap.parse_args()
    args.donors, args.donor_images, args.final_keep, args.data = 3, 3, None, None
    clf = load_classifier("efficientnet_lite0", "auto")
    t0 = time.perf_counter()
    for src, tgt in PAIRS:
        if not args.pairs or any(src.startswith(p) for p in args.pairs):
            run(clf, src, tgt, args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s on {clf.device}")


if __name__ == "__main__":
    main()
