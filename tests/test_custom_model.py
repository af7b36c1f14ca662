"""Your own network: `wrap(module)`, and the `FILE.py:FUNCTION` / `package.module:FUNCTION` specs
(patchlab.models.wrap, patchlab.models.usercode), with one clear line for each kind of bad input."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from patchlab.errors import UserError
from patchlab.models import Classifier, load_classifier, model_fingerprint, wrap
from patchlab.models.registry import spec_key

NET_FILE = """
import torch
from torch import nn

from helper import WIDTH  # a module next to the file


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, WIDTH, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(WIDTH, num_classes)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def build(num_classes=10):
    return Net(num_classes)


def build_classifier():
    from patchlab.models import wrap
    return wrap(Net(), input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), spec="mine")


def broken():
    raise RuntimeError("no GPU here\\nsecond line")


def not_a_model():
    return 42
"""


def _small_net(n: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, n))


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("WIDTH = 8\n")
    path = tmp_path / "my_net.py"
    path.write_text(NET_FILE)
    return path


# -- wrap ------------------------------------------------------------------------------
def test_wrap_makes_a_frozen_classifier_with_its_preprocessing_and_labels(tmp_path, caplog):
    net = _small_net()
    (tmp_path / "names.csv").write_text("index,name\n" + "".join(f"{i},animal {i}\n" for i in range(10)))
    clf = wrap(net, input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0,
               interpolation="bilinear", labels=tmp_path / "names.csv", spec="zoo-net")
    assert not caplog.records
    assert clf.preprocessing.as_dict() == {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "crop_pct": 1.0,
                                           "interpolation": "bilinear"}
    assert clf.spec == "zoo-net" and clf.classes.names[4] == "animal 4" and clf.head is net[4]
    assert clf.feature_layer == "1" and all(not p.requires_grad for p in clf.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net((x - 0.5) / 0.25))


def test_wrap_without_labels_warns_once_and_names_classes_by_index(caplog):
    with caplog.at_level(logging.WARNING):
        clf = wrap(_small_net(7), input_size=32, spec="seven")
    assert clf.classes.names == [f"class_{i}" for i in range(7)]
    assert [r.getMessage() for r in caplog.records] == [
        "seven has 7 outputs and no labels file: its classes are named class_0..class_6 "
        "(give one name per line with --labels FILE)"]
    caplog.clear()
    wrap(_small_net(1000), input_size=32)  # ImageNet's width: ImageNet's names, no warning
    assert not caplog.records


def test_wrap_refuses_bad_input():
    with pytest.raises(UserError, match=r"labels .* 3 names for a model with 10 outputs"):
        wrap(_small_net(), input_size=32, labels=_labels_file(3))
    with pytest.raises(UserError, match=r"fails on a 1x3x32x32 image: RuntimeError"):
        wrap(nn.Linear(5, 2), input_size=32)
    with pytest.raises(UserError, match=r"returns \(1, 6, 16, 16\) for one image"):
        wrap(nn.Conv2d(3, 6, 3, stride=2, padding=1), input_size=32)
    with pytest.raises(UserError, match="std must be > 0"):
        wrap(_small_net(), std=(0.2, 0.0, 0.2))
    with pytest.raises(UserError, match=r"model custom has no layer 'fc'"):
        wrap(_small_net(), input_size=32, layer="fc")
    with pytest.raises(UserError, match=r"layer '3'.*\(6,\) is not a spatial map"):
        wrap(_small_net(), input_size=32, layer="3")
    assert wrap(_small_net(), input_size=32, layer="0").feature_layer == "0"


def _labels_file(n: int) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "labels.txt"
    path.write_text("".join(f"c{i}\n" for i in range(n)))
    return path


# -- FILE.py:FUNCTION and package.module:FUNCTION ------------------------------------------
def test_a_file_spec_builds_your_network_with_options_weights_and_labels(code, tmp_path, caplog):
    spec = f"{code}:build"
    assert spec_key(spec) == "FILE.py:FUNCTION"
    with caplog.at_level(logging.WARNING):
        clf = load_classifier(spec, "cpu", preprocessing_overrides={"input_size": 32})
    assert clf.num_classes == 10 and clf.spec == spec and clf.feature_layer == "body"
    assert clf.preprocessing.mean == (0.485, 0.456, 0.406) and clf.preprocessing.interpolation == "bicubic"
    assert len(caplog.records) == 1 and "10 outputs" in caplog.records[0].getMessage()
    # model options go to the function; a weights file is loaded into what it returns
    torch.manual_seed(3)
    trained = load_classifier(spec, "cpu", model_options={"num_classes": 4},
                              preprocessing_overrides={"input_size": 32}).net
    torch.save(trained.state_dict(), tmp_path / "w.pth")
    loaded = load_classifier(spec, "cpu", weights=str(tmp_path / "w.pth"), model_options={"num_classes": 4},
                             labels=_labels_file(4), preprocessing_overrides={"input_size": 32})
    assert loaded.classes.names == ["c0", "c1", "c2", "c3"]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(((x - loaded.mean) / loaded.std)))
    with pytest.raises(UserError, match="do not fit"):
        load_classifier(spec, "cpu", weights=str(tmp_path / "w.pth"))


def test_a_function_may_return_a_ready_classifier(code, caplog):
    with caplog.at_level(logging.WARNING):
        clf = load_classifier(f"{code}:build_classifier", "cpu")
    assert isinstance(clf, Classifier) and clf.spec == "mine" and clf.input_size == 32
    assert len(caplog.records) == 1  # wrap() inside the function leaves the one warning to load_classifier


def test_a_module_spec_is_imported_from_the_current_folder(code, monkeypatch):
    monkeypatch.chdir(code.parent)
    clf = load_classifier("my_net:build", "cpu", preprocessing_overrides={"input_size": 32})
    assert clf.num_classes == 10 and clf.feature_layer == "body"


def test_bad_code_specs_say_what_is_wrong_in_one_line(code, tmp_path):
    cases = {
        f"{tmp_path / 'missing.py'}:build": r"model file .*missing\.py not found",
        f"{code}:buld": r"has no function 'buld'; did you mean build",
        f"{code}:broken": r"calling broken\(\) failed: RuntimeError: no GPU here$",
        f"{code}:not_a_model": r"returned a int, not a torch nn\.Module",
        "no_such_package.models:build": r"unknown model spec .*no Python module 'no_such_package'",
    }
    (tmp_path / "crash.py").write_text("raise ImportError('needs tensorflow')\n")
    cases[f"{tmp_path / 'crash.py'}:build"] = r"running model file .*crash\.py failed: ImportError: needs tensorflow"
    for spec, message in cases.items():
        with pytest.raises(UserError, match=message) as err:
            load_classifier(spec, "cpu")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="takes no model options"):
        load_classifier("tiny", "cpu", model_options={"num_classes": 3})


def test_hub_prefixes_win_over_module_paths():
    """`timm:NAME` is timm's even though it reads like `package.module:FUNCTION`."""
    assert spec_key("timm:resnet18") == "timm:" and spec_key("torchvision:resnet18") == "torchvision:"
    with pytest.raises(UserError, match="timm has no model 'build'"):
        load_classifier("timm:build", "cpu")


def test_overridden_preprocessing_gets_its_own_fingerprint():
    a = load_classifier("tiny", "cpu")
    b = load_classifier("tiny", "cpu", preprocessing_overrides={"mean": "0.4, 0.4, 0.4"})
    c = load_classifier("tiny", "cpu", preprocessing_overrides={"mean": [0.4, 0.4, 0.4]})
    assert model_fingerprint(a) != model_fingerprint(b) == model_fingerprint(c)
    assert model_fingerprint(a) == model_fingerprint(load_classifier("tiny", "cpu"))
    assert b.mean.flatten().tolist() == pytest.approx([0.4] * 3)
