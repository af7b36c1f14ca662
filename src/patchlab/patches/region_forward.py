"""Logits of images with a patch pasted in one box, recomputing only what the patch changes.

Incremental inference (Nakandala et al. 2019, "Incremental and Approximate
Inference for Faster Occlusion-based Deep CNN Explanations"): a patch changes
only the cells of each feature map whose receptive field meets it; every other
cell equals the unpatched image's. So the unpatched images' block inputs are
computed once, and each pasted image runs each convolution only on the changed
rectangle plus the context its kernel reads (taken from the cached maps), until
the rectangle covers the whole map; from there the network runs as usual. The
logits equal the full forward's up to float rounding (the tests bound the
difference by 1e-4 of what the patch changes; the pasted pixels are bitwise the
same, composited on the window from the whole image's sampling grid).

On EfficientNet-Lite0 at 224 px, a corner patch of 10 % of the image area
changes 10-13 % of the 112 x 112 and 56 x 56 maps (where a plain forward spends
a third of its time), a quarter to all of the 14 x 14 ones and all of the 7 x 7;
one of 25 % changes 26-29 % of the large maps. The pair search on the 2-core
CPU scores 1.5-1.7x as many pasted images per second as the bare forward runs
plain images (`experiments/bench_library.py`). Implemented for EfficientNet-Lite
(`patchlab.efficientnet_lite`, the default model); `paste_forward` returns None
for other networks, and callers fall back to pasting and a full forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module  # the global hook registries

from ..models.efficientnet_lite import EfficientNetLite, hooked, same_pads
from .apply import composite, named_centers, patch_grid


@dataclass(frozen=True)
class Box:
    """Half-open rows [y0, y1) and columns [x0, x1) of one map's grid."""

    y0: int
    y1: int
    x0: int
    x1: int

    def within(self, outer: "Box") -> tuple[slice, slice]:
        """This box as slices of a window that starts at `outer`'s corner."""
        return slice(self.y0 - outer.y0, self.y1 - outer.y0), slice(self.x0 - outer.x0, self.x1 - outer.x0)


def _conv_span(lo: int, hi: int, size: int, k: int, s: int) -> tuple[int, int, int, int, int, int]:
    """For input rows [lo, hi) that changed: the output rows [o0, o1) that read them, the input rows
    [i0, i1) inside the map those outputs read, and the zero rows (before, after) beyond the map."""
    p0, n_out = same_pads(size, k, s)[0], math.ceil(size / s)
    o0, o1 = max(0, -(-(lo + p0 - k + 1) // s)), min(n_out, (hi - 1 + p0) // s + 1)
    a, b = o0 * s - p0, (o1 - 1) * s - p0 + k
    return o0, o1, max(a, 0), min(b, size), max(0, -a), max(0, b - size)


def conv_region(conv: nn.Conv2d, box: Box, hw: tuple[int, int]) -> tuple[Box, Box, tuple[int, int, int, int]]:
    """For a changed `box` of a (H, W) input: the output box that changes, the input window it
    reads (inside the map), and the zero padding (left, right, top, bottom) beyond the map."""
    (ky, kx), (sy, sx) = conv.kernel_size, conv.stride
    oy0, oy1, iy0, iy1, pt, pb = _conv_span(box.y0, box.y1, hw[0], ky, sy)
    ox0, ox1, ix0, ix1, pl, pr = _conv_span(box.x0, box.x1, hw[1], kx, sx)
    return Box(oy0, oy1, ox0, ox1), Box(iy0, iy1, ix0, ix1), (pl, pr, pt, pb)


def _conv_window(conv: nn.Conv2d, x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    return F.conv2d(F.pad(x, pads), conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def _zero_border(h: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero the outer rows and columns that stand for padding beyond the map (in place)."""
    left, right, top, bottom = pads
    h[:, :, :top], h[:, :, h.shape[2] - bottom :] = 0, 0
    h[:, :, :, :left], h[:, :, :, h.shape[3] - right :] = 0, 0
    return h


def _assemble(base: torch.Tensor, rows: torch.Tensor, window: Box, tile: torch.Tensor, at: Box) -> torch.Tensor:
    """The cached maps of images `rows` over `window`, with the changed `tile` (over box `at`) written in."""
    out = base[rows, :, window.y0 : window.y1, window.x0 : window.x1]
    ys, xs = at.within(window)
    out[:, :, ys, xs] = tile
    return out


def _shift(box: Box, m: int) -> Box:
    return Box(box.y0 + m, box.y1 + m, box.x0 + m, box.x1 + m)


def _margin(block: nn.Module) -> int:
    """The zero margin a block's cached input carries: the most SAME padding on a side."""
    return block._depthwise_conv.kernel_size[0] // 2


def pixel_box(area: float, position: str, size: int) -> Box:
    """Pixels a square patch of `area` (fraction of the image) at a named position may change,
    with a pixel's margin for the antialiased edge (`apply_patch`)."""
    c = named_centers(position, torch.tensor([float(area)]), (size, size))[0] * size
    half = math.sqrt(area) * size / 2 + 1
    lo = [max(0, math.floor(float(v) - half)) for v in c]
    hi = [min(size, math.ceil(float(v) + half)) for v in c]
    return Box(lo[1], hi[1], lo[0], hi[0])


class PasteForward:
    """Logits of cached base images with patches pasted, for an EfficientNet-Lite classifier."""

    def __init__(self, classifier, images: torch.Tensor, batch_size: int = 64):
        self.clf, self.net = classifier, classifier.net
        self.size = classifier.input_size
        self.images = images.to(classifier.device)
        self.margins = [_margin(b) for b in self.net._blocks]
        levels: list[list[torch.Tensor]] = [[] for _ in range(len(self.net._blocks) + 1)]
        clean = []
        with torch.no_grad():
            for i in range(0, len(self.images), batch_size):  # batched: the memory of one batch beside the cache
                x = self._normalize(self.images[i : i + batch_size])
                x = F.relu6(self.net._bn0(self.net._conv_stem(x)))
                for j, (block, m) in enumerate(zip(self.net._blocks, self.margins)):
                    levels[j].append(F.pad(x, (m, m, m, m)))
                    x = block(x)
                levels[-1].append(x)
                clean.append(self.net.classify(x))
        self.inputs = [torch.cat(t) for t in levels[:-1]]  # each block's unpatched input, with a zero margin
        self.output = torch.cat(levels[-1])  # the last block's, unpatched
        self.clean = torch.cat(clean)  # the unpatched images' logits

    def cache_bytes(self) -> int:
        """Memory held by the cached unpatched maps."""
        return sum(t.numel() * t.element_size() for t in [*self.inputs, self.output])

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return ((pixels - self.clf.mean) / self.clf.std).contiguous(memory_format=torch.channels_last)

    def _stem(self, rows: torch.Tensor, patches: torch.Tensor, area: float, position: str):
        """The stem on the pixels the patch changes: the changed tile of its output and its box.
        The patch is composited as `apply_patch` does over the whole image, on the window only."""
        s, n = self.size, len(rows)
        conv = self.net._conv_stem
        out, win, pads = conv_region(conv, pixel_box(area, position, s), (s, s))
        dev = self.images.device
        one = torch.full((1,), float(area), device=dev)
        grid, half = patch_grid(1, (s, s), one, named_centers(position, one, (s, s)), 0.0, dev)
        grid = grid[:, win.y0 : win.y1, win.x0 : win.x1].expand(n, -1, -1, -1)
        pixels = self.images[rows, :, win.y0 : win.y1, win.x0 : win.x1]
        pasted = composite(pixels, patches.to(dev), grid, half.expand(n))
        return F.relu6(self.net._bn0(_conv_window(conv, self._normalize(pasted), pads)), inplace=True), out

    def _block(self, i: int, rows: torch.Tensor, tile: torch.Tensor, box: Box):
        """Block i on the changed `box` of its input: the changed tile of its output and its box.
        The cached input carries a zero margin, so the window with its padding is one gather."""
        block, base, m = self.net._blocks[i], self.inputs[i], self.margins[i]
        conv = block._depthwise_conv
        out, win, (pl, pr, pt, pb) = conv_region(conv, box, (base.shape[2] - 2 * m, base.shape[3] - 2 * m))
        padded = Box(win.y0 - pt + m, win.y1 + pb + m, win.x0 - pl + m, win.x1 + pr + m)
        x = base[rows, :, padded.y0 : padded.y1, padded.x0 : padded.x1]
        ys, xs = _shift(box, m).within(padded)
        x[:, :, ys, xs] = tile
        h = x
        if block.has_expand:
            h = _zero_border(F.relu6(block._bn0(block._expand_conv(x)), inplace=True), (pl, pr, pt, pb))
        h = F.conv2d(h, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
        h = block._bn2(block._project_conv(F.relu6(block._bn1(h), inplace=True)))
        if block.residual:
            ys, xs = _shift(out, m).within(padded)
            h = h + x[:, :, ys, xs]
        return h, out

    @torch.no_grad()
    def logits(self, rows: torch.Tensor, patches: torch.Tensor, area: float, position: str) -> torch.Tensor:
        """Logits of base images `rows` (B,) each with its patch (B,3,h,w) of `area` at `position`."""
        rows = rows.to(self.images.device)
        tile, box = self._stem(rows, patches, area, position)
        blocks = self.net._blocks
        for i, block in enumerate(blocks):
            h, w = (n - 2 * self.margins[i] for n in self.inputs[i].shape[-2:])
            if box == Box(0, h, 0, w):  # every cell changed: the plain forward from here
                x = tile.contiguous(memory_format=torch.channels_last)
                for rest in blocks[i:]:
                    x = rest(x)
                break
            tile, box = self._block(i, rows, tile, box)
        else:
            h, w = self.output.shape[-2:]
            x = _assemble(self.output, rows, Box(0, h, 0, w), tile, box)
        return self.net.classify(x)


CACHE_BYTES = 2 << 30  # the most memory the unpatched maps may take (Lite0: 4.4 MiB an image, so ~470 images)


def _cache_bytes_per_image(net: EfficientNetLite, size: int) -> int:
    """What `PasteForward.cache_bytes` holds per image, from the layer shapes (no forward pass):
    each block's input with its margin, and the last block's output."""
    side = math.ceil(size / net._conv_stem.stride[0])
    cells = 0
    for block in net._blocks:
        m, conv = _margin(block), block._depthwise_conv
        channels = block._expand_conv.in_channels if block.has_expand else conv.in_channels
        cells += channels * (side + 2 * m) ** 2
        side = math.ceil(side / conv.stride[0])
    cells += net._blocks[-1]._project_conv.out_channels * side**2
    return cells * net._conv_stem.weight.element_size()


def _observed(classifier) -> bool:
    """Whether a hook may watch the forward: those `hooked` sees, and pre-forward hooks."""
    return bool(_module._global_forward_pre_hooks) or any(
        hooked(m) or m._forward_pre_hooks for m in classifier.modules())


def paste_forward(classifier, images: torch.Tensor, max_bytes: int = CACHE_BYTES,
                  batch_size: int = 64) -> PasteForward | None:
    """A PasteForward for `images` (N,3,S,S) at the classifier's input size, or None where the
    network is not an EfficientNet-Lite, is hooked (a hook must see the full forward), or
    the images' cached maps would take more than `max_bytes`."""
    net = getattr(classifier, "net", None)
    if not isinstance(net, EfficientNetLite) or images.shape[-2:] != (classifier.input_size,) * 2:
        return None
    if _observed(classifier) or not len(images):
        return None
    if len(images) * _cache_bytes_per_image(net, classifier.input_size) > max_bytes:
        return None
    return PasteForward(classifier, images, batch_size)
