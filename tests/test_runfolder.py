"""The run-folder contract: records that read older run folders with their defaults, give back
what this version writes, and JSON that turns non-finite numbers into null in one place."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from patchlab.errors import UserError
from patchlab.evaluation import evaluate, make_controls
from patchlab.models import tiny_classifier
from patchlab.patches.candidate import Candidate
from patchlab.report import build_summary
from patchlab.runfolder import DataSource, Manifest, RunConfig, RunFolder, Summary
from patchlab.runio import atomic_write_json, to_json

OLD_PROBE_MANIFEST = {  # a probe manifest as earlier versions wrote it: no data, budget, splits or weights keys
    "command": "probe", "seed": 3, "model": "tiny", "versions": {"patchlab": "0.0.9"}, "complete": True,
    "config": {"source": "snorkel", "target": "scuba diver", "generators": ["synth"],
               "identity": {"model": "tiny", "weights": {"path": "/w/tiny.pth", "sha256": "ab"},
                            "data": {"path": "/photos", "content": "cd"}, "budget": "standard", "seed": 3},
               "plan": {"n_train": 16, "n_selection": 16, "n_confirmation": 32, "n_target": 4, "shortlist": 12}},
}
OLD_SUMMARY = {  # the least a reader meets: no schema, source, target, data or reads_as
    "primary_protocol": "random", "timings": {"total": 1.5},
    "best_candidate": {"name": "synth-0", "kind": "synth", "rate": 0.5, "selection_rate": 0.25},
    "candidates": [{"name": "synth-0", "kind": "synth", "random": {"rate": 0.5, "ci": [0.2, 0.8], "n": 8},
                    "selection": {"random": {"rate": 0.25, "ci": [0.1, 0.6], "n": 8}}}],
    "data": {"files": ["a.png", "b.png"]},
}


def test_an_old_probe_manifest_reads_with_its_data_plan_and_weights():
    m = Manifest.from_dict(OLD_PROBE_MANIFEST)
    cfg = m.config
    assert (m.command, m.seed, m.model, m.complete, m.finished) == ("probe", 3, "tiny", True, None)
    assert cfg.data == DataSource("real", "/photos") and cfg.weights == "/w/tiny.pth" and cfg.budget == "standard"
    assert cfg.splits == {"train": 16, "selection": 16, "confirmation": 32, "target": 4}
    assert cfg.extra["generators"] == ["synth"] and cfg.extra["identity"]["seed"] == 3


def test_old_evaluate_and_audit_configs_and_an_empty_manifest_read_with_defaults():
    old_evaluate = RunConfig.from_dict({"source": "any", "target": "x", "data": "photos/", "budget": "quick",
                                        "weights": "w.pth", "sizes_pct": [10]})
    assert old_evaluate.data == DataSource("real", "photos/") and old_evaluate.weights == "w.pth"
    assert old_evaluate.splits is None and old_evaluate.extra == {"sizes_pct": [10]}
    old_audit = RunConfig.from_dict({"settings": {"data": "/p", "budget": "quick", "weights": None}})
    assert (old_audit.data.path, old_audit.budget, old_audit.weights) == ("/p", "quick", None)
    empty = Manifest.from_dict({"command": "probe"})
    assert (empty.seed, empty.model, empty.config.data, empty.config.budget) == (0, None, DataSource("synthesized"), None)
    assert Manifest.from_dict([]).command is None


def test_an_old_summary_reads_with_defaults_so_readers_need_no_fallbacks():
    s = Summary.from_dict(OLD_SUMMARY)
    assert s.schema is None and s.source.name == "" and s.target.index is None and s.references == []
    assert s.data.kind == "real" and s.data.files == {"evaluated": ["a.png", "b.png"]} and s.data.counts == {}
    (c,) = s.candidates
    assert c.reads_as.name is None and c.lift is None and c.patch_file is None
    assert c.confirmation_rate("random") == 0.5 and c.selection_rate("random") == 0.25 and c.rate("static") is None
    assert s.best_candidate.ci == [None, None] and s.best_disguised_candidate is None
    assert s.confirmation.denominator is None and s.timings["total"] == 1.5
    with pytest.raises(ValueError, match="name or a kind"):
        Summary.from_dict({"candidates": [{"kind": "synth"}]})


@pytest.fixture(scope="module")
def evaluation():
    clf = tiny_classifier(num_classes=10)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=g)
    target = int(clf.logits(images).argmax(-1).mode().values) ^ 1
    cands = [Candidate(torch.rand(3, 12, 12, generator=g), "synth", "synth-0")]
    controls = make_controls(clf, images[:1], images[1:3], g, source=None, target=target)
    return evaluate(clf, cands, {"selection": images[3:5], "confirmation": images[5:]}, None, target, sizes=(0.2,),
                    random_placements=1, controls=controls, generator=g, n_examples=0)


def test_records_give_back_what_this_version_writes(evaluation, tmp_path):
    summary = build_summary(evaluation, model="tiny", seed=0, data={"kind": "synthesized", "how": "test", "rule": "r",
                                                                    "seed": 0, "counts": {}, "files": {},
                                                                    "target_files": [], "skipped": []})
    written = json.loads(to_json(summary.as_dict()))
    assert json.loads(to_json(Summary.from_dict(written).as_dict())) == written
    folder = RunFolder(tmp_path / "run")
    manifest = Manifest.new("evaluate", RunConfig("any", "x", DataSource.of(tmp_path), "quick", {"train": 2}), 0, "tiny")
    folder.start(manifest)
    folder.write_summary(summary)
    folder.write_results(evaluation.results)
    assert folder.manifest() == manifest and folder.summary().as_dict() == written
    assert len(folder.results()) == len(evaluation.results) and not folder.is_complete()
    folder.mark_complete(manifest)
    assert folder.is_complete() and folder.manifest().complete and folder.manifest().finished


def test_non_finite_numbers_are_written_as_null_once(tmp_path):
    obj = {"nan": float("nan"), "inf": -math.inf, "np": np.float32("nan"), "arr": np.array([1.0, np.nan]),
           "tensor": torch.tensor([np.inf, 2.0]), "ok": [np.int64(3), 0.5, np.bool_(True)], "t": (1, float("nan"))}
    assert json.loads(to_json(obj)) == {"nan": None, "inf": None, "np": None, "arr": [1.0, None], "tensor": [None, 2.0],
                                        "ok": [3, 0.5, True], "t": [1, None]}
    folder = RunFolder(tmp_path)
    old = dict(OLD_SUMMARY, best_candidate=dict(OLD_SUMMARY["best_candidate"], rate=float("nan")))
    folder.write_summary(Summary.from_dict(old))
    assert '"rate": null' in (tmp_path / "summary.json").read_text()
    assert folder.summary().best_candidate.rate is None
    with pytest.raises(TypeError):
        to_json({"x": object()})


def test_unreadable_folders_are_user_errors_naming_the_file(tmp_path):
    folder = RunFolder(tmp_path / "nothing")
    with pytest.raises(UserError, match="not a patchlab run folder .no manifest.json"):
        folder.manifest()
    with pytest.raises(UserError, match="no results.csv"):
        folder.results()
    atomic_write_json(tmp_path / "x" / "summary.json", [1])
    with pytest.raises(UserError, match="a JSON object"):
        RunFolder(tmp_path / "x").summary()
    (tmp_path / "x" / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="cannot read the run manifest"):
        RunFolder(tmp_path / "x").manifest()
    with pytest.raises(UserError, match="already holds an unreadable manifest.json"):
        RunFolder(tmp_path / "x").check("probe")
