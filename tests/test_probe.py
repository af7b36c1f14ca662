"""probe end to end on the tiny model with a data folder: report, schema, resume, bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from patchlab.errors import UserError
from patchlab.pipelines.probe import probe
from patchlab.runio import is_complete

SOURCE, TARGET = "combination lock", "scuba diver"  # the random tiny net calls noise images class 507


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 12), ("scuba_diver", 2)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / folder / f"{i}.png")
    return tmp_path / "data"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))


def test_probe_writes_a_complete_report_with_the_documented_schema(data_dir, tmp_path, cache):
    s = probe(SOURCE, TARGET, model="tiny", data=data_dir, out=tmp_path / "out", device="cpu")
    run = tmp_path / "out" / os.path.basename(s["run_dir"])
    assert is_complete(run) and (run / "report.html").is_file() and (run / "results.csv").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema"] == "patchlab.summary/3" and summary["complete"]
    assert summary["source"]["index"] == 507 and summary["target"]["index"] == 983
    counts = summary["data"]["counts"]
    assert summary["data"]["kind"] == "real" and counts["train"] + counts["selection"] + counts["confirmation"] == 12
    kinds = {c["kind"] for c in summary["candidates"]}
    assert kinds == {"synth", "feature", "natural"}
    assert {c["name"] for c in summary["controls"]} >= {"control-noise", "control-gray"}
    assert [c["name"] for c in summary["references"]] == ["reference-target-photo"]
    for c in summary["candidates"]:
        assert 0.0 <= c["static"]["rate"] <= 1.0 and c["static"]["ci"][0] <= c["static"]["rate"] <= c["static"]["ci"][1]
        for proto in ("static", "random"):  # the headline is counted at the setting chosen on selection
            assert c[proto]["size"] == c["selection"][proto]["size"] and c[proto]["n"] == summary["confirmation"]["denominator"]
    best = summary["best_candidate"]
    assert best["rate"] == next(c for c in summary["candidates"] if c["name"] == best["name"])["random"]["rate"]
    assert set(summary["timings"]) >= {"images", "donors", "synth", "feature", "natural", "evaluate"}
    files = summary["data"]["files"]
    assert files["confirmation"] and not set(files["confirmation"]) & (set(files["train"]) | set(files["selection"]))
    assert not set(files["train"]) & set(files["selection"])


def test_interrupted_probe_resumes_from_the_first_unfinished_stage(data_dir, tmp_path, cache, monkeypatch):
    import patchlab.generators.natural as natural

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(natural, "natural_patches", boom)
    with pytest.raises(KeyboardInterrupt):
        probe(SOURCE, TARGET, model="tiny", data=data_dir, out=tmp_path / "out", device="cpu")
    said: list[str] = []
    (run,) = list((tmp_path / "out").iterdir())
    assert not is_complete(run)
    assert {p.stem for p in (run / "stages").glob("*.json")} == {"images", "donors", "synth", "feature"}
    monkeypatch.undo()
    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    for field, change in (("seed", {"seed": 1}), ("budget", {"budget": "standard"}), ("data", {"data": None}),
                          ("library", {"library": data_dir})):
        with pytest.raises(UserError, match=f"{field} "):
            probe(SOURCE, TARGET, **{"model": "tiny", "data": data_dir, "out": tmp_path / "out", "device": "cpu",
                                     "resume": run, **change})
    probe(SOURCE, TARGET, model="tiny", data=data_dir, out=tmp_path / "out", device="cpu", resume=run, echo=said.append)
    assert is_complete(run)
    assert sum("reused" in m for m in said) == 4 and any(m.startswith("[natural] done") for m in said)


def test_resume_refuses_changed_weights_and_changed_photos(data_dir, tmp_path, cache, monkeypatch):
    """A weights file with other bytes, or a photo folder whose files changed, is another run."""
    from safetensors.torch import save_file

    import patchlab.generators.synth as synth
    from patchlab.models import tiny_classifier

    weights = tmp_path / "w.safetensors"
    save_file(dict(tiny_classifier(seed=0).net.state_dict()), weights)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "synthesize_patch", boom)
    with pytest.raises(KeyboardInterrupt):
        probe(SOURCE, TARGET, model="tiny", weights=weights, data=data_dir, out=tmp_path / "out", device="cpu")
    (run,) = list((tmp_path / "out").iterdir())
    save_file({k: v + 0.01 for k, v in tiny_classifier(seed=0).net.state_dict().items()}, weights)
    with pytest.raises(UserError, match="weights "):
        probe(SOURCE, TARGET, model="tiny", weights=weights, data=data_dir, out=tmp_path / "out", device="cpu", resume=run)
    save_file(dict(tiny_classifier(seed=0).net.state_dict()), weights)
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(data_dir / "combination_lock" / "new.png")
    with pytest.raises(UserError, match="data "):
        probe(SOURCE, TARGET, model="tiny", weights=weights, data=data_dir, out=tmp_path / "out", device="cpu", resume=run)



@pytest.mark.parametrize("args, message", [
    (("snorkel", "snorkel"), "same class"),
    (("snorkle", "scuba_diver"), "did you mean"),
])
def test_bad_classes_are_user_errors(args, message, tmp_path):
    with pytest.raises(UserError, match=message):
        probe(*args, model="tiny", out=tmp_path, device="cpu")


def test_bad_data_and_output_are_user_errors(data_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        probe(SOURCE, TARGET, model="tiny", data=tmp_path / "missing", out=tmp_path / "out", device="cpu")
    with pytest.raises(UserError, match="no images of class"):
        probe("ostrich", TARGET, model="tiny", data=data_dir, out=tmp_path / "out", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        probe(SOURCE, TARGET, model="tiny", data=tmp_path / "empty", out=tmp_path / "out", device="cpu")
    assert not list((tmp_path / "out").glob("*"))  # unusable photos leave no empty run folder behind
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        probe(SOURCE, TARGET, model="tiny", data=data_dir, out=blocker / "sub", device="cpu")
    with pytest.raises(UserError, match="unknown model"):
        probe(SOURCE, TARGET, model="nosuchmodel", out=tmp_path, device="cpu")


def test_paste_returns_ranked_natural_candidates_with_provenance(data_dir, tmp_path, cache):
    from patchlab import paste

    res = paste(SOURCE, TARGET, donors=["tiger shark"], data=data_dir, out=tmp_path / "paste", top_k=3,
                model="tiny", device="cpu")
    assert is_complete(tmp_path / "paste") and 1 <= len(res["candidates"]) <= 3
    gains = [c["provenance"]["score_gain_logodds"] for c in res["candidates"]]
    assert gains == sorted(gains, reverse=True)
    for c in res["candidates"]:
        assert c["kind"] == "natural" and c["provenance"]["donor_name"] == "tiger shark"
        assert (tmp_path / "paste" / f"{c['name']}.png").is_file()
    assert res["search"]["crops_scored"] > 0


def test_probe_on_a_model_without_a_linear_head_says_why_candidates_are_missing(data_dir, tmp_path, cache):
    """No head: no pair direction, so no feature or natural candidates; synth still runs and the
    report says why the others are missing (no traceback)."""
    from patchlab.models import tiny_classifier

    clf = tiny_classifier()
    clf.head = None
    s = probe(SOURCE, TARGET, model="tiny", data=data_dir, out=tmp_path / "out", device="cpu", classifier=clf)
    assert {c["kind"] for c in s["candidates"]} == {"synth"}
    notes = s["generator_notes"]
    assert "no linear head" in notes["feature"]["skipped"] and "no linear head" in notes["natural"]["skipped"]
    assert "no linear head" in (tmp_path / "out" / os.path.basename(s["run_dir"]) / "report.html").read_text()
