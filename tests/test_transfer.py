"""transfer: a finished run's patches re-measured on other models (tiny models, fast)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchlab.errors import UserError
from patchlab.pipelines.transfer import CSV_COLUMNS, SYNTH_NOTE, parse_models, read_run, transfer

SOURCE, TARGET = 507, 983  # combination lock -> scuba diver: the random tiny net calls noise images 507


def _tuned_tiny_weights(path: Path) -> Path:
    """tiny's random convs with a head that calls an image the TARGET when a white patch lights its
    feature 15 (else the SOURCE), so patches have rates between 0 and 1 on both tiny and tiny48."""
    from safetensors.torch import save_file

    from patchlab.models import tiny_classifier

    state = dict(tiny_classifier().net.state_dict())
    weight, bias = torch.zeros_like(state["fc.weight"]), torch.full_like(state["fc.bias"], -10.0)
    weight[TARGET, 15], bias[TARGET], bias[SOURCE] = 20.0, -7.0, 0.0
    save_file(dict(state, **{"fc.weight": weight, "fc.bias": bias}), str(path))
    return path


def _photos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 8), ("scuba_diver", 1)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / folder / f"{i:02d}.png")
    return root


def make_run(tmp: Path, data: Path | None) -> tuple[Path, Path]:
    """A finished probe-format run folder made as `probe` makes one (without the slow generators):
    PairData, null controls, evaluate on selection + confirmation, write_run. Returns (run, weights)."""
    from patchlab.generators.plan import get_plan
    from patchlab.devices import stage_generator
    from patchlab.evaluation.controls import make_controls
    from patchlab.evaluation.core import evaluate
    from patchlab.identity import run_identity
    from patchlab.models import load_classifier
    from patchlab.pairdata import load_pair
    from patchlab.patches.candidate import Candidate
    from patchlab.pipelines.common import run_config
    from patchlab.report import write_run
    from patchlab.runfolder import Manifest

    weights = _tuned_tiny_weights(tmp / "tiny.safetensors")
    plan = dataclasses.replace(get_plan("quick"), n_train=2, n_selection=2, n_confirmation=4, n_target=1)
    clf = load_classifier("tiny", "cpu", weights=str(weights))
    pair = load_pair(clf, SOURCE, TARGET, plan.splits(), data=data, seed=0)
    checker = (torch.arange(12)[:, None] + torch.arange(12)[None]) % 2
    cands = [Candidate(torch.ones(3, 8, 8), "synth", "synth-white"),
             Candidate(checker.float().expand(3, 12, 12).clone(), "natural", "natural-<checker>", {"donor": "x&y"})]
    controls = make_controls(clf, pair.train, pair.target_images, stage_generator(0, "controls"), source=SOURCE, target=TARGET)
    photos = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(1))  # a pooled control, as --library adds
    controls.append(Candidate(photos[0], "control", "control-library-photo", {"control": "median of 2 photos"}, members=photos))
    ev = evaluate(clf, cands, {"selection": pair.selection, "confirmation": pair.confirmation}, SOURCE, TARGET,
                  sizes=plan.sizes, positions=("top-left", "bottom-right"), protocols=plan.protocols, random_placements=1,
                  controls=controls, generator=stage_generator(0, "evaluate"),
                  image_names={"selection": pair.names["selection"], "confirmation": pair.names["confirmation"]})
    identity = run_identity(model="tiny", weights=weights, data=data, budget="quick", seed=0)
    config = run_config(clf.classes.label(SOURCE), clf.classes.label(TARGET), data=data, budget="quick",
                        splits=plan.splits(), weights=weights, identity=identity, plan=plan.as_dict())
    manifest = Manifest.new("probe", config, 0, "tiny")
    write_run(tmp / "run", ev, model="tiny", seed=0, manifest=manifest, data=pair.manifest())
    return tmp / "run", weights


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    return make_run(tmp, _photos(tmp / "data"))


def _fake_exemplars(classifier, cls, n, *, seed=0, **kw):
    """Stand-in for patchlab.exemplars.exemplars: seeded noise images (rendering real ones takes minutes)."""
    from patchlab.exemplars import ExemplarSet

    g = torch.Generator().manual_seed(seed * 1000 + int(cls))
    return ExemplarSet(torch.rand(n, 3, classifier.input_size, classifier.input_size, generator=g), [], {})


def test_transfer_between_tiny_models_of_two_input_sizes(real_run):
    run, weights = real_run
    summary = json.loads((run / "summary.json").read_text())
    result = transfer(run, models=[f"tiny={weights}", f"tiny48={weights}"], device="cpu")
    names = [e["name"] for e in summary["candidates"] + summary["references"] + summary["controls"]]
    names.remove("control-library-photo")  # its photos are not saved: left out, with a note
    assert "control-library-photo is not transferred" in result["notes"][0]
    labels = [m["model"] for m in result["models"]]
    assert labels == ["tiny=tiny.safetensors", "tiny48=tiny.safetensors"] and len(result["table"]) == 2 * len(names)
    assert [m["input_size"] for m in result["models"]] == [32, 48] and result["models"][0]["is_source_model"]
    entries = {e["name"]: e for e in summary["candidates"] + summary["controls"] + summary["references"]}
    primary = summary["primary_protocol"]
    for row in result["table"]:
        own = entries[row["candidate"]]
        assert row["source_rate"] == own[primary]["rate"] and row["source_static_rate"] == own["static"]["rate"]
        if row["model"] == labels[0]:  # the source model re-measured reproduces the run's own numbers
            assert (row["rate"], [row["ci_low"], row["ci_high"]], row["n"]) == (own[primary]["rate"], own[primary]["ci"], own[primary]["n"])
            assert (row["static_rate"], row["static_placement"]) == (own["static"]["rate"], own["static"]["placement"])
    white = {r["model"]: r for r in result["table"] if r["candidate"] == "synth-white"}
    assert 0 < white[labels[0]]["rate"] <= 1 and white[labels[1]]["rate"] is not None
    assert result["models"][1]["confirmation"]["n_images"] == summary["confirmation"]["n_images"]
    out = run / "transfer"
    csv = (out / "transfer.csv").read_text().splitlines()
    assert csv[0].split(",") == CSV_COLUMNS and len(csv) == 1 + len(result["table"])
    assert json.loads((out / "transfer.json").read_text())["table"] == result["table"]
    assert (out / "transfer_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "transfer.html").read_text()
    assert "natural-&lt;checker&gt;" in html and "<checker>" not in html and "Pintor" in html
    assert result["data"]["kind"] == "real" and result["data"]["note"] is None


def test_transfer_regenerates_synthesized_exemplars_and_flags_them(tmp_path, monkeypatch):
    import patchlab.exemplars as ex

    monkeypatch.setattr(ex, "exemplars", _fake_exemplars)
    monkeypatch.setattr(ex, "describe", lambda settings: "fake exemplars")
    run, weights = make_run(tmp_path, None)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["kind"] == "synthesized"
    result = transfer(run, models=[f"tiny={weights}", f"tiny48={weights}"], device="cpu", out=tmp_path / "t")
    assert result["data"]["note"] == SYNTH_NOTE and SYNTH_NOTE in (tmp_path / "t" / "transfer.html").read_text()
    primary = summary["primary_protocol"]
    own = {e["name"]: e[primary] for e in summary["candidates"] + summary["controls"] + summary["references"]}
    for row in (r for r in result["table"] if r["model"] == f"tiny={weights.name}"):
        assert (row["rate"], row["n"]) == (own[row["candidate"]]["rate"], own[row["candidate"]]["n"])
    assert [r["candidate"] for r in result["table"]].count("control-library-photo") == 0


def test_bad_inputs_are_user_errors(real_run, tmp_path):
    import shutil

    from patchlab.models import tiny_classifier
    from patchlab.pipelines.transfer import check_classes

    run, weights = real_run
    with pytest.raises(UserError, match="not a patchlab run folder"):
        transfer(run.parent / "data", models=["tiny"], device="cpu")
    with pytest.raises(UserError, match="unknown model spec"):
        transfer(run, models=["nosuchmodel"], device="cpu")
    with pytest.raises(UserError, match="at least one model"):
        transfer(run, models=[], device="cpu")
    with pytest.raises(UserError, match="2 weights for 1 models"):
        parse_models(["tiny"], ["a", "b"])
    with pytest.raises(UserError, match="other classes than the run"):  # a 10-class model cannot count ImageNet's 983
        check_classes(tiny_classifier(num_classes=10), read_run(run).summary, "ten-class tiny")
    copy = shutil.copytree(run, tmp_path / "copy")
    (copy / "COMPLETE").unlink()
    with pytest.raises(UserError, match="not a finished run"):
        read_run(copy)
    (copy / "summary.json").write_text("[]")
    with pytest.raises(UserError, match="a JSON object"):
        read_run(copy)


def test_models_and_weights_are_parsed_as_pairs_or_a_parallel_list():
    got = parse_models(["tiny", "torchvision:resnet18=/w/r18.pth", "tiny"], None)
    assert [(m.spec, m.weights, m.label) for m in got] == [
        ("tiny", None, "tiny"), ("torchvision:resnet18", "/w/r18.pth", "torchvision:resnet18=r18.pth")]
    got = parse_models(["tiny", "tiny48"], [None, "w.safetensors"])
    assert [m.weights for m in got] == [None, "w.safetensors"]
    assert parse_models(["tiny"], {"tiny": "x.pth"})[0].weights == "x.pth"


def test_cli_transfer_json_and_one_line_errors(real_run, cli, tmp_path):
    run, weights = real_run
    res = cli("transfer", str(run), "--models", f"tiny={weights}", f"tiny48={weights}", "--device", "cpu",
              "--out", str(tmp_path / "t"), "--json")
    assert res.code == 0, res.err
    assert [m["input_size"] for m in json.loads(res.out)["models"]] == [32, 48]
    res = cli("transfer", str(run.parent / "data"), "--models", "tiny")
    assert res.code == 2 and res.err.count("\n") == 1 and "not a patchlab run folder" in res.err


def test_a_timm_model_with_a_local_weights_file_takes_part(real_run, tmp_path):
    import timm
    from safetensors.torch import save_file

    run, _ = real_run
    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(tmp_path / "r.safetensors"))
    result = transfer(run, models=["timm:test_resnet"], weights=[tmp_path / "r.safetensors"], device="cpu", out=tmp_path / "t")
    (info,) = result["models"]
    assert info["model"] == "timm:test_resnet=r.safetensors" and info["input_size"] == 160 and not info["is_source_model"]
    rows = result["table"]  # random weights may call no photo the source: then every rate is None and the error says why
    assert len(rows) == 6 and (info["error"] is not None or all(r["rate"] is not None for r in rows))
