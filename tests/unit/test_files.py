"""Strict file readers: every format, and every malformed input named with its key, line and fix."""

import json
import time

import pytest

from gpt2tasks.datamodules.files import read_records, require_columns
from gpt2tasks.errors import UserError
from tests.conftest import shared_dataset

KEY = "data.train_file"


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def error(path, column_names=None) -> str:
    with pytest.raises(UserError) as err:
        read_records(path, KEY, column_names)
    return str(err.value)


# ---- formats ------------------------------------------------------------------------------------
def test_csv_quoted_commas_newlines_blank_lines_and_stripping(tmp_path):
    path = write(tmp_path, "a.CSV", 'text , label\n"good, very good",1\n"two\nlines",0\n\n  padded  ,1\n')
    assert read_records(path, KEY) == [{"text": "good, very good", "label": "1"},
                                       {"text": "two\nlines", "label": "0"},
                                       {"text": "padded", "label": "1"}]


def test_csv_with_utf8_bom_header(tmp_path):
    path = write(tmp_path, "a.csv", "\ufefftext,label\nx,1\n".encode())
    assert read_records(path, KEY) == [{"text": "x", "label": "1"}]


def test_tsv_keeps_stray_quotes_and_strips_glue_trailing_space(tmp_path):
    path = write(tmp_path, "a.tsv", 'sentence\tlabel\nit \'s a "great film \t1\n" alone \t0\n')
    assert read_records(path, KEY) == [{"sentence": 'it \'s a "great film', "label": "1"},
                                       {"sentence": '" alone', "label": "0"}]


def test_headerless_with_column_names(tmp_path):
    path = write(tmp_path, "a.tsv", "x\t0\ny\t1\n")
    assert read_records(path, KEY, column_names=["text", "label"]) == [{"text": "x", "label": "0"},
                                                                       {"text": "y", "label": "1"}]
    csv_path = write(tmp_path, "b.csv", '"a, b",0\n')
    assert read_records(csv_path, KEY, column_names=("text", "label")) == [{"text": "a, b", "label": "0"}]


@pytest.mark.parametrize("name,content", [
    ("list.json", json.dumps([{"text": "a", "label": [1, 2]}], indent=2)),
    ("wrapped.json", json.dumps({"version": 1, "data": [{"text": "a", "label": [1, 2]}]}, indent=2)),
    ("lines.json", '{"text": "a", "label": [1, 2]}\n'),  # a .json file that is really JSON lines
    ("blank.jsonl", '\n{"text": "a", "label": [1, 2]}\n\n   \n'),
    ("a.ndjson", '{"text": "a", "label": [1, 2]}'),
])
def test_json_shapes(tmp_path, name, content):
    assert read_records(write(tmp_path, name, content), KEY, column_names=["ignored"]) == [
        {"text": "a", "label": [1, 2]}]


def test_json_file_with_several_lines_of_objects(tmp_path):
    path = write(tmp_path, "a.json", '{"text": "a"}\n{"text": "b"}\n')
    assert [r["text"] for r in read_records(path, KEY)] == ["a", "b"]


def test_jsonl_line_separator_inside_a_string_is_not_a_new_line(tmp_path):
    path = write(tmp_path, "a.jsonl", json.dumps({"text": "a\u2028b\x85c"}, ensure_ascii=False) + "\n")
    assert read_records(path, KEY) == [{"text": "a\u2028b\x85c"}]


# ---- malformed rows -----------------------------------------------------------------------------
def test_wrong_field_count_names_line_4(tmp_path):
    path = write(tmp_path, "a.csv", "text,label\nok,1\n\nbad, row,0\nfine,1\n")
    msg = error(path)
    assert f"{KEY}={path}, line 4:" in msg
    assert "expected 2 fields" in msg and "found 3" in msg
    assert "Fix: quote fields that contain a comma" in msg


def test_wrong_field_count_counts_lines_inside_quoted_fields(tmp_path):
    path = write(tmp_path, "a.csv", 'text,label\n"multi\nline",1\nok,0\nbad,row,1\n')
    assert f"{KEY}={path}, line 5:" in error(path)


def test_tsv_wrong_field_count_hint_and_column_names_hint(tmp_path):
    path = write(tmp_path, "a.tsv", "sentence\tlabel\na\t1\nb\n")
    msg = error(path)
    assert "line 3:" in msg and "found 1" in msg and "tab-separated" in msg
    headerless = write(tmp_path, "b.tsv", "a\t1\tx\n")
    msg = error(headerless, column_names=["sentence", "label"])
    assert "line 1" in msg and "data.column_names" in msg


def test_csv_unclosed_quote_names_the_line_where_the_row_starts(tmp_path):
    path = write(tmp_path, "a.csv", 'text,label\nok,1\n"never closed,0\nmore,1\n')
    msg = error(path)
    assert f"{KEY}={path}, line 3: malformed CSV" in msg and "Fix: check the quoting" in msg


def test_duplicate_header_column(tmp_path):
    msg = error(write(tmp_path, "a.csv", "text,text\na,b\n"))
    assert KEY in msg and "['text']" in msg and "data.column_names" in msg


def test_invalid_json_line_and_non_object_line(tmp_path):
    msg = error(write(tmp_path, "a.jsonl", '{"a": 1}\n\n{"a": \n'))
    assert f"{KEY}=" in msg and "line 3: invalid JSON" in msg and "Fix" in msg
    msg = error(write(tmp_path, "b.jsonl", '{"a": 1}\n[1, 2]\n'))
    assert "line 2: a list, not a JSON object" in msg and "Fix" in msg


def test_broken_json_document_reports_its_own_line(tmp_path):
    # A pretty-printed list with a trailing comma must not be mistaken for JSON lines ("line 1: '['").
    msg = error(write(tmp_path, "a.json", '[\n  {"a": 1},\n  {"a": 2},\n]\n'))
    assert "line 4: invalid JSON" in msg and KEY in msg


def test_json_items_must_be_objects(tmp_path):
    msg = error(write(tmp_path, "a.json", '{"data": [{"a": 1}, "oops"]}'))
    assert "item 1" in msg and "str" in msg and "Fix" in msg
    assert "found a value of type int" in error(write(tmp_path, "b.json", "3"))


# ---- file-level errors --------------------------------------------------------------------------
@pytest.mark.parametrize("setup,expected", [
    (lambda p: p / "missing.csv", "file not found (cwd is "),
    (lambda p: p, "is a directory"),
    (lambda p: write(p, "a.parquet", "x"), "unsupported file type '.parquet'"),
    (lambda p: write(p, "a.csv", "text,label\n\n"), "no data rows, so this split is empty"),
    (lambda p: write(p, "a.jsonl", "\n\n"), "no data rows, so this split is empty"),
    (lambda p: write(p, "a.json", "[]"), "no data rows, so this split is empty"),
    (lambda p: write(p, "a.csv", b"text\n\xff\xfe\n"), "not UTF-8"),
])
def test_file_level_errors(tmp_path, setup, expected):
    msg = error(setup(tmp_path))
    assert expected in msg and msg.startswith(f"{KEY}=") and "Fix:" in msg


def test_bad_extension_lists_supported_ones(tmp_path):
    msg = error(write(tmp_path, "a.txt", "x"))
    assert all(ext in msg for ext in (".csv", ".tsv", ".json", ".jsonl", ".ndjson"))


# ---- require_columns ----------------------------------------------------------------------------
def test_require_columns_lists_every_missing_key_and_the_found_columns():
    rows = [{"sentence": "a", "y": 1}]
    with pytest.raises(UserError) as err:
        require_columns(rows, {"data.text_column": "text", "data.label_column": "label",
                               "data.other": "y"}, "f.csv", KEY)
    msg = str(err.value)
    assert "data.text_column='text'" in msg and "data.label_column='label'" in msg
    assert "data.other" not in msg
    assert "Columns found: sentence, y" in msg
    assert "Fix: set data.text_column=<one of the found columns>" in msg
    assert "data.column_names" in msg  # a CSV without a header row is a likely cause
    require_columns(rows, {"data.text_column": "sentence"}, "f.csv", KEY)  # present: no error


def test_require_columns_reports_the_first_json_row_missing_a_field():
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"txt": "c"}, {"label": 1}]
    with pytest.raises(UserError) as err:
        require_columns(rows, {"data.text_column": "text", "data.label_column": "label"}, "f.jsonl", KEY)
    msg = str(err.value)
    assert "row 2 (counting from 0)" in msg and "data.text_column='text'" in msg
    assert "data.label_column='label'" in msg and "Fix" in msg


# ---- real data ----------------------------------------------------------------------------------
def test_reads_the_real_sst2_train_file_fast():
    path = shared_dataset("sst2", "train.tsv")
    start = time.perf_counter()
    rows = read_records(path, KEY)
    elapsed = time.perf_counter() - start
    assert len(rows) == 67_349 and list(rows[0]) == ["sentence", "label"]
    assert not any(r["sentence"].endswith(" ") for r in rows)
    assert {r["label"] for r in rows} == {"0", "1"}
    assert elapsed < 3.0  # about 0.2 s; generous for slow CI machines
