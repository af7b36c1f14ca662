"""Image parameterizations for feature visualization.

`fourier_image` follows Olah, Mordvintsev & Schubert, "Feature Visualization"
(Distill, 2017) and the lucid/lucent implementations: the image is stored as a
Fourier spectrum scaled by 1/frequency^decay, mapped through a decorrelated
color basis and squashed by a sigmoid into [0,1]. `pixel_image` stores
per-pixel logits and can start from existing images.

Every parameterization is an `ImageParam`: `.parameters()` for the optimizer
and `__call__() -> (n,3,size,size)` in [0,1].
"""
from __future__ import annotations

import torch

from ..devices import gen_device

# Square root of the ImageNet RGB color correlation matrix (lucid's
# `color_correlation_svd_sqrt`), normalized so its columns have max norm 1.
_COLOR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR_SQRT = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class ImageParam:
    """Base class: a batch of n images of `size` px produced from learnable tensors."""

    n: int
    size: int

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        raise NotImplementedError


def _decorrelate(x: torch.Tensor) -> torch.Tensor:
    """Map (N,3,H,W) from the decorrelated color basis to RGB."""
    m = _COLOR_SQRT.to(device=x.device, dtype=x.dtype)
    return torch.einsum("ij,njhw->nihw", m, x)


class FourierImage(ImageParam):
    """Decorrelated Fourier-space image (Olah et al. 2017): spectrum * 1/f^decay -> irfft2 -> color -> sigmoid."""

    def __init__(self, n: int, size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, decay: float = 1.0, sd: float = 0.01):
        device = torch.device(device) if device is not None else (generator.device if generator is not None else torch.device("cpu"))
        self.n, self.size = int(n), int(size)
        fy = torch.fft.fftfreq(size, device=device)[:, None]
        fx = torch.fft.rfftfreq(size, device=device)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay
        self.scale = scale[None, None]  # (1,1,H,W//2+1); with an orthonormal irfft2, as in lucent
        shape = (self.n, 3, size, size // 2 + 1, 2)
        init = torch.randn(shape, generator=generator, device=gen_device(generator, device)).to(device) * sd
        self.spectrum = init.requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def __call__(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / 4.0
        return torch.sigmoid(_decorrelate(img))


class PixelImage(ImageParam):
    """Per-pixel logits -> sigmoid; optional `init` images (N,3,H,W) in [0,1] to start from."""

    def __init__(self, n: int, size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, init: torch.Tensor | None = None, sd: float = 0.01):
        if init is not None:
            device = init.device if device is None else torch.device(device)
            n, size = init.shape[0], init.shape[-1]
            if init.shape[-2] != init.shape[-1]:
                raise ValueError("pixel_image init must be square images (N,3,S,S)")
            p = torch.logit(init.detach().to(device=device, dtype=torch.float32).clamp(1e-3, 1 - 1e-3))
        else:
            device = torch.device(device) if device is not None else (generator.device if generator is not None else torch.device("cpu"))
            p = torch.randn((n, 3, size, size), generator=generator, device=gen_device(generator, device)).to(device) * sd
        self.n, self.size = int(n), int(size)
        self.logits = p.clone().requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.logits]

    def __call__(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


def fourier_image(n: int, size: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, decay: float = 1.0, sd: float = 0.01) -> FourierImage:
    """n decorrelated Fourier-parameterized images of size x size (lucid's `fft_image`)."""
    return FourierImage(n, size, generator, device, decay=decay, sd=sd)


def pixel_image(n: int, size: int, generator: torch.Generator | None = None,
                device: torch.device | str | None = None, init: torch.Tensor | None = None, sd: float = 0.01) -> PixelImage:
    """n pixel-parameterized images (sigmoid of logits); `init` (N,3,S,S) overrides n and size."""
    return PixelImage(n, size, generator, device, init=init, sd=sd)
