"""Null controls and the target reference, evaluated beside every candidate.

Null controls ask "does mere occlusion do it?" (Activation Atlas: a random-noise
patch); lift is measured against the best of them:
  noise    uniform noise in [0,1]
  gray     flat 0.5 gray
  source   a crop of a source-class TRAIN image (never an evaluated one)
  library  (with a photo library) random library photos pasted the same way
  collage  (with a photo library) random pairs of library photos side by side, as the
           search's collages are made
The reference is a positive control, shown beside the rates and never
subtracted (Brown et al. 2017: a real toaster photo as the patch):
  target   a crop of a real target-class photo or exemplar
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..library import LibraryIndex, control_photo_rows, index_library
from ..library.collages import side_by_side
from ..patches.candidate import NULL_KIND, REFERENCE_KIND, Candidate

log = logging.getLogger("patchlab")

CONTROL_NAMES = ("control-noise", "control-gray", "control-source-crop")
REFERENCE_NAME = "reference-target-photo"
LIBRARY_NAME = "control-library-photo"
COLLAGE_NAME = "control-library-collage"


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
    """Noise, gray and source-crop null controls (kind 'control') and the target-photo reference (kind 'reference').

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
        Candidate(noise, NULL_KIND, CONTROL_NAMES[0], {"control": "uniform noise in [0,1]"}),
        Candidate(torch.full((3, side, side), 0.5), NULL_KIND, CONTROL_NAMES[1], {"control": "flat gray 0.5"}),
    ]
    for images, cls, name, kind, what in (
        (source_images_pool, source, CONTROL_NAMES[2], NULL_KIND, "crop of a source-class image not evaluated"),
        (target_images, target, REFERENCE_NAME, REFERENCE_KIND, "crop of a target-class image (positive reference)"),
    ):
        if images is None or len(images) == 0:
            log.warning("no images for the %s control; it is skipped", name)
            continue
        i = _most_confident(classifier, images, cls) if cls is not None else 0
        crop = center_crop(images[i].detach().float().cpu(), crop_fraction)
        controls.append(Candidate(crop, kind, name, {"control": what, "image_index": i, "crop_fraction": crop_fraction}))
    return controls


def _random_photos(classifier, library: str | Path | LibraryIndex, n: int, generator: torch.Generator,
                   exclude: tuple[int | None, ...]) -> tuple[LibraryIndex, list[int], torch.Tensor]:
    """The library's index, n random rows outside `exclude` (`control_photo_rows`) and their photos."""
    index = library if isinstance(library, LibraryIndex) else index_library(classifier, library)
    rows = control_photo_rows(index, n, generator, exclude=[c for c in exclude if c is not None]).tolist()
    return index, rows, index.load_photos(rows)


def library_photo_control(classifier, library: str | Path | LibraryIndex, n: int, generator: torch.Generator, *,
                          exclude: tuple[int | None, ...] = ()) -> Candidate:
    """control-library-photo: n random whole library photos (none labelled, or seen by the model,
    as a class in `exclude`; picked by `patchlab.library.control_photo_rows`), each pasted the
    same way; every results row is the median photo's. Many unrelated photos flip near-boundary
    sources, so this answers "is the found photo special, or does any photo of that size do it?".
    `library`: a folder (indexed and cached by `patchlab.library`) or a LibraryIndex."""
    index, rows, photos = _random_photos(classifier, library, n, generator, exclude)
    return Candidate(photos[0], NULL_KIND, LIBRARY_NAME,
                     {"control": f"median of {len(photos)} random library photos pasted the same way",
                      "library": str(index.root), "files": [index.paths[r] for r in rows]}, members=photos)


def library_collage_control(classifier, library: str | Path | LibraryIndex, n: int, generator: torch.Generator, *,
                            exclude: tuple[int | None, ...] = ()) -> Candidate:
    """control-library-collage: n random pairs of whole library photos (picked as for
    `library_photo_control`), each pair side by side in half the width each, as the library search
    makes its collages of whole photos both ways (`patchlab.library.collages`): every other pair
    squeezed, the rest cut to their central halves (a null has no pair direction to choose a column
    by); pasted the same way, every results row is the median collage's. It answers "is the found
    collage special, or does any two photos side by side do it?"."""
    index, rows, photos = _random_photos(classifier, library, 2 * n, generator, exclude)
    w = photos.shape[-1]
    left, right = photos[:n], photos[n:]
    collages = side_by_side(left, right)
    odd = torch.arange(n) % 2 == 1
    central = slice(w // 4, w // 4 + w // 2)
    collages[odd] = side_by_side(left[odd][..., central], right[odd][..., central], width=w)
    return Candidate(collages[0], NULL_KIND, COLLAGE_NAME,
                     {"control": f"median of {n} random pairs of library photos side by side (every other pair "
                                 "squeezed, the rest cut to their central halves), pasted the same way",
                      "library": str(index.root), "files": [[index.paths[a], index.paths[b]]
                                                            for a, b in zip(rows[:n], rows[n:])]}, members=collages)
