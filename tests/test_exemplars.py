"""Calibrated exemplars, the tensor cache and `patchlab dream` (tiny model; one integration test)."""
from __future__ import annotations

import json

import pytest
import torch

from patchlab import cache
from patchlab.exemplars import exemplars
from patchlab.models import tiny_classifier


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny():
    return tiny_classifier(num_classes=10, input_size=32, seed=0)


def test_cache_roundtrip_and_corruption(tmp_cache):
    key = cache.cache_key(a=1, b=[0.5, "x"])
    assert key == cache.cache_key(b=[0.5, "x"], a=1) and key != cache.cache_key(a=2, b=[0.5, "x"])
    assert cache.load_tensors(key) is None
    t = {"x": torch.arange(12, dtype=torch.uint8).view(3, 4), "y": torch.ones(2)}
    cache.save_tensors(key, t, {"note": "hi"})
    got, meta = cache.load_tensors(key, with_meta=True)
    assert torch.equal(got["x"], t["x"]) and meta == {"note": "hi"}
    path = cache.cache_dir() / f"{key}.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip a tensor byte: parses, but the checksum catches it
    path.write_bytes(bytes(data))
    assert cache.load_tensors(key) is None and not path.exists()
    path.write_bytes(b"garbage")
    assert cache.load_tensors(key) is None


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("PATCHLAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir().name == "patchlab"


def test_exemplars_stop_in_band_and_second_call_hits_cache(tiny, tmp_cache):
    # the tiny random net favors class 9 (p ~0.56 at start): each image climbs into the band at its own step
    band = (0.6, 0.95)
    a = exemplars(tiny, 9, n=4, band=band, steps=120, seed=1)
    assert a.images.shape == (4, 3, 32, 32) and not a.cached
    with torch.no_grad():
        p = tiny(a.images).softmax(1)
    for i, rec in enumerate(a.records):
        assert abs(rec["p_class"] - float(p[i, 9])) < 1e-4
        if rec["stopped"]:
            assert rec["in_band"] and rec["top1"] and band[0] <= rec["p_class"] <= band[1]
    assert all(r["stopped"] for r in a.records)
    assert len({r["steps"] for r in a.records}) > 1 and min(r["steps"] for r in a.records) > 0
    b = exemplars(tiny, 9, n=4, band=band, steps=120, seed=1)
    assert b.cached and torch.equal(a.images, b.images) and a.records == b.records
    c = exemplars(tiny, 9, n=4, band=band, steps=120, seed=2)
    assert not c.cached


def test_exemplars_save_pngs_read_back_identically(tiny, tmp_cache, tmp_path):
    from patchlab.data import ImageRecord, load_images

    ex = exemplars(tiny, 4, n=2, band=(0.2, 0.9), steps=5, seed=0, near=5, near_band=(0.01, 0.5))
    manifest_path = ex.save(tmp_path / "out")
    manifest = json.loads(manifest_path.read_text())
    files = [tmp_path / "out" / r["file"] for r in manifest["images"]]
    assert all(f.is_file() for f in files) and manifest["synthesized"] and manifest["config"]["near"] == 5 and manifest["complete"]
    back = load_images([ImageRecord(f) for f in files], tiny.input_size, tiny.crop_pct).images
    assert torch.allclose(back, ex.images, atol=1e-6)
    assert all("p_near" in r for r in manifest["images"])


def test_exemplars_bad_input(tiny, tmp_cache):
    from patchlab.errors import UserError

    with pytest.raises(UserError):
        exemplars(tiny, 3, band=(0.9, 0.5))
    with pytest.raises(UserError):
        exemplars(tiny, 3, near=3)


@pytest.fixture(scope="session")
def default_model():
    from patchlab.models import load_classifier

    return load_classifier("efficientnet_lite0", "cpu")


@pytest.mark.integration
def test_dream_goldfish_files_read_back_in_band(default_model, tmp_cache, tmp_path):
    """Acceptance in small: PNGs read back through patchlab.data give the manifest's numbers,
    and every image that stopped is top-1 goldfish inside the band."""
    from patchlab.data import ImageRecord, load_images

    clf = default_model
    goldfish = clf.classes.resolve("goldfish")
    ex = exemplars(clf, goldfish, n=2, steps=30, seed=0)
    manifest = json.loads(ex.save(tmp_path / "dream").read_text())
    lo, hi = manifest["config"]["band"]
    files = [ImageRecord(tmp_path / "dream" / r["file"]) for r in manifest["images"]]
    back = load_images(files, clf.input_size, clf.crop_pct).images
    p = clf.logits(back).softmax(1)
    for i, rec in enumerate(manifest["images"]):
        assert abs(float(p[i, goldfish]) - rec["p_class"]) < 1e-3
        if rec["stopped"]:
            assert int(p[i].argmax()) == goldfish and lo <= float(p[i, goldfish]) <= hi


def test_donor_images_say_when_donor_data_falls_back_to_exemplars(tmp_cache, tmp_path):
    from PIL import Image

    from patchlab.generators.natural import donor_images

    clf = tiny_classifier(seed=0)
    (tmp_path / "tench").mkdir()
    Image.new("RGB", (40, 40), (20, 120, 60)).save(tmp_path / "tench" / "a.png")
    imgs, labels, names, source = donor_images(clf, [0], 1, 0, tmp_path)
    assert source == "donor photos" and labels.tolist() == [0] and names[0].endswith("a.png")
    imgs, labels, names, source = donor_images(clf, [5], 1, 0, tmp_path)  # no photo of class 5 there
    assert "donor exemplars" in source and "--donor-data" in source and names[0].startswith("exemplar ")
    assert donor_images(clf, [5], 1, 0, None)[3] == "donor exemplars (no photo library given)"


def test_dream_checks_the_output_folder_before_rendering(tmp_path, monkeypatch):
    import patchlab.pipelines.dream as dream_mod
    from patchlab.errors import UserError

    monkeypatch.setattr(dream_mod, "exemplars", lambda *a, **k: pytest.fail("rendered before checking --out"))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="not writable"):
        dream_mod.dream("snorkel", model="tiny", out=tmp_path / "a_file" / "x")
