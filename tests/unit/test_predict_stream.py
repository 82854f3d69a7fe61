"""`predict` over files of any length: rows read one at a time, a chunk in memory at a time (memory
measured with tracemalloc on files of 10x the rows, not timed), in-memory tokenization equal to the
cached one, and the progress lines."""

import io
import json
import logging
import tracemalloc

import pytest

from gpt2tasks import predict as predict_module
from gpt2tasks.datamodules.base import PREDICT, RawSplit, chunked
from gpt2tasks.datamodules.files import iter_records, read_records, require_columns
from gpt2tasks.datamodules.mc import MultipleChoiceDataModule
from gpt2tasks.datamodules.qa import QADataModule
from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
from gpt2tasks.datamodules.token_cls import TokenClsDataModule
from gpt2tasks.errors import UserError
from gpt2tasks.predict import Progress, duration
from tests.conftest import file_datamodule
from tests.unit.test_mc import ROWS as MC_ROWS
from tests.unit.test_qa import row as qa_row
from tests.unit.test_token_cls import SENTENCES

KEY = "input"


def review(i: int) -> dict:
    """A sample_sentiment-like row; a comma and a quote in every one, a line break in some."""
    text = f'the "film" number {i}, seen twice' + ("\non a rainy day" if i % 7 == 0 else "")
    return {"text": text, "label": "positive" if i % 2 else "negative"}


def write_rows(path, n: int):
    """`n` rows in the format of `path`'s suffix, generated (the file is never held whole here)."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        f.write("" if path.suffix == ".jsonl" else "text\tlabel\n" if path.suffix == ".tsv" else "text,label\n")
        for row in map(review, range(n)):
            if path.suffix == ".jsonl":
                f.write(json.dumps(row) + "\n")
            elif path.suffix == ".tsv":  # never quoted: no line breaks in a field
                f.write(f"{row['text'].replace(chr(10), ' ')}\t{row['label']}\n")
            else:
                writer.writerow([row["text"], row["label"]])
    return path


def peak_bytes(consume) -> int:
    tracemalloc.start()
    try:
        consume()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_streamed_rows_equal_the_whole_file_and_memory_does_not_grow_with_it(tmp_path, suffix):
    small, large = write_rows(tmp_path / f"small{suffix}", 1_000), write_rows(tmp_path / f"large{suffix}", 10_000)
    streamed = list(iter_records(small, KEY))
    rows, lines = read_records(small, KEY, with_lines=True)
    assert [r for r, _ in streamed] == rows and [n for _, n in streamed] == lines
    assert rows[7] == review(7) if suffix != ".tsv" else rows[7]["text"] == review(7)["text"].replace("\n", " ")

    def stream(path):
        def consume():
            seen = 0
            for chunk, _ in chunked(iter_records(path, KEY), 200):  # predict's reading, 200 rows a chunk
                seen += len(chunk)
            assert seen == (1_000 if path is small else 10_000)
        return consume

    # 10x the rows: the same peak (one chunk), where reading the file whole takes ~10x.
    streamed_small, streamed_large = peak_bytes(stream(small)), peak_bytes(stream(large))
    whole_large = peak_bytes(lambda: read_records(large, KEY))
    assert streamed_large < 1.5 * streamed_small, (streamed_small, streamed_large)
    assert whole_large > 5 * streamed_large, (whole_large, streamed_large)


def test_predict_chunks_tokenize_one_chunk_at_a_time_in_flat_memory(tmp_path, tiny_tokenizer):
    dm = file_datamodule(SeqClsDataModule, tmp_path, tiny_tokenizer, [review(i) for i in range(8)])
    cache = sorted((tmp_path / "cache").rglob("*.arrow"))
    small, large = write_rows(tmp_path / "small.csv", 1_000), write_rows(tmp_path / "large.csv", 10_000)

    def run(path, n):
        def consume():
            firsts = []
            for first in dm.predict_chunks(str(path), 400):
                rows = dm.datasets[PREDICT].rows
                assert len(rows) == len(dm.examples[PREDICT]) == min(400, n - first)
                assert [r["idx"] for r in rows] == list(range(len(rows)))
                firsts.append(first)
            assert firsts == list(range(0, n, 400))
        return consume

    small_peak = peak_bytes(run(small, 1_000))
    assert peak_bytes(run(large, 10_000)) < 1.5 * small_peak
    # the last chunk is what the datamodule holds: rows 9600..9999, tokenized
    assert dm.examples[PREDICT][-1] == {"text": review(9_999)["text"], "label": "positive"}
    assert sorted((tmp_path / "cache").rglob("*.arrow")) == cache  # nothing added to the tokenization cache


def test_the_reading_pass_counts_rows_and_refuses_an_empty_file_before_any_work(tmp_path, tiny_tokenizer):
    dm = file_datamodule(SeqClsDataModule, tmp_path, tiny_tokenizer, [review(i) for i in range(8)])
    assert dm.count_predict_rows(str(write_rows(tmp_path / "rows.jsonl", 25_001))) == 25_001  # 3 reading chunks
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(UserError, match="empty.csv: the file has no rows to predict"):
        dm.count_predict_rows(str(tmp_path / "empty.csv"))


@pytest.mark.parametrize("kind", ["seq_cls", "token_cls", "qa", "mc"])
def test_in_memory_tokenization_equals_the_cached_one(tmp_path, tiny_tokenizer, kind):
    cls, rows, spec = {
        "seq_cls": (SeqClsDataModule, [review(i) for i in range(6)], {}),
        "token_cls": (TokenClsDataModule, SENTENCES, {"max_length": 4}),  # windows
        "qa": (QADataModule, [qa_row(i) for i in range(3)], {"max_length": 48, "doc_stride": 8, "max_question_length": 16}),
        "mc": (MultipleChoiceDataModule, MC_ROWS, {}),
    }[kind]
    dm = file_datamodule(cls, tmp_path, tiny_tokenizer, rows, **spec)
    part = RawSplit(rows, "x", KEY, "x")
    columns = dm.encode_rows(rows, part)
    assert dm._tokenize_rows(dm.tokenize_batch, columns, 2) == dm.datasets["train"].rows  # batches of 2: the same


def test_a_row_missing_a_column_is_named_by_its_row_in_the_file(tmp_path):
    with pytest.raises(UserError, match=r"row 102 \(counting from 0\) has no field for data.text_column='text'"):
        require_columns([{"text": "a"}, {"text": "b"}, {"other": "c"}], {"data.text_column": "text"}, "f.json", KEY,
                        first=100)
    assert RawSplit([{}], "x", KEY, "f.json", first=100).locate(2) == "row 102 (counting from 0)"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_progress_is_a_log_line_every_n_seconds_when_not_a_terminal(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(predict_module.time, "monotonic", clock)
    progress = Progress(1_000, every=30, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="gpt2tasks"):
        for done, now in [(100, 1010), (200, 1020), (400, 1040), (500, 1050), (900, 1090), (1_000, 1100)]:
            clock.now = now
            progress.update(done)
    assert [r.getMessage() for r in caplog.records] == [
        "predict: 400/1,000 rows (40%), 10 rows/s, ETA 1m00s",   # 30 s after the start
        "predict: 900/1,000 rows (90%), 10 rows/s, ETA 10s",     # 30 s after that
        "predict: 1,000/1,000 rows (100%), 10 rows/s, ETA 0s"]   # and the end
    caplog.clear()
    silent = Progress(10, every=0, stream=io.StringIO())
    silent.update(10)
    assert not caplog.records


def test_progress_redraws_one_line_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clock, stream = Clock(), Terminal()
    monkeypatch.setattr(predict_module.time, "monotonic", clock)
    progress = Progress(20, every=30, stream=stream)
    for done in (10, 20):
        clock.now += 2
        progress.update(done)
    assert stream.getvalue() == ("\rpredict: 10/20 rows (50%), 5 rows/s, ETA 2s"
                                 "\rpredict: 20/20 rows (100%), 5 rows/s, ETA 0s\n")


def test_duration():
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3600, 7_620, float("inf"))] == [
        "0s", "59s", "1m01s", "59m59s", "1h00m", "2h07m", "?"]
