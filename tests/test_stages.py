"""Resumable stages: a finished stage is reused; a damaged one is computed again, not a crash."""
from __future__ import annotations

import logging

import pytest
import torch

from patchlab.stages import StageStore


def _compute(calls: list[int]):
    def compute():
        calls.append(1)
        return {"train": torch.arange(4.0)}, {"n": 4}
    return compute


@pytest.mark.parametrize("damage", ["truncated json", "json list", "meta not an object", "tensor names not a list",
                                    "junk tensors", "tensors deleted"])
def test_a_damaged_stage_is_computed_again(tmp_path, caplog, damage):
    store, calls = StageStore(tmp_path), []
    store.run("images", _compute(calls))
    tensors, meta = StageStore(tmp_path).run("images", _compute(calls))
    assert len(calls) == 1 and meta == {"n": 4} and torch.equal(tensors["train"], torch.arange(4.0))  # reused
    tpath, jpath = tmp_path / "stages" / "images.safetensors", tmp_path / "stages" / "images.json"
    if damage == "truncated json":
        jpath.write_text("{")
    elif damage == "json list":
        jpath.write_text("[]")
    elif damage == "meta not an object":
        jpath.write_text('{"meta": [], "seconds": 1.0, "tensors": ["train"]}')
    elif damage == "tensor names not a list":
        jpath.write_text('{"meta": {"n": 4}, "seconds": 1.0, "tensors": 7}')
    elif damage == "junk tensors":
        tpath.write_bytes(b"junk")
    else:
        tpath.unlink()
    with caplog.at_level(logging.WARNING, logger="patchlab"):
        tensors, meta = StageStore(tmp_path).run("images", _compute(calls))
    assert len(calls) == 2 and meta == {"n": 4} and torch.equal(tensors["train"], torch.arange(4.0))
    assert "damaged" in caplog.text
    StageStore(tmp_path).run("images", _compute(calls))
    assert len(calls) == 2  # repaired: reused again
