"""Unit tests for patchlab.optvis on the tiny random classifier."""
from __future__ import annotations

import pytest
import torch

from patchlab.models import tiny_classifier
from patchlab.optvis import objectives as O
from patchlab.optvis import render, transforms as T
from patchlab.optvis.objectives import Context
from patchlab.optvis.param import fourier_image, pixel_image


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier(num_classes=10, input_size=32, seed=0)


def _grad_norm_rows(clf, objective, param):
    img = param()
    logits, acts = clf.run(img, sorted(objective.layers))
    score = objective(Context(logits, acts))
    assert score.shape == (img.shape[0],)
    score.sum().backward()
    g = param.parameters()[0].grad
    return g.flatten(1).norm(dim=1)


@pytest.mark.parametrize("make", [
    lambda c: O.class_logit(3),
    lambda c: O.class_logprob(torch.tensor([1, 2, 3])),
    lambda c: O.logprob_band(2, 0.5, 0.9),
    lambda c: O.channel("features", 5),
    lambda c: O.neuron("conv2", 2),
    lambda c: O.neuron("conv1", 1, x=3, y=4),
    lambda c: O.direction("features", torch.randn(16, generator=torch.Generator().manual_seed(1))),
    lambda c: O.direction("features", torch.randn(3, 16, generator=torch.Generator().manual_seed(1)), pooled=False),
    lambda c: O.diversity("features", 1.0),
    lambda c: O.diversity("features", 1.0, kind="pooled"),
    lambda c: 2 * O.class_logit(1) - O.channel("features", 0) * 0.5 + O.class_logprob(4) * O.channel("features", 1),
])
@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_gradient_of_each_objective_reaches_every_image(clf, make, kind):
    g = torch.Generator().manual_seed(0)
    param = fourier_image(3, 32, g, "cpu") if kind == "fourier" else pixel_image(3, 32, g, "cpu")
    norms = _grad_norm_rows(clf, make(clf), param)
    assert torch.all(norms > 0) and torch.all(torch.isfinite(norms))


def test_objective_algebra_and_layers():
    a, b = O.class_logit(1), O.channel("features", 0)
    combo = sum([a, b, 0.5 * O.neuron("conv1", 0)])
    assert combo.layers == {"features", "conv1"}
    ctx = Context(torch.tensor([[0.0, 2.0], [1.0, -1.0]]), {"features": torch.ones(2, 3, 2, 2)})
    assert torch.allclose((a - a)(ctx), torch.zeros(2))
    assert torch.allclose((3 * a)(ctx), torch.tensor([6.0, -3.0]))
    assert torch.allclose((a * b)(ctx), torch.tensor([2.0, -1.0]))
    assert torch.allclose((-a + 1)(ctx), torch.tensor([-1.0, 2.0]))


def test_direction_per_image_vectors_follow_rows_and_floor():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    obj = O.direction("L", v, cos_power=2)
    out = obj(Context(torch.zeros(2, 3), {"L": h}))
    assert torch.allclose(out, torch.tensor([2.0, 0.0]))
    # rows selected by index: row order reversed
    out_rev = obj(Context(torch.zeros(2, 3), {"L": h}, index=torch.tensor([1, 0])))
    assert torch.allclose(out_rev, torch.tensor([0.0, 2.0]))
    # negative alignment: cos floored at 0.1 -> dot * 0.01
    neg = O.direction("L", torch.tensor([-1.0, 0.0]))(Context(torch.zeros(1, 3), {"L": h[:1]}))
    assert torch.allclose(neg, torch.tensor([-2.0 * 0.01]))


def test_diversity_prefers_different_images():
    same = torch.ones(3, 4, 2, 2)
    diff = torch.eye(4)[:3, :, None, None].expand(3, 4, 2, 2).contiguous()
    d = O.diversity("L", 1.0)
    s_same = d(Context(torch.zeros(3, 2), {"L": same})).mean()
    s_diff = d(Context(torch.zeros(3, 2), {"L": diff})).mean()
    assert s_diff > s_same


@pytest.mark.parametrize("tf", [T.pad(6), T.jitter(4), T.random_scale(), T.random_rotate(), T.standard_transforms()])
def test_transforms_keep_shape_and_range(tf):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 40, 40, generator=g)
    y = tf(x, g)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)  # it did something


def test_transforms_are_seeded_and_per_image():
    x = torch.rand(1, 3, 24, 24).expand(6, 3, 24, 24)
    tf = T.compose(T.jitter(3), T.random_rotate(30))
    a = tf(x, torch.Generator().manual_seed(3))
    b = tf(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # different draws per image in one batch


def test_crop_and_center_crop_match_slicing():
    x = torch.rand(2, 3, 36, 36)
    y = T.crop(32, random=False)(x, None)
    assert y.shape == (2, 3, 32, 32)
    assert torch.allclose(y, x[..., 2:34, 2:34], atol=1e-5)


def test_render_batch_and_frozen_stop_per_image(clf):
    # Per-image thresholds on p(class): each image must stop on its own step and stay as it was.
    target = 3
    thresholds = torch.tensor([0.0, 0.2, 2.0])  # stops at step 0, later, never
    seen = []

    def stop(logits, step):
        seen.append(step)
        return logits.softmax(1)[:, target] >= thresholds

    g = torch.Generator().manual_seed(0)
    res = render(clf, O.class_logprob(target), 3, steps=25, lr=1.0, stop=stop, generator=g, transforms=False)
    assert res.images.shape == (3, 3, 32, 32) and res.images.min() >= 0 and res.images.max() <= 1
    assert res.steps_used[0] == 0 and res.steps_used[2] == 25
    assert 0 < res.steps_used[1] < 25
    assert res.stopped.tolist() == [True, True, False]
    with torch.no_grad():
        p = clf(res.images).softmax(1)[:, target]
    assert p[1] >= 0.2  # kept as it was at the stop
    assert len(res.history) == 25 and res.history[-1]["active"] == 1


def test_render_default_transforms_and_pixel_param(clf):
    g = torch.Generator().manual_seed(1)
    start = torch.full((2, 3, 32, 32), 0.5)
    p = pixel_image(2, 32, init=start)
    res = render(clf, O.class_logit(1), 2, steps=3, param=p, generator=g)
    assert res.images.shape == (2, 3, 32, 32) and not res.interrupted
    assert not torch.allclose(res.images, start)


def test_render_interrupt_keeps_images(clf):
    calls = {"n": 0}

    def objective_fn(ctx):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return ctx.logits[:, 0]

    res = render(clf, O.Objective(objective_fn), 2, steps=10, generator=torch.Generator().manual_seed(0), transforms=False)
    assert res.interrupted and res.images.shape == (2, 3, 32, 32)
    assert res.steps_used.tolist() == [2, 2]
