"""Evaluator: hand-counted rates on a toy model whose truth is known, Wilson and
Newcombe intervals against published values, controls, the CLI, interruption."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from patchlab.classes import generic_classes
from patchlab.evaluation import CONTROL_NAMES, evaluate, make_controls
from patchlab.evaluation.controls import REFERENCE_NAME
from patchlab.evaluation.summary import pool_selection, summarize
from patchlab.models import Classifier
from patchlab.patches.candidate import Candidate
from patchlab.stats import difference_interval, wilson_interval

SOURCE, TARGET, OTHER = 0, 1, 2
BLUES = (0.05, 0.2, 0.35, 0.6, 0.9)


class ColorToy(nn.Module):
    """Logits: source = 10 * mean blue, target = 10 * mean redness relu(R-G-B),
    class 2 = 10 * mean green, the rest -5. A pure-red patch covering area A of
    a flat blue image (0,0,b) wins iff A > b (1 - A)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x):
        x = self.features(x)
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        out = torch.full((x.shape[0], 10), -5.0, device=x.device)
        out[:, SOURCE] = 10 * b.mean((1, 2))
        out[:, TARGET] = 10 * torch.relu(r - g - b).mean((1, 2))
        out[:, OTHER] = 10 * g.mean((1, 2))
        return out


def flat(rgb, n=1, size=32):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size).clone()


@pytest.fixture(scope="module")
def toy():
    clf = Classifier(ColorToy(), spec="toy", classes=generic_classes(10), input_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    images = torch.cat([flat((0, 0, b)) for b in BLUES] + [flat((0, 0.8, 0))])  # the green one is not the source
    red = Candidate(flat((1, 0, 0), size=8)[0], "synth", "red")
    noise = Candidate(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)), "synth", "noise")
    return clf, images, red, noise


def wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def test_wilson_matches_formula_and_published_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605; 0/10 -> 0-0.2775
    for (k, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 10): (0.0, 0.2775)}.items():
        got = wilson_interval(k, n)
        assert got == pytest.approx((lo, hi), abs=1e-4)
        assert got == pytest.approx(wilson_by_hand(k, n), abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval([1, 5], [10, 10])
    assert lo[1] == pytest.approx(wilson_by_hand(5, 10)[0])


def test_difference_interval_matches_newcombe():
    # Newcombe (1998), method 10 examples: 56/70 - 48/80 -> (0.0524, 0.3339); 9/10 - 3/10 -> (0.1705, 0.8090)
    d, lo, hi = difference_interval(56, 70, 48, 80)
    assert (d, lo, hi) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)
    assert difference_interval(9, 10, 3, 10)[1:] == pytest.approx((0.1705, 0.8090), abs=1e-4)


def test_rates_match_hand_count(toy):
    clf, images, red, noise = toy
    ev = evaluate(clf, [red, noise], images, SOURCE, TARGET, sizes=(0.10, 0.30), random_placements=3, rotation_deg=0.0,
                  batch_size=7, n_examples=2)
    assert ev.denominator == 5 and ev.n_images == 6
    assert ev.config["split"].startswith("none")  # one tensor: selection = confirmation, and the run says so
    res = ev.results[ev.results.split == "confirmation"]
    assert len(ev.results) == 2 * len(res)
    # by hand: red wins iff A/(1-A) > b: at 10 % only b=0.05 (1 of 5); at 30 % b=0.05, 0.2, 0.35 (3 of 5)
    expect = {0.10: 1, 0.30: 3}
    for size, k in expect.items():
        st = res[(res.candidate == "red") & (res.protocol == "static") & (res["size"] == size)]
        assert len(st) == 5 and (st.successes == k).all() and (st.n == 5).all()
        assert st.untargeted_rate.to_numpy() == pytest.approx([k / 5] * 5)  # every miss stays the source here
        assert st.ci_low.iloc[0] == pytest.approx(wilson_by_hand(k, 5)[0])
        assert st.ci_high.iloc[0] == pytest.approx(wilson_by_hand(k, 5)[1])
        dyn = res[(res.candidate == "red") & (res.protocol == "dynamic") & (res["size"] == size)]
        assert dyn.successes.item() == k
        rnd = res[(res.candidate == "red") & (res.protocol == "random") & (res["size"] == size)]
        assert rnd.trials.item() == 15 and rnd.successes.item() == 3 * k
        assert (rnd.ci_low.item(), rnd.ci_high.item()) == pytest.approx(wilson_by_hand(k, 5))  # n = images
    overall = res[(res.candidate == "red") & (res.protocol == "dynamic") & res["size"].isna()]
    assert overall.successes.item() == 3
    assert (res[res.candidate == "noise"].successes == 0).all()  # noise never flips
    assert (res[res.candidate == "noise"].untargeted_rate.abs() < 1e-9).all()
    assert len(res) == 2 * (2 * 5 + 2 + 1 + 2)
    s = {e["name"]: e for e in ev.summary}
    assert s["red"]["static"]["rate"] == pytest.approx(0.6) and s["red"]["static"]["size"] == 0.30
    assert s["red"]["dynamic"]["rate"] == pytest.approx(0.6)
    assert s["red"]["reads_as"]["index"] == TARGET and s["noise"]["reads_as"]["index"] != TARGET
    # noise reads as another class but has no donor: not a natural or donor-disguised patch
    assert ev.best()["name"] == "red" and ev.best(disguised=True) is None
    assert len(ev.examples) == 2 and ev.examples[0]["candidate"] == "red"
    # p(target) before is the clean mean over the denominator images
    p0 = clf.logits(images[:5]).softmax(-1)[:, TARGET].mean().item()
    assert res.p_target_before.iloc[0] == pytest.approx(p0)


def test_source_any_null_controls_and_target_reference(toy):
    clf, images, red, noise = toy
    g = torch.Generator().manual_seed(1)
    controls = make_controls(clf, flat((0, 0, 0.5)), torch.cat([flat((0, 0, 0.3)), flat((1, 0, 0))]), g,
                             source=SOURCE, target=TARGET)
    assert [c.name for c in controls] == list(CONTROL_NAMES) + [REFERENCE_NAME]
    assert [c.kind for c in controls] == ["control"] * 3 + ["reference"]
    assert torch.allclose(controls[3].patch, flat((1, 0, 0))[0, :, :19, :19])  # the most target-like image
    ev = evaluate(clf, [red], images, None, TARGET, sizes=(0.30,), protocols=("static",), controls=controls)
    assert ev.denominator == 6  # source 'any': every image not already the target
    s = {e["name"]: e for e in ev.summary}
    # the real-target photo is red too and flips as often as red, but it is a reference: lift is
    # measured against the best NULL control (all at 0 here), so red's real effect shows
    lift = s["red"]["lift_over_best_control"]
    assert lift["control"] in CONTROL_NAMES and s["red"]["static"]["rate"] > 0
    assert lift["value"] == pytest.approx(s["red"]["static"]["rate"])
    assert s[REFERENCE_NAME]["static"]["rate"] == pytest.approx(s["red"]["static"]["rate"])
    assert s["control-noise"]["static"]["rate"] == 0.0 and s["control-gray"]["static"]["rate"] == 0.0


def test_setting_is_chosen_on_selection_and_counted_on_confirmation(toy):
    clf, images, red, _ = toy
    selection = flat((0, 0, 0.05), n=4)  # red flips all of these at 10 % and at 30 %: the tie goes to 10 %
    ev = evaluate(clf, [red], {"selection": selection, "confirmation": images}, SOURCE, TARGET, sizes=(0.10, 0.30),
                  protocols=("static", "random"), random_placements=2, rotation_deg=0.0,
                  image_names={"selection": [f"s{i}" for i in range(4)], "confirmation": [f"c{i}" for i in range(6)]})
    s = {e["name"]: e for e in ev.summary}["red"]
    assert s["selection"]["static"]["rate"] == 1.0 and s["selection"]["static"]["size"] == 0.10
    # counted on confirmation at the setting chosen on selection: 1 of 5 (at 30 % it would be 3 of 5)
    assert s["static"]["size"] == 0.10 and s["static"]["successes"] == 1 and s["static"]["n"] == 5
    assert s["random"]["size"] == 0.10 and s["random"]["rate"] == pytest.approx(0.2)
    assert ev.splits["selection"]["denominator"] == 4 and ev.splits["confirmation"]["denominator"] == 5
    assert ev.best()["name"] == "red" and ev.config["split"] == "selection / confirmation"


def test_pooling_other_images_into_selection_changes_the_setting_not_the_count(toy):
    clf, images, red, noise = toy
    kw = dict(sizes=(0.10, 0.30), protocols=("static", "dynamic"), n_examples=0)
    ev = evaluate(clf, [red, noise], {"selection": flat((0, 0, 0.05), n=4), "confirmation": images}, SOURCE, TARGET, **kw)
    train = evaluate(clf, [red, noise], flat((0, 0, 0.35), n=6), SOURCE, TARGET, **kw)  # red flips these at 30 % only
    pooled = pool_selection(ev.results, train.results[train.results.split == "confirmation"])
    conf = ev.results[ev.results.split == "confirmation"].reset_index(drop=True)
    assert pooled[pooled.split == "confirmation"].reset_index(drop=True).equals(conf)  # counted rows untouched
    sel = pooled[(pooled.split == "selection") & (pooled.candidate == "red") & (pooled.protocol == "static")]
    cells = ev.results[(ev.results.split == "selection") & (ev.results.candidate == "red") & (ev.results.protocol == "static")]
    assert len(sel) == len(cells) > 2 and (sel.n == 10).all() and (sel.trials == 10).all()
    assert (sel[sel["size"] == 0.10].successes == 4).all() and (sel[sel["size"] == 0.30].successes == 10).all()
    assert sel.ci_low.iloc[0] == pytest.approx(wilson_by_hand(4, 10)[0])
    overall = pooled[(pooled.split == "selection") & (pooled.candidate == "red") & pooled["size"].isna()]
    assert overall.successes.item() == 10 and overall.n.item() == 10  # dynamic over all sizes pools too
    before = {e["name"]: e for e in ev.summary}["red"]
    after = {e["name"]: e for e in summarize(pooled, [red, noise], {}, "static")}["red"]
    # selection alone ties at 10 % (4 of 4) and is counted 1 of 5; pooled, 30 % wins and is counted 3 of 5
    assert before["static"]["size"] == 0.10 and before["static"]["successes"] == 1
    assert after["static"]["size"] == 0.30 and after["static"]["successes"] == 3
    assert after["selection"]["static"]["rate"] == 1.0 and after["selection"]["static"]["n"] == 10
    with pytest.raises(ValueError, match="no rows to pool"):
        pool_selection(ev.results, train.results[train.results.candidate == "noise"])


def test_pooled_control_reports_the_median_patch(toy):
    clf, images, red, noise = toy
    mostly_red = Candidate(red.patch, "control", "pool-red", members=torch.stack([red.patch, red.patch, noise.patch[:, :8, :8]]))
    mostly_noise = Candidate(red.patch, "control", "pool-noise",
                             members=torch.stack([red.patch, noise.patch[:, :8, :8], noise.patch[:, 8:, 8:]]))
    ev = evaluate(clf, [red], images, SOURCE, TARGET, sizes=(0.30,), protocols=("static",), controls=[mostly_red, mostly_noise])
    res = ev.results[ev.results.split == "confirmation"]
    rate = {n: res[res.candidate == n].success_rate.max() for n in ("red", "pool-red", "pool-noise")}
    assert rate["pool-red"] == rate["red"] == pytest.approx(0.6) and rate["pool-noise"] == 0.0


def test_bad_inputs_are_user_errors(toy):
    from patchlab.errors import UserError

    clf, images, red, _ = toy
    with pytest.raises(UserError, match="protocol"):
        evaluate(clf, [red], images, SOURCE, TARGET, protocols=("sideways",))
    with pytest.raises(UserError, match="none of the"):
        evaluate(clf, [red], images[5:], SOURCE, TARGET)
    with pytest.raises(UserError, match="sizes"):
        evaluate(clf, [red], images, SOURCE, TARGET, sizes=(0, 0.5))


@pytest.fixture()
def folder(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub, n in (("snorkel", 4), ("scuba_diver", 1)):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / sub / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    return tmp_path


def test_cli_evaluate_json_and_interrupt(folder, monkeypatch):
    """CLI parses `--sizes 10 25`; an exception mid-run leaves no COMPLETE; a re-run completes."""
    import json

    from typer.testing import CliRunner

    from patchlab.cli import app, load_commands
    from patchlab.patches import apply as apply_mod
    from patchlab.runio import is_complete

    load_commands()
    out = folder / "reports" / "run"
    args = ["evaluate", "--classes", "any", "scuba diver", "--patch", str(folder / "p.png"), "--data",
            str(folder / "data"), "--model", "tiny", "--sizes", "10", "25", "--protocol", "static", "--out", str(out),
            "--placements", "2", "--json"]
    calls = {"n": 0}
    real = apply_mod.apply_patch

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash mid-evaluation")
        return real(*a, **k)

    monkeypatch.setattr(apply_mod, "apply_patch", flaky)
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, RuntimeError) and not is_complete(out)
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(apply_mod, "apply_patch", real)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert is_complete(out) and summary["complete"] and summary["config"]["sizes"] == [0.10, 0.25]
    c = summary["data"]["counts"]
    # an outside patch: every snorkel but the selection ones is counted (train and confirmation splits)
    assert c["selection"] + c["confirmation"] == 4 and c["target"] == 1 and c["selection"] > 0
    assert c["confirmation_denominator"] == c["confirmation"] > 0 and summary["confirmation"]["denominator"] == c["confirmation"]
    files = summary["data"]["files"]
    assert not set(files["train"]) & set(files["confirmation"]) and not set(files["selection"]) & set(files["confirmation"])
    assert summary["data"]["counted"]["splits"] == ["train", "confirmation"]
    assert [c["name"] for c in summary["controls"]] == list(CONTROL_NAMES)
    assert [c["name"] for c in summary["references"]] == [REFERENCE_NAME]
    assert (folder / "reports" / "index.html").is_file()
    # interrupting a re-run of a finished run un-marks it
    calls["n"] = 0
    monkeypatch.setattr(apply_mod, "apply_patch", flaky)
    assert isinstance(CliRunner().invoke(app, args).exception, RuntimeError)
    assert not is_complete(out)


@pytest.fixture()
def snorkels(tmp_path):
    """16 snorkel photos (pairdata's rule: 4 train, 4 selection, 8 confirmation at seed 0) and a scuba diver."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for sub, n in (("snorkel", 16), ("scuba_diver", 1)):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / sub / f"{i:02d}.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "outside.png")
    return tmp_path


def _evaluate(root, patch, out, seed=0):
    from patchlab.pipelines.evaluate import evaluate_patches

    return evaluate_patches("any", "scuba diver", [patch], model="tiny", device="cpu", data=root / "data", sizes=[10],
                            protocols=["static"], random_placements=1, out=out, seed=seed)


def test_outside_patches_are_counted_on_every_photo_but_the_selection_ones(snorkels, cli):
    """Nothing of an outside patch was made from the folder: only the selection photos (where the static
    placement is chosen) are set aside; the split is pairdata's rule and the run records why."""
    import json

    from patchlab.pairdata import split_indices

    res = _evaluate(snorkels, snorkels / "outside.png", snorkels / "run")
    data = res["summary"]["data"]
    rule = split_indices(16, 0)
    names = sorted(f"snorkel/{i:02d}.png" for i in range(16))
    assert data["files"]["selection"] == [names[i] for i in rule["selection"]]
    assert data["counts"]["selection"] == 4 and data["counts"]["confirmation"] == 12
    assert data["counted"] == {"splits": ["train", "confirmation"], "images": 12, "set_aside": 4, "total": 16,
                               "made_from": [], "text": "counted on 12 photos: 4 of 16 set aside to choose the static "
                                                        "placement; the patches were not made from these photos"}
    assert json.loads((snorkels / "run" / "summary.json").read_text())["confirmation"]["n_images"] == 12
    manifest = json.loads((snorkels / "run" / "manifest.json").read_text())
    assert manifest["config"]["counted"] == ["train", "confirmation"] and manifest["config"]["made_from"] == []
    assert manifest["config"]["splits"]["train"] == 32  # photos: train taken up to 4x its size, as the others
    assert data["counted"]["text"] in (snorkels / "run" / "report.html").read_text()
    line = cli("evaluate", "--classes", "any", "scuba diver", "--patch", str(snorkels / "outside.png"), "--data",
               str(snorkels / "data"), "--model", "tiny", "--sizes", "10", "--protocol", "static", "--placements", "1",
               "--out", str(snorkels / "cli"))
    assert line.code == 0 and "counted on 12 photos: 4 of 16 set aside to choose the static placement" in line.out


def test_patches_made_from_these_photos_are_counted_on_confirmation_only(snorkels):
    """A patch in the run folder of a synth run on the same folder saw its train photos: only the
    confirmation photos are counted, and a run made with another seed is named with its seed."""
    from patchlab.runfolder import DataSource, Manifest, RunConfig, RunFolder

    made = RunFolder(snorkels / "synth-run")
    (made.path / "patches").mkdir(parents=True)
    (snorkels / "outside.png").rename(made.path / "patches" / "synth-any.png")
    made.write_manifest(Manifest.new("synth", RunConfig(data=DataSource.of(snorkels / "data")), 3, "tiny"))
    data = _evaluate(snorkels, made.path / "patches" / "synth-any.png", snorkels / "run")["summary"]["data"]
    counted = data["counted"]
    assert counted["splits"] == ["confirmation"] and counted["images"] == 8 and counted["set_aside"] == 8
    assert counted["made_from"] == [{"run": str(made.path.resolve()), "seed": 3}]
    assert data["counts"]["confirmation"] == 8 and "4 train photos, which" in counted["text"]
    assert "split them with seed 3" in counted["text"] and "use --seed 3" in counted["text"]
    same_seed = _evaluate(snorkels, made.path / "patches" / "synth-any.png", snorkels / "run3", seed=3)
    assert "split them with seed" not in same_seed["summary"]["data"]["counted"]["text"]
    other = Manifest.new("synth", RunConfig(data=DataSource.of(snorkels / "elsewhere")), 0, "tiny")
    made.write_manifest(other)  # made from other photos: an outside patch for this folder
    again = _evaluate(snorkels, made.path / "patches" / "synth-any.png", snorkels / "run2")["summary"]["data"]
    assert again["counted"]["splits"] == ["train", "confirmation"]


def test_cli_user_errors(folder, monkeypatch, capsys):
    """Bad class names and missing patch files: one line on stderr, exit code 2."""
    from patchlab.cli import main

    base = ["patchlab", "evaluate", "--model", "tiny", "--data", str(folder / "data"), "--out", str(folder / "o")]
    for extra, needle in (
        (["--classes", "snorkle", "scuba diver", "--patch", str(folder / "p.png")], "snorkel"),
        (["--classes", "any", "scuba diver", "--patch", str(folder / "missing.png")], "missing.png"),
        (["--classes", "any", "scuba diver", "--patch", str(folder / "p.png"), "--sizes", "0", "120"], "sizes"),
    ):
        monkeypatch.setattr("sys.argv", base + extra)
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and needle in err and "Traceback" not in err


def test_bad_input_leaves_an_existing_run_untouched(folder, monkeypatch, capsys):
    """A missing --data fails before anything in --out changes; another command's run is refused."""
    import json

    from patchlab.cli import main
    from patchlab.runio import COMPLETE_MARKER, mark_complete, new_manifest

    run = folder / "old"
    run.mkdir()
    mark_complete(run, new_manifest("probe", {}, 0, "tiny"))
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    patch = ["--patch", str(folder / "p.png"), "--model", "tiny", "--out", str(run)]
    for argv, needle in (
        (["evaluate", "--classes", "any", "scuba diver", "--data", str(folder / "nope"), *patch], "does not exist"),
        (["synth", "--classes", "snorkel", "scuba diver", "--data", str(folder / "nope"), "--model", "tiny",
          "--out", str(run)], "does not exist"),
        (["evaluate", "--classes", "any", "scuba diver", "--data", str(folder / "data"), *patch], "already holds a probe run"),
    ):
        monkeypatch.setattr("sys.argv", ["patchlab", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert {f.name: f.read_bytes() for f in run.iterdir()} == before
    assert (run / COMPLETE_MARKER).is_file() and json.loads((run / "manifest.json").read_text())["command"] == "probe"


@pytest.mark.integration
def test_real_model_rows_match_direct_application():
    """On the default model, a static row equals pasting the patch with apply_at and classifying directly."""
    import numpy as np
    from skimage import data as skdata

    from patchlab.data import to_model_input
    from patchlab.models import load_classifier
    from patchlab.patches.apply import apply_at
    from PIL import Image

    clf = load_classifier("efficientnet_lite0", "cpu")
    imgs = torch.stack([to_model_input(Image.fromarray(np.asarray(a)), 224) for a in (skdata.chelsea(), skdata.coffee())])
    top = clf.logits(imgs).argmax(-1)
    target = clf.classes.resolve("scuba diver")
    patch = Candidate(imgs[1, :, 50:150, 50:150], "natural", "coffee-crop")
    ev = evaluate(clf, [patch], imgs[:1], int(top[0]), target, sizes=(0.25,), positions=("top-left", "center"),
                  protocols=("static",), n_examples=0)
    for pos in ("top-left", "center"):
        p = clf.logits(apply_at(imgs[:1], patch.patch, 0.25, pos)).softmax(-1)[0]
        row = ev.results[ev.results.placement == pos].iloc[0]
        assert row.p_target_after == pytest.approx(p[target].item(), rel=1e-4)
        assert row.successes == int(p.argmax() == target)
