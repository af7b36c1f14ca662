"""Sources by confidence: --source-band / --target-band keep the photos the model is that sure of,
and every command states how sure the model is of the images it counted (median p(source))."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from patchlab.data import discover, load_images
from patchlab.models import load_classifier


@pytest.fixture
def locks(tmp_path):
    """24 noise photos the tiny model calls a combination lock (its bias), a scuba diver, a patch."""
    rng = np.random.default_rng(3)
    for sub, n in (("combination_lock", 24), ("scuba_diver", 1)):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / sub / f"{i:02d}.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "patch.png")
    return tmp_path


def _p_source(root) -> np.ndarray:
    clf = load_classifier("tiny", "cpu")
    records = [r for r in discover(root / "data", clf.classes) if r.label == 507]
    images = load_images(records, clf.input_size, clf.crop_pct, interpolation=clf.preprocessing.interpolation).images
    return clf.logits(images).softmax(-1)[:, 507].numpy()


def _evaluate(cli, root, out, *band):
    return cli("evaluate", "--classes", "combination lock", "scuba diver", "--patch", str(root / "patch.png"),
               "--data", str(root / "data"), "--model", "tiny", "--sizes", "10", "--protocol", "static",
               "--placements", "1", "--out", str(out), *band)


def test_a_source_band_counts_only_the_photos_inside_it_and_says_how_sure(locks, cli):
    p = _p_source(locks)
    every = _evaluate(cli, locks, locks / "every")
    assert every.code == 0, every.err
    summary = json.loads((locks / "every" / "summary.json").read_text())
    conf = summary["confirmation"]
    assert conf["p_source"] is not None and 0 <= conf["p_target"] <= 1 and "median p(source)" in every.out
    assert f"median p(source) {conf['p_source']:.2f}" in (locks / "every" / "report.html").read_text()
    cut = float(np.median(p))
    banded = _evaluate(cli, locks, locks / "sure", "--source-band", f"{cut:.6f}", "1")
    assert banded.code == 0, banded.err
    summary = json.loads((locks / "sure" / "summary.json").read_text())
    assert summary["confirmation"]["p_source"] >= cut - 1e-6
    assert summary["confirmation"]["n_images"] < conf["n_images"] and "set aside" in summary["data"]["how"]
    manifest = json.loads((locks / "sure" / "manifest.json").read_text())
    assert manifest["config"]["source_bands"] == {"source": [round(cut, 6), 1.0], "target": None}


@pytest.mark.parametrize("band,message", [
    (("--source-band", "0.9", "0.5"), "--source-band takes two probabilities"),
    (("--source-band", "0.999999", "1"), "outside p(source) in"),
    (("--target-band", "0", "1.5"), "--target-band takes two probabilities"),
])
def test_a_bad_or_empty_band_is_one_line_and_exit_2(locks, cli, band, message):
    got = _evaluate(cli, locks, locks / "out", *band)
    assert got.code == 2 and message in got.err and len(got.err.strip().splitlines()) == 1
    assert not (locks / "out").exists()


def test_a_target_band_from_zero_renders(tmp_path, monkeypatch):
    """--target-band 0 HI: pair-aware exemplars aimed below HI (the render's aim is taken in log space)."""
    from patchlab.exemplars import exemplars
    from patchlab.models import tiny_classifier

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    ex = exemplars(tiny_classifier(), 507, 2, band=(0.5, 1.0), near=983, near_band=(0.0, 0.01), steps=3)
    assert ex.images.shape[0] == 2 and ex.settings["near_band"] == [0.0, 0.01]


def test_the_margin_objective_does_not_reward_drowning_the_source():
    """log_ratio rises when a third class takes the source's probability; margin rises only when the
    target gains on every other class (Carlini & Wagner 2017)."""
    import torch

    from patchlab.patches.crops import target_score

    source, target, third = 0, 1, 2
    sure = torch.tensor([[4.0, -6.0, 0.0]]).log_softmax(-1)  # the model is sure of the source
    drowned = torch.tensor([[0.0, -6.0, 6.0]]).log_softmax(-1)  # a third class took over; target no closer
    closer = torch.tensor([[4.0, 3.0, 0.0]]).log_softmax(-1)  # the target gained
    ratio = [float(target_score(x, source, target, "log_ratio")) for x in (sure, drowned, closer)]
    margin = [float(target_score(x, source, target, "margin")) for x in (sure, drowned, closer)]
    assert ratio[1] > ratio[0] and margin[1] < margin[0]  # the log ratio is fooled by the third class
    assert margin[2] > margin[0] and margin[2] > margin[1]
