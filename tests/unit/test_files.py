"""Strict file readers: every format, and every malformed input named with its line."""

import json

import pytest

from gpt2tasks.datamodules.files import read_records, require_columns
from gpt2tasks.errors import UserError
from tests.conftest import shared_dataset

KEY = "data.train_file"


def write(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_csv_with_quoted_commas_and_newlines(tmp_path):
    path = write(tmp_path, "a.csv", 'text,label\n"good, very good",1\n"two\nlines",0\n\n  padded  ,1\n')
    assert read_records(path, KEY) == [{"text": "good, very good", "label": "1"},
                                       {"text": "two\nlines", "label": "0"},
                                       {"text": "padded", "label": "1"}]


def test_tsv_ignores_quotes_and_strips_glue_trailing_space(tmp_path):
    path = write(tmp_path, "a.tsv", 'sentence\tlabel\nit \'s a "great film \t1\n')
    assert read_records(path, KEY) == [{"sentence": 'it \'s a "great film', "label": "1"}]


def test_headerless_with_column_names(tmp_path):
    path = write(tmp_path, "a.tsv", "x\t0\ny\t1\n")
    assert read_records(path, KEY, column_names=["text", "label"])[1] == {"text": "y", "label": "1"}


@pytest.mark.parametrize("name,content", [
    ("a.json", json.dumps([{"text": "a", "label": [1, 2]}])),
    ("b.json", json.dumps({"data": [{"text": "a", "label": [1, 2]}]})),
    ("c.json", '{"text": "a", "label": [1, 2]}\n'),  # really JSON lines
    ("d.jsonl", '\n{"text": "a", "label": [1, 2]}\n\n'),
])
def test_json_shapes(tmp_path, name, content):
    assert read_records(write(tmp_path, name, content), KEY) == [{"text": "a", "label": [1, 2]}]


def test_wrong_field_count_names_the_line(tmp_path):
    path = write(tmp_path, "a.csv", 'text,label\n"multi\nline",1\nok,0\nbad,row,1\n')
    with pytest.raises(UserError) as err:
        read_records(path, KEY)
    msg = str(err.value)
    assert f"{KEY}={path}, line 5" in msg and "expected 2 fields" in msg and "found 3" in msg and "Fix" in msg


def test_invalid_json_line_and_non_object_line(tmp_path):
    with pytest.raises(UserError, match=r"line 3: invalid JSON"):
        read_records(write(tmp_path, "a.jsonl", '{"a": 1}\n\n{"a": \n'), KEY)
    with pytest.raises(UserError, match=r"line 2: a list, not a JSON object"):
        read_records(write(tmp_path, "b.jsonl", '{"a": 1}\n[1, 2]\n'), KEY)


@pytest.mark.parametrize("setup,expected", [
    (lambda p: p / "missing.csv", "file not found"),
    (lambda p: p, "is a directory"),
    (lambda p: write(p, "a.parquet", "x"), "unsupported file type '.parquet'"),
    (lambda p: write(p, "a.csv", "text,label\n"), "no data rows"),
    (lambda p: write(p, "a.csv", b"text\n\xff\xfe\n", mode="wb"), "not UTF-8"),
])
def test_file_level_errors(tmp_path, setup, expected):
    with pytest.raises(UserError, match=expected) as err:
        read_records(setup(tmp_path), KEY)
    assert KEY in str(err.value)


def test_require_columns_lists_every_missing_key_and_the_found_columns():
    rows = [{"sentence": "a", "y": 1}]
    with pytest.raises(UserError) as err:
        require_columns(rows, {"data.text_column": "text", "data.label_column": "label"}, "f.csv", KEY)
    msg = str(err.value)
    assert "data.text_column='text'" in msg and "data.label_column='label'" in msg
    assert "Columns found: sentence, y" in msg
    with pytest.raises(UserError, match="row 1 has no"):
        require_columns([{"text": "a"}, {"txt": "b"}], {"data.text_column": "text"}, "f.jsonl", KEY)


def test_reads_the_real_sst2_train_file():
    rows = read_records(shared_dataset("sst2", "train.tsv"), KEY)
    assert len(rows) == 67_349 and set(rows[0]) == {"sentence", "label"}
    assert not rows[0]["sentence"].endswith(" ")
