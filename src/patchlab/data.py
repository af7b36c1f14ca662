"""Image sources and robust decoding.

Layouts read from a folder (`--data DIR`):
  (a) ImageNet-style tree: DIR/n04251144/*.JPEG (also DIR/val/n04251144/...)
  (b) class-name folders: DIR/snorkel/, DIR/scuba_diver/
  (c) a flat folder plus a CSV with columns path,label (DIR/labels.csv, or
      the CSV file itself passed as --data)
  (d) a flat folder or single files without labels (prediction only)
Images decode to float RGB tensors in [0,1] at the model's input size
(resize the short side to size / crop_pct, center crop). Files that cannot be
decoded are skipped with a warning naming each one and counted.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from .classes import ClassIndex
from .errors import UserError, first_line

log = logging.getLogger("patchlab")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
RESAMPLING = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}  # the model's resize
MAX_PIXELS = 89_478_485  # PIL's default bomb threshold (~0.25 GB of RGB)
ImageFile.LOAD_TRUNCATED_IMAGES = False
DECODE_VERSION = 3  # bump when decoded pixels change (keys the library index cache); 2: centre-box resampling;
# 3: large JPEGs decoded at a reduced DCT scale


class BadImage(Exception):
    """A file that is not a usable image; the message says why."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F) -> 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def decode_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Image.Image:
    """Open, check and normalize one image to upright 8-bit RGB; raises BadImage.

    min_side: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg's
    scaled decoding, PIL's `draft`) as long as both sides stay >= min_side, which makes large
    photos several times cheaper to decode; other formats decode at full size."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    opened = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(fp)
            w, h = opened.size
            if w * h > max_pixels:
                raise BadImage(f"{name}: {w}x{h} pixels exceeds the limit of {max_pixels} (possible decompression bomb)")
            if min_side and opened.format == "JPEG":  # draft keeps full scale unless both sides stay >= min_side
                opened.draft(None, (min_side, min_side))
            opened.load()
            img = ImageOps.exif_transpose(opened)
            if img.size[0] < 1 or img.size[1] < 1:
                raise BadImage(f"{name}: empty image")
            return _to_rgb(img)  # a new image; inside the try, as exotic modes may fail to convert
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"{name}: rejected as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise BadImage(f"{name}: not an image file") from None
    except FileNotFoundError:
        raise BadImage(f"{name}: file not found") from None
    except Exception as exc:  # corrupt data surfaces as OSError, SyntaxError, struct.error, IndexError, ...
        detail = first_line(exc)
        raise BadImage(f"{name}: cannot decode ({detail})") from None
    finally:
        if opened is not None:  # release the file handle (multi-frame files keep it open)
            opened.close()


def to_model_input(img: Image.Image, size: int, crop_pct: float = 0.875, interpolation: str = "bicubic") -> torch.Tensor:
    """Resize the short side to size/crop_pct, center-crop size x size; (3,H,W) in [0,1]."""
    return pixels_to_float(torch.from_numpy(to_model_pixels(img, size, crop_pct, interpolation)).permute(2, 0, 1))


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (...,3,H,W) -> float32 in [0,1], keeping the memory layout (channels-last stays so)."""
    return pixels.float().div_(255.0)


def short_side(size: int, crop_pct: float = 0.875) -> int:
    """The short side a photo is resized to before the centre crop: size / crop_pct."""
    return max(size, round(size / crop_pct))


def resized_size(w: int, h: int, size: int, crop_pct: float = 0.875) -> tuple[int, int]:
    """The photo's size once its short side is resized to size / crop_pct (before the centre crop)."""
    scale = short_side(size, crop_pct) / min(w, h)
    return max(size, round(w * scale)), max(size, round(h * scale))


def to_model_pixels(img: Image.Image, size: int, crop_pct: float = 0.875, interpolation: str = "bicubic") -> np.ndarray:
    """`to_model_input` as uint8 (H,W,3): the same pixels, a quarter of the bytes to move.

    Only the centre crop is resampled (PIL's `box`): the sampling grid of resizing the whole
    photo and then cropping, at about 60 % of the cost on ImageNet-sized photos
    (`experiments/bench_library.py --decode`); pixels match the resize-then-crop to
    8-bit rounding (a few pixels near strong edges differ more)."""
    w, h = img.size
    nw, nh = resized_size(w, h, size, crop_pct)
    left, top = (nw - size) // 2, (nh - size) // 2
    sx, sy = w / nw, h / nh  # source pixels per resized pixel
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return np.asarray(img.resize((size, size), RESAMPLING[interpolation], box=box), dtype=np.uint8).copy()


@dataclass
class ImageRecord:
    path: Path
    label: int | None = None  # class index, None when unlabeled


@dataclass
class Images:
    """A decoded batch: images (N,3,S,S) in [0,1], labels (-1 unknown), paths, skipped files."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


class ImageFolderDataset(Dataset):
    """Decodes records lazily; a bad file yields its error message instead of a tensor.
    uint8: yield (H,W,3) uint8 arrays instead of float (3,H,W) tensors (see `iter_batches`)."""

    def __init__(self, records: Sequence[ImageRecord], size: int, crop_pct: float = 0.875, uint8: bool = False,
                 interpolation: str = "bicubic"):
        self.records, self.size, self.crop_pct, self.uint8 = list(records), size, crop_pct, uint8
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        label = -1 if rec.label is None else rec.label
        try:
            img = decode_image(rec.path, min_side=short_side(self.size, self.crop_pct))
            if self.uint8:
                pixels = to_model_pixels(img, self.size, self.crop_pct, self.interpolation)
                return torch.from_numpy(pixels), label, str(rec.path), None
            return to_model_input(img, self.size, self.crop_pct, self.interpolation), label, str(rec.path), None
        except BadImage as exc:
            return None, label, str(rec.path), str(exc)


def _collate(items):
    good = [it for it in items if it[0] is not None]
    bad = [it[3] for it in items if it[0] is None]
    images = torch.stack([it[0] for it in good]) if good else torch.empty(0, 3, 0, 0)
    if images.dtype == torch.uint8 and images.dim() == 4:  # (N,H,W,3) -> (N,3,H,W), channels-last in memory
        images = images.permute(0, 3, 1, 2)
    labels = torch.tensor([it[1] for it in good], dtype=torch.long)
    return Images(images, labels, [it[2] for it in good], bad)


def _decode_in_threads(dataset: ImageFolderDataset, batch_size: int, threads: int) -> Iterator[Images]:
    """Batches of `dataset` in order, each decoded on a pool of `threads` threads."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i in range(0, len(dataset), batch_size):
            yield _collate(list(pool.map(dataset.__getitem__, range(i, min(i + batch_size, len(dataset))))))


def iter_batches(
    records: Sequence[ImageRecord], size: int, crop_pct: float = 0.875, batch_size: int = 32, workers: int = 0,
    uint8: bool = False, threads: int | None = None, interpolation: str = "bicubic",
) -> Iterator[Images]:
    """Stream decoded batches (a large folder is never held in memory at once).

    Each skipped file is logged as a warning naming it. uint8: images come as uint8
    (N,3,H,W) laid out channels-last, a quarter of the bytes through the decode
    workers' shared memory; `pixels_to_float` turns them into the float batch.
    workers > 0: DataLoader worker processes decode ahead; 0: this process decodes
    each batch when asked, on `threads` threads (default: one per core; PIL releases
    the GIL while it decodes and resamples).
    """
    dataset = ImageFolderDataset(records, size, crop_pct, uint8, interpolation)
    if workers > 0:
        loader: Iterator[Images] = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                                   collate_fn=_collate))
    else:
        loader = _decode_in_threads(dataset, batch_size, threads or os.cpu_count() or 1)
    for batch in loader:
        for msg in batch.skipped:
            log.warning("skipped %s", msg)
        yield batch


def load_images(records: Sequence[ImageRecord], size: int, crop_pct: float = 0.875, batch_size: int = 32,
                interpolation: str = "bicubic") -> Images:
    """Decode a (small) selection into one Images batch; UserError when nothing decodes."""
    if not records:
        raise UserError("no images selected")
    parts = list(iter_batches(records, size, crop_pct, batch_size, interpolation=interpolation))
    good = [p for p in parts if len(p)]
    skipped = [s for p in parts for s in p.skipped]
    if not good:
        raise UserError(f"none of the {len(records)} selected files could be decoded as an image")
    return Images(
        torch.cat([p.images for p in good]), torch.cat([p.labels for p in good]),
        [x for p in good for x in p.paths], skipped,
    )


# -- discovering files ---------------------------------------------------------
def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def files_under(folder: Path) -> Iterator[Path]:
    """Every file under `folder`, folder by folder in name order. Symlinked folders directly
    inside it are followed (class folders may be links); links deeper down are not."""
    try:
        links = sorted(d for d in folder.iterdir() if d.is_symlink() and d.is_dir())
    except OSError:  # unreadable: os.walk below skips it too
        links = []
    for top in (folder, *links):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            yield from (Path(dirpath) / name for name in sorted(filenames))


def list_image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files given directly plus image-suffixed files inside given folders (recursive, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in files_under(p) if is_image_file(f))
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"no such file or folder: {p}")
    return out


def check_photo_folder(folder: Path, what: str) -> Path:
    """UserError unless `folder` holds at least one image file that decodes. Walks only up to
    the first such file, so a large folder costs one decode; a folder with no readable photo
    is walked whole. `what` names the folder in the message."""
    n_bad, first_error = 0, None
    for path in files_under(folder):
        if not is_image_file(path):
            continue
        try:
            decode_image(path)
            return folder
        except BadImage as exc:
            n_bad, first_error = n_bad + 1, first_error or str(exc)
    if not n_bad:
        raise UserError(f"no images found in {what} {folder}")
    raise UserError(f"none of the {n_bad} image files in {what} {folder} could be decoded (first: {first_error})")


def _read_csv(csv_path: Path, classes: ClassIndex) -> list[ImageRecord]:
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {csv_path}: {exc}") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise UserError(f"{csv_path} needs a header with columns path,label")
    records = []
    for line, row in enumerate(rows, start=2):
        try:
            records.append(ImageRecord(csv_path.parent / (row["path"] or ""), classes.resolve(row["label"] or "")))
        except UserError as exc:
            raise UserError(f"{csv_path} line {line}: {exc}") from None
    return records


def _class_of_folder(name: str, classes: ClassIndex) -> int | None:
    found = classes.search(name)
    return found[0].index if len(found) == 1 else None


def discover(root: str | Path, classes: ClassIndex) -> list[ImageRecord]:
    """All labeled images under `root`, in layouts (a), (b) or (c); unlabeled for (d)."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data path does not exist: {root}")
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return _read_csv(root, classes)
        return [ImageRecord(root)]
    if (root / "labels.csv").is_file():
        return _read_csv(root / "labels.csv", classes)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for split in ("val", "train", "test"):  # ImageNet tree given at its top
        if (root / split).is_dir() and not any(_class_of_folder(d.name, classes) is not None for d in subdirs):
            return discover(root / split, classes)
    records: list[ImageRecord] = []
    unknown = []
    for d in subdirs:
        label = _class_of_folder(d.name, classes)
        if label is None:
            unknown.append(d.name)
            continue
        records += [ImageRecord(f, label) for f in list_image_files([d])]
    if unknown and records:
        log.warning("ignored %d folder(s) that name no class: %s", len(unknown), ", ".join(unknown[:5]))
    if not records:  # (d): unlabeled files at the top (other folders, if any, name no class)
        records = [ImageRecord(f) for f in sorted(root.iterdir()) if is_image_file(f)]
    if not records:
        hint = f" (its folders name no class: {', '.join(unknown[:5])})" if unknown else ""
        raise UserError(f"no images found in {root}{hint}")
    return records


def select(records: Sequence[ImageRecord], label: int, classes: ClassIndex, root: str | Path = "") -> list[ImageRecord]:
    """Records of one class; UserError naming the class when there are none."""
    chosen = [r for r in records if r.label == label]
    if not chosen:
        where = f" in {root}" if root else ""
        raise UserError(f"no images of class {classes.label(label)!r}{where}")
    return chosen
