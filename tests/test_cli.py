"""The `patchlab` command line: exit codes, one-line errors, JSON output.

A few checks run the real console entry in a subprocess (`python -m patchlab`),
the rest call `main()` in-process through the `cli` fixture (see conftest)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_patchlab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchlab", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


# -- subprocess: exactly what a user sees ------------------------------------------------
def test_unknown_class_exits_2_with_one_line_suggestion(tmp_path):
    proc = run_patchlab("classes", "scubadiver", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "scuba diver" in lines[0] and "did you mean" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_predict_folder_json_in_a_real_process(mixed_dir, mixed_names, tmp_path):
    proc = run_patchlab("predict", str(mixed_dir), "--json", "--top", "2", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # valid JSON, nothing else on stdout
    assert sorted(Path(p["path"]).name for p in result["predictions"]) == mixed_names["good"]
    assert all(len(p["top"]) == 2 for p in result["predictions"])
    assert len(result["skipped"]) == len(mixed_names["bad"])
    for name in mixed_names["bad"]:
        assert any(name in s for s in result["skipped"])
        assert name in proc.stderr  # each bad file is named in a warning
    assert "Traceback" not in proc.stderr


# -- in-process ----------------------------------------------------------------------------
def test_help_lists_commands(cli):
    res = cli("--help")
    assert res.code == 0
    for cmd in ("models", "classes", "predict", "layers"):
        assert cmd in res.out
    bare = cli()
    assert bare.code == 0 and "predict" in bare.out + bare.err


def test_classes_json_by_name_wordnet_id_and_ambiguous_listing(cli):
    res = cli("classes", "scuba_diver", "--json")
    assert res.code == 0 and json.loads(res.out) == [{"index": 983, "name": "scuba diver", "wnid": "n10565667"}]
    res = cli("classes", "n04251144", "--json")
    assert res.code == 0 and json.loads(res.out) == [{"index": 801, "name": "snorkel", "wnid": "n04251144"}]
    res = cli("classes", "crane")  # lists both cranes
    assert res.code == 0 and "134" in res.out and "517" in res.out
    res = cli("classes", "5000")
    assert res.code == 2 and "out of range" in res.err


def test_usage_errors_are_one_line_exit_2(cli):
    for args in (["classes"], ["predict", "--top", "0", "x.jpg"], ["nosuchcommand"], ["classes", "x", "--bogus"]):
        res = cli(*args)
        assert res.code == 2, args
        assert len(res.err.strip().splitlines()) == 1 and res.err.startswith("error:"), res.err


def test_options_that_need_another_option_are_user_errors(cli, tmp_path):
    res = cli("dream", "--class", "snorkel", "--near-band", "0.1", "0.2", "--model", "tiny", "--out", str(tmp_path / "d"))
    assert res.code == 2 and "give --near CLASS" in res.err
    res = cli("atlas", "--max-images", "10", "--model", "tiny", "--out", str(tmp_path / "a"))
    assert res.code == 2 and "give --data DIR" in res.err
    assert not (tmp_path / "d").exists() and not (tmp_path / "a").exists()


def test_predict_nonexistent_path_exits_2(cli, tmp_path):
    res = cli("predict", str(tmp_path / "nope.jpg"), "--model", "tiny")
    assert res.code == 2 and res.out == ""
    assert res.err.strip().splitlines() == [f"error: no such file or folder: {tmp_path / 'nope.jpg'}"]


def test_predict_text_output_names_bad_files(cli, mixed_dir, mixed_names):
    res = cli("predict", str(mixed_dir), "--model", "tiny", "--top", "1", "--device", "cpu")
    assert res.code == 0, res.err
    lines = res.out.strip().splitlines()
    assert len(lines) == len(mixed_names["good"])
    assert all(any(name in ln for ln in lines) for name in mixed_names["good"])
    for name in mixed_names["bad"]:
        assert name in res.err and not any(name in ln for ln in lines)
    assert f"{len(mixed_names['bad'])} file(s) skipped" in res.err


def test_photo_folder_without_a_readable_photo_fails_before_any_work(cli, tmp_path):
    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.mkdir(), broken.mkdir()
    (broken / "a.jpg").write_text("not a JPEG")
    for folder, why in ((empty, "no images found in"), (broken, "none of the 1 image files in")):
        for cmd, option in (("paste", "--library"), ("probe", "--library"), ("probe", "--donor-data")):
            res = cli(cmd, "--classes", "snorkel", "scuba_diver", option, str(folder), "--out", str(tmp_path / "out"))
            assert res.code == 2, (cmd, option, res.err)
            assert len(res.err.strip().splitlines()) == 1 and why in res.err, res.err
    assert not (tmp_path / "out").exists()  # nothing written, no pair synthesized


def test_bad_device_and_model_are_user_errors(cli, mixed_dir):
    assert cli("predict", str(mixed_dir), "--model", "tiny", "--device", "tpu").code == 2
    res = cli("predict", str(mixed_dir), "--model", "nonsense")
    assert res.code == 2 and "unknown model spec" in res.err


def test_models_and_layers_json(cli):
    res = cli("models", "--json")
    assert res.code == 0 and [e["spec"] for e in json.loads(res.out)][:2] == ["efficientnet_lite0", "tiny"]
    res = cli("layers", "--model", "tiny", "--json")
    out = json.loads(res.out)
    assert res.code == 0 and out["feature_layer"] == "features"
    uses = ["atlas", "library index", "pair direction"]
    assert out["choices"] == dict.fromkeys(uses, "features")
    assert {"name": "features", "shape": [16, 8, 8], "chosen_for": uses} in out["layers"]
    assert {"name": "conv1", "shape": [8, 16, 16], "chosen_for": []} in out["layers"]
    text = cli("layers", "--model", "tiny")
    assert "features" in text.out and "8x8  <- atlas, library index, pair direction" in text.out
    chosen = json.loads(cli("layers", "--model", "tiny", "--layer", "act1", "--json").out)
    assert chosen["choices"] == dict.fromkeys(uses, "act1")


def test_internal_error_exit_1_traceback_only_with_verbose(cli, monkeypatch):
    import patchlab.cli.models

    def boom():
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(patchlab.cli.models, "available_models", boom)
    res = cli("models")
    assert res.code == 1 and "Traceback" not in res.err
    assert res.err.strip().splitlines() == ["internal error: RuntimeError: boom second line (run with --verbose for the traceback)"]
    res = cli("models", "--verbose")
    assert res.code == 1 and "Traceback" in res.err and "boom" in res.err


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you "
                                                             "tried to allocate 160000000000 bytes")])
def test_settings_too_large_for_memory_are_one_line_and_exit_2(cli, monkeypatch, exc):
    import patchlab.cli.models

    def too_big():
        raise exc

    monkeypatch.setattr(patchlab.cli.models, "available_models", too_big)
    res = cli("models")
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and "more memory" in res.err
