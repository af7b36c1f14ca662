"""Incremental pasted-image logits (patchlab.patches.region_forward) against the full forward."""
from __future__ import annotations

import pytest
import torch

from patchlab.classes import generic_classes
from patchlab.models import Classifier
from patchlab.models.efficientnet_lite import EfficientNetLite, fold_batchnorm
from patchlab.patches import crops as natural
from patchlab.patches.apply import POSITIONS, apply_at
from patchlab.patches.region_forward import Box, conv_region, paste_forward


def _tiny_lite(size: int, fold: bool) -> Classifier:
    """A random-weight EfficientNet-Lite, narrow and shallow, its batch norms calibrated on random
    images (so a patch moves the logits as much as in a trained network, and an error shows)."""
    torch.manual_seed(size)
    net = EfficientNetLite(width=0.25, depth=0.5, num_classes=10)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # running statistics = the average over the calibration batch
    with torch.no_grad():
        net.train()(torch.rand(16, 3, size, size) * 2 - 1)
        for m in net.modules():  # shifts, so that zero padding differs from an activation of zero input
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.5)
    net.eval()
    if fold:
        fold_batchnorm(net)
    return Classifier(net, spec="tiny-lite", classes=generic_classes(10), input_size=size,
                      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("size,fold", [(96, True), (100, False)])  # even and odd map sizes; BN folded and not
def test_pasted_logits_match_the_full_forward(size, fold):
    clf = _tiny_lite(size, fold)
    gen = torch.Generator().manual_seed(1)
    images, patches = torch.rand(3, 3, size, size, generator=gen), torch.rand(6, 3, 20, 20, generator=gen)
    fast = paste_forward(clf, images)
    assert fast is not None
    rows = torch.tensor([0, 1, 2, 0, 1, 2])
    for area in (0.02, 0.1, 0.3, 0.7):
        for pos in POSITIONS:
            with torch.no_grad():
                got = fast.logits(rows, patches, area, pos)
                want = clf(torch.cat([apply_at(images[r : r + 1], p, area, pos) for r, p in zip(rows, patches)]))
                clean = clf(images[rows])
            effect = (want - clean).abs().max().item()  # what the patch does
            assert effect > 0.05, (area, pos)
            assert (got - want).abs().max().item() < 1e-4 * effect, (area, pos)


def test_conv_region_reads_what_the_changed_outputs_need():
    conv = torch.nn.Conv2d(1, 1, 5, stride=2)
    out, win, pads = conv_region(conv, Box(0, 10, 30, 40), (40, 40))  # TF SAME: 1 before, 2 after
    assert out == Box(0, 6, 14, 20)
    assert win == Box(0, 14, 27, 40) and pads == (0, 2, 1, 0)


def test_other_networks_and_hooked_ones_take_the_full_forward(tiny):
    assert paste_forward(tiny, torch.rand(1, 3, tiny.input_size, tiny.input_size)) is None
    clf = _tiny_lite(96, True)
    handle = clf.net._blocks[0].register_forward_hook(lambda *_: None)
    assert paste_forward(clf, torch.rand(1, 3, 96, 96)) is None
    handle.remove()
    handle = clf.register_forward_pre_hook(lambda *_: None)  # on the classifier, before the forward
    assert paste_forward(clf, torch.rand(1, 3, 96, 96)) is None
    handle.remove()
    assert paste_forward(clf, torch.rand(1, 3, 96, 96)) is not None
    assert paste_forward(clf, torch.rand(1, 3, 80, 80)) is None  # not the input size


def test_scores_by_setting_are_the_same_either_way(default_model, monkeypatch):
    gen = torch.Generator().manual_seed(2)
    images, crops = torch.rand(2, 3, 224, 224, generator=gen), torch.rand(3, 3, 64, 64, generator=gen)
    src, tgt = default_model.classes.resolve("snorkel"), default_model.classes.resolve("scuba diver")
    fast = natural.score_crops_by_setting(default_model, crops, images, src, tgt, (0.1, 0.25))
    monkeypatch.setattr(natural, "paste_forward", lambda *_a, **_k: None)
    full = natural.score_crops_by_setting(default_model, crops, images, src, tgt, (0.1, 0.25))
    assert fast[0].shape == (3, 2, 4)
    assert torch.allclose(fast[0], full[0], atol=1e-3) and torch.equal(fast[1], full[1])


def test_the_evaluator_counts_the_same_either_way(monkeypatch):
    from patchlab.evaluation import core, trials
    from patchlab.patches.candidate import Candidate

    clf = _tiny_lite(96, True)
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 96, 96, generator=gen)
    cands = [Candidate(torch.rand(3, 24, 24, generator=gen), "synth", f"p{i}") for i in range(2)]
    target = int(clf(images).argmax(-1).mode().values) ^ 1  # a class few clean images already are

    def run():
        ev = core.evaluate(clf, cands, images, None, target, sizes=(0.05, 0.2), protocols=("static", "dynamic"),
                           controls=[], n_examples=0)
        return ev.results.sort_values(["candidate", "protocol", "size", "placement"])[
            ["success_rate", "untargeted_rate", "top5_rate", "p_target_after"]].to_numpy()

    # a 'random' static position is not a box: the evaluator pastes and runs in full, as before
    ev = core.evaluate(clf, cands, images, None, target, sizes=(0.1,), positions=("top-left", "random"),
                       protocols=("static",), controls=[], n_examples=0)
    assert set(ev.results["placement"]) == {"top-left", "random"}
    assert trials.paste_forward(clf, images) is not None
    fast = run()
    monkeypatch.setattr(trials, "paste_forward", lambda *_a, **_k: None)
    full = run()
    assert fast.shape == full.shape and fast.shape[0] > 0
    assert (abs(fast - full) < 1e-4).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pasted_logits_match_the_full_forward_on_cuda():
    clf = _tiny_lite(96, True).to("cuda")
    images, patches = torch.rand(2, 3, 96, 96, device="cuda"), torch.rand(4, 3, 20, 20, device="cuda")
    fast, rows = paste_forward(clf, images), torch.tensor([0, 1, 0, 1], device="cuda")
    for pos in POSITIONS:
        with torch.no_grad():
            got = fast.logits(rows, patches, 0.1, pos)
            want = clf(apply_at(images[rows], patches, 0.1, pos))
        # cuDNN may run float32 convolutions in TF32: a looser bound than on the CPU
        assert (got - want).abs().max().item() < 2e-2 * max(1.0, want.abs().max().item()), pos


def test_too_many_images_for_the_cache_take_the_full_forward():
    clf = _tiny_lite(96, True)
    images = torch.rand(4, 3, 96, 96)
    one = paste_forward(clf, images[:1])
    assert paste_forward(clf, images, max_bytes=4 * one.cache_bytes()) is not None
    assert paste_forward(clf, images, max_bytes=4 * one.cache_bytes() - 1) is None
    assert paste_forward(clf, images[:0]) is None
