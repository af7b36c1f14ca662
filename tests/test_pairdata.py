"""One split rule for every command; run identity for --resume; the generator registry;
CPU-seeded randomness (same draws whatever the model's device)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from patchlab.devices import stage_generator, stage_seed
from patchlab.errors import UserError
from patchlab.identity import check_same_run, run_identity
from patchlab.models import tiny_classifier
from patchlab.pairdata import BLOCK, RULE, SPLITS, SourceBands, SplitSizes, load_pair, split_indices, split_of


def test_split_rule_is_balanced_disjoint_and_prefix_stable():
    long = split_of(40, seed=3)
    for n in (1, 7, 8, 13, 40):  # asking for fewer items never moves an item to another split
        assert split_of(n, seed=3) == long[:n]
    for b in range(0, 40, 8):  # every block of 8: 2 train, 2 selection, 4 confirmation
        assert sorted(long[b:b + 8]) == sorted(BLOCK)
    assert split_of(40, seed=4) != long  # the seed permutes the blocks
    idx = split_indices(40, 3)
    assert sorted(i for s in SPLITS for i in idx[s]) == list(range(40))
    capped = split_indices(40, 3, SplitSizes(train=3, selection=2, confirmation=5))
    assert {s: len(v) for s, v in capped.items()} == {"train": 3, "selection": 2, "confirmation": 5}
    assert all(set(capped[s]) <= set(idx[s]) for s in SPLITS)
    assert SplitSizes(8, 8, 16).items_needed() == 32 and SplitSizes(3, 1, 1).items_needed() == 16
    assert SplitSizes(0, 0, 9).items_needed() == 24 and SplitSizes(0, 0, 0).items_needed() == 8
    # run folders record the rule's text: it reads as it always did
    assert RULE == "blocks of 8 in item order, each a seeded permutation of 2 train / 2 selection / 4 confirmation"


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 20), ("scuba_diver", 3)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "data" / folder / f"{i:02d}.png")
    return tmp_path / "data"


def test_photo_splits_are_disjoint_across_synth_then_evaluate(photos, tmp_path, monkeypatch):
    """synth trains on its train split; evaluate on the same folder never counts those files."""
    from patchlab import evaluate as evaluate_patches, synth

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    res = synth("combination lock", "scuba diver", steps=2, patch_px=8, batch_size=2, data=photos,
                out=tmp_path / "synth", model="tiny", device="cpu", sizes=(0.2,))
    trained = set(res["summary"]["data"]["files"]["train"])
    patch = tmp_path / "synth" / "patches" / f"{res['candidate']['name']}.png"
    ev = evaluate_patches("combination lock", "scuba diver", [patch], data=photos, sizes=[20], protocols=["static"],
                          out=tmp_path / "eval", model="tiny", device="cpu")
    files = ev["summary"]["data"]["files"]
    assert trained and files["confirmation"] and files["selection"]
    assert not trained & (set(files["selection"]) | set(files["confirmation"]))
    assert not set(files["selection"]) & set(files["confirmation"])
    manifest = json.loads((tmp_path / "eval" / "summary.json").read_text())["data"]
    assert manifest["rule"].startswith("blocks of 8") and manifest["seed"] == 0


def test_exemplar_indices_keep_their_split(monkeypatch, tmp_path):
    """Exemplars split by index with the same rule: index i is in one split whatever the command."""
    import patchlab.exemplars as ex

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    clf = tiny_classifier()

    class Fake:
        def __init__(self, n):
            self.images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32).clone()
            self.settings = {}

    monkeypatch.setattr(ex, "exemplars", lambda clf, cls, n, **k: Fake(n))
    monkeypatch.setattr(ex, "describe", lambda s: "fake")
    small = load_pair(clf, 507, 983, SplitSizes(2, 2, 4), seed=5)
    big = load_pair(clf, 507, 983, SplitSizes(8, 8, 16), seed=5)
    ids = {s: {int(v) for v in big.images[s][:, 0, 0, 0]} for s in SPLITS}
    for s in SPLITS:
        mine = {int(v) for v in small.images[s][:, 0, 0, 0]}
        assert mine <= ids[s]  # the small command's images keep their split in the big one
    assert not ids["train"] & ids["confirmation"] and not ids["selection"] & ids["confirmation"]
    assert big.counts() == {"train": 8, "selection": 8, "confirmation": 16, "target": 2}


def test_bands_reach_the_source_exemplars_only(monkeypatch, tmp_path):
    """load_pair(bands=...) sets the pair-aware source exemplars' bands; target exemplars keep the defaults."""
    import patchlab.exemplars as ex

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    class Fake:
        def __init__(self, n):
            self.images = torch.zeros(n, 3, 32, 32)
            self.settings = {}

    def fake(clf, cls, n, **k):
        calls.append((cls, k))
        return Fake(n)

    monkeypatch.setattr(ex, "exemplars", fake)
    monkeypatch.setattr(ex, "describe", lambda s: "fake")
    load_pair(tiny_classifier(), 507, 983, SplitSizes(2, 2, 4), seed=5, bands=SourceBands((0.45, 0.65), (0.08, 0.15)))
    (src_cls, src), (tgt_cls, tgt) = calls
    assert (src_cls, src["band"], src["near"], src["near_band"]) == (507, (0.45, 0.65), 983, (0.08, 0.15))
    assert tgt_cls == 983 and "band" not in tgt and "near_band" not in tgt
    calls.clear()
    load_pair(tiny_classifier(), 507, 983, SplitSizes(2, 2, 4), seed=5)
    assert calls[0][1]["band"] == ex.DEFAULT_BAND and calls[0][1]["near_band"] == ex.DEFAULT_NEAR_BAND
    assert calls[0][1]["near"] == 983
    calls.clear()  # a source band alone: sources the model is that sure of, with no pull toward the target
    load_pair(tiny_classifier(), 507, 983, SplitSizes(2, 2, 4), seed=5, bands=SourceBands.of((0.85, 1.0)))
    assert (calls[0][1]["band"], calls[0][1]["near"]) == ((0.85, 1.0), None)


def test_photo_bands_are_measured_within_each_split(tmp_path):
    """With bands, photos are measured and those outside set aside; a photo keeps the split it has
    without bands (so runs with other bands never count each other's train photos)."""
    rng = np.random.default_rng(0)
    (tmp_path / "d" / "combination_lock").mkdir(parents=True)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "d" / "combination_lock" / f"{i:02d}.png")
    clf = tiny_classifier()
    sizes = SplitSizes(10, 10, 20)  # 40 photos: no split is capped
    every = load_pair(clf, 507, 983, sizes, data=tmp_path / "d", photo_factor=1)
    probs = {s: clf.logits(every.images[s]).softmax(-1)[:, 507] for s in ("train", "selection", "confirmation")}
    cut = float(torch.cat(list(probs.values())).median())
    banded = load_pair(clf, 507, 983, sizes, data=tmp_path / "d", photo_factor=1, bands=SourceBands.of((cut, 1.0)))
    for s, p in probs.items():
        assert set(banded.names[s]) == {n for n, q in zip(every.names[s], p.tolist()) if q >= cut}
    assert "set aside" in banded.how and sum(map(len, banded.names.values())) < sum(map(len, every.names.values()))
    with pytest.raises(UserError, match="outside p\\(source\\) in"):
        load_pair(clf, 507, 983, sizes, data=tmp_path / "d", bands=SourceBands.of((0.999, 1.0)))
    with pytest.raises(UserError, match="--source-band"):
        SourceBands.of((0.9, 0.5))


def test_too_few_photos_is_a_user_error(tmp_path):
    (tmp_path / "d" / "combination_lock").mkdir(parents=True)
    Image.fromarray(np.zeros((36, 36, 3), dtype=np.uint8)).save(tmp_path / "d" / "combination_lock" / "a.png")
    with pytest.raises(UserError, match="split"):
        load_pair(tiny_classifier(), 507, 983, SplitSizes(2, 2, 4), data=tmp_path / "d")


def test_run_identity_names_each_changed_field(tmp_path, photos):
    w = tmp_path / "w.bin"
    w.write_bytes(b"abc")
    base = dict(model="tiny", weights=w, data=photos, donor_data=None, library=None, budget="quick", seed=0)
    old = run_identity(**base)
    check_same_run(old, run_identity(**base), "x")  # same settings: accepted
    for field, value in (("model", "efficientnet_lite0"), ("budget", "standard"), ("seed", 2),
                         ("library", photos), ("donor_data", photos)):
        with pytest.raises(UserError, match=f"\\({field} "):
            check_same_run(old, run_identity(**dict(base, **{field: value})), "--resume r")
    w.write_bytes(b"abd")
    with pytest.raises(UserError, match="weights "):
        check_same_run(old, run_identity(**base), "--resume r")


def test_stage_generators_are_cpu_and_seeded_by_name():
    a, b = stage_generator(3, "synth"), stage_generator(3, "synth")
    assert a.device.type == "cpu" and torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert stage_seed(3, "synth") != stage_seed(3, "natural") != stage_seed(4, "synth")


def test_same_seed_same_draws_whatever_the_device(monkeypatch):
    """The GPU path draws from the same CPU generator and moves the result: compare a CPU
    run with a run whose model claims another device (tensor moves mocked as no-ops)."""
    from patchlab.optvis import transforms as T
    from patchlab.optvis.param import fourier_image
    from patchlab.patches.eot import sample_placements

    img1 = fourier_image(2, 16, stage_generator(0, "x"), "cpu")()
    img2 = fourier_image(2, 16, stage_generator(0, "x"), "cpu")()
    torch.testing.assert_close(img1, img2)
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    tf = T.compose(T.jitter(2), T.random_scale((0.9, 1.1)), T.random_rotate(10.0))
    torch.testing.assert_close(tf(x, stage_generator(1, "t")), tf(x, stage_generator(1, "t")))
    p1 = sample_placements(5, (32, 32), generator=stage_generator(2, "eot"), device=torch.device("cpu"))
    p2 = sample_placements(5, (32, 32), generator=stage_generator(2, "eot"), device=torch.device("cpu"))
    assert all(torch.equal(getattr(p1, k), getattr(p2, k)) for k in ("area", "centers", "angle"))
    # a CPU generator drives draws for tensors on another device (meta stands in for CUDA here)
    far = sample_placements(5, (32, 32), generator=stage_generator(2, "eot"), device=torch.device("meta"))
    assert far.area.device.type == "meta" and far.centers.device.type == "meta"
    far_img = fourier_image(2, 16, stage_generator(0, "x"), "meta")
    assert far_img.spectrum.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_and_cpu_patches_agree_up_to_float_tolerance():
    from patchlab.patches.synth import synthesize_patch

    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = []
    for dev in ("cpu", "cuda"):
        clf = tiny_classifier(seed=0).to(dev)
        out.append(synthesize_patch(clf, images, 983, None, steps=3, patch_px=8, batch_size=2, amp=False,
                                    generator=stage_generator(0, "synth")).patch.cpu())
    torch.testing.assert_close(out[0], out[1], atol=1e-3, rtol=1e-3)


def test_probe_runs_every_registered_generator_with_one_signature(photos, tmp_path, monkeypatch):
    from dataclasses import dataclass

    from patchlab import probe
    from patchlab.generators import PLANS, GeneratorJob, register_generator, registered, unregister_generator

    @dataclass(frozen=True)
    class FakeSettings:
        plan: str

        @classmethod
        def preset(cls, plan: str) -> "FakeSettings":
            return cls(plan)

    seen = []

    @register_generator("fake", kind="fake", label="fake patch", disguisable=False, settings=FakeSettings)
    def fake(job: GeneratorJob, settings: FakeSettings):
        seen.append((job.pair.source, job.rng.device.type, len(job.pair.train), settings))
        job.notes["fake"] = True
        return []

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    try:
        names = list(registered())
        s = probe("combination lock", "scuba diver", model="tiny", data=photos, out=tmp_path / "o", device="cpu")
    finally:
        unregister_generator("fake")
    assert names[:3] == ["synth", "feature", "natural"] and names[-1] == "fake"  # built-ins first, in stage order
    assert list(s["generator_notes"]) == names  # every registered generator is a stage, in registration order
    assert seen and seen[0][0] == 507 and seen[0][1] == "cpu" and seen[0][3] == FakeSettings("quick")
    assert s["generator_notes"]["fake"] == {"fake": True} and "fake" not in registered()
    assert PLANS["quick"].splits().items_needed() == 32
