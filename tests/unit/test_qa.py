"""Extractive QA: windows and their answer labels, reading formats, bad answers, HF parity."""

import json

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForQuestionAnswering

from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.datamodules.qa import QADataModule
from gpt2tasks.errors import UserError
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.qa import QAModule, postprocess_qa, squad_metrics
from tests.conftest import file_datamodule

FILLER = " ".join(f"Sentence number {i} talks about nothing in particular." for i in range(12))
CONTEXT = f"{FILLER} The bridge was designed by Maria Lopez in 1931. {FILLER}"
ANSWER = "Maria Lopez"


def row(i, context=CONTEXT, answer=ANSWER, start=None, question="Who designed the bridge?"):
    start = context.index(answer) if start is None and answer else start
    answers = {"text": [answer], "answer_start": [start]} if answer else {"text": [], "answer_start": []}
    return {"id": f"q{i}", "question": question, "context": context, "answers": answers}


def datamodule(tmp_path, tokenizer, rows, val_rows=None, **spec):
    spec = {"max_length": 48, "doc_stride": 8, "max_question_length": 16, **spec}
    return file_datamodule(QADataModule, tmp_path, tokenizer, rows, val_rows, **spec)


def test_each_window_labels_the_answer_tokens_or_the_summary_token(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer, [row(0)])
    windows = dm.datasets["train"].rows
    assert len(windows) > 3 and all(len(w["input_ids"]) <= 48 for w in windows)
    question = tiny_tokenizer("Who designed the bridge?", add_special_tokens=False)["input_ids"]
    holding = 0
    for w in windows:
        assert w["input_ids"][:len(question)] == question  # the question comes first (causal attention)
        assert w["input_ids"][-1] == tiny_tokenizer.eos_token_id  # the summary token closes every window
        s, e = w["start_positions"], w["end_positions"]
        if s == len(w["input_ids"]) - 1:
            assert e == s  # no answer in this window -> the summary token
            continue
        holding += 1
        assert CONTEXT[w["offset_start"][s]:w["offset_end"][e]] == ANSWER  # exact span via the offsets
        assert tiny_tokenizer.decode(w["input_ids"][s:e + 1]).strip() == ANSWER
    assert holding >= 1
    # consecutive windows share doc_stride context tokens
    starts = [next(o for o in w["offset_start"] if o >= 0) for w in windows]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_gold_logits_give_back_the_exact_answer_strings(tmp_path, tiny_tokenizer):
    rows = [row(0), row(1, answer="1931", question="When?"), row(2, context="Paris is big.", answer="Paris")]
    dm = datamodule(tmp_path, tiny_tokenizer, rows)
    windows = dm.datasets["val"].rows
    width = max(len(w["input_ids"]) for w in windows)
    start = np.full((len(windows), width), -10.0)
    end = np.full((len(windows), width), -10.0)
    for i, w in enumerate(windows):  # confident at the labels, unsure (0) at the summary token
        start[i, w["start_positions"]] = end[i, w["end_positions"]] = 5.0 if w["start_positions"] != len(w["input_ids"]) - 1 else 0.0
    ids, contexts, golds = dm.references("val")
    answers = postprocess_qa(windows, start, end, contexts)
    assert [a.text for a in answers] == [ANSWER, "1931", "Paris"]
    assert all(contexts[i][a.start:a.end] == a.text for i, a in enumerate(answers))
    assert squad_metrics([a.text for a in answers], golds) == {"exact_match": 100.0, "f1": 100.0}


def test_nested_squad_json_is_flattened(tmp_path, tiny_tokenizer):
    nested = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "Paris is big.", "qas": [
        {"id": "a", "question": "What is big?", "answers": [{"text": "Paris", "answer_start": 0},
                                                            {"text": "Paris", "answer_start": 0}]}]}]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(nested))
    dm = QADataModule(DataSpec(train_file=str(path), validation_file=str(path), max_length=48, doc_stride=8,
                               max_question_length=16, cache_dir=str(tmp_path / "c")), tiny_tokenizer)
    dm.setup("fit")
    assert dm.references("val") == (["a"], ["Paris is big."], [["Paris", "Paris"]])


def test_bad_answer_starts_are_counted_and_refused_above_the_threshold(tmp_path, tiny_tokenizer, caplog):
    rows = [row(i) for i in range(20)] + [row(20, start=3)]  # one answer_start off
    with pytest.raises(UserError, match=r"1 of 21 rows .*\(ids \['q20'\]\).*max_bad_answer_fraction=0.01"):
        datamodule(tmp_path, tiny_tokenizer, rows)
    dm = datamodule(tmp_path, tiny_tokenizer, rows, max_bad_answer_fraction=0.1)
    assert "1 of 21 rows" in caplog.text
    bad = [w for w in dm.datasets["train"].rows if w["example"] == 20]
    assert all(w["start_positions"] == len(w["input_ids"]) - 1 for w in bad)  # trained as "no answer"


def test_empty_context_and_too_large_doc_stride_are_refused(tmp_path, tiny_tokenizer):
    with pytest.raises(UserError, match=r"line 2: empty data.context_column"):
        datamodule(tmp_path, tiny_tokenizer, [row(0), {**row(1), "context": "  ", "answers": []}])
    with pytest.raises(UserError, match=r"data.doc_stride=40 must be between 0 and the context tokens"):
        datamodule(tmp_path, tiny_tokenizer, [row(0)], doc_stride=40)


def make_module(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=64, num_labels=2,
                        pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return QAModule(GPT2ForQuestionAnswering(config).eval(), OptimSpec(), EvalSpec(metrics=["f1"])).eval()


def test_loss_equals_the_hf_head_and_logits_are_padding_invariant():
    module = make_module()
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 300, (3, 10), generator=gen)
    ids[0, -1] = 0  # a real eos at the end (the summary token) equals the pad id
    starts, ends = torch.tensor([2, 9, 4]), torch.tensor([5, 9, 4])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "start_positions": starts, "end_positions": ends}
    loss, _ = module.step(batch)
    hf = module.model(input_ids=ids, attention_mask=torch.ones_like(ids), start_positions=starts, end_positions=ends)
    torch.testing.assert_close(loss, hf.loss, rtol=1e-6, atol=1e-6)
    # right-padded with a longer row: the same logits on the real positions, -inf on padding
    longer = torch.randint(1, 300, (1, 17), generator=gen)
    padded = torch.zeros(4, 17, dtype=torch.long)
    padded[:3, :10], padded[3] = ids, longer
    mask = torch.zeros_like(padded)
    mask[:3, :10], mask[3] = 1, 1
    start_p, end_p = module({"input_ids": padded, "attention_mask": mask})
    start_a, end_a = module({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    torch.testing.assert_close(start_p[:3, :10], start_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(end_p[:3, :10], end_a, rtol=0, atol=1e-5)
    assert torch.isinf(start_p[:3, 10:]).all()


def test_answer_lists_of_different_lengths_and_windows_without_context_room_are_refused(tmp_path, tiny_tokenizer):
    uneven = {**row(1), "answers": {"text": [ANSWER], "answer_start": []}}
    with pytest.raises(UserError, match=r"1 rows have data.answers_column='answers' whose text and answer_start "
                                        r"lists differ.*line 2\b"):
        datamodule(tmp_path, tiny_tokenizer, [row(0), uneven])
    with pytest.raises(UserError, match=r"data.max_length=20 leaves 2 context tokens per window.*Fix: data.max_length=82"):
        datamodule(tmp_path, tiny_tokenizer, [row(0)], max_length=20)


def test_a_training_split_without_any_answer_is_refused(tmp_path, tiny_tokenizer):
    with pytest.raises(UserError, match=r"none of the 2 rows has an answer in data.answers_column='answers'"):
        datamodule(tmp_path, tiny_tokenizer, [row(0, answer=None), row(1, answer=None)], val_rows=[row(2)])
    datamodule(tmp_path, tiny_tokenizer, [row(0), row(1, answer=None)])  # some unanswerable rows: fine (SQuAD 2.0)
