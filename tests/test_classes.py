"""Class lookup: names, WordNet ids, indices, suggestions (patchlab.classes)."""
from __future__ import annotations

import pytest
import torch

from patchlab.classes import ClassIndex, classes_for, generic_classes, imagenet_classes, normalize
from patchlab.errors import UserError


@pytest.fixture(scope="module")
def imagenet():
    return imagenet_classes()


def test_imagenet_has_1000_classes_in_standard_order(imagenet):
    assert len(imagenet) == 1000 and len(set(imagenet.wnids)) == 1000
    assert imagenet.wnids[0] == "n01440764" and imagenet.names[0] == "tench"
    assert imagenet.names[983] == "scuba diver" and imagenet.wnids[983] == "n10565667"
    expected = {801: "snorkel", 147: "grey whale", 2: "great white shark", 567: "frying pan", 909: "wok", 967: "espresso"}
    for index, name in expected.items():
        assert imagenet.names[index] == name


@pytest.mark.parametrize("query", ["scuba_diver", "Scuba Diver", "scuba-diver", "  SCUBA   diver ", "983"])
def test_resolve_name_forms_to_scuba_diver(imagenet, query):
    assert imagenet.resolve(query) == 983


def test_resolve_wordnet_id_and_index(imagenet):
    assert imagenet.resolve("n04251144") == 801
    assert imagenet.resolve("N04251144") == 801
    assert imagenet.resolve("801") == 801
    assert imagenet.resolve("0") == 0


def test_resolve_lemma_alias(imagenet):
    # "great white shark" is also listed as "white shark" / "man-eater" in the synset lemmas
    assert imagenet.resolve("white shark") == 2
    assert imagenet.resolve("man_eater") == 2


def test_unknown_name_suggests_close_class(imagenet):
    with pytest.raises(UserError) as err:
        imagenet.resolve("scubadiver")
    msg = str(err.value)
    assert "did you mean" in msg and "scuba diver" in msg
    assert "\n" not in msg


def test_partial_name_suggests_full_name(imagenet):
    with pytest.raises(UserError, match="snorkel"):
        imagenet.resolve("snork")


def test_ambiguous_name_names_every_match(imagenet):
    with pytest.raises(UserError) as err:
        imagenet.resolve("crane")
    msg = str(err.value)
    assert "ambiguous" in msg
    assert "134" in msg and "517" in msg  # the bird and the machine
    assert "n02012849" in msg and "n03126707" in msg


def test_out_of_range_index_and_unknown_wnid(imagenet):
    with pytest.raises(UserError, match="0..999"):
        imagenet.resolve("1000")
    with pytest.raises(UserError):
        imagenet.resolve("n99999999")


def test_search_lists_all_matches(imagenet):
    assert [m.index for m in imagenet.search("crane")] == [134, 517]
    assert imagenet.search("nothing like this") == []
    assert imagenet.search("n04251144")[0].as_dict() == {"index": 801, "name": "snorkel", "wnid": "n04251144"}


def test_label_and_slug_are_unique(imagenet):
    labels = [imagenet.label(i) for i in range(1000)]
    slugs = [imagenet.slug(i) for i in range(1000)]
    assert len(set(labels)) == 1000 and len(set(slugs)) == 1000
    assert imagenet.label(983) == "scuba diver" and imagenet.slug(983) == "scuba_diver"
    assert imagenet.label(134) == "crane (n02012849)"


def test_normalize():
    assert normalize(" Scuba_Diver ") == normalize("scuba-diver") == "scuba diver"


def test_generic_and_custom_classes():
    g = generic_classes(3)
    assert g.names == ["class_0", "class_1", "class_2"] and g.resolve("class 1") == 1 and g.resolve("2") == 2
    custom = ClassIndex(names=["cat", "dog"])
    assert custom.resolve("Dog") == 1
    with pytest.raises(UserError, match="cat"):
        custom.resolve("cats")


def test_classes_for_a_model_output_size():
    assert classes_for(1000) is imagenet_classes() and classes_for(3).names == ["class_0", "class_1", "class_2"]


def test_prediction_and_top_k_dicts(imagenet):
    # the label (WordNet id added to a duplicate name), prob rounded to 4 places unless told otherwise
    assert imagenet.prediction(134, 0.123456) == {"index": 134, "name": "crane (n02012849)", "prob": 0.1235}
    assert list(imagenet.prediction(983, torch.tensor(0.5))) == ["index", "name", "prob"]
    assert imagenet.prediction(983, 0.123456789, digits=6)["prob"] == 0.123457
    assert imagenet.prediction(983, 0.123456789, digits=None)["prob"] == 0.123456789
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4]])
    classes = ClassIndex(names=["cat", "dog", "fox"])
    assert [[d["name"] for d in row] for row in classes.top(probs, k=2)] == [["dog", "fox"], ["cat", "fox"]]
    top1 = classes.top(probs)
    assert [len(row) for row in top1] == [1, 1] and top1[0][0] == {"index": 1, "name": "dog", "prob": 0.6}
    assert top1[1][0]["index"] == 0  # a tie goes to the first class, as argmax
