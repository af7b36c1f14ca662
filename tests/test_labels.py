"""User label files (`--labels`): both formats, and one clear error for each kind of bad file."""
from __future__ import annotations

import pytest

from patchlab.errors import UserError
from patchlab.labels import label_index, read_labels


def test_one_name_per_line_skips_blanks_and_comments(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# my classes\ncat\n\ndog\n  red fox  \n")
    assert read_labels(f) == ["cat", "dog", "red fox"]


def test_csv_with_index_and_name_in_any_order(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("name,index,extra\ndog,1,x\ncat,0,y\nred fox,2,z\n")
    assert read_labels(f) == ["cat", "dog", "red fox"]


def test_a_label_index_resolves_names_like_imagenet(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("cat\ndog\nred fox\n")
    classes = label_index(f, 3)
    assert classes.resolve("Red_Fox") == 2 and classes.label(1) == "dog"
    with pytest.raises(UserError, match="did you mean 'dog'"):
        classes.resolve("dgo")


@pytest.mark.parametrize("text, message", [
    ("", "holds no class names"),
    ("index,name\n0,cat\n2,dog\n", "index 1 is missing"),
    ("index,name\n0,cat\n0,dog\n", "index 0 is given twice"),
    ("index,name\nzero,cat\n", "not a whole number"),
    ("index,name\n0,\n", "the name is empty"),
])
def test_bad_files_get_one_line(tmp_path, text, message):
    f = tmp_path / "labels.csv"
    f.write_text(text)
    with pytest.raises(UserError, match=message):
        read_labels(f)


def test_wrong_length_missing_file_folder_and_binary(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("a\nb\n")
    with pytest.raises(UserError, match="2 names for a model with 10 outputs"):
        label_index(f, 10)
    with pytest.raises(UserError, match="no such file"):
        read_labels(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="is a folder"):
        read_labels(tmp_path)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(UserError, match="not UTF-8"):
        read_labels(tmp_path / "bin")
