"""Every command on every family, through the command line as users call it: small random-weight
networks of a torchvision ResNet, a timm ViT, a ConvNeXt, a MobileNetV3 and a 10-class network with a
labels file, each given as `FILE.py:FUNCTION` with a weights file and `--input-size`. `probe` runs on
every family; the other commands run on one family each, in rotation. Each run records the model as
it was prepared, and the layer each family reads is a spatial (or token) map of the right shape."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchlab.cli import main
from patchlab.pipelines.common import load_model

FAMILY_CODE = '''
import timm
import torchvision
from torch import nn


def resnet():
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])


def vit():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=32,
                             num_heads=2)


def convnext():
    return timm.create_model("convnext_atto", pretrained=False, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def mobilenet():
    return torchvision.models.mobilenet_v3_small(width_mult=0.25)


def ten():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))
'''
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGENET_PAIR, CIFAR_PAIR = (507, 983), (3, 5)  # combination lock -> scuba diver; cat -> dog


@dataclass(frozen=True)
class Family:
    """A network of `family.py`, its input size, the head bias that makes it call the test photos the
    source, and the map each use reads: (feature layer, atlas layer, (C,H,W))."""

    size: int
    bias: str
    layer: str
    atlas: str
    shape: tuple[int, int, int]
    labels: bool = False
    direction: bool = True  # the head is linear on the feature layer (MobileNetV3's two-layer head is not)

    @property
    def pair(self) -> tuple[int, int]:
        return CIFAR_PAIR if self.labels else IMAGENET_PAIR


FAMILIES = {
    "resnet": Family(48, "fc.bias", "layer4", "layer4", (512, 2, 2)),
    "vit": Family(32, "head.bias", "norm", "blocks.0", (32, 4, 4)),  # class-token head: the atlas one block earlier
    "convnext": Family(64, "head.fc.bias", "norm_pre", "norm_pre", (64, 2, 2)),
    "mobilenet": Family(64, "classifier.3.bias", "features", "features", (144, 2, 2), direction=False),
    "ten": Family(32, "6.bias", "3", "3", (12, 8, 8), labels=True),
}


@dataclass
class Zoo:
    """The families' code, weights and labels files, and photo folders, written once per module."""

    root: Path

    def model_args(self, name: str) -> list[str]:
        fam = FAMILIES[name]
        args = ["--model", f"{self.root / 'family.py'}:{name}", "--weights", str(self.root / f"{name}.pth"),
                "--input-size", str(fam.size)]
        return args + (["--labels", str(self.root / "labels.txt")] if fam.labels else [])

    def data(self, name: str) -> Path:
        return self.root / ("cifar" if FAMILIES[name].labels else "imagenet")

    def classes(self, name: str) -> list[str]:
        return ["--classes", *self.class_names(name)]

    def class_names(self, name: str) -> list[str]:
        s, t = FAMILIES[name].pair
        return [CIFAR[s], CIFAR[t]] if FAMILIES[name].labels else ["combination lock", "scuba diver"]

    def load(self, name: str):
        fam = FAMILIES[name]
        return load_model(f"{self.root / 'family.py'}:{name}", "cpu", self.root / f"{name}.pth", input_size=fam.size,
                          labels=self.root / "labels.txt" if fam.labels else None)


def _photos(folder: Path, n: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    """Random networks (seed 0) whose head bias favours the source class, so the model calls the test's
    noise photos the source, as a model calls real photos of it; the photo folders; a library folder."""
    root = tmp_path_factory.mktemp("families")
    (root / "family.py").write_text(FAMILY_CODE)
    (root / "labels.txt").write_text("\n".join(CIFAR) + "\n")
    sys.path.insert(0, str(root))
    try:
        import family
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("family", None)
    for name, fam in FAMILIES.items():
        torch.manual_seed(0)
        state = getattr(family, name)().state_dict()
        state[fam.bias][fam.pair[0]] += 6.0
        torch.save(state, root / f"{name}.pth")
    rng = np.random.default_rng(0)
    for data, (source, target) in (("imagenet", ("combination_lock", "scuba_diver")), ("cifar", ("cat", "dog"))):
        _photos(root / data / source, 12, rng)
        _photos(root / data / target, 2, rng)
    for donor in ("tench", "goldfish"):  # labelled, so the search has photos other than the source's
        _photos(root / "library" / donor, 3, rng)
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "patch.png")
    (root / "pairs.csv").write_text("source,target\ncat,dog\n")
    return Zoo(root)


def run_cli(*args: str) -> tuple[int, str, str]:
    """`patchlab ARGS...` in this process: (exit code, stdout, stderr); logging handlers restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["patchlab", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
        root.handlers, root.level = handlers, level
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def probes(zoo):
    """One probe run per family, made on first use: family -> (exit code, summary, run folder)."""
    done: dict[str, tuple[int, dict, Path]] = {}

    def get(name: str) -> tuple[int, dict, Path]:
        if name not in done:
            code, out, err = run_cli("probe", *zoo.classes(name), "--data", str(zoo.data(name)), "--out",
                                     str(zoo.root / "runs" / name), "--json", *zoo.model_args(name))
            assert code == 0, err
            summary = json.loads(out)
            done[name] = code, summary, Path(summary["run_dir"])
        return done[name]

    return get


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _check_recorded(config: dict, zoo: Zoo, name: str) -> None:
    """The run's config names the model as it was prepared: spec, weights, labels, preprocessing."""
    fam = FAMILIES[name]
    assert config["model"] == f"{zoo.root / 'family.py'}:{name}"
    assert config["weights"] == str(zoo.root / f"{name}.pth") and config["preprocessing"]["input_size"] == fam.size
    assert config["labels"] == (str((zoo.root / "labels.txt").resolve()) if fam.labels else None)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_probe_reads_a_spatial_map_of_every_family(zoo, probes, name):
    fam = FAMILIES[name]
    clf = zoo.load(name)
    choices = {"atlas": fam.atlas, "library index": fam.layer, "pair direction": fam.layer}
    assert clf.layer_choices() == choices and clf.layer_shapes()[fam.layer] == fam.shape
    _, acts = clf.run(torch.rand(2, 3, fam.size, fam.size), [fam.layer, fam.atlas])
    assert acts[fam.layer].shape == (2, *fam.shape) and acts[fam.atlas].dim() == 4 and min(acts[fam.atlas].shape[2:]) > 1
    if name not in PROBED:  # the layer checks above cover it; its commands run in ROTATION
        return
    _, summary, run = probes(name)
    assert summary["source"]["name"] == zoo.class_names(name)[0] and summary["complete"]
    led_by_direction = {"feature", "natural"}
    assert {c["kind"] for c in summary["candidates"]} == {"synth"} | (led_by_direction if fam.direction else set())
    if not fam.direction:  # the direction-led generators step aside and say why
        assert all("no linear head on its feature layer" in summary["generator_notes"][g]["skipped"]
                   for g in led_by_direction)
    assert summary["confirmation"]["denominator"] > 0 and (run / "report.html").is_file()
    config = _manifest(run)["config"]
    _check_recorded(config, zoo, name)
    assert config["layer"] == choices and config["identity"]["preprocessing"] == {"input_size": fam.size}


PROBED = ("vit", "mobilenet", "ten")  # a transformer, a CNN whose head is two layers, a 10-class network
ROTATION = [  # (command, family): every command once, the families in turn
    ("atlas", "resnet"), ("dream", "vit"), ("evaluate", "vit"), ("layers", "vit"), ("synth", "convnext"),
    ("transfer", "vit"), ("paste", "mobilenet"), ("apply", "ten"), ("predict", "ten"), ("classes", "ten"),
    ("audit", "ten"),
]


@pytest.mark.parametrize("command,name", ROTATION, ids=[f"{c}-{n}" for c, n in ROTATION])
def test_every_command_on_a_family(zoo, probes, command, name):
    out = zoo.root / "out" / f"{command}-{name}"
    model = zoo.model_args(name)
    data = ["--data", str(zoo.data(name))]
    source, target = zoo.class_names(name)
    if command == "atlas":
        code, text, err = run_cli("atlas", *zoo.classes(name), *data, "--grid", "2", "--donors", "2", "--out", str(out),
                                  "--json", *model)
        assert code == 0, err
        assert json.loads(text)["layer"] == FAMILIES[name].atlas
        _check_recorded(_manifest(out)["config"], zoo, name)
    elif command == "dream":
        code, text, err = run_cli("dream", "--class", source, "-n", "2", "--steps", "2", "--no-cache", "--out", str(out),
                                  "--json", *model)
        assert code == 0, err
        assert len(json.loads(text)["images"]) == 2 and len(list(out.glob("*.png"))) == 2
        _check_recorded(_manifest(out)["config"], zoo, name)
    elif command == "evaluate":
        code, text, err = run_cli("evaluate", "--classes", source, target, "--patch", str(zoo.root / "patch.png"), *data,
                                  "--sizes", "10", "--protocol", "static", "--placements", "1", "--out", str(out),
                                  "--json", *model)
        assert code == 0, err
        summary = json.loads(text)
        assert summary["data"]["counted"]["splits"] == ["train", "confirmation"] and summary["confirmation"]["denominator"]
        _check_recorded(_manifest(out)["config"], zoo, name)
    elif command == "layers":
        code, text, err = run_cli("layers", "--json", *model)
        assert code == 0, err
        layers = {row["name"]: row for row in json.loads(text)["layers"]}
        assert layers[FAMILIES[name].atlas]["chosen_for"] == ["atlas"]
        assert layers[FAMILIES[name].layer]["chosen_for"] == ["library index", "pair direction"]
    elif command == "synth":
        code, text, err = run_cli("synth", "--classes", source, target, *data, "--steps", "3", "--patch-px", "8",
                                  "--out", str(out), "--json", *model)
        assert code == 0, err
        assert json.loads(text)["candidate"]["kind"] == "synth" and (out / "report.html").is_file()
        _check_recorded(_manifest(out)["config"], zoo, name)
    elif command == "transfer":
        _, summary, run = probes(name)
        spec, weights = model[1], model[3]
        code, text, err = run_cli("transfer", str(run), "--models", f"{spec}={weights}", "--out", str(out), "--json")
        assert code == 0, err
        rows = json.loads(text)["table"]
        assert rows and all(r["is_source_model"] for r in rows)
        # the run's own model, prepared as the run prepared it (64 px), gives the run's own rates
        assert all(r["rate"] == r["source_rate"] for r in rows if r["error"] is None)
    elif command == "paste":
        code, text, err = run_cli("paste", "--classes", source, target, *data, "--library", str(zoo.root / "library"),
                                  "--top", "1", "--out", str(out), "--json", *model)
        assert code == 0, err
        result = json.loads(text)
        assert [c["kind"] for c in result["candidates"]] == ["natural"]
        # MobileNetV3's head is two layers: the direction comes from the library's photos or the pair's images
        assert result["search"]["direction"].startswith("head" if FAMILIES[name].direction else "pair means")
        _check_recorded(_manifest(out)["config"], zoo, name)
        assert _manifest(out)["config"]["layer"]["library index"] == FAMILIES[name].layer
    elif command == "apply":
        images = sorted(str(p) for p in (zoo.data(name) / "cat").glob("*.png"))[:2]
        code, text, err = run_cli("apply", str(zoo.root / "patch.png"), *images, "--out", str(out), "--json", *model)
        assert code == 0, err
        assert {r["before"]["name"] for r in json.loads(text)["images"]} == {"cat"}  # the labels file's names
    elif command == "predict":
        code, text, err = run_cli("predict", str(zoo.data(name) / "dog"), "--top", "2", "--json", *model)
        assert code == 0, err
        tops = json.loads(text)["predictions"][0]["top"]
        assert tops[0]["name"] == "cat" and tops[1]["name"] in CIFAR
    elif command == "classes":
        code, text, err = run_cli("classes", "dog", "--json", *model)
        assert code == 0, err
        assert json.loads(text) == [{"index": 5, "name": "dog", "wnid": None}]
    elif command == "audit":
        code, text, err = run_cli("audit", "--pairs-file", str(zoo.root / "pairs.csv"), *data, "--out", str(out),
                                  "--json", *model)
        assert code == 0, err
        doc = json.loads(text)
        assert doc["counts"]["ok"] == 1 and doc["leaderboard"][0]["source"] == "cat"
        _check_recorded(_manifest(out)["config"], zoo, name)
        pair = next((out / "pairs").iterdir())
        assert _manifest(pair)["config"]["preprocessing"]["input_size"] == FAMILIES[name].size


def test_models_check_measures_your_own_model_on_its_labelled_photos(zoo):
    code, text, err = run_cli("models", "--check", str(zoo.data("ten")), "--json", *zoo.model_args("ten"))
    assert code == 0, err
    result = json.loads(text)
    (row,) = result["models"]
    assert result["n_photos"] == 14 and row["model"].endswith("family.py:ten") and row["input_size"] == 32
    assert row["correct"] == 12  # every photo is called a cat: the 12 cats are right, the 2 dogs wrong
