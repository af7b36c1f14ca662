"""Photo library index and pair search (tiny model; one integration test on real photos)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchlab.data import ImageRecord, load_images
from patchlab.errors import UserError
from patchlab.library import (
    SearchSettings, check_library, control_photo_rows, index_library, search_library, spatial_basis,
)
from patchlab.library.collages import (
    best_columns, best_parts, distinct_pairs, slot_boxes, make_collages, side_by_side,
)
from patchlab.library.proposals import Proposals, eligible_photos, index_proposals, library_direction, window_scores
from patchlab.models import tiny_classifier
from patchlab.patches.direction import pooled_features

SOURCE, TARGET = 1, 2
REAL_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "realphotos"


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _texture(seed: int, size: int = 40) -> np.ndarray:
    """A smooth random colour texture (H,W,3) uint8."""
    rng = np.random.default_rng(seed)
    low = rng.random((5, 5, 3))
    img = np.kron(low, np.ones((size // 5 + 1, size // 5 + 1, 1)))[:size, :size]
    return (img * 255).astype(np.uint8)


def _planted(size: int = 40) -> np.ndarray:
    """A high-contrast red/blue checkerboard: unlike any texture."""
    yy, xx = np.mgrid[:size, :size]
    on = ((yy // 4 + xx // 4) % 2).astype(bool)
    img = np.zeros((size, size, 3), np.uint8)
    img[on] = (255, 0, 0)
    img[~on] = (0, 0, 255)
    return img


def _write_library(folder: Path, n_textures: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_textures):
        Image.fromarray(_texture(i)).save(folder / f"texture_{i}.png")
    Image.fromarray(_planted()).save(folder / "planted.png")
    return folder


def _planted_classifier(folder: Path):
    """Tiny model whose head separates SOURCE -> TARGET along the planted photo's features:
    d = f(planted) - mean f(others); both classes get a very low bias so no photo is top-1 for them."""
    clf = tiny_classifier(seed=0)
    files = sorted(folder.glob("*.png"))
    imgs = load_images([ImageRecord(f) for f in files], clf.input_size, clf.crop_pct).images
    f = pooled_features(clf, imgs)
    p = [i for i, x in enumerate(files) if x.name == "planted.png"][0]
    others = torch.cat([f[:p], f[p + 1 :]])
    d = f[p] - others.mean(0)
    with torch.no_grad():
        w = clf.head.weight
        w[TARGET] = w[SOURCE] + 4.0 * d / d.norm()
        clf.head.bias[[SOURCE, TARGET]] = -100.0
    return clf


def _train_images(n: int = 4, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 3, size, size, generator=g)


def test_planted_photo_is_ranked_first(tmp_path, tmp_cache):
    lib = _write_library(tmp_path / "lib")
    clf = _planted_classifier(lib)
    index = index_library(clf, lib, batch_size=4)
    d, how = library_direction(clf, index, SOURCE, TARGET)
    assert how.startswith("head")
    # from the index alone: the planted photo's whole-photo score is the best
    scores = index.pooled_scores(d)
    assert index.paths[int(scores.argmax())] == "planted.png"
    eligible, info = eligible_photos(index, SOURCE, TARGET)
    assert eligible.all() and info["excluded_target_photos"] == 0
    short, ranked = index_proposals(index, d, eligible, shortlist=6)
    assert ranked == len(index) * 10 and index.paths[int(short.photo[0])] == "planted.png"
    assert int(short.whole.sum()) == 3 and len(short) == 6
    # a whole-photo sweep: every eligible photo whole (best by index first), the crops keep their share
    swept, _ = index_proposals(index, d, eligible, shortlist=6, whole_sweep=100)
    assert int(swept.whole.sum()) == int(eligible.sum()) and int((~swept.whole).sum()) == 3
    assert index.paths[int(swept.photo[0])] == "planted.png"
    # and after exact scoring
    settings = SearchSettings(top_k=3, shortlist=6, n_random=2, whole_sweep=0, fine_keep=4, batch_size=32, combine=0)
    cands, stats = search_library(clf, index, _train_images(), SOURCE, TARGET, settings,
                                  generator=torch.Generator().manual_seed(0))
    assert cands[0].provenance["file"] == "planted.png"
    assert cands[0].provenance["score_gain_logodds"] > 0
    assert [c.name for c in cands] == ["natural-1", "natural-2", "natural-3"]
    assert len({c.provenance["file"] for c in cands}) == 3  # one per photo
    gains = [c.provenance["score_gain_logodds"] for c in cands]
    assert gains == sorted(gains, reverse=True)
    for c in cands:
        assert c.kind == "natural" and c.patch.shape == (3, 128, 128) and c.reads_as is not None
        assert c.provenance["method"] in ("library photo, whole", "library crop")
        prov = c.provenance
        assert prov["photo_label"] is None and prov["donor_class"] == prov["photo_top1"]["index"]
    assert stats["exactly_scored"] == 8 + 4 and stats["class_ranking"][0]["best_gain"] >= cands[0].score - 10
    assert stats["proposals"] == ranked and stats["seconds"] > 0
    # with the final stage (every train image x size x corner for the 3 best): still first, ranked as counted
    settings = SearchSettings(top_k=2, shortlist=6, n_random=2, whole_sweep=0, coarse_images=2, fine_keep=4,
                              final_keep=3, batch_size=32, combine=0)
    cands, stats = search_library(clf, index, _train_images(), SOURCE, TARGET, settings, sizes=(0.1, 0.25),
                                  generator=torch.Generator().manual_seed(0))
    assert cands[0].provenance["file"] == "planted.png" and stats["final_scored"] == 3
    assert stats["exactly_scored"] == 8 + 4 + 3 and stats["pasted_forwards"] == 8 * 2 + 4 * 4 * 2 + 3 * 4 * 2 * 4
    keys = [(c.provenance["train_static_success"], c.provenance["score_gain_logodds"]) for c in cands]
    assert keys[0][0] >= keys[1][0] and cands[0].provenance["train_static_size"] in (0.1, 0.25)


def test_collages_compete_with_single_photos(tmp_path, tmp_cache):
    lib = _write_library(tmp_path / "lib")
    clf = _planted_classifier(lib)
    index = index_library(clf, lib, batch_size=4)
    for final_keep in (0, 3):
        settings = SearchSettings(top_k=6, shortlist=6, n_random=2, whole_sweep=0, fine_keep=4, batch_size=32,
                                  combine=3, combine_from=4, final_keep=final_keep)
        cands, stats = search_library(clf, index, _train_images(), SOURCE, TARGET, settings, sizes=(0.1, 0.25),
                                      generator=torch.Generator().manual_seed(0))
        # fine: top_k (6) proposals; parts: the best of 4 photos, each alone on 4 images x 4 corners at 25 %;
        # collages: 3 x 2 ordered pairs, and again the 4 that hold the one whole photo, cut to its best
        # column; each on 4 images x 2 sizes, one corner each
        assert stats["collage_parts_rescored"] == 4 and stats["collage_part_size"] == 0.25
        assert stats["collage_whole_photos"] == 1 and stats["collages_scored"] == 3 * 2 + 4
        assert stats["exactly_scored"] == 8 + 6 + 4 + 10 + (3 if final_keep else 0)
        forwards = 8 * 4 + (6 + 10) * 4 * 2 + 4 * 4 * 4 + ((3 + 10) * 4 * 2 * 4 if final_keep else 0)
        assert stats["pasted_forwards"] == forwards
        collages = [c for c in cands if "parts" in c.provenance]
        singles = [c for c in cands if "parts" not in c.provenance]
        assert collages and singles and [c.name for c in cands] == [f"natural-{i}" for i in range(1, 7)]
        for c in collages:  # two different proposals, at most one collage per pair of them
            parts = c.provenance["parts"]
            assert len(parts) == 2 and c.provenance["method"].startswith("library collage")
            assert parts[0]["library_row"] != parts[1]["library_row"] or parts[0]["box_xyxy"] != parts[1]["box_xyxy"]
            assert c.provenance["file"] == parts[0]["file"] and c.patch.shape == (3, 128, 128)
        pairs = [frozenset((p["library_row"], tuple(p["box_xyxy"])) for p in c.provenance["parts"]) for c in collages]
        assert len(set(pairs)) == len(pairs)
        # one ranking for both kinds: train success first, the mean gain breaking ties
        name = "train_static_success" if final_keep else "train_success"
        keys = [c.provenance[name] for c in cands]
        assert keys == sorted(keys, reverse=True)


def test_collage_parts_are_the_rows_that_flip_most_alone():
    shortlist = torch.tensor([7, 3, 9, 5])
    gain = torch.tensor([4.0, 1.0, 2.0, 3.0])
    success = torch.tensor([0.0, 0.5, 0.5, 0.25])
    assert best_parts(shortlist, gain, success, 3).tolist() == [9, 3, 5]  # success first, the gain breaking ties


def test_a_crop_is_cut_again_at_half_its_aspect_for_its_half_of_a_collage():
    boxes = torch.tensor([[40.0, 40, 80, 80],  # a square crop in the middle: same area and centre, 1:2
                          [0.0, 0, 100, 100],  # a whole photo: its central half
                          [10.0, 0, 50, 90]])  # a tall crop at the edge: as tall as the photo, inside it
    parts = Proposals(torch.arange(3), boxes, torch.zeros(3), torch.tensor([False, True, False]))
    out = slot_boxes(parts, 100.0)
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    assert torch.allclose(w[0] * h[0], torch.tensor(1600.0)) and torch.allclose(h[0], 2 * w[0])
    assert torch.allclose(out[0, [0, 2]].mean(), torch.tensor(60.0)) and torch.allclose(out[0, [1, 3]].mean(), torch.tensor(60.0))
    assert out[1].tolist() == [25.0, 0.0, 75.0, 100.0]
    assert torch.allclose(h[2], torch.tensor(100.0)) and torch.allclose(w[2] / h[2], torch.tensor(40 / 90 / 2))
    assert out[2, 1] == 0 and out[2, 3] == 100 and out[2, 0] >= 0


def test_a_whole_photo_is_cut_to_its_column_that_scores_highest_along_the_direction():
    class Cells:  # an index whose photo 1 scores high in its right quarter, photo 0 in its left
        input_size = 64

        def cell_scores(self, direction, rows):
            maps = torch.zeros(2, 4, 4)
            maps[0, :, 0], maps[1, :, 3] = 1.0, 1.0
            return maps[torch.as_tensor(rows)] * direction.sum()

    boxes = best_columns(Cells(), torch.ones(3), torch.tensor([1, 0]))
    assert boxes.tolist() == [[32.0, 0.0, 64.0, 64.0], [0.0, 0.0, 32.0, 64.0]]
    assert best_columns(Cells(), torch.ones(3), torch.tensor([], dtype=torch.long)).shape == (0, 4)


def test_collage_part_size_must_be_a_fraction_of_the_image():
    with pytest.raises(ValueError, match="combine_size"):
        SearchSettings(combine_size=25)


def test_side_by_side_squeezes_each_part_to_half_width():
    red, blue = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    red[0], blue[2] = 1.0, 1.0
    both = side_by_side(red, blue)
    assert both.shape == (3, 8, 8)
    assert torch.allclose(both[:, :, :4], red[:, :, :4]) and torch.allclose(both[:, :, 4:], blue[:, :, 4:])
    batch = side_by_side(torch.stack([red, blue]), torch.stack([blue, red]))
    assert torch.allclose(batch[1], side_by_side(blue, red))
    green = torch.zeros(3, 8, 8)
    green[1] = 1.0
    three = side_by_side(red, green, blue, width=9)  # three equal columns of 3 pixels
    assert three.shape == (3, 8, 9)
    assert torch.allclose(three[:, :, 3:6], green[:, :, :3]) and torch.allclose(three[:, :, 6:], blue[:, :, :3])
    parts = Proposals(torch.tensor([4, 6]), torch.tensor([[0.0, 0, 8, 8]] * 2), torch.zeros(2), torch.ones(2, dtype=torch.bool))
    col = make_collages(parts, torch.stack([red, blue]))
    assert col.left.tolist() == [0, 1] and col.right.tolist() == [1, 0] and len(col) == 2
    assert torch.allclose(col.pixels[1], side_by_side(blue, red)) and col.parts is parts
    assert distinct_pairs(col, torch.tensor([0.1, 0.9]), k=5) == [1]  # the same two parts in either order


def test_a_collage_with_a_whole_photo_is_made_in_both_of_its_versions():
    # parts 0, 1 are crops; part 2 a whole photo, row 2 squeezed and row 3 its half-width column
    parts = Proposals(torch.tensor([5, 6, 7, 7]), torch.zeros(4, 4), torch.zeros(4), torch.tensor([False, False, True, False]))
    pixels = torch.rand(4, 3, 8, 8)
    col = make_collages(parts, pixels, [torch.arange(3), torch.tensor([0, 1, 3])])
    pairs = list(zip(col.left.tolist(), col.right.tolist()))
    assert pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (0, 3), (1, 3), (3, 0), (3, 1)]  # crop pairs once
    assert torch.allclose(col.pixels[6], side_by_side(pixels[0], pixels[3]))
    key = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.8, 0.7, 0.6])
    assert distinct_pairs(col, key, k=10) == [6, 7, 2]  # one per pair of photos, in either version


def test_corrupt_file_is_skipped_and_named(tmp_path, tmp_cache, caplog):
    lib = _write_library(tmp_path / "lib", n_textures=3)
    (lib / "broken.jpg").write_text("this is not a JPEG\n")
    good = (lib / "planted.png").read_bytes()
    (lib / "truncated.png").write_bytes(good[: len(good) // 2])
    clf = tiny_classifier(seed=0)
    index = index_library(clf, lib, batch_size=2)
    assert sorted(s["path"] for s in index.skipped) == ["broken.jpg", "truncated.png"]
    assert all(s["reason"] for s in index.skipped)
    assert "broken.jpg" in caplog.text
    assert index.paths == ["planted.png", "texture_0.png", "texture_1.png", "texture_2.png"]
    assert index.pooled.shape == (4, 16) and index.spatial.shape == (4, 8, 8, 16)
    assert index.manifest["skipped"] == index.skipped and (index.labels == -1).all()


def test_check_library_needs_one_readable_photo(tmp_path):
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    (lib / "notes.txt").write_text("not a photo")
    with pytest.raises(UserError, match="no images found in library"):
        check_library(lib)
    (lib / "sub" / "broken.jpg").write_text("this is not a JPEG\n")
    (lib / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"none of the 2 image files in library .* could be decoded \(first: "):
        check_library(lib)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(lib / "sub" / "zz_good.png")
    assert check_library(lib) == lib
    with pytest.raises(UserError, match="must be a folder"):
        check_library(lib / "empty.png")
    from patchlab.classes import imagenet_classes
    from patchlab.library import library_records

    linked = tmp_path / "linked"  # folders as symlinks: the check passes exactly when the loader finds photos
    (linked / "holiday").mkdir(parents=True)
    (linked / "holiday" / "day1").symlink_to(lib / "sub", target_is_directory=True)  # a link deeper down
    with pytest.raises(UserError, match="could be decoded|no images found"):
        check_library(linked)
    (linked / "trip").symlink_to(lib / "sub", target_is_directory=True)  # a symlinked top folder, not a class
    (linked / "n04251144").symlink_to(lib / "sub", target_is_directory=True)  # a symlinked class folder
    (linked / "n04251144" / "up").symlink_to(linked, target_is_directory=True)  # and a link back up
    assert check_library(linked) == linked
    found = {(r.path.parent.name, r.label) for r in library_records(linked, imagenet_classes())}
    assert found == {("n04251144", imagenet_classes().resolve("snorkel"))}
    (linked / "n04251144").unlink()
    assert {r.path.parent.name for r in library_records(linked, imagenet_classes())} == {"trip"}


def test_cache_reused_and_invalidated(tmp_path, tmp_cache, monkeypatch):
    lib = _write_library(tmp_path / "lib", n_textures=3)
    clf = tiny_classifier(seed=0)
    calls = []
    real_run = clf.run
    monkeypatch.setattr(clf, "run", lambda *a, **k: calls.append(1) or real_run(*a, **k))
    first = index_library(clf, lib, batch_size=2)
    assert first.built and calls
    assert first.folder.parent == tmp_cache / "library" and not list(first.folder.parent.glob(".*tmp"))
    n_calls = len(calls)
    second = index_library(clf, lib, batch_size=2)
    assert not second.built and len(calls) == n_calls and second.folder == first.folder
    assert isinstance(second.pooled, np.memmap) and np.array_equal(second.pooled, first.pooled)
    # rewrite one file: new content and a new mtime -> a new index
    path = lib / "texture_1.png"
    Image.fromarray(_texture(99)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    third = index_library(clf, lib, batch_size=2)
    assert third.built and third.folder != first.folder and len(calls) > n_calls
    row = third.paths.index("texture_1.png")
    assert not np.array_equal(third.pooled[row], first.pooled[row])
    assert np.array_equal(third.pooled[0], first.pooled[0])
    # adding a file invalidates too
    Image.fromarray(_texture(7)).save(lib / "texture_new.png")
    assert index_library(clf, lib, batch_size=2).built


def test_interrupted_index_is_not_used(tmp_path, tmp_cache, monkeypatch):
    import patchlab.library.index as mod

    lib = _write_library(tmp_path / "lib", n_textures=5)
    clf = tiny_classifier(seed=0)
    real = mod._forward
    count = []

    def dying(*a, **k):
        count.append(1)
        if len(count) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(mod, "_forward", dying)
    with pytest.raises(KeyboardInterrupt):
        index_library(clf, lib, batch_size=2, workers=0)
    root = tmp_cache / "library"
    assert not [p for p in root.iterdir()]  # neither a final nor a temporary folder
    monkeypatch.setattr(mod, "_forward", real)
    index = index_library(clf, lib, batch_size=2, workers=0)
    assert index.built and len(index) == 6
    # a build killed outright leaves its temporary folder: the next build of that key removes it
    import shutil

    stale = root / f".{index.folder.name}.999999999.x.tmp"
    stale.mkdir()
    shutil.rmtree(index.folder)
    assert index_library(clf, lib, batch_size=2, workers=0).built and not stale.exists()


def test_small_batches_stream_and_match_one_batch(tmp_path):
    lib = _write_library(tmp_path / "lib", n_textures=4)  # 5 photos
    clf = tiny_classifier(seed=0)
    small = index_library(clf, lib, batch_size=2, cache_root=tmp_path / "c2", workers=1)  # 3 batches, a decode worker
    whole = index_library(clf, lib, batch_size=5, cache_root=tmp_path / "c5")
    assert small.manifest["workers"] == 1 and whole.manifest["workers"] == 0
    assert small.paths == whole.paths and len(small) == 5
    np.testing.assert_allclose(small.pooled, whole.pooled, atol=2e-3)
    np.testing.assert_allclose(small.spatial, whole.spatial, atol=2e-3)
    assert np.array_equal(small.top1, whole.top1)
    photos = small.load_photos([4, 0])
    assert photos.shape == (2, 3, 32, 32)
    with torch.no_grad():
        f = pooled_features(clf, photos)
    np.testing.assert_allclose(f.numpy(), small.pooled[[4, 0]].astype(np.float32), atol=2e-3)


def test_default_decode_workers(monkeypatch):
    from patchlab.library import index as index_mod

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(index_mod.os, "cpu_count", lambda: 16)
    assert index_mod._default_workers(10, 8, cpu) == 0  # a couple of batches: decode in turn
    assert index_mod._default_workers(1000, 8, cuda) == 8
    monkeypatch.setattr(index_mod.torch, "get_num_threads", lambda: 2)
    assert index_mod._default_workers(1000, 8, cpu) == 1  # cores to spare beside the forward's threads
    monkeypatch.setattr(index_mod.os, "cpu_count", lambda: 2)
    assert index_mod._default_workers(1000, 8, cpu) == 0  # none: the worker would compete with the forward
    assert index_mod._default_workers(1000, 8, cuda) == 1


def test_labelled_library_excludes_target_and_source_photos(tmp_path, tmp_cache):
    root = tmp_path / "lib"
    # tench (0), goldfish (1), great white shark (2)
    for wnid, seeds in (("n01440764", (0, 1)), ("n01443537", (2,)), ("n01484850", (3, 4))):
        (root / wnid).mkdir(parents=True)
        for s in seeds:
            Image.fromarray(_texture(s)).save(root / wnid / f"{s}.png")
    clf = tiny_classifier(seed=0)
    index = index_library(clf, root)
    assert index.labels.tolist() == [0, 0, 1, 2, 2]
    keep, info = eligible_photos(index, source=0, target=2)
    assert keep.tolist() == [False, False, True, False, False]
    assert info["excluded_target_photos"] == 2 and info["excluded_source_photos"] == 2
    assert info["target_photo_files"] == ["n01484850/3.png", "n01484850/4.png"]
    assert control_photo_rows(index, 1, torch.Generator().manual_seed(0), exclude=(0, 2)).tolist() == [2]
    with pytest.raises(UserError):
        control_photo_rows(index, 2, torch.Generator().manual_seed(0), exclude=(0, 2))
    # a model without a linear head: the direction comes from the library's own photos
    clf.head = None
    d, how = library_direction(clf, index, source=0, target=2)
    expected = index.pooled[3:5].astype(np.float32).mean(0) - index.pooled[0:2].astype(np.float32).mean(0)
    assert "library means" in how and np.allclose(d.numpy(), expected, atol=1e-3)
    with pytest.raises(UserError, match="no linear head"):
        library_direction(clf, index, source=0, target=5)


def test_library_control_photos_are_seeded(tmp_path, tmp_cache):
    from patchlab.evaluation.controls import library_collage_control, library_photo_control

    lib = _write_library(tmp_path / "lib", n_textures=7)
    clf = tiny_classifier(seed=0)
    index = index_library(clf, lib)
    a = control_photo_rows(index, 4, torch.Generator().manual_seed(3))
    assert a.tolist() == control_photo_rows(index, 4, torch.Generator().manual_seed(3)).tolist()
    assert len(set(a.tolist())) == 4
    # the pooled null control of the evaluator is made of those photos, pasted whole
    pooled = library_photo_control(clf, index, 4, torch.Generator().manual_seed(3))
    assert pooled.name == "control-library-photo" and pooled.kind == "control" and pooled.members.shape == (4, 3, 32, 32)
    assert pooled.provenance["files"] == [index.paths[r] for r in a]
    assert torch.equal(pooled.members, index.load_photos(a.tolist())) and torch.equal(pooled.patch, pooled.members[0])
    # the collage null: pairs of those photos, every other one squeezed, the rest cut to their central halves
    photos = index.load_photos(control_photo_rows(index, 4, torch.Generator().manual_seed(3)).tolist())
    pairs = library_collage_control(clf, index, 2, torch.Generator().manual_seed(3))
    assert pairs.name == "control-library-collage" and pairs.members.shape == (2, 3, 32, 32)
    assert torch.allclose(pairs.members[0], side_by_side(photos[0], photos[2]))
    assert torch.allclose(pairs.members[1], side_by_side(photos[1, ..., 8:24], photos[3, ..., 8:24], width=32))
    assert torch.allclose(pairs.members[1, :, :, :16], photos[1, :, :, 8:24], atol=1e-5)  # in proportion


def test_projected_spatial_store_projects_the_direction_on_demand(tmp_path):
    lib = _write_library(tmp_path / "lib", n_textures=3)
    clf = tiny_classifier(seed=0)
    full = index_library(clf, lib, cache_root=tmp_path / "full")
    small = index_library(clf, lib, cache_root=tmp_path / "proj", spatial_dim=4)
    assert small.spatial.shape == (4, 8, 8, 4) and small.manifest["basis"] == "head-svd"
    basis = torch.from_numpy(small.basis)
    assert torch.allclose(basis.T @ basis, torch.eye(4), atol=1e-5)
    d = torch.randn(16, generator=torch.Generator().manual_seed(1))
    # scores on the projected store equal the full-store scores of d projected on the basis
    want = full.cell_scores(basis @ (basis.T @ d), slice(None))
    assert torch.allclose(small.cell_scores(d, slice(None)), want, atol=0.05 * want.abs().max())
    b2, kind = spatial_basis(clf, 16, 16)
    assert b2 is None and kind == "full"


def test_window_scores_pick_the_hot_region():
    maps = torch.zeros(1, 7, 7)
    maps[0, 5:7, 0:2] = 1.0  # hot bottom-left corner
    score, box = window_scores(maps, 224, 0.35, 1.0)
    x1, y1, x2, y2 = box[0].tolist()
    assert x1 == 0 and y2 == 224 and score[0] > 0.5
    assert abs((x2 - x1) - 0.35 * 224) < 1e-3


@pytest.mark.integration
@pytest.mark.skipif(not REAL_PHOTOS.is_dir(), reason="shared/realphotos not present")
def test_real_photos_snorkel_to_scuba_diver(default_model, tmp_path, tmp_cache):
    """~10 s on an idle 2-core CPU (a minute or two when the CPU is shared): 40 photos indexed,
    2 pair-aware synthesized snorkels, a small search."""
    from patchlab.exemplars import exemplars

    clf = default_model
    snorkel, scuba = clf.classes.resolve("snorkel"), clf.classes.resolve("scuba diver")
    lib = tmp_path / "lib"
    for cls_dir in sorted(p for p in REAL_PHOTOS.iterdir() if p.is_dir())[::12][:40]:  # 40 photos, spread over classes
        (lib / cls_dir.name).mkdir(parents=True)
        for f in cls_dir.iterdir():
            (lib / cls_dir.name / f.name).symlink_to(f)
    index = index_library(clf, lib, batch_size=20)
    assert len(index) == 40 and (index.labels >= 0).all() and not index.skipped
    assert index_library(clf, lib).built is False
    train = exemplars(clf, snorkel, n=2, near=scuba, seed=0).images
    cands, stats = search_library(clf, index, train, snorkel, scuba,
                                  SearchSettings(top_k=3, shortlist=16, n_random=4, fine_keep=4, whole_sweep=0, combine=0),
                                  generator=torch.Generator().manual_seed(0))
    assert len(cands) == 3 and stats["exactly_scored"] == 20 + 4
    best = cands[0]
    assert best.provenance["score_gain_logodds"] > 0 and best.provenance["file"] in index.paths
    assert best.provenance["donor_name"] == clf.classes.label(best.provenance["photo_label"])
    assert set(best.provenance) >= {"method", "box_xyxy", "photo_top1", "train_success", "index_score"}
    assert stats["class_ranking"][0]["best_gain"] >= best.provenance["score_gain_logodds"] - 5


def test_ranking_by_success_then_gain():
    from patchlab.library.proposals import Proposals
    from patchlab.library.ranking import rank_key, select_distinct

    props = Proposals(torch.arange(4), torch.tensor([[0.0, 0, 10, 10]]).repeat(4, 1), torch.zeros(4),
                      torch.ones(4, dtype=torch.bool))
    gain = torch.tensor([3.0, 2.0, 1.0, 0.5])[:, None]  # (K, areas): one area
    win = torch.tensor([0.0, 0.5, 0.5, 0.25])[:, None]
    assert select_distinct(props, rank_key(gain, win, "success"), 4, 1) == [1, 2, 3, 0]
    assert select_distinct(props, rank_key(gain, win, "gain"), 4, 1) == [0, 1, 2, 3]
    same_photo = Proposals(torch.zeros(4, dtype=torch.long), torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30],
                           [0, 0, 10, 10], [40, 40, 50, 50]]), torch.zeros(4), torch.zeros(4, dtype=torch.bool))
    assert select_distinct(same_photo, rank_key(gain, win, "gain"), 4, 2) == [0, 1]  # two per photo at most


def test_static_ranking_takes_each_proposals_best_area():
    from patchlab.library.ranking import rank_key

    # 3 proposals x 2 areas: by mean success 2 and 0 tie (2 has more mean gain) and 1 is last; by the
    # best area 1 and 2 tie at 0.75 (1 has more gain there) and 0 is last
    win = torch.tensor([[0.5, 0.5], [0.0, 0.75], [0.25, 0.75]])
    gain = torch.tensor([[1.0, 1.0], [0.0, 2.0], [5.0, 1.0]])
    assert rank_key(gain, win, "success").argsort(descending=True).tolist() == [2, 0, 1]
    assert rank_key(gain, win, "static").argsort(descending=True).tolist() == [1, 2, 0]


def test_static_scores_take_the_best_size_averaged_over_positions():
    from patchlab.library.ranking import static_scores

    # 2 proposals x 2 sizes x 4 positions: the first wins everywhere at 0.25 only; the second
    # wins at one corner of each size (a single lucky corner must not beat a robust size)
    win = torch.tensor([[[0.0, 0, 0, 0], [1, 1, 1, 0.5]], [[1.0, 0, 0, 0], [0.5, 0, 0, 0]]])
    gain = torch.arange(16, dtype=torch.float32).view(2, 2, 4)
    st = static_scores(gain, win, (0.1, 0.25))
    assert st["success"].tolist() == [0.875, 0.25]
    assert st["size"].tolist() == [0.25, 0.1]
    assert st["gain"].tolist() == [5.5, 9.5]


def test_mirrored_proposals_are_flipped_cuts_and_compete_with_their_original(tmp_path, tmp_cache):
    from patchlab.library.proposals import Proposals, cut_proposals

    lib = _write_library(tmp_path / "lib")
    clf = _planted_classifier(lib)
    index = index_library(clf, lib, batch_size=4)
    s = index.input_size
    props = Proposals(torch.tensor([0, 7]), torch.tensor([[0.0, 0, s, s], [2.0, 4, 20, 30]]), torch.zeros(2),
                      torch.tensor([True, False]))
    plain, flipped = cut_proposals(index, props, 24), cut_proposals(index, props.mirrored(), 24)
    assert torch.equal(flipped, plain.flip(-1)) and not torch.equal(flipped, plain)
    assert Proposals.cat([props, props.mirrored()]).mirror.tolist() == [False, False, True, True]
    def search(mirror_top: int):
        settings = SearchSettings(top_k=4, shortlist=6, n_random=2, whole_sweep=0, fine_keep=5, mirror_top=mirror_top,
                                  batch_size=32, combine=0)
        return search_library(clf, index, _train_images(), SOURCE, TARGET, settings,
                              generator=torch.Generator().manual_seed(0))

    def key(c):
        return c.provenance["train_success"], c.provenance["score_gain_logodds"]

    plain_cands, plain_stats = search(0)
    cands, stats = search(3)
    assert plain_stats["mirrored"] == 0 and not any(c.provenance["mirrored"] for c in plain_cands)
    assert key(cands[0]) >= key(plain_cands[0])  # mirrors only add options
    assert stats["mirrored"] == 3 and stats["fine_scored"] == 5 + 3 and stats["coarse_scored"] == 8
    assert len({c.provenance["file"] for c in cands}) == len(cands)  # a mirror never doubles its photo
    for c in cands:
        assert c.provenance["mirrored"] == c.provenance["method"].endswith(", mirrored")
        assert (c.provenance["coarse_gain"] is None) == c.provenance["mirrored"]  # a mirror has no coarse gain
        c.save(tmp_path / "saved")  # provenance is valid JSON (no NaN)


def test_unmeasured_provenance_numbers_are_none_not_nan():
    from patchlab.library.search import _measured

    assert _measured(torch.tensor(1.23456)) == 1.2346 and _measured(float("nan")) is None


def test_search_settings_refuse_an_unknown_ranking():
    with pytest.raises(ValueError, match="rank_by"):
        SearchSettings(rank_by="sucess")
