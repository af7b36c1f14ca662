"""Brute force over a photo library: how good can a top-10 of whole photos get?

The library search (`patchlab.library.search`) scores a shortlist exactly on the
pair's TRAIN images. This benchmark skips the search: every eligible whole photo
(centre square) is pasted at every size x corner on the pair's SELECTION and
CONFIRMATION images with the evaluator's static protocol (size and corner chosen
on selection, counted on confirmation), the way the issue's brute-force check
did it. It prints

- brute force: the top-10 chosen by selection static rate, counted on confirmation
  (an honest figure; the search's top-10 should come near it);
- oracle: the top-10 ranked by their confirmation rate itself. This is NOT a
  result (it is chosen on the images that count it); it bounds what any rule
  choosing whole photos from this library could show on these images;
- how many photos reach a given confirmation rate, and where named photos (e.g.
  the search's top-10, `--mark FILE ...`) rank.

    python experiments/library_ceiling.py --library ../shared/realphotos --pair snorkel "scuba diver" --train 24
    (add --source-band 0.85 1 --target-band 0 0.01 for sources the model is sure of)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from atlas_pairs import add_pair_args, pair_and_library

from patchlab.devices import stage_generator
from patchlab.evaluation.core import evaluate
from patchlab.library.search import eligible_photos
from patchlab.patches.apply import CORNERS
from patchlab.patches.candidate import Candidate
from patchlab.runio import atomic_write_text


def whole_photo_candidates(index, rows: np.ndarray, chunk: int = 64) -> list[Candidate]:
    out = []
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk].tolist()
        for row, img in zip(part, index.load_photos(part)):
            out.append(Candidate(img, "natural", f"photo-{row}", provenance={"file": index.paths[row], "library_row": row}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_args(ap, train=24, selection=8, confirmation=16)  # train: only so the splits match atlas_pairs.py
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None, help="only the first N eligible photos (a quick check)")
    ap.add_argument("--mark", nargs="*", default=[], help="library files (relative paths) whose ranks are printed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the per-photo table (csv)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    clf, s, t, pair, index = pair_and_library(args)
    keep, _ = eligible_photos(index, s, t)
    rows = np.flatnonzero(keep)[: args.limit]
    cands = whole_photo_candidates(index, rows)
    print(f"{len(cands)} whole photos x {len(args.sizes)} sizes x {len(CORNERS)} corners on "
          f"{len(pair.selection)} selection + {len(pair.confirmation)} confirmation {pair.kind} sources", flush=True)
    ev = evaluate(clf, cands, {"selection": pair.selection, "confirmation": pair.confirmation}, s, t, sizes=args.sizes,
                  positions=CORNERS, protocols=("static",), generator=stage_generator(args.seed, "evaluate"),
                  progress=True)
    by = {e["name"]: e for e in ev.summary}
    sel = np.array([by[c.name]["selection"]["static"]["rate"] for c in cands]) * 100
    conf = np.array([by[c.name]["static"]["rate"] for c in cands]) * 100
    files = [c.provenance["file"] for c in cands]
    order_sel = np.argsort(-sel, kind="stable")  # by selection rate, ties by library order (no peeking)
    order_conf = np.argsort(-conf, kind="stable")
    k = args.top
    label = f"{clf.classes.label(s)} -> {clf.classes.label(t)}"
    print(f"\n{label}, {pair.kind} sources, library {args.library} ({len(cands)} eligible whole photos)")
    print(f"  brute force, top-{k} by selection static, counted on confirmation: {conf[order_sel[:k]].mean():.1f} %")
    print(f"  oracle top-{k} by confirmation itself (an upper bound, not a result): {conf[order_conf[:k]].mean():.1f} %")
    for bar in (100, 90, 83, 75, 60):
        print(f"  photos at >= {bar} % on confirmation: {(conf >= bar - 1e-9).sum()}")
    print("  brute-force top photos (selection / confirmation static):")
    for j in order_sel[:k]:
        print(f"    {files[j]}: {sel[j]:.0f} / {conf[j]:.1f} %")
    rank_conf = {files[j]: r + 1 for r, j in enumerate(order_conf)}
    rank_sel = {files[j]: r + 1 for r, j in enumerate(order_sel)}
    for f in args.mark:
        if f in rank_conf:
            j = files.index(f)
            print(f"  marked {f}: selection rank {rank_sel[f]}, confirmation rank {rank_conf[f]} "
                  f"({sel[j]:.0f} / {conf[j]:.1f} %)")
        else:
            print(f"  marked {f}: not an eligible whole photo here")
    if args.out:
        lines = ["file,selection_static,confirmation_static"] + [f"{f},{a:.2f},{b:.2f}" for f, a, b in zip(files, sel, conf)]
        atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"total {time.perf_counter() - t0:.0f} s on {clf.device}")


if __name__ == "__main__":
    main()
