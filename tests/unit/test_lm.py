"""Language modelling: packing, windows, masked loss, HF-head parity, exact perplexity, bad input."""

import logging
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.datamodules.batching import Collator
from gpt2tasks.datamodules.lm import LanguageModelingDataModule, check_block_size
from gpt2tasks.errors import UserError
from gpt2tasks.tasks.base import EvalSpec, OptimSpec, gather_by_idx
from gpt2tasks.tasks.lm import LanguageModelingModule, corpus_metrics, unigram_perplexity

# Different lengths, a blank line, a whitespace-only line, and a real eos inside a document.
DOCS = ["the movie was great and the cast was charming .",
        "",
        "a short one .",
        "   ",
        "first part <|endoftext|> second part of the same document , which goes on for a while longer .",
        "the plot was dull ."]


def datamodule(tmp_path, tokenizer, lines=DOCS, **spec):
    path, text = tmp_path / "train.txt", "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:  # same file (size, mtime) for the cache tests
        path.write_text(text)
    dm = LanguageModelingDataModule(DataSpec(train_file=str(path), validation_file=str(path),
                                             cache_dir=str(tmp_path / "cache"), **spec), tokenizer)
    dm.setup("fit")
    return dm


def documents(tokenizer, lines=DOCS):
    """(document number, tokens + eos) of each non-empty line: blank lines are no documents."""
    return list(enumerate(tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in lines if t.strip()))


def test_packing_covers_every_token_exactly_once(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer, block_size=8)
    blocks = dm.datasets["train"].rows
    docs = documents(tiny_tokenizer)
    stream = [t for _, d in docs for t in d]
    assert [t for b in blocks for t in b["input_ids"]] == stream  # in order, none lost or repeated
    assert [len(b["input_ids"]) for b in blocks[:-1]] == [8] * (len(blocks) - 1)
    assert 1 <= len(blocks[-1]["input_ids"]) <= 8 and len(stream) % 8 != 0  # the short last block is kept
    # `example` = the document a block starts in; idx = the block's own number
    starts = [i for i, d in docs for _ in d]
    assert [b["example"] for b in blocks] == [starts[8 * k] for k in range(len(blocks))]
    assert [b["idx"] for b in blocks] == list(range(len(blocks)))
    assert tiny_tokenizer.eos_token_id in docs[2][1][:-1]  # the document's own eos is a real token


def test_unpacked_rows_are_documents_split_into_windows(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer, block_size=8, packing=False)
    rows = dm.datasets["train"].rows
    for example, doc in documents(tiny_tokenizer):
        windows = [r["input_ids"] for r in rows if r["example"] == example]
        assert [t for w in windows for t in w] == doc and all(len(w) <= 8 for w in windows)
    assert dm.map_batch_size == 1000 and datamodule(tmp_path, tiny_tokenizer).map_batch_size is None


def test_whole_file_and_jsonl_text_column(tmp_path, tiny_tokenizer):
    datamodule(tmp_path, tiny_tokenizer, block_size=1024)  # line by line first, into the same cache
    dm = datamodule(tmp_path, tiny_tokenizer, line_by_line=False, block_size=1024)
    text = "\n".join(DOCS) + "\n"
    assert dm.datasets["train"].rows[0]["input_ids"] == tiny_tokenizer(text)["input_ids"] + [tiny_tokenizer.eos_token_id]
    path = tmp_path / "docs.jsonl"
    path.write_text('{"body": "one doc ."}\n{"body": "two docs ."}\n')
    dm = LanguageModelingDataModule(DataSpec(train_file=str(path), validation_file=str(path), text_column="body",
                                             cache_dir=str(tmp_path / "c2")), tiny_tokenizer)
    dm.setup("fit")
    assert dm.datasets["train"].rows[0]["input_ids"] == [t for _, d in documents(tiny_tokenizer, ["one doc .", "two docs ."])
                                                         for t in d]


def make_module(vocab_size, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=vocab_size, pad_token_id=0,
                        eos_token_id=0, bos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return LanguageModelingModule(GPT2LMHeadModel(config).eval(), OptimSpec(), EvalSpec(metrics=["perplexity"])).eval()


def test_padding_is_masked_by_attention_not_by_token_id(tmp_path, tiny_tokenizer):
    assert tiny_tokenizer.pad_token_id == tiny_tokenizer.eos_token_id  # pad = eos: the trap
    dm = datamodule(tmp_path, tiny_tokenizer, block_size=64, packing=False)
    rows = dm.datasets["train"].rows
    assert len({len(r["input_ids"]) for r in rows}) == len(rows)  # all lengths differ: real padding
    module = make_module(len(tiny_tokenizer))
    collate = Collator(tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        _, together = module.step(collate(rows))
        for i, row in enumerate(rows):
            _, alone = module.step(collate([row]))
            assert together["tokens"][i] == alone["tokens"][0] == len(row["input_ids"]) - 1  # every eos counts
            torch.testing.assert_close(together["nll"][i], alone["nll"][0], rtol=1e-5, atol=1e-5)


def test_loss_equals_the_hf_head_on_an_unpadded_batch(tiny_tokenizer):
    module = make_module(len(tiny_tokenizer), seed=1)
    input_ids = torch.randint(0, len(tiny_tokenizer), (3, 17))
    input_ids[1, 5] = tiny_tokenizer.eos_token_id
    with torch.no_grad():
        loss, out = module.step({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})
        hf = module.model(input_ids=input_ids, labels=input_ids).loss
    torch.testing.assert_close(loss, hf)
    assert out["tokens"].tolist() == [16, 16, 16]
    torch.testing.assert_close(out["nll"].sum() / 48, hf)


def test_perplexity_is_exact_over_the_split_not_a_mean_of_batches():
    # Two "batches" from two ranks, out of idx order, one example seen twice (DDP duplicate).
    parts = [{"idx": torch.tensor([2, 0]), "nll": torch.tensor([30.0, 2.0]), "tokens": torch.tensor([10, 1]),
              "loss": torch.tensor([3.0, 2.0])},
             {"idx": torch.tensor([1, 2]), "nll": torch.tensor([4.0, 30.0]), "tokens": torch.tensor([4, 10]),
              "loss": torch.tensor([1.0, 3.0])}]
    metrics = corpus_metrics(**{k: v for k, v in gather_by_idx(parts).items() if k in ("nll", "tokens")})
    assert metrics["loss"] == pytest.approx(36.0 / 15)
    assert metrics["perplexity"] == pytest.approx(math.exp(36.0 / 15))
    assert metrics["perplexity"] != pytest.approx(np.mean([math.exp(32 / 11), math.exp(34 / 14)]))
    assert corpus_metrics(np.array([1e6]), np.array([1]))["perplexity"] == math.inf  # no overflow error


def test_unigram_perplexity_by_hand():
    # counts {1: 3, 2: 1} + add-one over a vocabulary of 4 -> p(1) = 4/8, p(2) = 2/8, p(3) = 1/8
    assert unigram_perplexity([1, 1, 1, 2], [1, 2, 3], vocab_size=4) == pytest.approx((2 * 4 * 8) ** (1 / 3))


def test_bad_input_messages(tmp_path, tiny_tokenizer, caplog):
    with pytest.raises(UserError, match=r"data.block_size=2048 .*n_positions=1024.*Fix: e.g. data.block_size=1024"):
        check_block_size(2048, 1024)
    with pytest.raises(UserError, match=r"data.block_size=1 must be an integer from 2"):
        check_block_size(1, 1024)
    with pytest.raises(UserError, match=r"data.train_file=.*all 3 documents are empty.*Fix: point data.train_file"):
        datamodule(tmp_path, tiny_tokenizer, lines=["", "  ", ""])
    with caplog.at_level(logging.WARNING, logger="gpt2tasks.datamodules.lm"):
        datamodule(tmp_path, tiny_tokenizer)
    assert "skipped 2 of 6 documents that are empty" in caplog.text
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": ["a", "list"]}\n')
    dm = LanguageModelingDataModule(DataSpec(train_file=str(path), validation_file=str(path)), tiny_tokenizer)
    with pytest.raises(UserError, match=r"line 1: data.text_column='text' holds a list, not text"):
        dm.setup("fit")


def test_max_samples_count_documents_not_blank_lines(tmp_path, tiny_tokenizer):
    # DOCS' second and fourth lines are blank: the first 2 documents are lines 1 and 3, the first 3
    # add line 5, whatever the blank lines between them.
    dm = datamodule(tmp_path, tiny_tokenizer, block_size=1024, max_train_samples=2, max_eval_samples=3)
    docs = [d for _, d in documents(tiny_tokenizer)]
    assert [len(dm.examples[s]) for s in ("train", "val")] == [2, 3]
    assert dm.datasets["train"].rows[0]["input_ids"] == docs[0] + docs[1]
    assert dm.datasets["val"].rows[0]["input_ids"] == docs[0] + docs[1] + docs[2]
    assert dm.rows_in_source["val"] == 4  # documents in the file, for "scored val: 3 of 4 rows"
    # the same for a JSONL text column: a row with empty text is no document either
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": ""}\n{"text": "one doc ."}\n{"text": null}\n{"text": "two docs ."}\n{"text": "three ."}\n')
    dm = LanguageModelingDataModule(DataSpec(train_file=str(path), validation_file=str(path), max_train_samples=2,
                                             cache_dir=str(tmp_path / "c3")), tiny_tokenizer)
    dm.setup("fit")
    assert [r["text"] for r in dm.examples["train"]] == ["one doc .", "two docs ."]


def test_validation_is_cut_to_max_val_tokens_and_test_is_scored_whole(tmp_path, tiny_tokenizer):
    from gpt2tasks.evaluation import describe_rows, scored_rows

    path = tmp_path / "train.txt"
    path.write_text("\n".join(DOCS) + "\n")
    stream = sum(len(d) for _, d in documents(tiny_tokenizer))

    def setup(**spec):
        dm = LanguageModelingDataModule(DataSpec(train_file=str(path), validation_file=str(path), test_file=str(path),
                                                 block_size=8, cache_dir=str(tmp_path / "cache"), **spec), tiny_tokenizer)
        dm.setup("fit")
        return dm

    dm = setup(max_val_tokens=20)  # blocks of 8: the first two (16 tokens) fit, a third would make 24
    assert [len(r["input_ids"]) for r in dm.datasets["val"].rows] == [8, 8]
    assert sum(len(r["input_ids"]) for r in dm.datasets["test"].rows) == stream  # test: every token
    assert dm.datasets["train"].rows == setup().datasets["train"].rows  # training untouched
    dm.setup("fit")  # Lightning calls setup again: the cut stays the same
    assert len(dm.datasets["val"].rows) == 2
    # documents scored (the second block ends inside document 1), and the line that says why
    assert len(dm.examples["val"]) == dm.datasets["val"].rows[-1]["example"] + 1 < len(dm.examples["test"])
    assert f"(data.max_val_tokens=20: 16 of {stream} tokens)" in describe_rows(scored_rows(dm))
    assert len(setup(max_val_tokens=4).datasets["val"].rows) == 1  # at least one block
    whole = setup(max_val_tokens=20, whole_eval_sets=("val",))  # `eval` with a validation file on its command line
    assert sum(len(r["input_ids"]) for r in whole.datasets["val"].rows) == stream


def test_block_size_is_checked_before_any_data_is_read(cfg_factory, tmp_path):
    from gpt2tasks.train import train

    with pytest.raises(UserError, match=r"data.block_size=2048 must be .* n_positions=1024"):
        train(cfg_factory("task=sample_lm", "data.block_size=2048", output_dir=tmp_path / "big"))
    with pytest.raises(UserError, match=r"data.block_size=1 must be an integer >= 2"):
        train(cfg_factory("task=sample_lm", "data.block_size=1", output_dir=tmp_path / "small"))
    with pytest.raises(UserError, match=r"data.max_val_tokens=0 must be a positive number of tokens, or null"):
        train(cfg_factory("task=sample_lm", "data.max_val_tokens=0", output_dir=tmp_path / "none"))
    assert not any((tmp_path / name).exists() for name in ("big", "small", "none"))


def test_line_by_line_is_part_of_the_cache_key(tmp_path, tiny_tokenizer):
    # One line: both modes read one row from the same file, but whole-file mode keeps the newline.
    by_line = datamodule(tmp_path, tiny_tokenizer, lines=["one line ."]).datasets["train"].rows
    whole = datamodule(tmp_path, tiny_tokenizer, lines=["one line ."], line_by_line=False).datasets["train"].rows
    assert whole[0]["input_ids"] == tiny_tokenizer("one line .\n")["input_ids"] + [tiny_tokenizer.eos_token_id]
    assert by_line[0]["input_ids"] != whole[0]["input_ids"]


def test_sample_options_are_checked():
    problems = LanguageModelingModule.check_options({"sample_prompts": "The", "sample_max_new_tokens": 0,
                                                     "sample_top_p": 1.5})
    assert [p.split("=")[0] for p in problems] == ["task.sample_prompts", "task.sample_max_new_tokens",
                                                   "task.sample_top_p"]
    assert LanguageModelingModule.check_options(LanguageModelingModule.eval_options) == []
