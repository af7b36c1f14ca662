"""Input-transform defences, batched over (N,3,H,W) images in [0,1].

- `jpeg_roundtrip`: a real JPEG encode/decode of every image (Dziugaite et al. 2016, "A study of the
  effect of JPG compression on adversarial images"; Guo et al. 2018, "Countering Adversarial Images
  using Input Transformations"), through torchvision's libjpeg on lists of uint8 CPU tensors.
- `median_filter`, `bit_depth`: feature squeezing (Xu, Evans, Qi 2018, "Feature Squeezing: Detecting
  Adversarial Examples in Deep Neural Networks").

The non-differentiable steps (rounding, the JPEG codec) pass gradients straight through (the
identity on the backward pass: BPDA, Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a
False Sense of Security"), so a patch can still be optimised against a defended classifier.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError
from .spec import Defense

Transform = Callable[[torch.Tensor], torch.Tensor]


def straight_through(images: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """The values of `transformed` with the gradient of the identity w.r.t. `images` (BPDA)."""
    return images + (transformed - images).detach()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) floats in [0,1] -> uint8 on the CPU (rounded to the nearest level)."""
    return (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def jpeg_bytes(images: torch.Tensor, quality: int) -> list[torch.Tensor]:
    """Each image encoded as a JPEG file at `quality` (1..100): a list of 1-D uint8 tensors."""
    import torchvision.io

    return torchvision.io.encode_jpeg(list(to_uint8(images)), quality=int(quality))


def jpeg_roundtrip(images: torch.Tensor, quality: int | Sequence[int]) -> torch.Tensor:
    """Images after a JPEG encode/decode at `quality` (one for all, or one per image: images sharing a
    quality go through libjpeg together). No gradient; values are multiples of 1/255, on images' device."""
    import torchvision.io

    n = images.shape[0]
    qualities = [int(quality)] * n if isinstance(quality, int) else [int(q) for q in quality]
    if len(qualities) != n:
        raise ValueError(f"{len(qualities)} JPEG qualities for {n} images")
    out = torch.empty(images.shape, dtype=torch.uint8)
    for q in sorted(set(qualities)):
        idx = [i for i, qi in enumerate(qualities) if qi == q]
        decoded = torchvision.io.decode_jpeg(jpeg_bytes(images[idx], q), mode=torchvision.io.ImageReadMode.RGB)
        out[idx] = torch.stack(decoded)
    return out.to(images.device, images.dtype) / 255


def median_filter(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """KxK median of every pixel's neighbourhood (reflect padding), per channel, via unfold."""
    r = kernel // 2
    if r >= min(images.shape[-2:]):
        raise UserError(f"median kernel {kernel} is too large for {images.shape[-2]}x{images.shape[-1]} images")
    padded = F.pad(images, (r, r, r, r), mode="reflect")
    windows = padded.unfold(2, kernel, 1).unfold(3, kernel, 1)  # (N,3,H,W,K,K), a view
    return windows.reshape(*images.shape, kernel * kernel).median(dim=-1).values


def bit_depth(images: torch.Tensor, bits: int) -> torch.Tensor:
    """Each channel rounded to one of 2**bits evenly spaced levels in [0,1] (gradient straight through)."""
    levels = 2**bits - 1
    return straight_through(images, torch.round(images.clamp(0, 1) * levels) / levels)


def input_transform(defense: Defense) -> Transform:
    """The image transform of an input-transform defence (jpeg, median, bitdepth)."""
    if defense.name == "jpeg":
        return lambda x: straight_through(x, jpeg_roundtrip(x, int(defense.value)))
    if defense.name == "median":
        return lambda x: median_filter(x, int(defense.value))
    if defense.name == "bitdepth":
        return lambda x: bit_depth(x, int(defense.value))
    raise ValueError(f"{defense} is not an input transform")
