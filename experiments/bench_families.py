"""Benchmark: patchlab's hot paths on one network of each family, at its own 224 px input.

EfficientNet-Lite0 with its ImageNet weights (the default model), and random-weight resnet18,
vit_tiny_patch16_224, convnext_atto and mobilenetv3_small (torchvision and timm builds, loaded
through the same specs and --weights path a user takes). For each network:

- bare forward: images/s of the batched float32 forward on plain images (`Classifier.logits`);
- pasted scoring: pasted images/s of `patches.crops.score_crops_by_setting` (crops pasted at the
  four corners at two areas, scored on every image), which on EfficientNet-Lite recomputes only
  what the patch changes (`patches.region_forward`) and elsewhere pastes and runs the full forward;
- EOT step: seconds per `synthesize_patch` step (batch 8, float32), the inner loop of synth;
- with --probe: the quick probe on synthesized images, seconds per stage (from summary.json). A
  random network calls nothing a snorkel, so the probe would find no source image to count; its
  head's bias lifts snorkel 8 and scuba diver 5 above the largest mean logit on noise images, so
  the pair starts about where a trained model's does. The times are the code paths' cost,
  not a trained network's behaviour.

Every figure is one process's wall clock on this machine, as loaded as it is; each network is timed
after a warm-up call.

    python experiments/bench_families.py                      # every family, building blocks only
    python experiments/bench_families.py --families lite0 vit --probe
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torchvision

from patchlab.classes import imagenet_classes
from patchlab.errors import UserError
from patchlab.models import Classifier, load_classifier
from patchlab.patches.apply import CORNERS
from patchlab.patches.crops import score_crops_by_setting
from patchlab.patches.region_forward import paste_forward
from patchlab.patches.synth import synthesize_patch
from patchlab.pipelines.probe import probe

FAMILIES: dict[str, tuple[str, Callable[[], torch.nn.Module] | None]] = {  # name -> (spec, random network)
    "lite0": ("efficientnet_lite0", None),
    "resnet18": ("torchvision:resnet18", lambda: torchvision.models.resnet18(weights=None)),
    "vit_tiny": ("timm:vit_tiny_patch16_224", lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False)),
    "convnext_atto": ("timm:convnext_atto", lambda: timm.create_model("convnext_atto", pretrained=False)),
    "mobilenetv3_small": ("torchvision:mobilenet_v3_small", lambda: torchvision.models.mobilenet_v3_small(weights=None)),
}


STAGE_SECONDS = ("images", "donors", "synth", "feature", "natural", "evaluate", "total")  # summary["timings"] keys


PAIR_BIAS = {"snorkel": 8.0, "scuba diver": 5.0}  # --probe: head bias raised on a random network


def load(name: str, folder: Path, bias: dict[int, float] | None = None) -> tuple[Classifier, str | None]:
    """The family's classifier through its spec, random networks from a weights file saved here
    (with `bias`: class index -> amount added to the head's bias, the last 1000-wide bias)."""
    spec, make = FAMILIES[name]
    if make is None:
        return load_classifier(spec, "cpu"), None
    torch.manual_seed(0)
    weights = folder / f"{name}.pth"
    net = make().eval()
    state = net.state_dict()
    if bias:  # lift each class to `amount` above the largest mean logit on uniform noise images
        with torch.no_grad():
            mean = net(torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))).mean(0)
        head = [k for k, v in state.items() if k.endswith("bias") and v.shape == (1000,)][-1]
        for index, amount in bias.items():
            state[head][index] += float(mean.max() - mean[index]) + amount
    torch.save(state, weights)
    return load_classifier(spec, "cpu", weights=str(weights)), str(weights)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call of fn, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def building_blocks(clf: Classifier, images: int, crops: int, steps: int) -> dict[str, float | str]:
    """Bare forward and pasted scoring (images/s), and seconds per EOT step."""
    g = torch.Generator().manual_seed(0)
    s = clf.input_size
    x = torch.rand(images, 3, s, s, generator=g)
    patches = torch.rand(crops, 3, 48, 48, generator=g)
    bare = images / timed(lambda: clf.logits(x, batch_size=images), 2)
    areas = (0.1, 0.25)
    pasted_n = crops * images * len(areas) * len(CORNERS)
    pasted = pasted_n / timed(lambda: score_crops_by_setting(clf, patches, x, 0, 1, areas, CORNERS,
                                                             batch_size=images), 1)
    cand = synthesize_patch(clf, x, 1, 0, steps=steps, batch_size=8, amp=False, generator=g)
    path = "incremental (region_forward)" if paste_forward(clf, x) is not None else "paste + full forward"
    return {"bare img/s": bare, "pasted img/s": pasted, "pasted path": path, "EOT s/step": cand.provenance["sec_per_step"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--images", type=int, default=16, help="images per forward and per scored crop")
    ap.add_argument("--crops", type=int, default=4, help="crops scored (x images x 2 areas x 4 corners pasted images)")
    ap.add_argument("--steps", type=int, default=6, help="EOT steps timed (the first is not counted)")
    ap.add_argument("--probe", action="store_true", help="also run the quick probe (snorkel -> scuba diver)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 on the CPU")
    bias = {imagenet_classes().resolve(c): b for c, b in PAIR_BIAS.items()} if args.probe else None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            clf, weights = load(name, Path(tmp), bias)
            row = building_blocks(clf, args.images, args.crops, args.steps)
            ratio = row["pasted img/s"] / row["bare img/s"]
            print(f"{name:<18} bare {row['bare img/s']:7.1f} img/s   pasted {row['pasted img/s']:7.1f} img/s "
                  f"({ratio:.2f}x, {row['pasted path']})   EOT {row['EOT s/step']:.3f} s/step", flush=True)
            if args.probe:
                t0 = time.perf_counter()
                out = Path(tmp) / "runs" / name
                try:
                    summary = probe(*PAIR_BIAS, model=clf.spec, weights=weights, device="cpu", out=out)
                except UserError as e:
                    print(f"{'':<18} quick probe stopped after {time.perf_counter() - t0:.0f} s: {e}", flush=True)
                    continue
                stages = ", ".join(f"{k} {summary['timings'][k]:.0f} s" for k in STAGE_SECONDS
                                   if k in summary["timings"])
                print(f"{'':<18} quick probe {time.perf_counter() - t0:.0f} s: {stages}", flush=True)


if __name__ == "__main__":
    main()
