"""Tests for patchlab.atlases (tiny models; one integration test on the default model)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from patchlab.atlases import (
    attribute_batch, bin_points, collect, head_alignment, layout, make_grid, normalize_layout, pair_view,
    rank_donors, shortlist, tensor_batches,
)
from patchlab.atlases.donors import activation_scores
from patchlab.errors import UserError
from patchlab.models import tiny_classifier


@pytest.fixture(scope="module")
def tiny():
    return tiny_classifier(num_classes=20, input_size=32, seed=1)


def _smooth_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("layer", ["features", "act1"])
def test_attribution_matches_finite_difference(tiny, layer):
    """a = h . d(logit_t - logit_s)/dh equals the logit-difference change when h at one position is scaled by 1+eps."""
    clf = tiny_classifier(num_classes=20, input_size=32, seed=1).double()
    s, t = 3, 7
    x = _smooth_images(3, 0).double()
    h, pair, per, logits = attribute_batch(clf, x, layer, pair=(s, t))
    assert per is None and pair.shape == (3, *h.shape[2:])
    eps = 1e-4
    rng = np.random.default_rng(0)
    for _ in range(4):
        i, y, xx = int(rng.integers(3)), int(rng.integers(h.shape[2])), int(rng.integers(h.shape[3]))

        def hook(_m, _inp, out, i=i, y=y, xx=xx):
            out = out.clone()
            out[i, :, y, xx] *= 1 + eps
            return out

        handle = clf.layer(layer).register_forward_hook(hook)
        with torch.no_grad():
            bumped = clf(x)
        handle.remove()
        fd = ((bumped[i, t] - bumped[i, s]) - (logits[i, t] - logits[i, s])).item() / eps
        assert fd == pytest.approx(pair[i, y, xx].item(), rel=1e-3, abs=1e-9)


def test_per_class_attributions_and_pair_are_consistent(tiny):
    x = _smooth_images(4, 1)
    _, pair, per, _ = attribute_batch(tiny, x, "features", pair=(2, 5), classes=[2, 5, 9])
    _, pair_only, _, _ = attribute_batch(tiny, x, "features", pair=(2, 5))
    torch.testing.assert_close(pair, per[:, 1] - per[:, 0])
    torch.testing.assert_close(pair_only, pair, rtol=1e-5, atol=1e-6)


def test_collect_streams_to_memmap_with_provenance(tiny, tmp_path):
    x = _smooth_images(10, 2)
    acts = collect(tiny, tensor_batches(x, labels=[1] * 10, batch_size=4), pair=(1, 2), classes=[1, 2], store=tmp_path / "a.f16")
    H, W = acts.grid_hw
    assert isinstance(acts.vectors, np.memmap) and acts.vectors.dtype == np.float16
    assert acts.vectors.shape == (10 * H * W, 16) and len(acts.image_ids) == 10 * H * W
    # row for image 7 at (y=2, x=3) holds that activation
    with torch.no_grad(), tiny.capture(["features"]) as cap:
        tiny(x[7:8])
    row = np.nonzero((acts.image_ids == 7) & (acts.positions[:, 0] == 2) & (acts.positions[:, 1] == 3))[0][0]
    np.testing.assert_allclose(acts.vectors[row], cap["features"][0, :, 2, 3].numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(acts.pair, acts.attribution(2) - acts.attribution(1), rtol=1e-4, atol=1e-6)
    sampled = collect(tiny, tensor_batches(x, batch_size=4), per_image=2, seed=0)
    assert len(sampled) == 20 and sampled.pair is None
    ys, xs = sampled.positions[:, 0], sampled.positions[:, 1]
    assert ((ys > 0) & (ys < H - 1) & (xs > 0) & (xs < W - 1)).all()  # edges avoided


def test_unknown_layer_is_a_user_error(tiny):
    with pytest.raises(UserError, match="did you mean"):
        collect(tiny, tensor_batches(_smooth_images(2, 0)), layer="featurez")


def test_grid_binning_on_known_points():
    coords = np.array([[0.0, 0.0], [0.1, 0.2], [0.99, 0.0], [1.0, 1.0], [0.6, 0.6], [0.55, 0.7], [0.74, 0.51]])
    np.testing.assert_array_equal(bin_points(coords, 4), [0, 0, 3, 15, 10, 10, 10])
    vectors = np.arange(14, dtype=np.float32).reshape(7, 2)
    attr = np.array([1.0, 3.0, 5.0, 7.0, -1.0, -2.0, -3.0])
    ids = np.array([0, 0, 1, 2, 3, 4, 4])
    cells = make_grid(coords, vectors, 4, attribution=attr, image_ids=ids, min_count=2, top_k=2)
    np.testing.assert_array_equal(cells.ids, [0, 10])
    np.testing.assert_array_equal(cells.count, [2, 3])
    np.testing.assert_array_equal(cells.ix, [0, 2])
    np.testing.assert_array_equal(cells.iy, [0, 2])
    np.testing.assert_allclose(cells.vectors, [[1, 2], [10, 11]])
    np.testing.assert_allclose(cells.attribution, [2.0, -2.0])
    assert cells.top_images == [[0], [4, 3]] and cells.dropped == 2


def test_normalize_layout_clips_and_rescales():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 2))
    pts[0] = [100, -100]  # outlier gets clipped
    out = normalize_layout(pts)
    assert out.min() == 0.0 and out.max() == 1.0
    lo, hi = np.percentile(pts[:, 0], [1, 99])
    span = (hi - lo) * 1.2  # 10 % margin on both sides
    assert out[1, 0] == pytest.approx((pts[1, 0] - (lo - 0.1 * (hi - lo))) / span)


def test_layout_falls_back_when_too_few_points():
    x = np.random.default_rng(0).random((8, 5)).astype(np.float32)
    lay = layout(x, dims=2)
    assert lay.method == "pca" and "too few" in lay.note
    assert lay.coords.shape == (8, 2) and lay.coords.min() >= 0 and lay.coords.max() <= 1
    lay = layout(np.random.default_rng(1).random((14, 5)), dims=1, method="umap")
    assert lay.method == "tsne" and "UMAP" in lay.note and lay.coords.shape == (14, 1)


@pytest.mark.skipif(
    not os.environ.get("PATCHLAB_TEST_UMAP"),
    reason="UMAP's numba JIT takes 15-70 s on 2 busy cores; set PATCHLAB_TEST_UMAP=1 to run",
)
def test_umap_layout_small():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(2, 16)) * 5
    x = np.concatenate([centers[0] + rng.normal(size=(60, 16)), centers[1] + rng.normal(size=(60, 16))])
    lay = layout(x.astype(np.float32), dims=2, n_neighbors=10, seed=0)
    assert lay.method == "umap" and lay.note == ""
    a, b = lay.coords[:60].mean(0), lay.coords[60:].mean(0)
    assert np.linalg.norm(a - b) > 0.3  # the two clusters are laid out apart


def _planted(num_classes: int = 30, source: int = 3, target: int = 7, planted: int = 12):
    """Tiny model whose class `planted` has head weight w_target - w_source (+ noise)."""
    clf = tiny_classifier(num_classes=num_classes, input_size=32, seed=4)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        W = clf.head.weight
        W[planted] = W[target] - W[source] + 0.05 * torch.randn(W.shape[1], generator=g) * W.std()
    return clf


def test_head_alignment_recovers_planted_donor():
    s, t, p = 3, 7, 12
    clf = _planted(source=s, target=t, planted=p)
    align = head_alignment(clf.head.weight, s, t)
    assert np.isnan(align[[s, t]]).all()
    assert int(np.nanargmax(align)) == p
    assert shortlist(align, 5, (s, t))[0] == p
    big = torch.randn(1000, 1280)
    assert head_alignment(big, 1, 2).shape == (1000,)


def _write_planted_folder(clf, s: int, t: int, root: Path, pick) -> None:
    """A class-folder dataset of 240 smooth images ordered by logit(t) - logit(s) (most target-like
    first); pick(order) -> {class: image indices} says which images go in which class folder."""
    from PIL import Image

    pool = _smooth_images(240, 9)
    with torch.no_grad():
        logits = clf(pool)
    order = torch.argsort(logits[:, t] - logits[:, s], descending=True)
    for cls, idx in pick(order).items():
        d = root / clf.classes.names[cls]
        d.mkdir(parents=True)
        for k, i in enumerate(idx.tolist()):
            arr = (pool[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(d / f"{k}.png")


def test_donor_ranking_recovers_planted_donor(tmp_path):
    """Full pair pipeline from a class-folder dataset: the planted class ranks first on both signals."""
    from patchlab.atlases import build_atlas

    s, t, p, decoy = 3, 7, 12, 20
    clf = _planted(source=s, target=t, planted=p)
    _write_planted_folder(clf, s, t, tmp_path / "data",
                          lambda order: {s: order[-60:-50], t: order[50:60], p: order[:8], decoy: order[-8:],
                                         15: order[100:108]})
    res = build_atlas(clf, s, t, images=tmp_path / "data", grid=6, n_donors=5, out=tmp_path / "run",
                      icons=False, shortlist_size=8, batch_size=16, pair_embed="pca", atlas_method="pca")
    df = res.donors
    assert s not in df["index"].tolist() and t not in df["index"].tolist()
    assert df.iloc[0]["index"] == p
    assert df.set_index("index").loc[p, "rank_activation"] == 1.0
    assert df.set_index("index").loc[p, "rank_head_alignment"] == 1.0
    out = tmp_path / "run"
    for f in ("atlas-pair.png", "atlas.png", "cells.csv", "donors.csv", "donors.json", "manifest.json", "COMPLETE"):
        assert (out / f).is_file(), f
    donors = json.loads((out / "donors.json").read_text())["donors"]
    assert donors[0]["index"] == p and donors[0]["evidence"]["images"]
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_activation_signal_prefers_target_like_images(tiny):
    s, t = 1, 2
    x = _smooth_images(64, 3)
    with torch.no_grad():
        lg = tiny(x)
    order = torch.argsort(lg[:, t] - lg[:, s], descending=True)
    base = collect(tiny, tensor_batches(x[order[16:48]], labels=[s] * 16 + [t] * 16), pair=(s, t), classes=[s, t])
    view = pair_view(base, s, t, n=5, min_count=2, embed="pca")
    assert view.x.min() >= -1 and view.x.max() <= 1
    donor = collect(tiny, tensor_batches(torch.cat([x[order[:8]], x[order[-8:]]]), labels=[10] * 8 + [11] * 8), pair=(s, t))
    ev = activation_scores(donor, view)
    assert ev.act_score[10] > ev.act_score[11]
    df = rank_donors([10, 11, s], None, ev, tiny.classes, s, t)
    assert df["index"].tolist() == [10, 11]


def test_icons_render_and_compose(tiny):
    pytest.importorskip("patchlab.optvis.render")
    from patchlab.atlases.icons import compose, render_icons

    x = _smooth_images(6, 4)
    acts = collect(tiny, tensor_batches(x), layer="features")
    coords = np.random.default_rng(0).random((len(acts), 2))
    cells = make_grid(coords, acts.vectors, 3, min_count=1)
    icons = render_icons(tiny, "features", cells.vectors, size=24, steps=3, batch=4)
    assert icons.shape == (len(cells), 3, 24, 24) and torch.isfinite(icons).all()
    img = compose(icons, cells, cell_px=24, frame=np.linspace(-1, 1, len(cells)))
    assert img.shape == (3, 72, 72) and img.min() >= 0 and img.max() <= 1


@pytest.fixture(scope="session")
def lite0():
    from patchlab.models import load_classifier

    return load_classifier("efficientnet_lite0", "cpu")


@pytest.mark.integration
def test_default_model_head_attribution_is_linear_projection(lite0):
    """For pooled-linear heads the pair attribution is h . (w_t - w_s) / (H W) at every position."""
    s, t = 801, 983
    x = _smooth_images(2, 0, size=224)
    h, pair, _, _ = attribute_batch(lite0, x, lite0.feature_layer, pair=(s, t))
    assert h.shape[1:] == (1280, 7, 7)
    d = lite0.head.weight[t] - lite0.head.weight[s]
    expected = torch.einsum("nchw,c->nhw", h, d) / 49
    torch.testing.assert_close(pair, expected, rtol=1e-4, atol=1e-6)
    align = head_alignment(lite0.head.weight, s, t)
    assert np.isnan(align[[s, t]]).all() and np.isfinite(np.delete(align, [s, t])).all()


def test_donor_images_render_in_one_batch(tiny):
    pytest.importorskip("patchlab.optvis.render")
    from patchlab.atlases.pools import rendered_pool

    pool = rendered_pool(tiny, [4, 9], per_class=2, steps=3, generator=torch.Generator().manual_seed(0))
    assert pool.images.shape == (4, 3, 32, 32) and pool.labels == [4, 4, 9, 9]
    assert pool.names[2].startswith("render:donor:") and len(set(pool.names)) == 4


def test_atlas_config_validates_and_records_settings(tiny, tmp_path):
    from patchlab.atlases import AtlasConfig, build_atlas

    with pytest.raises(UserError, match="--grid"):
        AtlasConfig(grid=1)
    cfg = AtlasConfig(grid=5, seed=3)
    record = cfg.manifest("a", "b", None)
    assert record["grid"] == 5 and "seed" not in record and (record["source"], record["target"]) == ("a", "b")
    draw = lambda purpose: torch.rand(4, generator=cfg.generator(purpose))  # noqa: E731
    assert cfg.generator("donor_render").device.type == "cpu"
    assert torch.equal(draw("donor_render"), draw("donor_render")) and not torch.equal(draw("donor_render"), draw("pair_images"))
    with pytest.raises(TypeError, match="gird"):
        build_atlas(tiny, images=_smooth_images(4, 0), gird=5, out=tmp_path / "x")


def test_atlas_pipeline_loads_the_model_and_returns_the_summary(tmp_path):
    """patchlab.pipelines.atlas: model spec in, run folder and summary out; icons default to member crops on CPU."""
    from PIL import Image

    from patchlab.pipelines.atlas import atlas

    g = torch.Generator().manual_seed(0)
    for name in ("tench", "goldfish", "snorkel"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(4):
            img = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(img).save(tmp_path / "data" / name / f"{k}.png")
    summary = atlas("tench", "goldfish", model="tiny", device="cpu", data=tmp_path / "data", grid=3, donors=3,
                    out=tmp_path / "run")
    assert summary["out"] == str(tmp_path / "run") and (tmp_path / "run" / "COMPLETE").is_file()
    assert len(summary["donors"]) == 3 and summary["files"]["donors_json"] == "donors.json"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["icons"] is False and manifest["config"]["source"] == "tench"
    with pytest.raises(UserError, match="--classes"):
        atlas(model="tiny", device="cpu")
    with pytest.raises(TypeError):
        atlas("tench", "goldfish", "tiny")  # everything but the classes is keyword-only


def test_whole_layer_atlas_of_a_folder_ranks_donors_without_pair_photos(tmp_path):
    """atlas --data DIR with no --classes: every position of every photo (streamed in batches
    smaller than the folder), and --donors-for a pair that has no photo in the folder: the
    planted class ranks first on the layer's own activations."""
    from patchlab.atlases import build_atlas

    s, t, p, decoy = 3, 7, 12, 20
    clf = _planted(source=s, target=t, planted=p)
    _write_planted_folder(clf, s, t, tmp_path / "data",
                          lambda order: {p: order[:8], decoy: order[-8:], 15: order[100:108], 5: order[150:158]})
    res = build_atlas(clf, images=tmp_path / "data", out=tmp_path / "run", icons=False, batch_size=8, atlas_grid=4,
                      atlas_method="pca", donor_pair=(clf.classes.names[s], clf.classes.names[t]), n_donors=3)
    summary = res.summary()
    acts = np.load(tmp_path / "run" / "activations-index.npz")
    assert len(np.unique(acts["image_ids"])) == 32  # every photo, in 4 batches
    assert summary["activations"] == len(acts["image_ids"]) and summary["activations"] % 32 == 0
    assert summary["donors"][0]["index"] == p and len(summary["donors"]) == 3
    assert {d["index"] for d in summary["donors"]}.isdisjoint({s, t})
    out = tmp_path / "run"
    for f in ("atlas.png", "cells.csv", "donors.csv", "donors.json", "COMPLETE"):
        assert (out / f).is_file(), f
    assert json.loads((out / "donors.json").read_text())["from"] == "whole-layer activations"
    with pytest.raises(UserError, match="--donors-for"):
        build_atlas(clf, s, t, images=tmp_path / "data", out=tmp_path / "run2", icons=False, donor_pair=("a", "b"))


def test_atlas_icons_render_the_centered_cell_means_by_default(tmp_path, monkeypatch):
    """build_atlas passes icon_direction through to the renderer (here a stub that records what it gets)."""
    from patchlab.atlases import build_atlas, icons

    got = {}

    def fake_render(classifier, layer, vectors, size=96, **kw):
        got["vectors"] = np.asarray(vectors)
        return torch.full((len(vectors), 3, size, size), 0.5)

    monkeypatch.setattr(icons, "render_icons", fake_render)
    s, t, p = 3, 7, 12
    clf = _planted(source=s, target=t, planted=p)
    _write_planted_folder(clf, s, t, tmp_path / "data", lambda order: {p: order[:8], 15: order[100:108]})
    kw = dict(images=tmp_path / "data", icons=True, icon_size=8, batch_size=8, atlas_grid=3, atlas_method="pca")
    res = build_atlas(clf, out=tmp_path / "run", **kw)
    cells = np.genfromtxt(tmp_path / "run" / "cells.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    centered = got["vectors"]
    assert np.abs((cells["count"][:, None] * centered).sum(0)).max() < 1e-3 * np.abs(centered).sum()
    assert res.summary()["icon_measures"]["icons_are"] == "optvis renders of centered cell means"
    res = build_atlas(clf, out=tmp_path / "run2", icon_direction="mean", **kw)
    assert (got["vectors"] >= 0).all() and not np.allclose(got["vectors"], centered)  # post-ReLU means as they are
    assert res.summary()["icon_measures"]["icons_are"] == "optvis renders of cell means"


def test_top_position_mean_matches_a_loop():
    from patchlab.atlases.donors import top_position_mean

    g = np.random.default_rng(0)
    ids = g.integers(0, 6, 50)
    x = g.normal(size=50)
    got = top_position_mean(x, ids, 7, 0.25)
    for i in range(7):
        v = np.sort(x[ids == i])[::-1]
        want = v[: max(1, int(np.ceil(len(v) * 0.25)))].mean() if len(v) else np.nan
        assert np.isnan(got[i]) if np.isnan(want) else abs(got[i] - want) < 1e-9


def test_icon_measures_on_the_tiny_model():
    """(a) icons whose cells are their own pooled features agree with their cell's top-3 classes
    (bias-free head: exact); (b) identical icons have pairwise cosine 1, varied ones less."""
    from patchlab.atlases.icon_measures import cell_top_classes, icon_measures

    clf = tiny_classifier(num_classes=20, input_size=32, seed=3)
    clf.head.bias.data.zero_()
    icons = _smooth_images(12, 4)
    with torch.no_grad():
        _, acts = clf.run(icons, [clf.feature_layer])
    pooled = acts[clf.feature_layer].mean((2, 3)).numpy()
    top = cell_top_classes(clf, clf.feature_layer, pooled)
    assert top.shape == (12, 3)
    m = icon_measures(clf, clf.feature_layer, icons, top)
    assert m["icons"] == 12 and m["top1_in_cell_top3"] == 1.0
    own = clf(icons).argmax(1).numpy()
    wrong = np.stack([(own + j) % 20 for j in (1, 2, 3)], 1)
    assert icon_measures(clf, clf.feature_layer, icons, wrong)["top1_in_cell_top3"] == 0.0
    same = icon_measures(clf, clf.feature_layer, icons[:1].repeat(5, 1, 1, 1), None)
    assert same["mean_pairwise_cosine"] == pytest.approx(1.0, abs=1e-4) and same["top1_in_cell_top3"] is None
    assert m["mean_pairwise_cosine"] < same["mean_pairwise_cosine"]
    assert cell_top_classes(clf, "act1", pooled) is None  # no exact attribution off the head's input


def test_icon_directions_center_the_cell_means_on_the_count_weighted_mean():
    from patchlab.atlases.config import AtlasConfig
    from patchlab.atlases.grid import Cells
    from patchlab.atlases.run import icon_directions

    rng = np.random.default_rng(0)
    common = rng.uniform(1, 2, 16).astype(np.float32)  # post-ReLU maps share a large positive part
    vectors = common + 0.1 * rng.standard_normal((5, 16)).astype(np.float32)
    count = np.array([1, 2, 3, 4, 10])
    k = np.arange(5)
    cells = Cells(4, k, k % 4, k // 4, count, vectors, np.full(5, np.nan), None, [[]] * 5, np.zeros(0, int))
    centered = icon_directions(cells, "centered")
    assert np.allclose((count[:, None] * centered).sum(0), 0, atol=1e-4)
    assert np.allclose(icon_directions(cells, "mean"), vectors)

    def mean_cos(v):
        n = v / np.linalg.norm(v, axis=1, keepdims=True)
        return float((n @ n.T)[~np.eye(5, dtype=bool)].mean())

    assert mean_cos(vectors) > 0.9 and mean_cos(centered) < 0.5  # centered directions differ from cell to cell
    with pytest.raises(UserError, match="icon-direction"):
        AtlasConfig(icon_direction="whitened")
