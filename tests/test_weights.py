"""Safe weight loading (patchlab.weights): state dicts load, pickled code is refused and never runs."""
from __future__ import annotations

import builtins
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from patchlab.errors import UserError
from patchlab.models import tiny_classifier
from patchlab.weights import load_state_dict_file, load_strict


class _RunsShell:
    """Unpickling this runs a shell command (the classic malicious checkpoint)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpensFile:
    """Unpickling this creates a file through builtins.open."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("payload", [_RunsShell, _OpensFile])
def test_a_patch_tensor_file_with_code_is_refused_and_never_runs(tmp_path, payload):
    from patchlab.patches.candidate import load_patch

    marker = tmp_path / "code-ran"
    torch.save({"patch": torch.zeros(3, 4, 4), "extra": payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused to load .*possibly code.*plain \\(3,h,w\\) tensor") as err:
        load_patch(tmp_path / "evil.pt")
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [_RunsShell, _OpensFile])
def test_pickled_code_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "extra": payload(marker)}, path)
    with pytest.raises(UserError, match="refused") as err:
        load_state_dict_file(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # control: the file really is malicious (an unsafe load runs the payload)
    unsafe = torch.load(path, weights_only=False)
    assert marker.exists()
    if hasattr(unsafe["extra"], "close"):  # the file _OpensFile opened
        unsafe["extra"].close()


def test_raw_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": _RunsShell(marker)}, protocol=4))
    with pytest.raises(UserError, match="refused.*raw pickle that may hold code"):
        load_state_dict_file(path)
    assert not marker.exists()
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 8)  # not a pickle at all: not called code either
    with pytest.raises(UserError, match="other bytes"):
        load_state_dict_file(tmp_path / "noise.pth")


def test_weights_with_nan_are_refused(tmp_path):
    state = tiny_classifier(seed=3).net.state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone().fill_(float("nan"))
    torch.save(state, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        with pytest.raises(UserError, match=f"NaN values \\(first: {first}\\)"):
            load_state_dict_file(tmp_path / name)


def test_plain_state_dict_pth_and_safetensors_load(tmp_path):
    state = tiny_classifier(seed=3).net.state_dict()
    torch.save(state, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        loaded = load_state_dict_file(tmp_path / name)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_checkpoint_container_and_module_prefix_are_unwrapped(tmp_path):
    state = {"module.fc.weight": torch.ones(2, 2)}
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "ckpt.pth")
    assert list(load_state_dict_file(tmp_path / "ckpt.pth")) == ["fc.weight"]


@pytest.mark.parametrize(
    "name, content",
    [("garbage.pth", b"hello world " * 20), ("garbage.safetensors", b"hello world " * 20), ("empty.pt", b"")],
)
def test_garbage_files_give_user_error(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError) as err:
        load_state_dict_file(tmp_path / name)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_gives_user_error(tmp_path):
    torch.save(tiny_classifier().net.state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read"):
        load_state_dict_file(tmp_path / "cut.pth")


def test_missing_file_and_non_tensor_contents(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_state_dict_file(tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UserError, match="state dict"):
        load_state_dict_file(tmp_path / "list.pth")


def test_load_strict_rejects_missing_extra_and_misshapen_keys():
    net = tiny_classifier().net
    good = {k: v.clone() for k, v in net.state_dict().items()}
    load_strict(net, good, "good.pth")  # fits
    missing = dict(good)
    missing.pop("fc.bias")
    extra = dict(good, **{"fc2.weight": torch.zeros(1)})
    wrong = dict(good, **{"fc.weight": torch.zeros(10, 16)})
    for state, word in ((missing, "missing"), (extra, "unexpected"), (wrong, "size mismatch")):
        with pytest.raises(UserError, match=word) as err:
            load_strict(tiny_classifier().net, state, "bad.pth")
        assert "bad.pth" in str(err.value) and "\n" not in str(err.value)
