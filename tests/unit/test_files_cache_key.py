"""The tokenization cache is keyed by what a data file holds, not by its path, size or mtime."""

import logging
import os

from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.datamodules.files import content_digest
from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
from tests.conftest import write_jsonl

ROWS = [{"text": f"row {i:02d}", "label": "pos" if i % 2 else "neg"} for i in range(12)]


def _setup(tmp_path, tokenizer) -> SeqClsDataModule:
    dm = SeqClsDataModule(DataSpec(train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "val.jsonl"),
                                   cache_dir=str(tmp_path / "cache")), tokenizer)
    dm.setup("fit")
    return dm


def _labels(dm) -> list[int]:
    return [row["labels"] for row in dm.datasets["train"].rows]


def test_same_size_edit_with_the_mtime_kept_is_tokenized_again(tmp_path, tiny_tokenizer, caplog):
    train = tmp_path / "train.jsonl"
    write_jsonl(train, ROWS)
    write_jsonl(tmp_path / "val.jsonl", ROWS)
    first = _setup(tmp_path, tiny_tokenizer)
    assert _labels(first) == [1 if r["label"] == "pos" else 0 for r in ROWS]
    with caplog.at_level(logging.INFO, logger="gpt2tasks.datamodules.base"):
        again = _setup(tmp_path, tiny_tokenizer)
    assert _labels(again) == _labels(first)
    assert f"tokenized cache reused for {train} (train-" in caplog.text  # the log says so, with the key

    # What `cp -p` / `rsync -a` of an edited file leave: the same size and mtime, other labels
    stat = os.stat(train)
    write_jsonl(train, [{**r, "label": "neg" if r["label"] == "pos" else "pos"} for r in ROWS])
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(train).st_size, os.stat(train).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gpt2tasks.datamodules.base"):
        edited = _setup(tmp_path, tiny_tokenizer)
    assert _labels(edited) == [1 - label for label in _labels(first)]  # the new labels, not the cached ones
    assert f"tokenized cache reused for {train}" not in caplog.text
    assert f"tokenized cache reused for {tmp_path / 'val.jsonl'}" in caplog.text  # the unchanged file still is
    assert edited.file_digests["data.train_file"] == (str(train), content_digest(train))


def test_content_digest_depends_on_the_bytes_only(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "sub_b.csv", tmp_path / "c.csv"
    a.write_bytes(b"text,label\nx,1\n")
    b.write_bytes(b"text,label\nx,1\n")
    c.write_bytes(b"text,label\nx,0\n")
    assert content_digest(a) == content_digest(b) != content_digest(c)
    assert len(content_digest(a)) == 32
