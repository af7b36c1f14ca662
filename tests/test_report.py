"""Run folders: files, summary schema, rebuild, index, escaping of every
user-provided string, and completeness marking."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from patchlab.classes import ClassIndex
from patchlab.evaluation import evaluate, make_controls
from patchlab.models import tiny_classifier
from patchlab.patches.candidate import Candidate
from patchlab.report import rebuild_report, update_index, write_run
from patchlab.runio import is_complete

EVIL_CLASS = "<script>alert('class')</script>"
EVIL_CAND = "<b onmouseover=alert(3)>"
EVIL_FILE = "<img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def evaluation():
    names = [EVIL_CLASS] + [f"class {i}" for i in range(1, 10)]
    clf = tiny_classifier(num_classes=10, classes=ClassIndex(names=names))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 32, 32, generator=g)
    target = int(clf.logits(images).argmax(-1).mode().values) ^ 1  # a class the images are mostly not
    cands = [Candidate(torch.rand(3, 12, 12, generator=g), "synth", EVIL_CAND, {"donor": EVIL_CLASS}),
             Candidate(torch.rand(3, 12, 12, generator=g), "feature", "feat")]
    controls = make_controls(clf, images[:1], images[1:3], g, source=None, target=target)
    return evaluate(clf, cands, {"selection": images[3:6], "confirmation": images[6:]}, None, target, sizes=(0.1, 0.3),
                    random_placements=2, controls=controls, generator=g,
                    image_names={"selection": ["s0.png", "s1.png", "s2.png"],
                                 "confirmation": [EVIL_FILE] + [f"img{i}.png" for i in range(3)]})


def check_html(text: str) -> None:
    """No raw user strings, no scripts, only data: images, no external URLs."""
    assert EVIL_CLASS not in text and EVIL_CAND not in text and "<img src=x" not in text
    assert "<script" not in text.lower()
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', text)


def test_write_run_layout_schema_rebuild_index(evaluation, tmp_path):
    run = tmp_path / "reports" / "20260101-000000-any-to-x"
    _, html_path = write_run(run, evaluation, model="tiny", seed=7, data={"kind": "synthesized", "how": "test"})
    assert is_complete(run) and json.loads((run / "manifest.json").read_text())["complete"]
    for f in ("results.csv", "summary.json", "report.html", "figures/success_vs_area.png",
              "figures/placement_heatmap.png", "figures/patch_gallery.png", "figures/examples.png"):
        assert (run / f).is_file(), f
    res = pd.read_csv(run / "results.csv")
    assert len(res) == len(evaluation.results) == 2 * 6 * (2 * 5 + 3 + 2)  # 2 splits x (2 candidates, 3 nulls, 1 reference)
    s = json.loads((run / "summary.json").read_text())
    for key in ("source", "target", "model", "data", "donors", "candidates", "best_candidate", "selection",
                "confirmation", "best_disguised_candidate", "controls", "references", "reference", "timings",
                "versions", "seed", "complete"):
        assert key in s, key
    assert s["schema"] == "patchlab.summary/3" and s["complete"] and s["seed"] == 7 and s["data"]["kind"] == "synthesized"
    assert s["data"]["counts"]["confirmation"] == 4 and s["confirmation"]["denominator"] == evaluation.denominator
    assert s["data"]["counts"]["selection"] == 3
    c = s["candidates"][0]
    for key in ("name", "kind", "reads_as", "static", "dynamic", "random", "selection", "lift_over_best_control"):
        assert key in c
    assert {"rate", "ci", "size", "placement"} <= set(c["static"]) and len(c["lift_over_best_control"]["ci"]) == 2
    assert set(c["selection"]) == {"static", "dynamic", "random"}
    best = s["best_candidate"]
    assert {"rate", "ci", "selection_rate", "selection_ci"} <= set(best)
    assert len(s["controls"]) == 3 and len(s["references"]) == 1
    assert all((run / e["patch_file"]).is_file() for e in s["candidates"] + s["controls"] + s["references"])
    text = html_path.read_text()
    check_html(text)
    assert "&lt;script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;.png" in text
    # rebuild from the files alone
    for f in list((run / "figures").iterdir()) + [html_path]:
        f.unlink()
    rebuild_report(run)
    assert (run / "figures" / "success_vs_area.png").is_file()
    check_html(html_path.read_text())
    index = update_index(tmp_path / "reports").read_text()
    assert 'href="20260101-000000-any-to-x/report.html"' in index and "complete" in index
    assert EVIL_CLASS not in index


@pytest.fixture()
def no_figures(monkeypatch):
    """Skip the (slow) figures where a test is about something else."""
    import patchlab.report.figures as figs

    for name in ("success_vs_area", "placement_heatmap", "patch_gallery", "before_after"):
        monkeypatch.setattr(figs, name, lambda *a, **k: None)


def test_interrupted_write_is_not_complete(evaluation, tmp_path, monkeypatch, no_figures):
    import patchlab.report.run as report

    run = tmp_path / "run"
    write_run(run, evaluation, model="tiny")
    assert is_complete(run)

    def boom(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "rebuild_report", boom)
    with pytest.raises(KeyboardInterrupt):
        write_run(run, evaluation, model="tiny")
    assert not is_complete(run)
    monkeypatch.setattr(report, "rebuild_report", rebuild_report)
    write_run(run, evaluation, model="tiny")
    assert is_complete(run)


def test_data_folder_with_hostile_file_name(tmp_path, no_figures):
    """Acceptance: a file named <img src=x onerror=alert(1)>.png appears in report.html only escaped."""
    from PIL import Image

    from patchlab.pipelines.evaluate import evaluate_patches

    rng = np.random.default_rng(1)
    snorkels = tuple(f"{i}.png" for i in range(7)) + (EVIL_FILE,)  # 8 photos: every split gets some
    for sub, names in (("snorkel", snorkels), ("scuba_diver", ("t.png",))):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / sub / name)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{EVIL_CAND}.png")
    out = evaluate_patches("any", "scuba diver", [tmp_path / f"{EVIL_CAND}.png"], data=tmp_path / "data",
                           sizes=[20], protocols=["static"], out=tmp_path / "reports" / "r", model="tiny", device="cpu")
    text = (tmp_path / "reports" / "r" / "report.html").read_text()
    check_html(text)
    assert "snorkel/&lt;img src=x onerror=alert(1)&gt;.png" in text
    files = out["summary"]["data"]["files"]
    assert f"snorkel/{EVIL_FILE}" in files["train"] + files["selection"] + files["confirmation"]  # raw in JSON, escaped in HTML
    assert "<img src=x" not in (tmp_path / "reports" / "index.html").read_text()


def test_malformed_run_folders_are_user_errors(evaluation, tmp_path, no_figures):
    from patchlab.errors import UserError

    good = tmp_path / "good"
    write_run(good, evaluation, model="tiny")
    results = (good / "results.csv").read_text()
    summary = json.loads((good / "summary.json").read_text())
    (tmp_path / "a_file").write_text("x")
    cases = {"a_file": None, "list": [], "empty": {}, "nameless": dict(summary, candidates=[{"kind": "synth"}])}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).mkdir()
            (tmp_path / name / "summary.json").write_text(json.dumps(content))
            (tmp_path / name / "results.csv").write_text(results)
        with pytest.raises(UserError):
            rebuild_report(tmp_path / name)
    (tmp_path / "odd").mkdir()  # a summary whose fields have other types than patchlab writes
    (tmp_path / "odd" / "summary.json").write_text(json.dumps({"source": "x", "best_candidate": {"rate": "high"}}))
    update_index(tmp_path)  # skips the malformed folders, lists the good one
    assert "good" in (tmp_path / "index.html").read_text()


def test_an_index_that_cannot_be_written_is_a_warning(evaluation, tmp_path, no_figures, monkeypatch, caplog):
    import patchlab.report.index as report

    write_run(tmp_path / "run", evaluation, model="tiny")

    def refuse(path, text):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(report, "atomic_write_text", refuse)
    assert update_index(tmp_path) is None
    assert "could not update the reports index" in caplog.text


def test_a_finished_run_with_other_settings_is_not_overwritten(tmp_path):
    from patchlab.errors import UserError
    from patchlab.runfolder import Manifest, RunConfig, RunFolder

    def manifest(target="tench", seed=0, model="tiny"):
        return Manifest.new("evaluate", RunConfig(target=target, extra={"sizes_pct": [10.0]}), seed, model)

    folder = RunFolder(tmp_path / "run").start(manifest())
    assert folder.check("evaluate", manifest("goldfish"))  # unfinished: a re-run may take it
    folder.mark_complete(manifest())
    assert folder.check("evaluate", manifest())  # the same run again
    for other in (manifest("goldfish"), manifest(seed=1), manifest(model="tiny48")):
        with pytest.raises(UserError, match="other settings"):
            folder.check("evaluate", other)
    with pytest.raises(UserError, match="holds an evaluate run"):
        folder.check("synth")


def test_new_run_folders_are_never_shared(tmp_path):
    from patchlab.runio import claim_new_dir

    first, second = claim_new_dir(tmp_path / "20261129-120000-a-to-b"), claim_new_dir(tmp_path / "20261129-120000-a-to-b")
    assert first.name == "20261129-120000-a-to-b" and second.name == "20261129-120000-a-to-b-2"
    assert first.is_dir() and second.is_dir()


def test_written_files_follow_the_umask(tmp_path):
    import os

    from patchlab.runio import atomic_write_text

    old = os.umask(0o022)
    try:
        assert (atomic_write_text(tmp_path / "a.txt", "x").stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert (atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
