"""Calibrated class exemplars: synthesized images the model calls an ordinary
member of a class, not a saturated super-stimulus.

Plain class-logit ascent (Olah et al. 2017) reaches p = 1.000 within ~60 steps,
which makes every attack on such images look impossible. Here each image is
rendered (decorrelated Fourier parameterization, mild transformation
robustness, a diversity term on pooled penultimate features) toward a
probability BAND and frozen as soon as, seen exactly as its saved 8-bit PNG is
seen when read back (center crop, quantized), it is top-1 for the class with
p inside the band. Pair-aware sets (`near`) also keep p(near class) in a band
like the one real photos of such a pair get (Activation Atlas: 1.8-13.5 %).

The PNG is saved at round(S / crop_pct) px so that `patchlab.data` (resize the
short side to S / crop_pct, center crop S) reads back exactly `images`.
"""
from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cache import cache_key, load_tensors, save_tensors
from .devices import stage_generator
from .errors import UserError
from .models import model_fingerprint
from .optvis import objectives as obj
from .optvis.render import render
from .optvis.transforms import compose, crop, jitter, random_rotate, random_scale
from .runio import ensure_writable_dir, mark_complete, new_manifest, save_png

log = logging.getLogger(__name__)

DEFAULT_BAND = (0.5, 0.9)
DEFAULT_NEAR_BAND = (0.02, 0.15)
DEFAULT_STEPS = 160
DIVERSITY = 0.5
NEAR_WEIGHT = 0.5
ROBUST_STREAK = 6  # consecutive transformed training views that must be top-1 in band before a stop
VERSION = 3  # bump when the rendering recipe changes (invalidates cached sets)


@dataclass
class ExemplarSet:
    """images (n,3,S,S) in [0,1] exactly as the saved PNGs read back; full (n,3,R,R) renders in `full`."""

    images: torch.Tensor
    records: list[dict[str, Any]]
    settings: dict[str, Any]
    full: torch.Tensor | None = None
    cached: bool = False
    seconds: float = 0.0
    interrupted: bool = False  # Ctrl-C: the images are what was done so far (not cached)
    labels: list[str] = field(default_factory=list)

    def manifest(self, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run manifest (patchlab.runio conventions) describing these images; `record` (how the
        model was loaded: weights, labels, preprocessing) is added to its config."""
        config = self.settings | {k: v for k, v in (record or {}).items() if k not in self.settings}
        m = new_manifest("dream", config, self.settings["seed"], self.settings["model"])
        m.update(kind="exemplars", synthesized=True, method=describe(self.settings), cached=self.cached,
                 seconds=round(self.seconds, 2), interrupted=self.interrupted, images=self.records)
        return m

    def save(self, folder: str | Path, record: dict[str, Any] | None = None) -> Path:
        """Write one PNG per image, then manifest.json (with `record`, see `manifest`) and the COMPLETE
        marker (each atomically)."""
        folder = ensure_writable_dir(folder)
        imgs = self.full if self.full is not None else self.images
        for rec, img in zip(self.records, imgs):
            save_png(folder / rec["file"], img)
        mark_complete(folder, self.manifest(record))
        return folder / "manifest.json"


def describe(settings: dict[str, Any]) -> str:
    """One sentence for reports: how these images were synthesized."""
    lo, hi = settings["band"]
    text = (f"Synthesized by feature visualization on {settings['model']}: each image was optimized toward "
            f"p({settings['class_name']}) in [{lo:g}, {hi:g}] and stopped once top-1 inside that band")
    if settings.get("near") is not None:
        nlo, nhi = settings["near_band"]
        text += f", with p({settings['near_name']}) in [{nlo:g}, {nhi:g}]"
    return text + f" (seed {settings['seed']}, at most {settings['steps']} steps)."


def _check_band(name: str, band) -> tuple[float, float]:
    lo, hi = float(band[0]), float(band[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise UserError(f"{name} must be two probabilities 0 <= LO < HI <= 1, got {lo:g} {hi:g}")
    return lo, hi


def _inner(lo: float, hi: float, shrink: float = 0.25) -> tuple[float, float]:
    """The middle of a band in log space (the render aims there, the stop accepts the whole band); a band
    from 0 is taken from hi / 1000 there."""
    a, b = math.log(max(lo, hi * 1e-3)), math.log(hi)
    d = (b - a) * shrink
    return math.exp(a + d), math.exp(b - d)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as a PNG stores them."""
    return images.clamp(0, 1).mul(255).round().div(255)


def center_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """Center crop to `size` (as patchlab.data crops) and quantize."""
    o = (images.shape[-1] - size) // 2
    return quantize(images[..., o : o + size, o : o + size])


def jpeg_roundtrip(images: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """Encode and decode each image as JPEG (codec per image; evaluation only)."""
    out = []
    for img in images:
        arr = img.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        dec = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy())
        out.append(dec.permute(2, 0, 1).float().div(255))
    return torch.stack(out).to(images.device)


def robustness(classifier, images: torch.Tensor, cls: int, generator: torch.Generator, views: int = 4,
               quality: int = 75) -> torch.Tensor:
    """Fraction (n,) of `views` mild perturbations (random crop 85-100 % of the side + rescale, JPEG) keeping top-1 == cls."""
    n, s = images.shape[0], images.shape[-1]
    rep = images.repeat(views, 1, 1, 1)
    zoom = compose(random_scale((1.0, 1.0 / 0.85)), jitter(max(1, s // 28)))
    pert = jpeg_roundtrip(zoom(rep, generator), quality)
    top1 = classifier.logits(pert).argmax(1).view(views, n)
    return (top1 == cls).float().mean(0).cpu()


def _train_view_top1(cls: int, n: int, device, lo: float, streak: int = ROBUST_STREAK) -> tuple[obj.Objective, torch.Tensor]:
    """A zero objective that records, per image, whether its last `streak` randomly transformed
    training views were all top-1 `cls` with p >= lo (free: it reads the training forward's
    logits). The stop rule requires it, so an image stops only once it survives jitter, scale,
    rotation and crop a few times in a row (robust exemplars, not a lucky view)."""
    count = torch.zeros(n, dtype=torch.long, device=device)
    flags = torch.zeros(n, dtype=torch.bool, device=device)

    def fn(ctx: obj.Context) -> torch.Tensor:
        lg = ctx.logits.detach()
        top1 = (lg.argmax(1) == cls) & (lg.softmax(1)[:, cls] >= lo)
        rows = ctx.index if ctx.index is not None else torch.arange(n, device=lg.device)
        count[rows] = torch.where(top1, count[rows] + 1, torch.zeros_like(count[rows]))
        flags[rows] = count[rows] >= streak
        return ctx.logits.new_zeros(ctx.logits.shape[0])

    return obj.Objective(fn, name="record-top1"), flags


def _stop_rule(cls: int, band, near: int | None, near_band, margin: float, robust_flags: torch.Tensor | None = None):
    """Done when the saved view is top-1 with p in band (and p(near) in its band), and the last
    randomly transformed training view was top-1 too (a cheap robustness check at the stop)."""
    lo, hi = band

    def rule(logits: torch.Tensor, step: int) -> torch.Tensor:
        p = logits.softmax(1)
        ok = (logits.argmax(1) == cls) & (p[:, cls] >= lo + margin) & (p[:, cls] <= hi - margin)
        if robust_flags is not None:
            ok &= robust_flags
        if near is not None:
            nlo, nhi = near_band
            ok &= (p[:, near] >= nlo * (1 + margin)) & (p[:, near] <= nhi * (1 - margin))
        return ok

    return rule


def exemplars(
    classifier,
    cls: int,
    n: int = 16,
    band: tuple[float, float] = DEFAULT_BAND,
    near: int | None = None,
    near_band: tuple[float, float] = DEFAULT_NEAR_BAND,
    size: int | None = None,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    cache: bool = True,
    progress: bool = False,
    diversity: float = DIVERSITY,
) -> ExemplarSet:
    """Render n calibrated exemplars of class `cls` (see module docstring).

    Returns an ExemplarSet whose records give, per image, p(class), top-5,
    steps used, whether it stopped in band, robustness, and p(near) if asked.
    A repeat call with the same model, class, settings and seed loads from the cache.
    """
    classes = classifier.classes
    if not 0 <= int(cls) < classifier.num_classes:
        raise UserError(f"class index {cls} out of range for {classifier.spec}")
    if near is not None and (not 0 <= int(near) < classifier.num_classes or int(near) == int(cls)):
        raise UserError("--near must be another class of the model")
    if n < 1 or steps < 1:
        raise UserError("n and steps must be positive")
    band = _check_band("--band", band)
    near_band = _check_band("--near-band", near_band) if near is not None else None
    if near is not None and near_band[0] + band[0] > 1.0:
        raise UserError("band and near band cannot both hold: their lower ends add up to more than 1")
    size = int(size or classifier.input_size)
    full_size = max(size, round(size / classifier.crop_pct))
    settings = {
        "model": classifier.spec, "class": int(cls), "class_name": classes.label(int(cls)), "n": int(n),
        "band": list(band), "near": None if near is None else int(near),
        "near_name": None if near is None else classes.label(int(near)),
        "near_band": None if near is None else list(near_band), "size": size, "png_size": full_size,
        "steps": int(steps), "seed": int(seed), "diversity": float(diversity), "version": VERSION,
    }
    key = cache_key(kind="exemplars", fingerprint=model_fingerprint(classifier), device=classifier.device.type, **settings)
    t0 = time.perf_counter()
    if cache:
        hit = load_tensors(key, with_meta=True)
        if hit is not None:
            tensors, meta = hit
            full = tensors["full"].to(classifier.device).float().div(255)
            return ExemplarSet(center_view(full, size), meta["records"], settings, full, cached=True,
                               seconds=time.perf_counter() - t0)

    device = classifier.device
    g = stage_generator(seed, f"exemplars:{int(cls)}")  # CPU draws: same images on CPU and CUDA
    objective = obj.logprob_band(int(cls), *_inner(*band))
    if near is not None:
        objective = objective + NEAR_WEIGHT * obj.logprob_band(int(near), *_inner(*near_band))
    if diversity > 0 and n > 1:
        objective = objective + obj.diversity(classifier.feature_layer, diversity, kind="pooled")
    recorder, flags = _train_view_top1(int(cls), n, device, band[0])
    objective = objective + recorder
    tf = compose(jitter(4), random_scale((0.95, 1.15)), random_rotate(5.0), crop(size, random=True))
    result = render(
        classifier, objective, n, size=full_size, steps=steps, param="fourier", transforms=tf, lr=0.05,
        stop=_stop_rule(int(cls), band, near, near_band, margin=0.01, robust_flags=flags), generator=g, progress=progress,
        stop_view=lambda x: center_view(x, size),
    )
    full = quantize(result.images)
    images = center_view(full, size)
    records = _records(classifier, images, int(cls), near, result, robustness(classifier, images, int(cls), g), band, near_band)
    out = ExemplarSet(images, records, settings, full, seconds=time.perf_counter() - t0, interrupted=result.interrupted)
    if cache and not result.interrupted:
        save_tensors(key, {"full": full.mul(255).round().byte()}, {"records": records})
    return out


def _records(classifier, images, cls, near, result, robust, band, near_band) -> list[dict[str, Any]]:
    probs = F.softmax(classifier.logits(images), dim=1).cpu()
    top5 = classifier.classes.top(probs, 5, digits=6)
    slug = classifier.classes.slug(cls)
    out = []
    for i in range(images.shape[0]):
        p = float(probs[i, cls])
        rec: dict[str, Any] = {
            "file": f"{slug}-{i:03d}.png", "p_class": round(p, 6), "top1": top5[i][0]["index"] == cls,
            "top5": top5[i],
            "steps": int(result.steps_used[i]), "stopped": bool(result.stopped[i]),
            "robust_top1": round(float(robust[i]), 3),
        }
        ok = rec["top1"] and band[0] <= p <= band[1]
        if near is not None:
            rec["p_near"] = round(float(probs[i, near]), 6)
            ok = ok and near_band[0] <= rec["p_near"] <= near_band[1]
        rec["in_band"] = bool(ok)
        out.append(rec)
    return out
