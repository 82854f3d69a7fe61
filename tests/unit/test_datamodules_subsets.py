"""Which rows a run uses: data.max_*_samples with data.sample_strategy (first N, or N drawn with
data.sample_seed), and data.validation_fraction's hold-out kept whole per group (QA: per context,
SQuAD presets: per article)."""

import random

import pytest

from gpt2tasks import runfile
from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.datamodules.qa import QADataModule
from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
from gpt2tasks.errors import UserError
from tests.conftest import compose, file_datamodule, write_jsonl

ROWS = [{"text": f"row {i:02d}", "label": "pos" if i % 2 else "neg"} for i in range(40)]


def subset(folder, tokenizer, **spec) -> SeqClsDataModule:
    """A datamodule over ROWS (train and validation) in its own folder and cache."""
    folder.mkdir(parents=True, exist_ok=True)
    return file_datamodule(SeqClsDataModule, folder, tokenizer, ROWS, **spec)


def texts(dm, split: str = "train") -> list[str]:
    return [r["text"] for r in dm.examples[split]]


def test_random_subset_is_the_seeded_draw_in_file_order_on_every_rank(tmp_path, tiny_tokenizer):
    spec = {"max_train_samples": 10, "sample_strategy": "random", "sample_seed": 3}
    dm = subset(tmp_path, tiny_tokenizer, **spec)
    expected = sorted(random.Random(3).sample(range(40), 10))
    assert texts(dm) == [f"row {i:02d}" for i in expected]
    # another process (a DDP rank, or the same config run again) reads the same rows
    again = subset(tmp_path / "rank1", tiny_tokenizer, **spec)
    assert texts(again) == texts(dm)
    # the tokenized rows are those rows, not a cache entry of another subset of the same file
    assert [r["input_ids"] for r in dm.datasets["train"].rows] == \
        [tiny_tokenizer(t)["input_ids"] for t in texts(dm)]
    assert dm.rows_in_source["train"] == 40 and dm.describe().endswith("train 10, val 40")


def test_other_seed_other_rows_and_first_stays_the_default(tmp_path, tiny_tokenizer):
    seeded = [texts(subset(tmp_path / str(seed), tiny_tokenizer, max_train_samples=10, sample_strategy="random",
                           sample_seed=seed)) for seed in (0, 1)]
    assert seeded[0] != seeded[1]
    first = subset(tmp_path / "first", tiny_tokenizer, max_train_samples=10)
    assert texts(first) == [f"row {i:02d}" for i in range(10)]
    # the same file and cache: the random draw is tokenized apart from the first rows
    cached = subset(tmp_path / "first", tiny_tokenizer, max_train_samples=10, sample_strategy="random", sample_seed=0)
    assert texts(cached) == seeded[0]
    assert [r["input_ids"] for r in cached.datasets["train"].rows] == [tiny_tokenizer(t)["input_ids"] for t in seeded[0]]


def test_eval_sets_are_drawn_the_same_way(tmp_path, tiny_tokenizer):
    dm = subset(tmp_path, tiny_tokenizer, max_eval_samples=5, sample_strategy="random", sample_seed=7)
    assert texts(dm, "val") == [f"row {i:02d}" for i in sorted(random.Random(7).sample(range(40), 5))]
    assert dm.scored_rows() == {"val": (5, 40)}


def test_resume_refuses_another_subset():
    from omegaconf import OmegaConf

    started = OmegaConf.to_container(compose("data.max_train_samples=100"), resolve=True)
    for override in ("data.sample_strategy=random", "data.sample_seed=1"):
        with pytest.raises(UserError, match=rf"{override.split('=')[0]}: the run has .* Fix: drop {override.split('=')[0]}="):
            runfile.resume_changes(started, compose("data.max_train_samples=100", override))


def qa_row(i: int, context: str, title: str) -> dict:
    return {"id": f"q{i}", "title": title, "question": f"Where is item {i}?", "context": context,
            "answers": {"text": ["here"], "answer_start": [context.index("here")]}}


# 6 articles of 3 paragraphs of 2 questions each: 36 questions
QA_ROWS = [qa_row(6 * a + 2 * p + q, f"Article {a} paragraph {p} says it is here, among other words.", f"article {a}")
           for a in range(6) for p in range(3) for q in range(2)]


def held_out(tmp_path, tokenizer, rows=QA_ROWS, **spec):
    tmp_path.mkdir(parents=True, exist_ok=True)
    dm = QADataModule(DataSpec(train_file=write_jsonl(tmp_path / "train.jsonl", rows), validation_fraction=0.25,
                               cache_dir=str(tmp_path / "cache"), max_length=48, doc_stride=8, max_question_length=16,
                               **spec), tokenizer)
    dm.setup("fit")
    return dm.examples["train"], dm.examples["val"]


def test_qa_hold_out_keeps_each_context_on_one_side(tmp_path, tiny_tokenizer):
    train, val = held_out(tmp_path, tiny_tokenizer)
    assert len(train) + len(val) == 36 and len(val) == 10  # whole paragraphs of 2 until 25% (9) is reached
    assert not {r["context"] for r in train} & {r["context"] for r in val}
    assert {r["title"] for r in train} & {r["title"] for r in val}  # paragraphs of one article on both sides


def test_squad_hold_out_by_article(tmp_path, tiny_tokenizer):
    train, val = held_out(tmp_path, tiny_tokenizer, validation_group_column="title")
    assert len(val) == 12  # 2 whole articles of 6 questions: the fewest reaching 25% (9)
    assert not {r["title"] for r in train} & {r["title"] for r in val}
    assert compose("task=squad").data.validation_group_column == "title"
    assert compose("task=squad_v2").data.validation_group_column == "title"


def test_hold_out_needs_two_groups_and_the_column(tmp_path, tiny_tokenizer):
    rows = [{**r, "title": "one"} for r in QA_ROWS]
    with pytest.raises(UserError, match="are one group .* Fix: pass data.validation_file"):
        held_out(tmp_path, tiny_tokenizer, rows, validation_group_column="title")
    with pytest.raises(UserError, match="has no column for data.validation_group_column='article'"):
        held_out(tmp_path / "b", tiny_tokenizer, validation_group_column="article")


def test_rows_alone_keep_the_former_hold_out(tmp_path, tiny_tokenizer):
    # without groups, the held-out rows are those the former hold-out chose (seeded shuffle, first share)
    dm = SeqClsDataModule(DataSpec(train_file=write_jsonl(tmp_path / "train.jsonl", ROWS), validation_fraction=0.2,
                                   cache_dir=str(tmp_path / "cache")), tiny_tokenizer, seed=5)
    dm.setup("fit")
    order = list(range(40))
    random.Random(5).shuffle(order)
    assert texts(dm, "val") == [f"row {i:02d}" for i in sorted(order[:8])]
    assert texts(dm) == [f"row {i:02d}" for i in sorted(order[8:])]


def test_errors_name_the_rows_of_the_source_not_of_the_subset(tmp_path, tiny_tokenizer):
    # a nested SQuAD JSON has no lines: rows are named by their number in the file, also after a draw
    import json

    paragraphs = [{"context": f"Paragraph {i} says it is here.",
                   "qas": [{"id": f"q{i}", "question": "Where is it?", "answers": [{"text": "here", "answer_start": 20}]}]}
                  for i in range(30)]
    paragraphs[18]["context"] = ""  # refused by encode_rows, which sees the drawn rows only
    (tmp_path / "train.json").write_text(json.dumps({"data": [{"title": "article", "paragraphs": paragraphs}]}))
    dm = QADataModule(DataSpec(train_file=str(tmp_path / "train.json"), validation_file=str(tmp_path / "train.json"),
                               cache_dir=str(tmp_path / "cache"), max_length=48, doc_stride=8, max_question_length=16,
                               max_train_samples=12, sample_strategy="random", sample_seed=1), tiny_tokenizer)
    drawn = sorted(random.Random(1).sample(range(30), 12))
    assert 18 in drawn and drawn.index(18) != 18
    with pytest.raises(UserError, match=r"data.train_file=.*, row 18 \(counting from 0\): empty data.context_column"):
        dm.setup("fit")
