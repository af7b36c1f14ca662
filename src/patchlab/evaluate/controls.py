"""Control patches: what any patch of that size does without being adversarial.

Always evaluated beside the candidates (Activation Atlas: a random-noise
control; Brown et al. 2017: a real toaster photo as the patch):
  noise   uniform noise in [0,1]
  gray    flat 0.5 gray
  source  a crop of another source-class image (never an evaluated one)
  target  a crop of a real target-class photo or exemplar ("real toaster")
"""
from __future__ import annotations

import logging

import torch

from ..patches.candidate import Candidate

log = logging.getLogger("patchlab")

CONTROL_NAMES = ("control-noise", "control-gray", "control-source-crop", "control-target-crop")


def center_crop(image: torch.Tensor, side_fraction: float = 0.6) -> torch.Tensor:
    """The central square of a (3,H,W) image with side `side_fraction` of the short side."""
    h, w = image.shape[-2:]
    s = max(1, round(min(h, w) * side_fraction))
    top, left = (h - s) // 2, (w - s) // 2
    return image[:, top : top + s, left : left + s]


@torch.no_grad()
def _most_confident(classifier, images: torch.Tensor, cls: int) -> int:
    """Index of the image the model gives the highest p(cls)."""
    probs = classifier.logits(images.to(classifier.device)).softmax(-1)[:, cls]
    return int(probs.argmax())


def make_controls(
    classifier,
    source_images_pool: torch.Tensor | None,
    target_images: torch.Tensor | None,
    generator: torch.Generator | None = None,
    *,
    source: int | None = None,
    target: int | None = None,
    side: int | None = None,
    crop_fraction: float = 0.6,
) -> list[Candidate]:
    """Noise, gray, source-crop and target-crop control Candidates (kind 'control').

    source_images_pool: (M,3,H,W) source-class images NOT in the evaluated set
    (the crop comes from the one the model finds most source-like when `source`
    is given, else the first). target_images: (K,3,H,W) real target photos or
    exemplars (the crop comes from the most target-like one when `target` is
    given). A missing pool skips that control with a warning. `side` is the
    noise/gray patch side in pixels (default: the model's input size).
    """
    side = side or classifier.input_size
    dev = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(3, side, side, generator=generator, device=dev).cpu()
    controls = [
        Candidate(noise, "control", CONTROL_NAMES[0], {"control": "uniform noise in [0,1]"}),
        Candidate(torch.full((3, side, side), 0.5), "control", CONTROL_NAMES[1], {"control": "flat gray 0.5"}),
    ]
    for images, cls, name, what in (
        (source_images_pool, source, CONTROL_NAMES[2], "crop of another source-class image"),
        (target_images, target, CONTROL_NAMES[3], "crop of a target-class image (real-object baseline)"),
    ):
        if images is None or len(images) == 0:
            log.warning("no images for the %s control; it is skipped", name)
            continue
        i = _most_confident(classifier, images, cls) if cls is not None else 0
        crop = center_crop(images[i].detach().float().cpu(), crop_fraction)
        controls.append(Candidate(crop, "control", name, {"control": what, "image_index": i, "crop_fraction": crop_fraction}))
    return controls
