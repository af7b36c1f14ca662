"""The options that prepare a model on every command (--labels, --layer, --input-size, --mean, --std,
--crop-pct, --interpolation, --model FILE.py:FUNCTION): one line and exit 2 for bad input with nothing
written, what runs record, what `--resume` compares, and photos decoded as the model wants them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchlab.classes import imagenet_classes
from patchlab.errors import UserError
from patchlab.pipelines.common import load_model
from patchlab.pipelines.predict import predict_files

NET = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


def number():
    return 42
'''


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    (tmp_path / "my_net.py").write_text(NET)
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2)).state_dict(), tmp_path / "other.pth")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    return {"net": tmp_path / "my_net.py", "other": tmp_path / "other.pth", "three": tmp_path / "three.txt"}


BAD = {  # name -> (model options, what the one line says)
    "weights of another architecture": (["--model", "tiny", "--weights", "{other}"],
                                        r"missing 6 keys \(first: conv1.weight\); unexpected 4 keys \(first: 0.weight\)"),
    "labels of the wrong length": (["--model", "tiny", "--labels", "{three}"], "3 names for a model with 1000 outputs"),
    "unknown layer": (["--model", "tiny", "--layer", "featurs"], "has no layer 'featurs'; did you mean features"),
    "a layer off the head's features": (["--model", "tiny", "--layer", "act1"], "has 8 channels, but its head reads 16"),
    "no such file": (["--model", "{net_dir}/missing.py:build"], r"model file .*missing\.py not found"),
    "no such function": (["--model", "{net}:buld"], "has no function 'buld'; did you mean build"),
    "not a module": (["--model", "{net}:number"], r"returned a int, not a torch nn\.Module"),
    "bad interpolation": (["--model", "tiny", "--interpolation", "cubic"], "interpolation must be one of"),
}
COMMANDS = {  # every command that loads a model, with what else it needs; each writes into OUT when it runs
    "probe": ["probe", "--classes", "combination lock", "scuba diver", "--out", "{out}"],
    "synth": ["synth", "--classes", "combination lock", "scuba diver", "--out", "{out}"],
    "atlas": ["atlas", "--classes", "combination lock", "scuba diver", "--out", "{out}"],
    "paste": ["paste", "--classes", "combination lock", "scuba diver", "--out", "{out}"],
    "dream": ["dream", "--class", "scuba diver", "--out", "{out}"],
    "evaluate": ["evaluate", "--classes", "combination lock", "scuba diver", "--patch", "{other}", "--out", "{out}"],
    "audit": ["audit", "--pairs", "1", "--out", "{out}"],
}


def _fill(args: list[str], files: dict[str, Path], out: Path) -> list[str]:
    names = {k: str(v) for k, v in files.items()} | {"net_dir": str(files["net"].parent), "out": str(out)}
    return [a.format(**names) for a in args]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_model_input_is_one_line_and_exit_2_on_probe(cli, files, tmp_path, case):
    options, message = BAD[case]
    res = cli(*_fill(COMMANDS["probe"] + options, files, tmp_path / "out"))
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res.err
    assert re.search(message, res.err), res.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "probe"])
def test_every_command_refuses_a_bad_model_before_writing(cli, files, tmp_path, command):
    for case in ("weights of another architecture", "labels of the wrong length", "not a module"):
        options, message = BAD[case]
        res = cli(*_fill(COMMANDS[command] + options, files, tmp_path / "out"))
        assert res.code == 2 and len(res.err.strip().splitlines()) == 1, (command, case, res.err)
        assert not (tmp_path / "out").exists(), (command, case)
    layer_commands = ("atlas", "paste", "audit")
    res = cli(*_fill(COMMANDS[command] + ["--model", "tiny", "--layer", "featurs"], files, tmp_path / "out"))
    assert res.code == 2 and ("did you mean features" in res.err if command in layer_commands
                              else "No such option: --layer" in res.err), res.err


def test_preprocessing_flags_reach_the_model(cli, image_zoo):
    """--mean takes R G B or R,G,B; --input-size, --std, --crop-pct and --interpolation replace the
    model's own, and the photos are decoded with that interpolation."""
    photo = str(image_zoo["chelsea_png"])
    args = ["predict", photo, "--model", "tiny", "--top", "3", "--json", "--input-size", "48", "--crop-pct", "1",
            "--interpolation", "nearest", "--std", "0.2", "0.25", "0.3"]
    comma = json.loads(cli(*args, "--mean", "0.4,0.45,0.5").out)["predictions"][0]["top"]
    spaced = json.loads(cli(*args, "--mean", "0.4", "0.45", "0.5").out)["predictions"][0]["top"]
    clf = load_model("tiny", "cpu", input_size=48, crop_pct=1.0, interpolation="nearest", mean=(0.4, 0.45, 0.5),
                     std="0.2 0.25 0.3")
    assert clf.preprocessing.as_dict() == {"input_size": 48, "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3],
                                           "crop_pct": 1.0, "interpolation": "nearest"}
    assert comma == spaced == predict_files([photo], top=3, model=clf)["predictions"][0]["top"]
    bicubic = load_model("tiny", "cpu", input_size=48, crop_pct=1.0, mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3))
    other = predict_files([photo], top=3, model=bicubic)["predictions"][0]["top"]
    assert [t["prob"] for t in other] != [t["prob"] for t in comma]  # the resize filter matters, and is used
    res = cli("predict", photo, "--model", "tiny", "--mean", "0.4,0.5")
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1


def test_runs_record_the_model_and_resume_compares_it(tmp_path, monkeypatch):
    """probe records spec, labels file, layer choices and preprocessing; a resumed run with another
    labels file, layer or preprocessing is refused, naming the field."""
    import patchlab.generators.synth as synth
    from patchlab.pipelines.probe import probe

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 12), ("scuba_diver", 2)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / folder / f"{i}.png")
    names = list(imagenet_classes().names)
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "renamed.txt").write_text("\n".join(["my tench", *names[1:]]) + "\n")

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "synthesize_patch", interrupt)
    kw = {"model": "tiny", "data": tmp_path / "data", "out": tmp_path / "out", "device": "cpu"}
    with pytest.raises(KeyboardInterrupt):
        probe("combination lock", "scuba diver", labels=tmp_path / "labels.txt", input_size=40, layer="conv2", **kw)
    (run,) = list((tmp_path / "out").iterdir())
    config = json.loads((run / "manifest.json").read_text())["config"]
    assert config["model"] == "tiny" and config["labels"] == str((tmp_path / "labels.txt").resolve())
    assert config["layer"] == {"atlas": "conv2", "library index": "conv2", "pair direction": "conv2"}
    assert config["preprocessing"] == {"input_size": 40, "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 0.875,
                                       "interpolation": "bicubic"}
    identity = config["identity"]
    assert identity["layer"] == "conv2" and identity["preprocessing"] == {"input_size": 40}
    same = {"labels": tmp_path / "labels.txt", "input_size": 40, "layer": "conv2"}
    for field, change in (("labels", {"labels": tmp_path / "renamed.txt"}), ("layer", {"layer": "features"}),
                          ("preprocessing", {"input_size": 48}), ("preprocessing", {"interpolation": "bilinear"})):
        with pytest.raises(UserError, match=f"{field} "):
            probe("combination lock", "scuba diver", resume=run, **(same | change), **kw)
