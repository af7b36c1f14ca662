"""synth: Brown et al. EOT patch on a tiny trained model, and the `synth` driver."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from patchlab.devices import generator
from patchlab.models import tiny_classifier
from patchlab.patches.apply import POSITIONS, apply_patch, placement_grid
from patchlab.patches.synth import synthesize_patch

COLORS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0], [1.0, 1.0, 0.2]])
SOURCE, TARGET = 1, 0  # a pair the patch can reach on every synth seed we tried; 3 is seed-dependent


def gratings(n: int, cls: int, seed: int, size: int = 32) -> torch.Tensor:
    """Class k: a colored sine grating at k * 45 degrees with random phase, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    ang = cls * math.pi / 4
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    wave = torch.sin(2 * math.pi / 6 * (xx * math.cos(ang) + yy * math.sin(ang)) + phase)
    img = 0.5 + 0.4 * wave[:, None] * COLORS[cls][None, :, None, None]
    return (img + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def task():
    """A tiny CNN trained (40 Adam steps, ~1 s) to tell 4 grating classes apart: 100 % accurate."""
    clf = tiny_classifier(num_classes=4, input_size=32, seed=0, width=16)
    x = torch.cat([gratings(64, k, seed=k) for k in range(4)])
    y = torch.arange(4).repeat_interleave(64)
    params = list(clf.net.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=0.02)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        i = torch.randint(len(x), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(clf(x[i]), y[i]).backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    test = torch.cat([gratings(16, k, seed=100 + k) for k in range(4)])
    assert (clf.logits(test).argmax(1) == torch.arange(4).repeat_interleave(16)).float().mean() > 0.95
    return clf, gratings(24, SOURCE, seed=10), gratings(24, SOURCE, seed=11)


def success(clf, images, patch, target, area=0.25) -> float:
    idx, areas, centers = placement_grid(len(images), [area], POSITIONS, (32, 32))
    with torch.no_grad():
        return float((clf(apply_patch(images[idx], patch, areas, centers)).argmax(1) == target).float().mean())


def test_synth_flips_heldout_images_while_noise_does_not(task):
    clf, train, held = task
    before = [p.clone() for p in clf.parameters()]
    cand = synthesize_patch(clf, train, TARGET, SOURCE, steps=40, patch_px=16, area=(0.1, 0.3), batch_size=16,
                            generator=generator(0))
    assert cand.kind == "synth" and cand.patch.shape == (3, 16, 16)
    assert 0 <= cand.patch.min() and cand.patch.max() <= 1
    assert success(clf, held, cand.patch, TARGET) >= 0.9  # held-out images, 4 corners + center, 25 % area
    assert success(clf, held, torch.rand(3, 16, 16, generator=generator(5)), TARGET) <= 0.1
    assert (clf.logits(held).argmax(1) == TARGET).float().mean() == 0
    # the curve records per-step loss and batch success; the loss falls
    assert [r["step"] for r in cand.curve] == list(range(40))
    assert cand.curve[-1]["loss"] < cand.curve[0]["loss"]
    assert cand.score == pytest.approx(sum(r["success"] for r in cand.curve[-8:]) / 8)
    # frozen model: untouched and gradient-free
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, clf.parameters()))
    assert cand.reads_as["index"] in range(4) and cand.provenance["train_images"] == 24


def test_synth_is_deterministic_for_a_seed(task):
    clf, train, _ = task
    kw = dict(steps=4, patch_px=8, batch_size=4)
    a = synthesize_patch(clf, train, TARGET, generator=generator(3), **kw)
    b = synthesize_patch(clf, train, TARGET, generator=generator(3), **kw)
    c = synthesize_patch(clf, train, TARGET, generator=generator(4), **kw)
    assert torch.equal(a.patch, b.patch) and not torch.equal(a.patch, c.patch)


def test_pgd_source_weight_and_restarts(task):
    clf, train, _ = task
    cand = synthesize_patch(clf, train, TARGET, SOURCE, steps=6, patch_px=8, batch_size=8, lr=0.05, optimizer="pgd",
                            source_weight=0.5, restarts=2, generator=generator(1))
    prov = cand.provenance
    assert prov["optimizer"] == "pgd" and len(prov["restart_scores"]) == 2
    assert cand.score == pytest.approx(max(prov["restart_scores"]), abs=1e-4)
    assert 0 <= cand.patch.min() and cand.patch.max() <= 1 and len(cand.curve) == 6
    with pytest.raises(ValueError):
        synthesize_patch(clf, train, TARGET, None, steps=2, source_weight=1.0)
    with pytest.raises(ValueError):
        synthesize_patch(clf, train, 7, steps=2)


def test_cosine_schedule_anneals_the_steps_and_unknown_schedules_are_refused(task):
    clf, train, _ = task
    kw = dict(steps=5, patch_px=8, batch_size=4)
    const = synthesize_patch(clf, train, TARGET, generator=generator(2), **kw)
    cos = synthesize_patch(clf, train, TARGET, generator=generator(2), schedule="cosine", **kw)
    assert cos.provenance["schedule"] == "cosine" and not torch.equal(const.patch, cos.patch)
    with pytest.raises(ValueError, match="schedule"):
        synthesize_patch(clf, train, TARGET, steps=2, schedule="linear")


def test_averaged_patch_is_the_moving_average_of_the_iterates_from_the_first(task):
    clf, train, _ = task
    kw = dict(patch_px=8, batch_size=4)
    first = synthesize_patch(clf, train, TARGET, steps=1, generator=generator(5), **kw).patch
    second = synthesize_patch(clf, train, TARGET, steps=2, generator=generator(5), **kw).patch
    mean = synthesize_patch(clf, train, TARGET, steps=2, generator=generator(5), average=0.9, **kw)
    assert mean.provenance["average"] == 0.9
    assert torch.allclose(mean.patch, 0.9 * first + 0.1 * second, atol=1e-6)  # no weight left on the random start
    with pytest.raises(ValueError, match="average"):
        synthesize_patch(clf, train, TARGET, steps=2, average=1.0)


def test_the_averaging_window_scales_with_the_steps():
    """synth averages over the last ~1/12 of its steps: decay 0.99 at its 1,200-step default (as it
    always was), 0.88 at 100 steps (0.99 would keep 37 % of the random start there), and the last
    iterate when the window is a step or less."""
    from patchlab.patches.synth import averaging_decay
    from patchlab.pipelines.synth import SYNTH_AVERAGE_WINDOW, SYNTH_STEPS

    assert averaging_decay(SYNTH_STEPS, SYNTH_AVERAGE_WINDOW) == 0.99
    assert averaging_decay(100, SYNTH_AVERAGE_WINDOW) == pytest.approx(0.88)
    assert averaging_decay(300, SYNTH_AVERAGE_WINDOW) == pytest.approx(0.96)
    assert averaging_decay(12, SYNTH_AVERAGE_WINDOW) == averaging_decay(5, SYNTH_AVERAGE_WINDOW) == 0.0
    assert averaging_decay(100, 0.0) == 0.0
    with pytest.raises(ValueError, match="window"):
        averaging_decay(100, 1.5)


def test_short_synth_runs_return_the_last_iterate():
    """`synth` averages only runs as long as its default (where the average led on selection photos);
    100 and 300 steps return the last iterate, which led the average there."""
    from patchlab.pipelines.synth import SYNTH_STEPS, synth_average

    assert synth_average(SYNTH_STEPS) == 0.99
    assert synth_average(2 * SYNTH_STEPS) == pytest.approx(1 - 1 / 200)
    assert synth_average(100) == synth_average(300) == synth_average(SYNTH_STEPS - 1) == 0.0


def test_synth_driver_writes_a_complete_run(tmp_path, task):
    from PIL import Image

    from patchlab import synth
    from patchlab.runio import is_complete

    data = tmp_path / "data" / "snorkel"
    data.mkdir(parents=True)
    imgs = gratings(10, SOURCE, seed=3)
    for k, im in enumerate(imgs):
        Image.fromarray((im.permute(1, 2, 0) * 255).byte().numpy()).save(data / f"s{k}.png")
    (data / "corrupt.png").write_bytes(b"\x89PNG broken")
    # source 'any': the random tiny net calls few gratings "snorkel", and the evaluator counts only
    # images the model calls the source when clean
    res = synth("any", "scuba diver", steps=3, patch_px=8, batch_size=2, data=tmp_path / "data",
                out=tmp_path / "run", model="tiny", device="cpu", seed=0, sizes=(0.1, 0.2))
    run = tmp_path / "run"
    assert is_complete(run) and (run / "report.html").is_file() and (run / "results.csv").is_file()
    stem = "synth-any-to-scuba_diver"
    assert (run / "patches" / f"{stem}.png").is_file() and (run / "patches" / f"{stem}.pt").is_file()
    s = res["summary"]
    files = s["data"]["files"]
    assert files["train"] and not set(files["train"]) & (set(files["selection"]) | set(files["confirmation"]))
    assert any("corrupt.png" in k for k in s["data"]["skipped"])
    (entry,) = s["candidates"]
    assert entry["name"] == stem and entry["random"]["size"] in (0.1, 0.2)
    assert {c["name"] for c in s["controls"]} == {"control-noise", "control-gray", "control-source-crop"}
    config = json.loads((run / "manifest.json").read_text())["config"]
    assert config["average_window"] == 1 / 12 and config["average"] == entry["provenance"]["average"] == 0.0  # 3 steps
    assert config["model"] == "tiny" and config["preprocessing"]["input_size"] == 32


@pytest.mark.integration
def test_synth_runs_on_the_default_model():
    from patchlab.models import load_classifier

    clf = load_classifier("efficientnet_lite0", "cpu")
    cand = synthesize_patch(clf, torch.rand(2, 3, 224, 224), target=983, source=801, steps=2, patch_px=16,
                            batch_size=2, generator=generator(0))
    assert len(cand.curve) == 2 and cand.patch.shape == (3, 16, 16)
    assert all(p.grad is None for p in clf.parameters())


def test_bfloat16_training_step_on_cpu(task, monkeypatch):
    """amp: float32 when asked, bfloat16 when asked or (auto) when the CPU runs it natively; the
    bf16 step still trains a patch that flips the tiny model, and the run records its dtype."""
    import patchlab.patches.synth as synth_mod
    from patchlab.patches.synth import amp_dtype

    cpu = torch.device("cpu")
    assert amp_dtype(cpu, False) is None and amp_dtype(cpu, True) == torch.bfloat16
    monkeypatch.setattr(synth_mod, "cpu_has_native_bf16", lambda: False)
    assert amp_dtype(cpu) is None
    monkeypatch.setattr(synth_mod, "cpu_has_native_bf16", lambda: True)
    assert amp_dtype(cpu) == torch.bfloat16
    clf, train, held = task
    cand = synthesize_patch(clf, train, TARGET, steps=60, patch_px=8, batch_size=8, generator=generator(0))
    assert cand.provenance["autocast"] == "bfloat16" and cand.patch.dtype == torch.float32
    assert success(clf, held, cand.patch, TARGET) > 0.5


def test_synth_mix_adds_synthesized_images_to_the_train_photos_only(tmp_path, monkeypatch):
    from PIL import Image

    import patchlab.pipelines.synth as synth_pipeline
    from patchlab import synth
    from patchlab.errors import UserError

    data = tmp_path / "data" / "snorkel"
    data.mkdir(parents=True)
    for k, im in enumerate(gratings(16, SOURCE, seed=5)):
        Image.fromarray((im.permute(1, 2, 0) * 255).byte().numpy()).save(data / f"s{k:02d}.png")
    asked = {}

    def fake_sources(clf, source, target, n, seed=0, progress=False):
        asked.update(n=n, source=source)
        return torch.rand(n, 3, clf.input_size, clf.input_size), [f"exemplar x #{i}" for i in range(n)], "3 fakes"

    monkeypatch.setattr(synth_pipeline, "synthesized_sources", fake_sources)
    kw = dict(steps=2, patch_px=8, batch_size=2, data=tmp_path / "data", model="tiny", device="cpu", sizes=(0.1,))
    plain = synth("any", "scuba diver", out=tmp_path / "plain", **kw)["summary"]["data"]
    mixed = synth("any", "scuba diver", mix=3, out=tmp_path / "mixed", **kw)["summary"]["data"]
    assert asked == {"n": 3, "source": None}
    assert mixed["files"]["train"] == plain["files"]["train"] + [f"exemplar x #{i}" for i in range(3)]
    for split in ("selection", "confirmation"):
        assert mixed["files"][split] == plain["files"][split]
    assert "mixed with 3 fakes" in mixed["how"]
    with pytest.raises(UserError, match="--mix"):
        synth("any", "scuba diver", mix=2, steps=2, model="tiny", device="cpu", out=tmp_path / "x")
