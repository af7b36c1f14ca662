"""Atlas icon rendering cost and quality on the CPU: icons rendered at the model's
input size (the Classifier resizes them to 224 px, as `patchlab atlas --icons` does)
against icons rendered at a lower native input size (96 / 128 px).

Quality: 16 class directions (centred head rows of every 63rd class) are rendered
as icons; each icon is then shown to the model at 224 px and we print the mean
cosine of its pooled feature with the direction and how often the model's top-1
is that class. Prints seconds per optvis step for a batch of 16 icons.

    python experiments/bench_icons.py [--steps 96]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from patchlab.atlases.icons import render_icons
from patchlab.models import load_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=96)
    args = ap.parse_args()
    clf = load_classifier("efficientnet_lite0", "cpu")
    layer = clf.feature_layer
    classes = torch.arange(0, 1000, 63)[:16]
    W = clf.head.weight.detach()
    directions = (W[classes] - W.mean(0)).numpy().astype(np.float32)

    def quality(icons: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            logits, acts = clf.run(icons, [layer])  # resized to the model's input size
        cos = F.cosine_similarity(acts[layer].mean((2, 3)), torch.as_tensor(directions), dim=1).mean().item()
        return cos, (logits.argmax(1) == classes).float().mean().item()

    full = clf.input_size
    rows = []
    for native in (None, 128, 96):
        size = 96 if native is None else native
        clf.input_size = full if native is None else native
        start = time.perf_counter()
        icons = render_icons(clf, layer, directions, size=size, steps=args.steps)
        seconds = time.perf_counter() - start
        clf.input_size = full
        cos, top1 = quality(icons)
        rows.append((f"{size} px icon, model input {full if native is None else native} px", seconds, cos, top1))
    base = rows[0][1]
    print(f"16 icons, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'setting':<36} {'s/step':>7} {'speed-up':>8} {'cos @224':>9} {'top-1 @224':>10}")
    for name, seconds, cos, top1 in rows:
        print(f"{name:<36} {seconds / args.steps:7.3f} {base / seconds:7.1f}x {cos:9.3f} {100 * top1:9.1f}%")


if __name__ == "__main__":
    main()
