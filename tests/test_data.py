"""Image sources and robust decoding (patchlab.data)."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from patchlab.classes import imagenet_classes
from patchlab.data import (
    BadImage, ImageRecord, decode_image, discover, iter_batches, list_image_files, load_images, select, to_model_input,
)
from patchlab.errors import UserError

CLASSES = imagenet_classes()
SNORKEL, SCUBA = 801, 983


def _px(path, **kw) -> np.ndarray:
    return np.asarray(decode_image(path, **kw)).astype(int)


# -- decoding -----------------------------------------------------------------------
def test_photos_decode_to_rgb(image_zoo):
    out = _px(image_zoo["chelsea_png"])
    assert out.shape == image_zoo.chelsea.shape and np.array_equal(out, image_zoo.chelsea)
    assert decode_image(image_zoo["coffee_jpg"]).mode == "RGB"
    assert np.array_equal(_px(image_zoo["chelsea_png"].read_bytes()), out)  # bytes in, same pixels


def test_cmyk_jpeg_colors_come_out_right(image_zoo):
    out = _px(image_zoo["cmyk_jpg"])
    assert out.shape == image_zoo.chelsea.shape
    assert np.abs(out - image_zoo.chelsea).mean() < 4  # JPEG loss only, no inverted/garbled channels


def test_16bit_gray_gradient_spans_full_range(image_zoo):
    with Image.open(image_zoo["gray16_png"]) as raw:
        assert raw.mode.startswith("I")
    out = _px(image_zoo["gray16_png"])
    row = out[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and abs(row[128] - 128) <= 1  # not clipped to white
    assert np.all(np.diff(row) >= 0) and np.array_equal(out[..., 0], out[..., 2])
    dark = _px(image_zoo["dark16_png"])  # 16-bit values 0..255 are nearly black, not a full gradient
    assert dark.max() <= 1


def test_16bit_rgb_png(image_zoo):
    out = _px(image_zoo["rgb16_png"])
    assert out[0, 0].tolist() == [0, 255, 0] and out[0, -1].tolist() == [255, 0, 127]


def test_grayscale_palette_and_rgba(image_zoo):
    gray = _px(image_zoo["gray_png"])
    assert gray.ndim == 3 and gray.shape[2] == 3 and np.array_equal(gray[..., 0], gray[..., 1])
    with Image.open(image_zoo["palette_png"]) as raw:
        pal_src, opaque = np.asarray(raw), np.asarray(raw.convert("RGB")).astype(int)
    pal = _px(image_zoo["palette_png"])
    assert (pal_src == 0).any() and np.all(pal[pal_src == 0] == 255)  # transparent index over white
    assert np.array_equal(pal[pal_src != 0], opaque[pal_src != 0])
    rgba = _px(image_zoo["rgba_png"])  # alpha 128 over white
    expected = (image_zoo.chelsea.astype(float) * 128 + 255 * 127) / 255
    assert np.abs(rgba - expected).max() <= 1.5


def test_exif_orientation_is_applied(image_zoo):
    out = _px(image_zoo["exif6_jpg"])
    with Image.open(image_zoo["exif6_jpg"]) as raw:  # stored pixels, EXIF ignored
        assert raw.getexif()[0x0112] == 6
        stored = np.asarray(raw.convert("RGB")).astype(int)
    assert out.shape == (stored.shape[1], stored.shape[0], 3)
    assert np.array_equal(out, np.rot90(stored, k=-1))  # orientation 6 = rotate 90 degrees clockwise


@pytest.mark.parametrize("key, words", [("truncated_jpg", "cannot decode"), ("text_jpg", "not an image")])
def test_bad_files_raise_badimage_naming_the_file(image_zoo, key, words):
    with pytest.raises(BadImage, match=words) as err:
        decode_image(image_zoo[key])
    assert image_zoo[key].name in str(err.value)


def test_decompression_bombs_are_rejected(image_zoo):
    with pytest.raises(BadImage, match="decompression bomb") as err:
        decode_image(image_zoo["bomb_png"])
    assert "bomb.png" in str(err.value)
    with pytest.raises(BadImage, match=r"451x300 pixels exceeds the limit of 1000"):
        decode_image(image_zoo["chelsea_png"], max_pixels=1000)


def test_large_jpegs_decode_at_a_reduced_dct_scale_that_keeps_min_side(image_zoo, tmp_path):
    coffee = decode_image(image_zoo["coffee_jpg"])  # 600x400
    assert decode_image(image_zoo["coffee_jpg"], min_side=150).size == (300, 200)  # 1/2: both sides stay >= 150
    assert decode_image(image_zoo["coffee_jpg"], min_side=100).size == (150, 100)  # 1/4
    assert decode_image(image_zoo["coffee_jpg"], min_side=50).size == (75, 50)  # 1/8
    assert decode_image(image_zoo["coffee_jpg"], min_side=201).size == coffee.size  # 1/2 would go below 201
    assert decode_image(image_zoo["chelsea_png"], min_side=50).size == image_zoo.chelsea.shape[1::-1]  # not a JPEG
    full = to_model_input(coffee, 64, 0.875)
    scaled = to_model_input(decode_image(image_zoo["coffee_jpg"], min_side=73), 64, 0.875)
    assert (full - scaled).abs().mean() < 2 / 255  # the same picture, resampled from fewer pixels
    records = [ImageRecord(image_zoo["coffee_jpg"])]  # what the loaders use: the resized short side
    assert torch.equal(load_images(records, 64, 0.875).images[0], scaled)


def test_to_model_input_shape_and_range(image_zoo):
    x = to_model_input(decode_image(image_zoo["coffee_jpg"]), 64)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    tiny = to_model_input(Image.new("RGB", (5, 3), (255, 0, 0)), 16)  # upsampled, not an error
    assert tiny.shape == (3, 16, 16) and torch.allclose(tiny[0], torch.ones(16, 16))


@pytest.mark.parametrize("wh", [(500, 375), (333, 500), (224, 224), (97, 301), (5, 3)])
def test_model_pixels_match_resize_then_crop(wh):
    """The centre-box resampling keeps the grid of resizing the whole photo and cropping its centre."""
    from patchlab.data import to_model_pixels

    g = np.random.default_rng(0)
    w, h = wh
    smooth = np.kron(g.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)), np.ones((4, 4, 1)))[:h, :w]
    img = Image.fromarray(smooth.astype(np.uint8))
    size, crop_pct = 64, 0.875
    short = round(size / crop_pct)
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    ref = np.asarray(img.resize((nw, nh), Image.BICUBIC).crop((left, top, left + size, top + size)), dtype=np.int16)
    got = to_model_pixels(img, size, crop_pct).astype(np.int16)
    assert got.shape == (size, size, 3)
    diff = np.abs(got - ref)
    assert diff.mean() < 0.5 and (diff <= 1).mean() > 0.98


@pytest.mark.parametrize("size", [224, 240, 260])
def test_model_pixels_exact_at_the_resized_size(size):
    """A picture already at round(size / crop_pct) px (how exemplar PNGs are saved) reads back as its exact centre."""
    from patchlab.data import resized_size, to_model_pixels

    full = resized_size(1, 1, size, 0.875)[0]
    a = np.random.default_rng(size).integers(0, 256, (full, full, 3), dtype=np.uint8)
    off = (full - size) // 2
    assert np.array_equal(to_model_pixels(Image.fromarray(a), size, 0.875), a[off : off + size, off : off + size])


def test_gradient_reaches_model_input_unclipped(image_zoo):
    x = to_model_input(decode_image(image_zoo["gray16_png"]), 32, crop_pct=1.0)  # central crop of the ramp
    assert abs(x.mean().item() - 0.5) < 0.02 and x.max() < 0.7  # mid-gray, not clipped to white


# -- layouts -----------------------------------------------------------------------------
def _copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def test_imagenet_tree_top_level_and_under_val(tmp_path, image_zoo):
    for root in (tmp_path / "a", tmp_path / "b" / "val"):
        _copy(image_zoo["chelsea_png"], root / "n04251144" / "x.JPEG")
        _copy(image_zoo["coffee_jpg"], root / "n04251144" / "y.jpg")
        _copy(image_zoo["coffee_jpg"], root / "n10565667" / "z.jpg")
    (tmp_path / "b" / "train").mkdir()
    for top in (tmp_path / "a", tmp_path / "b"):
        recs = discover(top, CLASSES)
        assert sorted(r.label for r in recs) == [SNORKEL, SNORKEL, SCUBA]
        assert [r.path.name for r in select(recs, SNORKEL, CLASSES)] == ["x.JPEG", "y.jpg"]


def test_class_name_folders_and_unknown_folders_warn(tmp_path, image_zoo, caplog):
    _copy(image_zoo["chelsea_png"], tmp_path / "snorkel" / "a.png")
    _copy(image_zoo["coffee_jpg"], tmp_path / "scuba_diver" / "b.jpg")
    _copy(image_zoo["coffee_jpg"], tmp_path / "Scuba Diver" / "deeper" / "c.jpg")
    _copy(image_zoo["coffee_jpg"], tmp_path / "holiday" / "d.jpg")
    (tmp_path / "scuba_diver" / "readme.txt").write_text("not an image suffix")
    with caplog.at_level(logging.WARNING, logger="patchlab"):
        recs = discover(tmp_path, CLASSES)
    assert sorted((r.path.name, r.label) for r in recs) == [("a.png", SNORKEL), ("b.jpg", SCUBA), ("c.jpg", SCUBA)]
    assert "holiday" in caplog.text


def test_flat_folder_with_labels_csv_and_csv_given_directly(tmp_path, image_zoo):
    _copy(image_zoo["chelsea_png"], tmp_path / "imgs" / "1.png")
    _copy(image_zoo["coffee_jpg"], tmp_path / "imgs" / "2.jpg")
    _copy(image_zoo["coffee_jpg"], tmp_path / "imgs" / "3.jpg")
    (tmp_path / "imgs" / "labels.csv").write_text("path,label\n1.png,snorkel\n2.jpg,n10565667\n3.jpg,983\n")
    for source in (tmp_path / "imgs", tmp_path / "imgs" / "labels.csv"):
        recs = discover(source, CLASSES)
        assert [(r.path.name, r.label) for r in recs] == [("1.png", SNORKEL), ("2.jpg", SCUBA), ("3.jpg", SCUBA)]
    (tmp_path / "bad.csv").write_text("path,label\nimgs/1.png,snorkel\nimgs/2.jpg,scubadiver\n")
    with pytest.raises(UserError, match=r"line 3.*scuba diver"):
        discover(tmp_path / "bad.csv", CLASSES)
    (tmp_path / "nohead.csv").write_text("imgs/1.png,snorkel\n")
    with pytest.raises(UserError, match="path,label"):
        discover(tmp_path / "nohead.csv", CLASSES)


def test_flat_unlabeled_folder_and_single_file(tmp_path, image_zoo):
    _copy(image_zoo["chelsea_png"], tmp_path / "p" / "a.png")
    _copy(image_zoo["coffee_jpg"], tmp_path / "p" / "misc" / "b.jpg")  # a folder naming no class
    recs = discover(tmp_path / "p", CLASSES)
    assert [(r.path.name, r.label) for r in recs] == [("a.png", None)]
    assert discover(tmp_path / "p" / "a.png", CLASSES)[0].label is None


def test_empty_missing_and_empty_selection_are_user_errors(tmp_path, image_zoo):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        discover(tmp_path / "empty", CLASSES)
    with pytest.raises(UserError, match="does not exist"):
        discover(tmp_path / "nope", CLASSES)
    _copy(image_zoo["chelsea_png"], tmp_path / "d" / "snorkel" / "a.png")
    recs = discover(tmp_path / "d", CLASSES)
    with pytest.raises(UserError, match="scuba diver"):
        select(recs, SCUBA, CLASSES)
    with pytest.raises(UserError, match="no images selected"):
        load_images([], 32)
    with pytest.raises(UserError, match="no such file"):
        list_image_files([tmp_path / "nope"])


# -- loading and streaming ----------------------------------------------------------------
def test_load_images_skips_and_counts_bad_files(image_zoo, caplog):
    keys = ["chelsea_png", "truncated_jpg", "cmyk_jpg", "text_jpg", "gray16_png", "bomb_png"]
    recs = [ImageRecord(image_zoo[k], label=i) for i, k in enumerate(keys)]
    with caplog.at_level(logging.WARNING, logger="patchlab"):
        out = load_images(recs, 24, batch_size=4)
    assert out.images.shape == (3, 3, 24, 24) and out.labels.tolist() == [0, 2, 4] and len(out) == 3
    assert len(out.skipped) == 3
    for k in ("truncated_jpg", "text_jpg", "bomb_png"):
        assert any(image_zoo[k].name in s for s in out.skipped)
        assert image_zoo[k].name in caplog.text
    with pytest.raises(UserError, match="none of the 2"):
        load_images(recs[1:2] + recs[3:4], 24)


def test_iter_batches_streams_lazily(tmp_path, image_zoo):
    files = [_copy(image_zoo["coffee_jpg"], tmp_path / f"{i}.jpg") for i in range(5)]
    batches = iter_batches([ImageRecord(f) for f in files], 16, batch_size=2)
    first = next(batches)
    assert len(first) == 2 and first.images.shape == (2, 3, 16, 16) and first.labels.tolist() == [-1, -1]
    files[4].unlink()  # decoded only when its batch is reached
    rest = list(batches)
    assert [len(b) for b in rest] == [2, 0] and "4.jpg" in rest[-1].skipped[0]


def test_iter_batches_with_worker_processes(image_zoo):
    recs = [ImageRecord(image_zoo[k]) for k in ("chelsea_png", "text_jpg", "coffee_jpg")]
    batches = list(iter_batches(recs, 16, batch_size=2, workers=1))
    assert sum(len(b) for b in batches) == 2 and sum(len(b.skipped) for b in batches) == 1


def test_iter_batches_threads_keep_order_and_skips(image_zoo):
    """Decoding a batch on several threads gives what one thread gives, in the same order."""
    keys = ("chelsea_png", "text_jpg", "coffee_jpg", "gray16_png", "truncated_jpg", "chelsea_png", "coffee_jpg")
    recs = [ImageRecord(image_zoo[k], i) for i, k in enumerate(keys)]
    one = list(iter_batches(recs, 16, batch_size=4, threads=1))
    many = list(iter_batches(recs, 16, batch_size=4, threads=3))
    assert [b.paths for b in many] == [b.paths for b in one] and [len(b) for b in many] == [3, 2]
    assert [b.labels.tolist() for b in many] == [[0, 2, 3], [5, 6]]
    assert [b.skipped for b in many] == [b.skipped for b in one] and len(many[0].skipped) == len(many[1].skipped) == 1
    assert all(torch.equal(a.images, b.images) for a, b in zip(one, many))


@pytest.mark.parametrize("workers", [0, 1])
def test_iter_batches_uint8_is_the_float_batch_in_a_quarter_of_the_bytes(image_zoo, workers):
    from patchlab.data import pixels_to_float

    recs = [ImageRecord(image_zoo[k]) for k in ("chelsea_png", "coffee_jpg", "gray16_png")]
    ref = next(iter_batches(recs, 24, batch_size=3)).images
    got = next(iter_batches(recs, 24, batch_size=3, workers=workers, uint8=True)).images
    assert got.dtype == torch.uint8 and got.shape == ref.shape == (3, 3, 24, 24)
    assert got.is_contiguous(memory_format=torch.channels_last)  # what the index feeds the model
    as_float = pixels_to_float(got)
    assert as_float.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(as_float, ref)
