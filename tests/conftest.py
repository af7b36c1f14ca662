"""Shared fixtures: the real default model (loaded once per session), a tiny
random-weight model, and a folder of test images covering the decoding cases
a user meets (bundled photos from scikit-image, CMYK, 16-bit, grayscale,
palette, RGBA, EXIF-rotated, truncated, not-an-image, decompression bomb)."""
from __future__ import annotations

import logging
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchlab.models import load_classifier, tiny_classifier


@pytest.fixture(scope="session")
def default_model():
    """EfficientNet-Lite0 with the packaged ImageNet weights, on CPU."""
    return load_classifier("efficientnet_lite0", "cpu")


@pytest.fixture
def tiny():
    """Random-weight tiny CNN Classifier (1000 ImageNet outputs, 32 px)."""
    return tiny_classifier()


# -- image files ------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_raw(path: Path, width: int, height: int, bit_depth: int, color_type: int, rows: bytes = b"") -> Path:
    """A PNG written by hand (PIL cannot write 16-bit RGB, nor a lying header)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def write_png16_rgb(path: Path, arr: np.ndarray) -> Path:
    """(H,W,3) uint16 -> 16-bit-per-channel RGB PNG."""
    h, w, _ = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return write_png_raw(path, w, h, 16, 2, rows)


GRADIENT16 = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (48, 1))


@dataclass
class ImageZoo:
    """Paths of the session's test images (see `image_zoo`)."""

    root: Path
    chelsea: np.ndarray  # the original RGB pixels of skimage's cat photo
    files: dict[str, Path]

    def __getitem__(self, key: str) -> Path:
        return self.files[key]


@pytest.fixture(scope="session")
def image_zoo(tmp_path_factory) -> ImageZoo:
    from skimage import data

    root = tmp_path_factory.mktemp("zoo")
    cat, coffee = data.chelsea(), data.coffee()
    f: dict[str, Path] = {}
    f["chelsea_png"] = root / "chelsea.png"
    Image.fromarray(cat).save(f["chelsea_png"])
    f["coffee_jpg"] = root / "coffee.jpg"
    Image.fromarray(coffee).save(f["coffee_jpg"], quality=95)
    f["cmyk_jpg"] = root / "cat_cmyk.jpg"
    Image.fromarray(cat).convert("CMYK").save(f["cmyk_jpg"], quality=95)
    f["gray_png"] = root / "camera_gray.png"
    Image.fromarray(data.camera()[::2, ::2]).save(f["gray_png"])
    f["gray16_png"] = root / "gradient16.png"
    Image.fromarray(GRADIENT16).save(f["gray16_png"])  # mode I;16
    f["dark16_png"] = root / "dark16.png"
    Image.fromarray((GRADIENT16 // 257).astype(np.uint16)).save(f["dark16_png"])  # 16-bit values 0..255: nearly black
    f["rgb16_png"] = root / "rgb16.png"
    write_png16_rgb(f["rgb16_png"], np.stack([GRADIENT16, GRADIENT16[:, ::-1], GRADIENT16 // 2], -1))
    pal = Image.fromarray(cat).quantize(16)
    f["palette_png"] = root / "palette.png"
    pal.save(f["palette_png"], transparency=0)
    f["rgba_png"] = root / "rgba.png"
    Image.fromarray(np.dstack([cat, np.full(cat.shape[:2], 128, np.uint8)])).save(f["rgba_png"])
    img = Image.fromarray(cat)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    f["exif6_jpg"] = root / "rotated.jpg"
    img.save(f["exif6_jpg"], exif=exif, quality=95)
    good = f["cmyk_jpg"].read_bytes()
    f["truncated_jpg"] = root / "truncated.jpg"
    f["truncated_jpg"].write_bytes(good[: len(good) // 2])
    f["text_jpg"] = root / "notes.jpg"
    f["text_jpg"].write_text("this is not a JPEG\n")
    f["bomb_png"] = root / "bomb.png"
    write_png_raw(f["bomb_png"], 100_000, 100_000, 8, 2, b"\x00" * 16)
    return ImageZoo(root, cat, f)


MIXED_GOOD = ("chelsea_png", "coffee_jpg", "cmyk_jpg", "gray16_png", "gray_png")
MIXED_BAD = ("truncated_jpg", "text_jpg")


@pytest.fixture(scope="session")
def mixed_dir(image_zoo, tmp_path_factory) -> Path:
    """Good photos plus a truncated JPEG, a text file named .jpg, a CMYK JPEG,
    a 16-bit PNG and a grayscale image (the issue's acceptance folder)."""
    root = tmp_path_factory.mktemp("mixed")
    for key in MIXED_GOOD + MIXED_BAD:
        (root / image_zoo[key].name).write_bytes(image_zoo[key].read_bytes())
    return root


@pytest.fixture(scope="session")
def mixed_names(image_zoo) -> dict[str, list[str]]:
    """File names in `mixed_dir`: 'good' ones to predict, 'bad' ones to skip."""
    return {
        "good": sorted(image_zoo[k].name for k in MIXED_GOOD),
        "bad": sorted(image_zoo[k].name for k in MIXED_BAD),
    }


# -- the CLI, in-process -------------------------------------------------------------
@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `patchlab ARGS...` through the real entry point `main()` in this process.

    `setup()` reconfigures root logging; the handlers are restored afterwards.
    """
    from patchlab.cli import main

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["patchlab", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
