"""Synthesized universal targeted patch with expectation over transformation.

Brown, Mane, Roy, Abadi, Gilmer 2017, "Adversarial Patch" (arXiv:1712.09665):
optimize one patch so that, pasted at a random area, rotation and location on
images of the source class (or of any class: the universal setting), the model
predicts the target class. Loss per step on a batch of random placements:

    CE(logits, target) - source_weight * CE(logits, source)

The patch is parameterized as sigmoid(w) and optimized with Adam (default), or
directly in pixel space with sign-gradient steps ("pgd", clipped to [0,1]).
With `physical` ranges every placement also goes through a print-and-camera draw
(`patchlab.patches.physical`: EOT over the physical transforms, Athalye et al. 2018;
Eykholt et al. 2018's RP2), the same transforms the physical protocol measures.

Example:
    >>> clf = load_classifier("efficientnet_lite0")
    >>> cand = synthesize_patch(clf, snorkels, target=983, source=801, steps=100)
    >>> cand.patch.shape, cand.curve[-1]["success"]
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ..models import Classifier
from .apply import apply_patch
from .candidate import Candidate
from .eot import EOT, sample_placements
from .physical import PhysicalRanges, apply_physical, sample_physical

OPTIMIZERS = ("adam", "pgd")
SCHEDULES = ("constant", "cosine")


class SignGradient(torch.optim.Optimizer):
    """Projected sign-gradient descent on pixels: p <- clip(p - lr * sign(grad), 0, 1)."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(group["lr"] * p.grad.sign()).clamp_(0, 1)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16 or AMX); elsewhere CPU bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """Autocast dtype for the training step: bfloat16 when the device runs it natively
    (auto: CUDA with bf16 support, or a CPU with AVX512-BF16/AMX, measured ~1.4-1.7x
    faster forward+backward there), else None (float32). amp=False forces float32,
    amp=True asks for bfloat16 on any CPU. Evaluation always runs in float32.

    float16 is not used: without loss scaling the patch gradients underflow."""
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and (amp or cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _init_param(optimizer: str, patch_px: int, generator: torch.Generator | None, device: torch.device,
                init: torch.Tensor | None = None) -> torch.Tensor:
    if init is not None:  # start from a given patch (e.g. a rendered feature patch)
        x = init.detach().to(device, torch.float32).clamp(0, 1)
        w = torch.logit(x.clamp(1e-3, 1 - 1e-3)) if optimizer == "adam" else x.clone()
        return w.requires_grad_(True)
    gen_dev = generator.device if generator is not None else device
    if optimizer == "adam":  # logits of a mid-gray-centered noise patch
        w = torch.randn(3, patch_px, patch_px, generator=generator, device=gen_dev) * 0.5
    else:
        w = torch.rand(3, patch_px, patch_px, generator=generator, device=gen_dev)
    return w.to(device).requires_grad_(True)


def averaging_decay(steps: int, window: float) -> float:
    """The decay of an exponential moving average of `steps` iterates that spans `window` of them
    (its effective length, 1 / (1 - decay) steps, is window * steps): 1 - 1 / (window * steps); 0
    (the last iterate) when that is one step or less. A fixed decay spans a fixed number of steps, so
    a short run averages in its early, weak iterates (Polyak & Juditsky 1992 averaging, scaled with
    the run as in tail averaging)."""
    if not 0 <= window <= 1:
        raise ValueError(f"window must be a fraction of the steps in [0, 1], got {window}")
    span = window * steps
    return 1.0 - 1.0 / span if span > 1 else 0.0


def _check_args(classifier: Classifier, images: torch.Tensor, target: int, source: int | None, steps: int,
                patch_px: int, batch_size: int, optimizer: str, source_weight: float, restarts: int,
                schedule: str = "constant", average: float = 0.0) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N,3,H,W) batch, got {tuple(images.shape)}")
    for name, cls in (("target", target), ("source", source)):
        if cls is not None and not 0 <= int(cls) < classifier.num_classes:
            raise ValueError(f"{name} class {cls} out of range for {classifier.num_classes} classes")
    if steps < 1 or patch_px < 2 or batch_size < 1 or restarts < 1:
        raise ValueError("steps, batch_size and restarts must be >= 1 and patch_px >= 2")
    if not 0 <= average < 1:
        raise ValueError(f"average must be in [0, 1), got {average}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if source_weight and source is None:
        raise ValueError("source_weight needs a source class")


def _steps(steps: int, progress: bool, desc: str) -> Iterator[int]:
    if not progress:
        return iter(range(steps))
    from tqdm.auto import tqdm

    return iter(tqdm(range(steps), desc=desc, leave=False))


def _optimize(
    classifier: Classifier, images: torch.Tensor, target: int, source: int | None, eot: EOT, steps: int,
    patch_px: int, batch_size: int, lr: float, optimizer: str, source_weight: float,
    generator: torch.Generator | None, dtype: torch.dtype | None, progress: bool, desc: str,
    init: torch.Tensor | None = None, patch_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    schedule: str = "constant", average: float = 0.0, physical: PhysicalRanges | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimization run: returns the patch (3,p,p), a (steps,2) tensor of (loss, success), s/step."""
    dev = images.device
    n, hw = images.shape[0], tuple(images.shape[-2:])
    gen_dev = generator.device if generator is not None else dev
    param = _init_param(optimizer, patch_px, generator, dev, init)
    opt = torch.optim.Adam([param], lr=lr) if optimizer == "adam" else SignGradient([param], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == "cosine" else None
    to_patch = torch.sigmoid if optimizer == "adam" else (lambda w: w)
    tgt = torch.full((batch_size,), int(target), device=dev, dtype=torch.long)
    src = torch.full((batch_size,), int(source), device=dev, dtype=torch.long) if source is not None else None
    record = torch.zeros(steps, 2, device=dev)
    mean_patch: torch.Tensor | None = None
    t_first = time.perf_counter()
    for step in _steps(steps, progress, desc):
        if step == 1:  # time from here: step 0 pays one-off warm-up costs
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t_first = time.perf_counter()
        idx = torch.randint(n, (batch_size,), generator=generator, device=gen_dev).to(dev)
        where = sample_placements(batch_size, hw, eot, generator, dev)
        draw = sample_physical(batch_size, physical, generator) if physical is not None else None  # CPU draws
        with _autocast(dev, dtype):
            if draw is None:
                patched = apply_patch(images.index_select(0, idx), to_patch(param), where.area, where.centers,
                                      where.angle, eot.shape)
            else:  # the draw's rotation and scale replace the placement's angle
                patched = apply_physical(images.index_select(0, idx), to_patch(param), draw, where.area, where.centers,
                                         eot.shape)
            logits = classifier(patched).float()
        loss = F.cross_entropy(logits, tgt)
        if source_weight:
            loss = loss - source_weight * F.cross_entropy(logits, src)
        if patch_loss is not None:  # a term on the patch itself (e.g. keep it feature-like / disguised)
            loss = loss + patch_loss(to_patch(param))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if decay is not None:
            decay.step()
        if average:  # exponential moving average of the iterates, from the first (Polyak & Juditsky 1992)
            now = to_patch(param.detach())
            mean_patch = now.clone() if mean_patch is None else mean_patch.lerp_(now, 1.0 - average)
        with torch.no_grad():  # bookkeeping only; stays on the device (no sync per step)
            record[step, 0] = loss.detach()
            record[step, 1] = (logits.argmax(1) == tgt).float().mean()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per_step = (time.perf_counter() - t_first) / max(1, steps - 1)
    final = mean_patch if mean_patch is not None else to_patch(param.detach())
    return final.clamp(0, 1), record.cpu(), per_step


def synthesize_patch(
    classifier: Classifier,
    images: torch.Tensor,
    target: int,
    source: int | None = None,
    steps: int = 100,
    patch_px: int = 64,
    area: tuple[float, float] = (0.05, 0.25),
    rotation_deg: float = 20.0,
    batch_size: int = 8,
    lr: float = 0.1,
    optimizer: str = "adam",
    source_weight: float = 0.0,
    restarts: int = 1,
    shape: str = "square",
    area_sampling: str = "uniform",
    generator: torch.Generator | None = None,
    progress: bool = False,
    amp: bool | None = None,
    name: str | None = None,
    init: torch.Tensor | None = None,
    patch_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    schedule: str = "constant",
    average: float = 0.0,
    fixed_fraction: float = 0.0,
    physical: PhysicalRanges | None = None,
) -> Candidate:
    """Train a universal targeted patch with EOT (Brown et al. 2017).

    classifier: frozen Classifier (images in [0,1]). images: (N,3,H,W) training
    images in [0,1] (source-class images, or images of many classes when
    source is None, the universal setting). target/source: class indices.
    steps: optimization steps, each on `batch_size` images drawn at random
    with one random placement each: area uniform in `area` (fraction of the
    image area), rotation uniform in +-rotation_deg, location uniform inside
    the image (area_sampling 'log': log-uniform in `area`). lr: Adam learning
    rate on the sigmoid logits, or the pixel step of "pgd". source_weight:
    weight of -CE(source) in the loss.
    restarts: independent runs from fresh random patches; the best (highest
    batch success over the last fifth of the steps, then lowest loss) is kept.
    amp: bfloat16 autocast (None: where the device runs it natively, see amp_dtype).
    On CUDA the images are laid out channels_last.
    init: optional (3,p,p) patch to start from instead of noise (every restart).
    patch_loss: optional callable(patch (3,p,p)) -> scalar added to the loss
    (used by feature tuning to keep a patch feature-like or disguised).
    schedule: 'constant' learning rate, or 'cosine' annealing to zero over the steps
    (Loshchilov & Hutter 2017, SGDR, without restarts). average: in [0,1); when > 0 the
    returned patch is the exponential moving average of the iterates with this decay
    (Polyak & Juditsky 1992 averaging), not the last iterate. fixed_fraction: share of
    the placements put unrotated at the evaluator's fixed positions (corners, centre; see EOT).
    physical: ranges of a print-and-camera draw applied to every placement (`apply_physical`; its
    rotation replaces rotation_deg); None: plain compositing. Its draws come after the placement's
    from `generator`, so without it the random stream is unchanged.
    Returns Candidate(kind="synth") with curve rows {step, loss, success}
    (success = fraction of the step's batch whose top-1 is the target) and
    reads_as (the model's top-1 for the patch alone).
    """
    _check_args(classifier, images, target, source, steps, patch_px, batch_size, optimizer, source_weight, restarts,
                schedule, average)
    eot = EOT(tuple(area), rotation_deg, shape, area_sampling, fixed_fraction)
    dev = classifier.device
    images = images.to(dev, torch.float32)
    if dev.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = amp_dtype(dev, amp)
    window = max(1, steps // 5)
    runs = []
    for r in range(restarts):
        patch, record, per_step = _optimize(
            classifier, images, target, source, eot, steps, patch_px, batch_size, lr, optimizer, source_weight,
            generator, dtype, progress, f"synth {r + 1}/{restarts}", init, patch_loss, schedule, average, physical,
        )
        tail = record[-window:]
        runs.append((float(tail[:, 1].mean()), -float(tail[:, 0].mean()), patch, record, per_step))
    best = max(range(restarts), key=lambda i: runs[i][:2])
    score, _, patch, record, per_step = runs[best]
    with torch.no_grad():
        probs = classifier(patch[None]).float().softmax(-1)[0]
    top = int(probs.argmax())
    names = classifier.classes
    sname = "any" if source is None else names.slug(source)
    provenance = {
        "method": "Brown et al. 2017, Adversarial Patch (EOT)",
        "target": int(target), "source": None if source is None else int(source), "steps": steps,
        "patch_px": patch_px, "area": list(eot.area), "area_sampling": area_sampling, "fixed_fraction": fixed_fraction,
        "rotation_deg": rotation_deg, "shape": shape,
        "batch_size": batch_size, "lr": lr, "schedule": schedule, "average": average,
        "optimizer": optimizer, "source_weight": source_weight,
        "restarts": restarts, "best_restart": best, "restart_scores": [round(r[0], 4) for r in runs],
        "train_images": int(images.shape[0]), "sec_per_step": per_step, "device": str(dev),
        **({"physical": physical.as_dict()} if physical is not None else {}),
        "autocast": None if dtype is None else str(dtype).replace("torch.", ""),
    }
    curve = [{"step": i, "loss": float(l), "success": float(s)} for i, (l, s) in enumerate(record.tolist())]
    return Candidate(
        patch=patch.float().cpu(), kind="synth", name=name or f"synth-{sname}-to-{names.slug(target)}", provenance=provenance,
        curve=curve, score=score,
        reads_as=names.prediction(top, probs[top], digits=None),
    )


__all__ = ["OPTIMIZERS", "SignGradient", "amp_dtype", "averaging_decay", "cpu_has_native_bf16", "synthesize_patch"]

