"""`predict_files` (the function behind `patchlab predict`) on real photos and bad files."""
from __future__ import annotations

from pathlib import Path

import pytest

from patchlab.data import ImageRecord, load_images
from patchlab.errors import UserError
from patchlab.pipelines.predict import predict_files

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.mark.integration
def test_default_model_on_bundled_photos_and_bad_files(default_model, mixed_dir, mixed_names):
    """scikit-image's chelsea is a cat, coffee is espresso; bad files are skipped by name."""
    result = predict_files(mixed_dir, top=3, model=default_model)
    assert result["model"] == "efficientnet_lite0"
    by_name = {Path(p["path"]).name: p["top"] for p in result["predictions"]}
    assert sorted(by_name) == mixed_names["good"]
    assert by_name["chelsea.png"][0]["index"] in CATS
    assert by_name["coffee.jpg"][0]["index"] == ESPRESSO and by_name["coffee.jpg"][0]["name"] == "espresso"
    assert by_name["cat_cmyk.jpg"][0]["index"] in CATS  # CMYK decoded with the right colors
    for top in by_name.values():
        probs = [t["prob"] for t in top]
        assert len(top) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert len(result["skipped"]) == len(mixed_names["bad"])
    for name in mixed_names["bad"]:
        assert any(name in s for s in result["skipped"])


@pytest.mark.integration
def test_exif_rotated_cat_is_still_a_cat(default_model, image_zoo):
    batch = load_images([ImageRecord(image_zoo["exif6_jpg"]), ImageRecord(image_zoo["rgba_png"])], default_model.input_size)
    top1 = default_model.logits(batch.images).argmax(-1).tolist()
    assert all(i in CATS for i in top1), top1


def test_tiny_model_top_k(image_zoo):
    result = predict_files([image_zoo["coffee_jpg"], image_zoo["chelsea_png"]], top=4, model="tiny", device="cpu")
    assert result["model"] == "tiny" and len(result["predictions"]) == 2 and result["skipped"] == []
    tops = result["predictions"][0]["top"]
    assert len(tops) == 4 and len({t["index"] for t in tops}) == 4


def test_tiny_model_matches_manual_pipeline(image_zoo, tiny):
    result = predict_files([image_zoo["coffee_jpg"]], top=1, model="tiny", device="cpu")
    batch = load_images([ImageRecord(image_zoo["coffee_jpg"])], tiny.input_size, tiny.crop_pct)
    probs = tiny.logits(batch.images).softmax(-1)[0]
    assert result["predictions"][0]["top"][0]["index"] == int(probs.argmax())
    assert result["predictions"][0]["top"][0]["prob"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_predict_user_errors(tmp_path, image_zoo):
    with pytest.raises(UserError, match="no such file"):
        predict_files([tmp_path / "missing.jpg"], model="tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        predict_files([tmp_path / "empty"], model="tiny")
    with pytest.raises(UserError, match="none of the 2"):
        predict_files([image_zoo["text_jpg"], image_zoo["truncated_jpg"]], model="tiny")
    with pytest.raises(UserError, match="unknown model spec"):
        predict_files([image_zoo["coffee_jpg"]], model="nonsense")
