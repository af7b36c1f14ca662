"""audit with several models (`--models A B`): the same pairs probed on each model,
per-model run folders, the leaderboard's model column, the most vulnerable
model per pair, resume checks over the model list, and bad model names.

The tests replace the probe by a stub writing a small finished probe folder
(the probe itself is tested in test_audit.py / test_probe.py; a real probe
takes minutes per pair on a small CPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from patchlab.audits import audit
from patchlab.audits.run import model_list
from patchlab.errors import UserError

PAIRS = "source,target\ncombination lock,goldfish\ncombination lock,scuba diver\ngoldfish,scuba diver\n"
LOCK_GOLDFISH, LOCK_DIVER = "0507-combination_lock-to-0001-goldfish", "0507-combination_lock-to-0983-scuba_diver"
GOLDFISH_DIVER = "0001-goldfish-to-0983-scuba_diver"
RATES = {("tiny", LOCK_GOLDFISH): 0.5, ("tiny48", LOCK_GOLDFISH): 0.75,
         ("tiny", LOCK_DIVER): 0.625, ("tiny48", LOCK_DIVER): 0.25, ("tiny", GOLDFISH_DIVER): 0.125}


def write_finished_probe(pair_dir: Path, rate: float) -> None:
    """A minimal finished probe folder: summary.json, results.csv and the COMPLETE marker."""
    from patchlab.runio import mark_complete

    pair_dir.mkdir(parents=True, exist_ok=True)
    best = {"name": "synth-0", "kind": "synth", "rate": rate, "ci": [rate / 2, min(1.0, rate + 0.1)],
            "selection_rate": rate}
    summary = {"primary_protocol": "random", "best_candidate": best, "candidates": [dict(best)], "controls": [],
               "references": [], "confirmation": {"denominator": 16}, "timings": {"total": 0.1}}
    (pair_dir / "summary.json").write_text(json.dumps(summary))
    rows = [{"split": split, "candidate": "synth-0", "kind": "synth", "protocol": "random", "size": 0.1,
             "placement": "random", "success_rate": rate} for split in ("selection", "confirmation")]
    pd.DataFrame(rows).to_csv(pair_dir / "results.csv", index=False)
    mark_complete(pair_dir, {"command": "probe"})


@pytest.fixture
def stub_probe(monkeypatch):
    """Replace the audit's in-process probe: record (model, pair key, classifier spec and input
    size, folder) and write RATES[(model, key)], or fail where RATES has none."""
    calls: list[dict] = []

    def fake_run_pair(pair, settings, pair_dir, classifier=None, echo=None):
        key = pair.key()
        calls.append({"model": settings["model"], "key": key, "spec": classifier.spec,
                      "input_size": classifier.input_size, "dir": Path(pair_dir)})
        if (settings["model"], key) not in RATES:
            return {"status": "failed", "error": "stub: no photo flips", "traceback": None, "seconds": 0.1}
        write_finished_probe(Path(pair_dir), RATES[(settings["model"], key)])
        return {"status": "ok", "seconds": 0.1}

    monkeypatch.setattr("patchlab.audits.run.run_pair", fake_run_pair)
    return calls


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(PAIRS)
    return path


def _audit(pairs_file, out, **kw):
    return audit(pairs_file=pairs_file, out=out, device="cpu", echo=lambda m: None, **kw)


def test_model_list_takes_one_model_or_several_never_both():
    assert model_list(None, None) == ["efficientnet_lite0"]
    assert model_list("tiny", None) == ["tiny"] and model_list("tiny", []) == ["tiny"]
    assert model_list(None, ["tiny", "tiny48"]) == ["tiny", "tiny48"]
    assert model_list(None, ["tiny,tiny48", " timm:resnet18 "]) == ["tiny", "tiny48", "timm:resnet18"]
    with pytest.raises(UserError, match="--model or --models, not both"):
        model_list("tiny", ["tiny48"])
    with pytest.raises(UserError, match="'tiny' twice"):
        model_list(None, ["tiny", "tiny48", "tiny"])
    with pytest.raises(UserError, match="would share the folder"):
        model_list(None, ["timm:a.b", "timm_a_b"])


def test_each_pair_is_probed_on_each_model_in_its_own_folder(stub_probe, pairs_file, tmp_path):
    out = tmp_path / "multi"
    doc = _audit(pairs_file, out, models=["tiny", "tiny48"])
    # pairs chosen once, then model by model; each model loaded once with its own input size
    assert [(c["model"], c["key"]) for c in stub_probe] == [
        (m, k) for m in ("tiny", "tiny48") for k in (LOCK_GOLDFISH, LOCK_DIVER, GOLDFISH_DIVER)]
    assert {(c["spec"], c["input_size"]) for c in stub_probe} == {("tiny", 32), ("tiny48", 48)}
    assert all(c["dir"] == out / "pairs" / c["model"] / c["key"] for c in stub_probe)
    assert sorted(p.name for p in (out / "failures").iterdir()) == ["tiny48"]
    assert [p.name for p in (out / "failures" / "tiny48").iterdir()] == [f"{GOLDFISH_DIVER}.json"]
    assert doc["config"]["models"] == ["tiny", "tiny48"]
    assert doc["config"]["input_sizes"] == {"tiny": 32, "tiny48": 48}
    assert doc["counts"] == {"pairs": 6, "ok": 5, "failed": 1, "pending": 0} and doc["complete"]
    assert doc["config"]["identity"]["model"] == ["tiny", "tiny48"]


def test_leaderboard_has_a_model_column_and_the_most_vulnerable_model_per_pair(stub_probe, pairs_file, tmp_path):
    out = tmp_path / "multi"
    doc = _audit(pairs_file, out, models=["tiny", "tiny48"])
    board = pd.read_csv(out / "audit.csv")
    assert list(board.columns[:4]) == ["rank", "model", "source", "target"]
    ok = board[board["status"] == "ok"]
    assert list(ok["success"]) == [0.75, 0.625, 0.5, 0.25, 0.125]
    assert list(ok["model"]) == ["tiny48", "tiny", "tiny", "tiny48", "tiny"]
    assert list(ok["report"])[0] == f"pairs/tiny48/{LOCK_GOLDFISH}/report.html"
    worst = {(e["source"], e["target"]): e for e in doc["most_vulnerable"]}
    assert [(e["source"], e["model"]) for e in doc["most_vulnerable"]] == [
        ("combination lock", "tiny48"), ("combination lock", "tiny"), ("goldfish", "tiny")]
    lock_goldfish = worst[("combination lock", "goldfish")]["models"]
    assert list(lock_goldfish) == ["tiny", "tiny48"]
    assert (lock_goldfish["tiny"]["success"], lock_goldfish["tiny48"]["success"]) == (0.5, 0.75)
    assert worst[("goldfish", "scuba diver")]["models"]["tiny48"]["status"] == "failed"
    html = (out / "index.html").read_text()
    assert "Most vulnerable model per pair" in html and "<th>tiny48</th>" in html
    assert "<b>75.0 %</b>" in html and "50.0 %" in html  # the winner in bold, the other model beside it
    assert f'href="pairs/tiny48/{LOCK_GOLDFISH}/report.html"' in html
    assert "tiny48: goldfish &rarr; scuba diver: <b>failed</b>" in html


def test_one_model_keeps_the_old_layout_and_models_of_one_is_the_same_audit(stub_probe, pairs_file, tmp_path):
    out = tmp_path / "single"
    doc = _audit(pairs_file, out, model="tiny")
    assert sorted(p.name for p in (out / "pairs").iterdir()) == sorted([LOCK_GOLDFISH, LOCK_DIVER, GOLDFISH_DIVER])
    assert (out / "pairs" / LOCK_GOLDFISH / "COMPLETE").is_file()
    assert doc["most_vulnerable"] is None and doc["config"]["identity"]["model"] == "tiny"
    assert set(pd.read_csv(out / "audit.csv")["model"]) == {"tiny"}
    assert "Most vulnerable model" not in (out / "index.html").read_text()
    stub_probe.clear()
    again = _audit(pairs_file, out, models=["tiny"])  # resumes: only nothing left to do
    assert stub_probe == [] and again["counts"]["ok"] == 3


def test_resume_with_other_models_is_refused_in_one_line(stub_probe, pairs_file, tmp_path):
    out = tmp_path / "multi"
    _audit(pairs_file, out, models=["tiny", "tiny48"])
    stub_probe.clear()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for other, shown in ((dict(models=["tiny48", "tiny"]), "['tiny48', 'tiny'] here"),
                         (dict(models=["tiny"]), "'tiny' here"), (dict(model="tiny48"), "'tiny48' here")):
        with pytest.raises(UserError) as err:
            _audit(pairs_file, out, **other)
        msg = str(err.value)
        assert "\n" not in msg and f"model ['tiny', 'tiny48'] there, {shown}" in msg
    assert stub_probe == [] and {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    again = _audit(pairs_file, out, models=["tiny", "tiny48"])  # the same models: only the failed job reruns
    assert [(c["model"], c["key"]) for c in stub_probe] == [("tiny48", GOLDFISH_DIVER)]
    assert again["counts"]["failed"] == 1


def test_bad_model_names_are_refused_before_anything_is_written(pairs_file, tmp_path):
    with pytest.raises(UserError, match="unknown model spec 'nope'"):
        _audit(pairs_file, tmp_path / "bad", models=["tiny", "nope"])
    with pytest.raises(UserError, match="not both"):
        _audit(pairs_file, tmp_path / "bad", model="tiny", models=["tiny48"])
    assert not (tmp_path / "bad").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchlab", "audit", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_models_bad_input_is_one_line_and_exit_2(pairs_file, tmp_path):
    out = str(tmp_path / "bad")
    for args, said in ((["--models", "tiny", "nope"], "unknown model spec 'nope'"),
                       (["--model", "tiny", "--models", "tiny", "tiny48"], "give --model or --models, not both"),
                       (["--models", "tiny,tiny"], "'tiny' twice"),
                       (["--model", "tiny", "tiny48"], "unexpected argument 'tiny48'")):
        r = _cli(*args, "--pairs-file", str(pairs_file), "--device", "cpu", "--out", out)
        assert r.returncode == 2, r.stderr
        assert said in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()


def test_cli_models_a_b_audits_both_and_prints_the_most_vulnerable_model(stub_probe, pairs_file, tmp_path,
                                                                            monkeypatch, capsys):
    """`patchlab audit --models tiny tiny48` in this process (the stubbed probe), exit 3 for the failed job."""
    from patchlab.cli import main

    out = tmp_path / "cli"
    monkeypatch.setattr(sys, "argv", ["patchlab", "audit", "--models", "tiny", "tiny48", "--pairs-file",
                                      str(pairs_file), "--device", "cpu", "--out", str(out)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 3
    text = capsys.readouterr()
    assert "audit of 3 pairs x 2 models" in text.err and "tiny48: goldfish -> scuba diver: FAILED: stub" in text.err
    lines = text.out.splitlines()
    first = next(ln for ln in lines if ln.strip().startswith("1 "))
    assert first.split()[:2] == ["1", "tiny48"] and "75.0%" in first
    assert "most vulnerable model per pair (tiny, tiny48):" in text.out
    assert any(ln.split()[:5] == ["combination", "lock", "->", "goldfish", "tiny48"] and "tiny 50.0%" in ln
               and "tiny48 75.0%" in ln for ln in lines)
    assert "5 ok, 1 failed, 0 pending" in text.out
    assert sorted(p.name for p in (out / "pairs").iterdir()) == ["tiny", "tiny48"]
    assert {c["input_size"] for c in stub_probe} == {32, 48}


def _ray_setup_hook():
    """Worker setup hook: the Ray tasks' probe loads the job's model by name (as the real probe
    does) and writes its spec and input size beside a stub result."""

    def hook() -> None:
        import patchlab.audits.ray_backend as backend

        def fake_run_pair(pair, settings, pair_dir, classifier=None, echo=None):
            from patchlab.models import load_classifier

            clf = load_classifier(settings["model"], "cpu", weights=settings.get("weights"))
            rate = RATES.get((settings["model"], pair.key()))
            if rate is None:
                return {"status": "failed", "error": "stub: no photo flips", "traceback": None, "seconds": 0.1}
            write_finished_probe(Path(pair_dir), rate)
            (Path(pair_dir) / "loaded.json").write_text(json.dumps({"spec": clf.spec, "input_size": clf.input_size}))
            return {"status": "ok", "seconds": 0.1}

        backend.run_pair = fake_run_pair

    return hook


def test_ray_audit_of_two_models_gives_the_in_process_leaderboard(stub_probe, pairs_file, tmp_path):
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    local = _audit(pairs_file, tmp_path / "local", models=["tiny", "tiny48"])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"worker_process_setup_hook": _ray_setup_hook()})
        doc = _audit(pairs_file, tmp_path / "ray", models=["tiny", "tiny48"], ray="auto", cpus_per_pair=1)
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    columns = ["rank", "model", "source", "target", "status", "success", "ci_low", "report", "error"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / "audit.csv")[columns],
                                  pd.read_csv(tmp_path / "ray" / "audit.csv")[columns])
    assert doc["most_vulnerable"] == local["most_vulnerable"]
    for model, size in (("tiny", 32), ("tiny48", 48)):  # each task loaded its own model, folders came back
        loaded = json.loads((tmp_path / "ray" / "pairs" / model / LOCK_GOLDFISH / "loaded.json").read_text())
        assert loaded == {"spec": model, "input_size": size}
    assert (tmp_path / "ray" / "failures" / "tiny48" / f"{GOLDFISH_DIVER}.json").is_file()
