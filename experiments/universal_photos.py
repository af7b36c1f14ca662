"""Universal targeted patch (Brown et al. 2017) trained on real photos: success vs area.

Runs `patchlab.synth("any", TARGET, data=DIR, ...)` for one or more settings and
prints, per patch area, the static success averaged over the four corners and
the centre, and the random-placement success, on the run's SELECTION photos
(where a setting may be chosen) and on its CONFIRMATION photos (the figure to
report), with the null controls beside it and the wall-clock time of the whole
command. Photos the model already calls the target are not counted (the
evaluator's rule).

    python experiments/universal_photos.py                      # defaults, photos
    python experiments/universal_photos.py --steps 300 --amp off
    python experiments/universal_photos.py --synthesized        # the same on synthesized images
    python experiments/universal_photos.py --from-run RUN_DIR   # the tables of a finished synth or evaluate run
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

SHARED_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "realphotos"


def area_table(results: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per candidate and size: mean static rate over the fixed positions, and the random rate (percent)."""
    r = results[results["split"] == split]
    static = r[r["protocol"] == "static"].groupby(["candidate", "size"])["success_rate"].mean().rename("static")
    rand = r[r["protocol"] == "random"].groupby(["candidate", "size"])["success_rate"].mean().rename("random")
    n = r[r["protocol"] == "static"].groupby(["candidate", "size"])["n"].first().rename("n")
    return (100 * pd.concat([static, rand], axis=1)).join(n).reset_index()


def show(results: pd.DataFrame, seconds: float, label: str, sec_per_step: float | None) -> None:
    took = f": {seconds:.0f} s in all" if seconds == seconds else ""  # NaN: not timed here
    print(f"\n== {label}{took}" + (f", {sec_per_step:.3f} s/step" if sec_per_step else ""))
    for split in ("selection", "confirmation"):
        t = area_table(results, split)
        print(f"  {split} (n = {int(t['n'].max())} photos; static = mean of 4 corners + centre):")
        for cand, rows in t.groupby("candidate", sort=False):
            cells = "  ".join(f"{100 * s:4.0f}%: {st:5.1f} / {rd:5.1f}" for s, st, rd in
                              zip(rows["size"], rows["static"], rows["random"]))
            print(f"    {cand[:34]:<34} {cells}   (area: static / random %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED_PHOTOS)
    ap.add_argument("--synthesized", action="store_true", help="train and count on synthesized images instead")
    ap.add_argument("--target", default="toaster")
    ap.add_argument("--source", default="any")
    ap.add_argument("--steps", type=int, default=None, help="default: synth's default")
    ap.add_argument("--area", type=float, nargs=2, default=None)
    ap.add_argument("--amp", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("reports/universal"))
    ap.add_argument("--from-run", type=Path, default=None, help="print the tables of this run folder; run nothing")
    args = ap.parse_args()
    if args.from_run:
        results = pd.read_csv(args.from_run / "results.csv")
        show(results, float("nan"), f"run folder {args.from_run}", None)
        return
    import patchlab

    kw = {} if args.steps is None else {"steps": args.steps}
    if args.area:
        kw["area"] = tuple(args.area)
    if args.amp != "auto":
        kw["amp"] = args.amp == "on"
    data = None if args.synthesized else args.data
    t0 = time.perf_counter()
    out = patchlab.synth(args.source, args.target, data=data, seed=args.seed, budget=args.budget,
                         out=args.out / time.strftime("%Y%m%d-%H%M%S"), **kw)
    seconds = time.perf_counter() - t0
    results = pd.read_csv(Path(out["run_dir"]) / "results.csv")
    label = f"{args.source} -> {args.target} on {'synthesized images' if data is None else f'photos in {data}'} {kw}"
    show(results, seconds, label, out.get("sec_per_step"))
    print(f"run folder: {out['run_dir']}")


if __name__ == "__main__":
    main()
