"""Cell icons and the composed atlas image (Activation Atlas, Carter et al. 2019).

Each kept cell is shown by a feature visualization of its MEAN activation
vector (by default minus the mean of all cells: `run.icon_directions`),
rendered with the optvis engine and the atlas objective
dot(h, v) * cos(h, v)^2 averaged over positions, a batch of cells per call.
Icons shrink in sparse cells. With icons=False a cell shows a crop of its
most typical member image around the member's position.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import stage_generator
from ..optvis.objectives import direction
from ..optvis.render import render
from .collect import Activations
from .grid import Cells

log = logging.getLogger("patchlab")


def render_icons(
    classifier,
    layer: str,
    vectors: np.ndarray | torch.Tensor,
    size: int = 96,
    steps: int = 96,
    batch: int = 16,
    cos_power: float = 2.0,
    seed: int = 0,
) -> torch.Tensor:
    """Feature visualizations (K, 3, size, size) of K direction vectors at `layer`, `batch` at a time
    (the batch from vector i drawn from the CPU generator of stage "atlas:icons:i": the same on any device)."""
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float32)).to(classifier.device)
    out = []
    for i in range(0, len(v), batch):
        chunk = v[i : i + batch]
        res = render(
            classifier, direction(layer, chunk, cos_power=cos_power, pooled=False), len(chunk),
            size=size, steps=steps, param="fourier", lr=0.05, generator=stage_generator(seed, f"atlas:icons:{i}"),
        )
        imgs = res.images.detach().float()
        if imgs.shape[-1] != size:
            imgs = F.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(imgs.cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, size, size)


def representatives(cells: Cells, vectors: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """For each kept cell, the row (into `vectors`/the grid's points) of the member closest in cosine to the cell mean."""
    assign = cells.assign
    rows = np.arange(len(assign)) if rows is None else rows
    out = np.zeros(len(cells), dtype=np.int64)
    means = F.normalize(torch.from_numpy(cells.vectors).float(), dim=1)
    for k, cid in enumerate(cells.ids):  # loop over cells; members scored in one product
        members = np.nonzero(assign == cid)[0]
        hv = F.normalize(torch.from_numpy(np.asarray(vectors[rows[members]], dtype=np.float32)), dim=1)
        out[k] = members[int((hv @ means[k]).argmax())]
    return out


def member_crops(
    fetch: Callable[[list[int]], torch.Tensor], acts: Activations, point_rows: np.ndarray, size: int = 96
) -> torch.Tensor:
    """Crops (K, 3, size, size) of member images around their activation's position.

    fetch(image_ids) -> (k, 3, S, S) images in [0,1]. The window is two layer
    cells wide (roughly the effective receptive field's center).
    """
    if len(point_rows) == 0:
        return torch.zeros(0, 3, size, size)
    ids = acts.image_ids[point_rows]
    imgs = fetch([int(i) for i in ids]).float().cpu()
    H, W = acts.grid_hw
    S = imgs.shape[-1]
    pos = torch.from_numpy(acts.positions[point_rows].astype(np.float32))
    cy, cx = (pos[:, 0] + 0.5) / H * 2 - 1, (pos[:, 1] + 0.5) / W * 2 - 1
    half = min(1.0, 2.0 / max(H, W))
    theta = torch.zeros(len(ids), 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = half, half
    theta[:, 0, 2], theta[:, 1, 2] = cx.clamp(-1 + half, 1 - half), cy.clamp(-1 + half, 1 - half)
    grid = F.affine_grid(theta, (len(ids), 3, size, size), align_corners=False)
    del S
    return F.grid_sample(imgs, grid, mode="bilinear", padding_mode="border", align_corners=False)


def compose(
    icons: torch.Tensor, cells: Cells, cell_px: int = 96, frame: np.ndarray | None = None, min_scale: float = 0.35
) -> torch.Tensor:
    """One (3, n*cell_px, n*cell_px) image: icon k at cell (ix, iy), side shrunk in sparse cells.

    Scale = sqrt(count / 90th-percentile count) clipped to [min_scale, 1].
    frame: optional (K,) values in [-1, 1] drawn as a colored border
    (orange = target side > 0, blue = source side < 0).
    """
    n = cells.n
    canvas = torch.ones(3, n * cell_px, n * cell_px)
    if len(cells) == 0:
        return canvas
    ref = max(1.0, float(np.percentile(cells.count, 90)))
    scales = np.clip(np.sqrt(cells.count / ref), min_scale, 1.0)
    for k in range(len(cells)):  # loop over cells (at most n*n), pasting precomputed icons
        side = max(4, int(round(cell_px * scales[k])))
        icon = F.interpolate(icons[k : k + 1].float().cpu(), size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0]
        if frame is not None and np.isfinite(frame[k]):
            w = max(1, side // 24)
            v = float(np.clip(frame[k], -1, 1))
            color = torch.tensor([1.0, 0.55, 0.0]) if v > 0 else torch.tensor([0.1, 0.35, 1.0])
            color = 1 - abs(v) * (1 - color)
            icon = icon.clone()
            icon[:, :w, :], icon[:, -w:, :], icon[:, :, :w], icon[:, :, -w:] = (color[:, None, None],) * 4
        y0 = int(cells.iy[k]) * cell_px + (cell_px - side) // 2
        x0 = int(cells.ix[k]) * cell_px + (cell_px - side) // 2
        canvas[:, y0 : y0 + side, x0 : x0 + side] = icon.clamp(0, 1)
    return canvas
