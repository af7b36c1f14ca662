"""audit: pair selection, resumable in-process audit with a failed pair, the
report files, the CLI's bad-input lines, and a local Ray cluster giving the
same leaderboard as the in-process run (tiny model, small photo folders)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from patchlab.audits import audit, confusion_pairs, head_pairs, read_pairs_file
from patchlab.audits import pair_run
from patchlab.errors import UserError
from patchlab.models import tiny_classifier
from patchlab.runio import is_complete

LOCK, GOLDFISH, DIVER = 507, 1, 983  # the random tiny net calls every noise image class 507
PAIRS = "source,target\ncombination lock,goldfish\ncombination lock,scuba diver\ngoldfish,scuba diver\n"
COMPARED = ["rank", "source", "target", "status", "best_candidate", "best_kind", "success", "ci_low", "ci_high",
            "selection_success", "min_area_success", "lift", "best_control", "synth", "feature", "natural", "control",
            "reference", "confirmation", "error"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Photo folders (noise images), a pairs file, and tiny weights whose goldfish and
    scuba-diver logits sit just below combination lock's, so patches can flip them."""
    root = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 12), ("scuba_diver", 3), ("goldfish", 3)):
        (root / "data" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "data" / folder / f"{i}.png")
    clf = tiny_classifier()
    x = torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = clf(x)
        for t in (GOLDFISH, DIVER):
            clf.net.fc.bias[t] += (logits[:, LOCK] - logits[:, t]).min() - 0.005
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in clf.net.state_dict().items()}, str(root / "tiny.safetensors"))
    (root / "pairs.csv").write_text(PAIRS)
    return root


def _run(workdir, out, **kw):
    return audit(pairs_file=workdir / "pairs.csv", model="tiny", weights=workdir / "tiny.safetensors",
                 data=workdir / "data", out=out, device="cpu", **kw)


@pytest.fixture(scope="module")
def resumed(workdir):
    """An audit killed while probing its second pair, then re-run; records which pairs each
    run probed and the killed pair's finished stages before and after the re-run."""
    mp = pytest.MonkeyPatch()
    env = pytest.MonkeyPatch()
    env.setenv("PATCHLAB_CACHE", str(workdir / "cache"))
    out = workdir / "in-process"
    calls: list[list[str]] = [[], []]
    real = pair_run.run_pair

    def killed_on_second(pair, *a, **k):
        calls[0].append(pair.key())
        if len(calls[0]) == 2:
            import patchlab.generators.natural as natural

            def boom(*_a, **_k):
                raise KeyboardInterrupt

            mp.setattr(natural, "natural_patches", boom)  # dies midway through the pair's stages
        return real(pair, *a, **k)

    mp.setattr("patchlab.audits.run.run_pair", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        _run(workdir, out)
    mp.undo()
    first_pairs = sorted(p.name for p in (out / "pairs").iterdir() if p.is_dir())
    stages = out / "pairs" / "0507-combination_lock-to-0983-scuba_diver" / "stages"
    stages_before = {p.name: p.stat().st_mtime_ns for p in stages.glob("*.json")}

    def counted(pair, *a, **k):
        calls[1].append(pair.key())
        return real(pair, *a, **k)

    mp.setattr("patchlab.audits.run.run_pair", counted)
    doc = _run(workdir, out)
    mp.undo()
    stages_after = {p.name: p.stat().st_mtime_ns for p in stages.glob("*.json")}
    yield {"out": out, "doc": doc, "calls": calls, "first_pairs": first_pairs, "stages_before": stages_before,
           "stages_after": stages_after}
    env.undo()


def test_head_pairs_are_the_most_similar_head_directions_one_direction_each(tiny):
    pairs = head_pairs(tiny, 5)
    sims = [p.similarity for p in pairs]
    assert len(pairs) == 5 and sims == sorted(sims, reverse=True)
    W = tiny.head.weight.double()
    Wc = torch.nn.functional.normalize(W - W.mean(0), dim=1)
    S = (Wc @ Wc.T).fill_diagonal_(-2)
    assert sims[0] == pytest.approx(S.max().item(), abs=1e-6)
    unordered = {frozenset((p.source, p.target)) for p in pairs}
    assert len(unordered) == 5 and len({p.key() for p in pairs}) == 5
    for p in pairs:  # towards the class the head's bias already favours
        assert tiny.head.bias[p.target] >= tiny.head.bias[p.source]


def test_confusion_pairs_come_from_the_train_split_photos_only(workdir):
    """Pairs are chosen on the photos no probe counts: each class's train split (2 in every 8)."""
    from patchlab.audits.pairs import train_records
    from patchlab.data import discover
    from patchlab.pairdata import split_of

    clf = tiny_classifier()
    pairs = confusion_pairs(clf, workdir / "data", 5, min_images=1)
    assert {(p.source, p.target) for p in pairs} == {(GOLDFISH, LOCK), (DIVER, LOCK)}
    assert all(p.confusion == 1.0 and p.chosen_by == "confusion" for p in pairs)
    records = discover(workdir / "data", clf.classes)
    used = train_records(records, seed=0)
    locks = sorted((r for r in records if r.label == LOCK), key=lambda r: str(r.path))
    assert [r.path for r in used if r.label == LOCK] == [r.path for r, s in zip(locks, split_of(12, 0)) if s == "train"]
    with pytest.raises(UserError, match="train-split"):
        confusion_pairs(clf, workdir / "data", 5)  # 1 train photo per class < the default minimum of 3


def test_pairs_file_resolves_names_and_reports_bad_rows(tmp_path, tiny):
    f = tmp_path / "p.csv"
    f.write_text("# audit these\nsnorkel, scuba diver\nsnorkel,scuba_diver\n1,2\n")
    pairs = read_pairs_file(tiny, f)
    assert [(p.source, p.target) for p in pairs] == [(801, 983), (1, 2)]
    f.write_text("# a comment\n\nsnorkle,goldfish\n")
    with pytest.raises(UserError, match="line 3.*unknown class 'snorkle'"):
        read_pairs_file(tiny, f)
    f.write_text("snorkel,snorkel\n")
    with pytest.raises(UserError, match="same class"):
        read_pairs_file(tiny, f)
    f.write_text("source,target\n")
    with pytest.raises(UserError, match="no pairs"):
        read_pairs_file(tiny, f)


def test_smallest_patch_is_chosen_on_selection_and_counted_on_confirmation():
    from patchlab.audits.leaderboard import smallest_patch

    rows = []
    for cand, kind, proto, size, sel, conf in (
            ("a", "synth", "random", 0.10, 0.5, 0.9), ("a", "synth", "random", 0.25, 1.0, 1.0),
            ("b", "feature", "random", 0.10, 0.75, 0.6), ("c", "control", "random", 0.05, 0.9, 0.9),
            ("b", "feature", "static", 0.10, 1.0, 1.0)):
        rows += [("selection", cand, kind, proto, size, "random", sel), ("confirmation", cand, kind, proto, size, "random", conf)]
    df = pd.DataFrame(rows, columns=["split", "candidate", "kind", "protocol", "size", "placement", "success_rate"])
    # b is best at 10 % on selection (0.75 > 0.5): its confirmation count is reported, not a's higher 0.9
    assert smallest_patch(df, "random") == {"min_area": 0.10, "min_area_success": 0.6, "min_area_candidate": "b"}
    assert smallest_patch(df[df["kind"] == "control"], "random") == {}


def test_killed_audit_reruns_only_the_missing_pairs(resumed):
    first, second = resumed["calls"]
    assert first == ["0507-combination_lock-to-0001-goldfish", "0507-combination_lock-to-0983-scuba_diver"]
    assert resumed["first_pairs"] == sorted(first)  # the killed pair had started writing its folder
    # the finished pair is not redone; the killed one is finished, then the one never started
    assert second == ["0507-combination_lock-to-0983-scuba_diver", "0001-goldfish-to-0983-scuba_diver"]
    assert is_complete(resumed["out"])
    # the killed pair's finished stages were reused, not recomputed; the rest were added
    before, after = resumed["stages_before"], resumed["stages_after"]
    assert set(before) == {"images.json", "donors.json", "synth.json", "feature.json"}
    assert {k: after[k] for k in before} == before and "natural.json" in after


def test_audit_writes_a_leaderboard_with_failures_recorded(resumed):
    out, doc = resumed["out"], resumed["doc"]
    assert doc["schema"] == "patchlab.audit/2" and doc["complete"]
    assert doc["counts"] == {"pairs": 3, "ok": 2, "failed": 1, "pending": 0}
    board = pd.read_csv(out / "audit.csv")
    assert list(board["rank"]) == [1, 2, 3]
    ok = board[board["status"] == "ok"]
    assert list(ok["success"]) == sorted(ok["success"], reverse=True)
    top = ok.iloc[0]
    assert (top["source"], top["target"]) == ("combination lock", "goldfish") and top["success"] > 0
    assert top["ci_low"] <= top["success"] <= top["ci_high"]
    assert top["min_area"] == 0.10 and 0 <= top["min_area_success"] <= top["success"]
    summary = json.loads((out / top["report"]).with_name("summary.json").read_text())
    assert summary["best_candidate"]["rate"] == pytest.approx(top["success"])
    assert summary["best_candidate"]["selection_rate"] == pytest.approx(top["selection_success"])
    assert top["confirmation"] == summary["confirmation"]["denominator"]
    failed = board[board["status"] == "failed"].iloc[0]
    assert failed["source"] == "goldfish" and "classified as 'goldfish'" in failed["error"]
    assert (out / "failures").is_dir() and len(list((out / "failures").iterdir())) == 1
    html = (out / "index.html").read_text()
    assert 'href="pairs/0507-combination_lock-to-0001-goldfish/report.html"' in html
    assert "classified as &#x27;goldfish&#x27;" in html  # the failed pair and its error are listed
    for fig in doc["figures"].values():
        assert (out / fig).is_file() and (out / fig).stat().st_size > 1000


def test_ray_audit_gives_the_same_leaderboard(workdir, resumed, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        doc = _run(workdir, tmp_path / "ray", ray="auto")
    finally:
        ray.shutdown()
    a = pd.read_csv(resumed["out"] / "audit.csv")[COMPARED]
    b = pd.read_csv(tmp_path / "ray" / "audit.csv")[COMPARED]
    pd.testing.assert_frame_equal(a, b)
    assert doc["counts"]["ok"] == 2 and doc["config"]["execution"] == "ray auto"
    for key in ("0507-combination_lock-to-0001-goldfish", "0507-combination_lock-to-0983-scuba_diver"):
        ra = pd.read_csv(resumed["out"] / "pairs" / key / "results.csv")
        rb = pd.read_csv(tmp_path / "ray" / "pairs" / key / "results.csv")
        pd.testing.assert_frame_equal(ra, rb)  # every candidate x size x placement, not just the best
        assert is_complete(tmp_path / "ray" / "pairs" / key)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchlab", "audit", "--model", "tiny", *args], capture_output=True,
                          text=True, timeout=300)


def test_audit_cli_bad_input_is_one_line_and_exit_2(workdir, resumed, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("snorkle,scuba diver\n")
    r = _cli("--pairs-file", str(bad), "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "unknown class 'snorkle'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("--pairs", "2", "--pairs-file", str(bad), "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "not both" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("--pairs", "1", "--ray", "127.0.0.1:1", "--out", str(tmp_path / "b"))  # nothing listens on port 1
    assert r.returncode == 2 and "no Ray cluster answers" in r.stderr and not (tmp_path / "b").exists()
    one = tmp_path / "one.csv"
    one.write_text("goldfish,scuba diver\n")  # no held-out goldfish photo is called goldfish: the pair fails
    r = _cli("--pairs-file", str(one), "--weights", str(workdir / "tiny.safetensors"), "--data", str(workdir / "data"),
             "--device", "cpu", "--out", str(tmp_path / "c"))
    assert r.returncode == 3 and "FAILED: none of the" in r.stdout and "0 ok, 1 failed" in r.stdout
    assert (tmp_path / "c" / "audit.csv").is_file() and (tmp_path / "c" / "COMPLETE").is_file()
    # the in-process audit's folder was made with other settings: refused, nothing touched
    before = {p: p.read_bytes() for p in resumed["out"].iterdir() if p.is_file()}
    r = _cli("--pairs-file", str(workdir / "pairs.csv"), "--weights", str(workdir / "tiny.safetensors"),
             "--data", str(workdir / "data"), "--budget", "standard", "--out", str(resumed["out"]))
    assert r.returncode == 2 and "other settings (budget 'quick' there, 'standard' here)" in r.stderr
    assert {p: p.read_bytes() for p in resumed["out"].iterdir() if p.is_file()} == before


def test_pairs_without_a_linear_head_have_no_similarity_and_still_serialize(tmp_path, tiny):
    from patchlab.runio import to_json

    tiny.head = None
    f = tmp_path / "p.csv"
    f.write_text("snorkel,scuba diver\n")
    (pair,) = read_pairs_file(tiny, f)
    assert pair.similarity is None and json.loads(to_json(pair.as_row()))["similarity"] is None
    with pytest.raises(UserError, match="no linear head"):
        head_pairs(tiny, 3)


def test_bad_audit_settings_are_refused_before_anything_is_written(workdir, tmp_path):
    with pytest.raises(UserError, match="at least 1"):
        audit(0, model="tiny", out=tmp_path / "zero", device="cpu")
    assert not (tmp_path / "zero").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no audit"):
        audit(2, model="tiny", out=tmp_path / "busy", device="cpu")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    (tmp_path / "pairs.csv").write_text("source,target\nnot a class,goldfish\n")
    with pytest.raises(UserError):
        audit(model="tiny", pairs_file=tmp_path / "pairs.csv", out=tmp_path / "bad-pairs", device="cpu")
    assert not (tmp_path / "bad-pairs").exists()


def test_rerun_retries_only_the_failed_pair(workdir, resumed, monkeypatch):
    calls = []
    real = pair_run.run_pair

    def counted(pair, *a, **k):
        calls.append(pair.key())
        return real(pair, *a, **k)

    monkeypatch.setenv("PATCHLAB_CACHE", str(workdir / "cache"))
    monkeypatch.setattr("patchlab.audits.run.run_pair", counted)
    doc = _run(workdir, resumed["out"])
    assert calls == ["0001-goldfish-to-0983-scuba_diver"]
    assert doc["counts"] == {"pairs": 3, "ok": 2, "failed": 1, "pending": 0}
