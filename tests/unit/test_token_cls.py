"""Token classification: word/sub-token alignment, windows, word-level predictions, HF parity."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2ForTokenClassification

from gpt2tasks.datamodules.files import read_conll
from gpt2tasks.datamodules.token_cls import TokenClsDataModule
from gpt2tasks.errors import UserError
from gpt2tasks.resources import BUNDLED_TOKENIZER
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.token_cls import TokenClsModule, words_by_example
from tests.conftest import file_datamodule

SENTENCES = [
    {"tokens": ["Anna", "Keller", "visited", "Oslo", "."], "ner_tags": ["B-PER", "I-PER", "O", "B-LOC", "O"]},
    {"tokens": ["Zurich", "Insurance", "hired", "Bob"], "ner_tags": ["B-ORG", "I-ORG", "O", "B-PER"]},
]


def datamodule(tmp_path, tokenizer, rows=SENTENCES, val_rows=None, **spec):
    return file_datamodule(TokenClsDataModule, tmp_path, tokenizer, rows, val_rows, **spec)


def test_first_sub_token_carries_the_label_like_hf_split_words(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer)
    names = dm.label_space.names
    assert names == ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]  # "O" first, then by type
    hf = AutoTokenizer.from_pretrained(BUNDLED_TOKENIZER, add_prefix_space=True)
    for row, sentence in zip(dm.datasets["train"].rows, SENTENCES):
        enc = hf(sentence["tokens"], is_split_into_words=True, add_special_tokens=False)
        assert row["input_ids"] == enc["input_ids"]  # same tokens as HF's add_prefix_space + split words
        assert row["word_ids"] == enc.word_ids()
        expected, previous = [], None
        for w in enc.word_ids():
            expected.append(names.index(sentence["ner_tags"][w]) if w != previous else -100)
            previous = w
        assert row["labels"] == expected
        assert sum(label != -100 for label in row["labels"]) == len(sentence["tokens"])


def test_label_all_tokens_turns_b_into_i_after_the_first_sub_token(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer, label_all_tokens=True)
    names = dm.label_space.names
    row = dm.datasets["train"].rows[0]
    anna = [label for label, w in zip(row["labels"], row["word_ids"]) if w == 0]
    assert len(anna) > 1  # "Anna" is several sub-tokens with the tiny tokenizer
    assert anna == [names.index("B-PER")] + [names.index("I-PER")] * (len(anna) - 1)


def test_long_sentences_are_split_into_windows_between_words(tmp_path, tiny_tokenizer):
    words = [f"word{i}" for i in range(40)]
    rows = [{"tokens": words, "ner_tags": ["O"] * 40}]
    dm = datamodule(tmp_path, tiny_tokenizer, rows=rows, max_length=16)
    windows = dm.datasets["train"].rows
    assert len(windows) > 2 and all(len(w["input_ids"]) <= 16 for w in windows)
    assert {w["example"] for w in windows} == {0}
    seen = [wid for w in windows for wid in dict.fromkeys(w["word_ids"])]
    assert seen == list(range(40))  # every word exactly once, in order
    # words_by_example puts the sentence back together from its windows
    width = max(len(w["word_ids"]) for w in windows)
    pad = lambda seq, v: seq + [v] * (width - len(seq))  # noqa: E731
    word_ids = np.array([pad(w["word_ids"], -1) for w in windows])
    values = np.array([pad([100 + x for x in w["word_ids"]], -100) for w in windows])
    assert words_by_example(np.zeros(len(windows), int), word_ids, values) == {0: [100 + i for i in range(40)]}


def test_tag_errors_name_the_line_and_the_fix(tmp_path, tiny_tokenizer):
    bad = SENTENCES + [{"tokens": ["a", "b"], "ner_tags": ["O"]}]
    with pytest.raises(UserError, match=r"line 3: 2 words but 1 tags"):
        datamodule(tmp_path, tiny_tokenizer, rows=bad)
    unseen = [{"tokens": ["x"], "ner_tags": ["B-DATE"]}]
    with pytest.raises(UserError, match=r"data.validation_file=.*\['B-DATE'\] are not in the tag list"):
        datamodule(tmp_path, tiny_tokenizer, val_rows=unseen)


def test_conll_reader_skips_docstart_and_splits_on_blank_lines(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\n\n"
                    "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n")
    rows, lines = read_conll(path, "data.train_file", "tokens", "ner_tags")
    assert rows == [{"tokens": ["EU", "rejects"], "ner_tags": ["I-ORG", "O"]},
                    {"tokens": ["Peter", "Blackburn"], "ner_tags": ["I-PER", "I-PER"]}]
    assert lines == [3, 7]
    rows, _ = read_conll(path, "data.train_file", "tokens", "chunk", tag_index=2)
    assert rows[0]["chunk"] == ["I-NP", "I-VP"]
    (tmp_path / "bad.conll").write_text("EU I-ORG\nrejects\n")
    with pytest.raises(UserError, match="line 2: expected a word and a tag"):
        read_conll(tmp_path / "bad.conll", "data.train_file", "tokens", "ner_tags")


def make_module(num_labels=5, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=64, num_labels=num_labels,
                        pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2ForTokenClassification(config).eval()
    return TokenClsModule(model, OptimSpec(), EvalSpec(metrics=["f1"], options={"tag_scheme": "IOB2"})).eval()


def padded_batch(sequences, labels):
    longest = max(map(len, sequences))
    ids = torch.zeros(len(sequences), longest, dtype=torch.long)
    lab = torch.full((len(sequences), longest), -100)
    wid = torch.full((len(sequences), longest), -1)
    for i, (seq, lb) in enumerate(zip(sequences, labels)):
        ids[i, :len(seq)] = torch.tensor(seq)
        lab[i, :len(seq)] = torch.tensor(lb)
        wid[i, :len(seq)] = torch.arange(len(seq))
    mask = (wid >= 0).long()
    return {"input_ids": ids, "attention_mask": mask, "labels": lab, "word_ids": wid,
            "example": torch.arange(len(sequences))}


def test_module_loss_and_logits_equal_the_hf_head():
    module = make_module()
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(1, 300, (n,), generator=gen).tolist() for n in (9, 4, 7)]
    labels = [[int(x) % 5 if i % 2 == 0 else -100 for i, x in enumerate(s)] for s in seqs]
    batch = padded_batch(seqs, labels)
    loss, out = module.step(batch)
    hf = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    torch.testing.assert_close(loss, hf.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(module(batch), hf.logits)


def test_logits_are_padding_invariant_including_a_trailing_eos():
    module = make_module()
    gen = torch.Generator().manual_seed(2)
    seqs = [torch.randint(1, 300, (n,), generator=gen).tolist() for n in (3, 11, 6)]
    seqs[0][-1] = 0  # a real trailing token equal to the pad id (pad = eos)
    batch = padded_batch(seqs, [[0] * len(s) for s in seqs])
    together = module(batch)
    for i, seq in enumerate(seqs):
        alone = module({"input_ids": torch.tensor([seq]), "attention_mask": torch.ones(1, len(seq), dtype=torch.long)})
        torch.testing.assert_close(together[i, :len(seq)], alone[0], rtol=0, atol=1e-5)


def test_a_rare_tag_and_empty_tags_and_sentences_are_named(tmp_path, tiny_tokenizer, caplog):
    rows = [{"tokens": ["John", "lives"], "ner_tags": ["B-PER", "O"]} for _ in range(200)]
    typo = rows[:7] + [{"tokens": ["Ann"], "ner_tags": ["B-PRE"]}] + rows[7:]
    with pytest.raises(UserError, match=r"data.tags_column='ner_tags': 1 class\(es\).*'B-PRE' \(1\).*line 8\b"):
        datamodule(tmp_path, tiny_tokenizer, typo)
    assert datamodule(tmp_path, tiny_tokenizer, typo, allow_rare_labels=True).label_space.names[-1] == "B-PRE"
    with pytest.raises(UserError, match=r"1 of 3 rows have an empty label.*line 2\b"):
        datamodule(tmp_path, tiny_tokenizer, [SENTENCES[0], {"tokens": ["a"], "ner_tags": [""]}, SENTENCES[1]])
    datamodule(tmp_path, tiny_tokenizer, [*SENTENCES, {"tokens": [], "ner_tags": []}])
    assert "1 of 3 rows have an empty data.tokens_column='tokens'" in caplog.text


def test_entity_metrics_need_iob_tags_and_word_accuracy_does_not():
    from gpt2tasks.datamodules.labels import TOKEN_CLS, LabelSpace

    space = LabelSpace(TOKEN_CLS, ["O", "PER", "B-LOC"])
    with pytest.raises(UserError, match=r"entity-level metrics need tags O or B-/I-/E-/S-<TYPE>.*\['PER'\]"):
        TokenClsModule.check_metrics(["f1", "accuracy"], space)
    TokenClsModule.check_metrics(["accuracy"], space)  # e.g. part-of-speech tags
