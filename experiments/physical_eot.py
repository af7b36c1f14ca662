"""Does optimising through the print-and-camera transforms pay off under the physical protocol?

Two `synth` runs of the same pair, seed and step count: the plain recipe (EOT over placement,
scale and rotation; Brown et al. 2017) and `--physical` (EOT also over the printer's gamut and
contrast, perspective, lighting, blur, sensor noise and JPEG: Athalye et al. 2018, Eykholt et al.
2018). Both patches are then measured by ONE `evaluate` run under the physical protocol (the same
images and the same transform draws for both: common random numbers), sizes chosen on selection,
counted on confirmation. Prints each patch's physical and static rates, the seconds per training
step, and the difference physical - plain with Newcombe's 95 % interval taken over the counted images
(unpaired and per image rather than per trial, so conservative).

    python experiments/physical_eot.py --steps 300
    python experiments/physical_eot.py --data ../shared/realphotos --source any --target toaster --steps 300
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import patchlab
from patchlab.runfolder import Summary
from patchlab.stats import difference_interval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="snorkel")
    ap.add_argument("--target", default="scuba diver")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--data", type=Path, default=None, help="photos (default: synthesized sources)")
    ap.add_argument("--sizes", type=float, nargs="+", default=[5, 10, 25], help="patch areas in %% of the image")
    ap.add_argument("--placements", type=int, default=8, help="physical draws per image and size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="folder for the three runs (default: a temporary one)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="physical_eot-"))
    runs = {}
    for name, physical in (("plain", False), ("physical", True)):
        res = patchlab.synth(args.source, args.target, data=args.data, steps=args.steps, seed=args.seed,
                             physical=physical, out=out / f"synth-{name}")
        runs[name] = res
        print(f"synth {name}: {res['sec_per_step']:.3f} s/step, {args.steps} steps", flush=True)
    patches = [Path(r["run_dir"]) / "patches" / f"{r['candidate']['name']}.png" for r in runs.values()]
    ev = patchlab.evaluate(args.source, args.target, patches, data=args.data, sizes=args.sizes,
                           protocols=["static", "physical"], random_placements=args.placements, seed=args.seed,
                           out=out / "evaluate")
    summary = Summary.from_dict(ev["summary"])
    by_file = {str(p): name for p, name in zip(patches, runs)}
    rates = {}
    print(f"\n{summary.source.name} -> {summary.target.name}: {summary.data.counted.get('text', '')}; "
          f"{summary.confirmation.confidence_text()}")
    print(f"{'patch':<10} {'physical':>22} {'static':>22}  non-printability")
    for e in summary.candidates:
        name = by_file.get(str(e.provenance.get("file")), e.name)
        phys, static = e.rate("physical"), e.rate("static")
        rates[name] = phys
        print(f"{name:<10} {_text(phys):>22} {_text(static):>22}  {e.non_printability}")
    a, b = rates.get("physical"), rates.get("plain")
    if a and b and a.n and b.n:
        d, lo, hi = difference_interval(round(a.rate * a.n), a.n, round(b.rate * b.n), b.n)
        print(f"physical - plain under the physical protocol: {100 * d:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] "
              f"(Newcombe on the {a.n} and {b.n} counted images, not on the trials: conservative)")
    print(f"runs in {out}")


def _text(rate) -> str:
    if rate is None or rate.rate is None:
        return "-"
    return f"{100 * rate.rate:5.1f} % [{100 * rate.ci[0]:.0f}, {100 * rate.ci[1]:.0f}] n={rate.n}"


if __name__ == "__main__":
    main()
