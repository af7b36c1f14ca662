"""The render loop: optimize a batch of parameterized images for an objective
(Adam, lr 0.05, transformation robustness; Olah et al. 2017, lucid/lucent).

One call renders n images as one batch, each with its own per-image objective
if the objective has per-image arguments. An optional `stop` rule freezes
images one by one: a finished image is kept exactly as it was when the rule
fired and leaves the batch, so later steps only forward the active images.
Ctrl-C returns what is done so far (`interrupted=True`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .objectives import Context, Objective
from .param import ImageParam, fourier_image, pixel_image
from .transforms import standard_transforms

StopRule = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class RenderResult:
    """images (n,3,s,s) detached in [0,1]; steps_used (n,) updates each image got; per-step history."""

    images: torch.Tensor
    steps_used: torch.Tensor
    history: list[dict] = field(default_factory=list)
    stopped: torch.Tensor | None = None  # (n,) bool: the stop rule fired
    interrupted: bool = False
    logits: torch.Tensor | None = None  # (n,K) logits of the stop view at the stop (when stop given)


def _make_param(param, n: int, size: int, generator, device) -> ImageParam:
    if isinstance(param, ImageParam):
        return param
    if param == "fourier":
        return fourier_image(n, size, generator, device)
    if param == "pixel":
        return pixel_image(n, size, generator, device)
    raise ValueError(f"unknown parameterization {param!r}; use 'fourier', 'pixel' or an ImageParam")


def render(
    classifier,
    objective: Objective,
    n: int,
    size: int | None = None,
    steps: int = 256,
    param: str | ImageParam = "fourier",
    transforms: Callable | None | bool = None,
    lr: float = 0.05,
    stop: StopRule | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    stop_view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RenderResult:
    """Render n images maximizing `objective` on `classifier`.

    transforms: None -> `standard_transforms()`, False -> none, or any
    callable (images, generator) -> images. stop(logits (n,K), step) -> (n,)
    bool is evaluated on the untransformed images (after `stop_view`, e.g.
    8-bit quantization and a center crop) before each update and once after
    the last; rows of images already done hold their logits at the stop.
    """
    device = classifier.device
    size = int(size or classifier.input_size)
    p = _make_param(param, n, size, generator, device)
    n = p.n
    if transforms is None:
        transforms = standard_transforms()
    tf = transforms or None
    layers = sorted(objective.layers)
    opt = torch.optim.Adam(p.parameters(), lr=lr)

    active = torch.ones(n, dtype=torch.bool, device=device)
    steps_used = torch.full((n,), steps, dtype=torch.long, device=device)
    final: torch.Tensor | None = None
    stop_logits: torch.Tensor | None = None
    history: list[dict] = []
    interrupted = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="render", unit="step", leave=False)
    step = 0
    try:
        for step in range(steps + 1):
            img = p()
            if final is None:
                final = img.detach().clone()
            idx = active.nonzero()[:, 0]
            if stop is not None:
                with torch.no_grad():
                    view = img.detach()[idx]
                    view_logits = classifier(stop_view(view) if stop_view is not None else view)
                    if stop_logits is None:
                        stop_logits = view_logits.new_zeros(n, view_logits.shape[1])
                    stop_logits[idx] = view_logits
                    done = stop(stop_logits, step).to(device=device, dtype=torch.bool) & active
                if done.any():
                    final[done] = img.detach()[done]
                    steps_used[done] = step
                    active &= ~done
                    idx = active.nonzero()[:, 0]
            if step == steps or idx.numel() == 0:
                break
            x = img[idx] if idx.numel() < n else img
            if tf is not None:
                x = tf(x, generator)
            logits, acts = classifier.run(x, layers)
            score = objective(Context(logits, acts, idx))
            loss = -score.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"step": step, "active": int(idx.numel()), "score": float(score.detach().mean())})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(active=int(idx.numel()), score=f"{history[-1]['score']:.3g}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    with torch.no_grad():
        last = p().detach()
    if final is None:
        final = last
    final[active] = last[active]
    steps_used[active] = min(step, steps)
    stopped = ~active if stop is not None else None
    return RenderResult(final.clamp(0, 1), steps_used.cpu(), history, None if stopped is None else stopped.cpu(),
                        interrupted, stop_logits)
