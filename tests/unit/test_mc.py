"""Multiple choice: choices and truncation, (B, C, T) batches and mc_token_ids, LM labels only on the
correct choice, HF-head parity, padding invariance, export reload, bad-input messages."""

import pytest
import torch
from transformers import GPT2Config, GPT2DoubleHeadsModel

from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.datamodules.batching import ChoiceCollator
from gpt2tasks.datamodules.labels import MULTIPLE_CHOICE, LabelSpace
from gpt2tasks.datamodules.mc import MultipleChoiceDataModule
from gpt2tasks.errors import UserError
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.mc import MultipleChoiceModule, lm_labels
from tests.conftest import file_datamodule

ROWS = [
    {"context": "Anna found a red lamp. Later, Anna", "endings": ["sold the red lamp.", "sold the blue vase."],
     "label": 0},
    {"context": "Paul won a kite.", "endings": ["He flew the green kite over the hill all day long.", "He slept."],
     "label": 1},
]


def datamodule(tmp_path, tokenizer, rows=ROWS, val_rows=None, **spec):
    return file_datamodule(MultipleChoiceDataModule, tmp_path, tokenizer, rows, val_rows, **spec)


def test_each_choice_is_context_separator_ending_summary(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer, pair_separator=" ")
    assert dm.label_space == LabelSpace(MULTIPLE_CHOICE, ["0", "1"])
    eos = tiny_tokenizer.eos_token_id
    for row, raw in zip(dm.datasets["train"].rows, ROWS):
        assert row["labels"] == raw["label"] and len(row["input_ids"]) == 2
        for ids, ending in zip(row["input_ids"], raw["endings"]):
            # with a space separator a choice tokenizes exactly like the running text
            assert ids == tiny_tokenizer(raw["context"] + " " + ending)["input_ids"] + [eos]


def test_long_choices_lose_the_start_of_the_context_first(tmp_path, tiny_tokenizer):
    context = " ".join(f"word{i}" for i in range(30))
    rows = [{"context": context, "endings": ["the end.", "a much longer ending with many words in it."], "label": 0}]
    dm = datamodule(tmp_path, tiny_tokenizer, rows=rows, max_length=24)
    sep = tiny_tokenizer("<|endoftext|>")["input_ids"]
    for ids, ending in zip(dm.datasets["train"].rows[0]["input_ids"], rows[0]["endings"]):
        tail = sep + tiny_tokenizer(ending)["input_ids"] + [tiny_tokenizer.eos_token_id]
        assert len(ids) == 24 and ids[-len(tail):] == tail  # ending and summary token kept whole
        assert ids[:-len(tail)] == tiny_tokenizer(context)["input_ids"][-(24 - len(tail)):]  # context's end


def test_batches_are_choices_by_tokens_and_mc_token_ids_point_at_summary_tokens(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    rows = dm.datasets["train"].rows
    for multiple in (None, 8):
        batch = ChoiceCollator(eos, multiple)(rows)
        longest = max(len(c) for r in rows for c in r["input_ids"])
        width = longest if multiple is None else -(-longest // 8) * 8
        assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 2, width)
        assert batch["mc_token_ids"].shape == (2, 2) and batch["labels"].tolist() == [0, 1]
        for b, row in enumerate(rows):
            for c, ids in enumerate(row["input_ids"]):
                assert batch["input_ids"][b, c, :len(ids)].tolist() == ids
                assert batch["attention_mask"][b, c].sum() == len(ids)
                position = batch["mc_token_ids"][b, c]
                assert position == len(ids) - 1 and batch["attention_mask"][b, c, position] == 1
                assert batch["input_ids"][b, c, position] == eos  # the real summary token
    # the sampler groups a row by its longest choice
    from gpt2tasks.datamodules.batching import longest_sequence
    assert longest_sequence(rows[1]["input_ids"]) == max(map(len, rows[1]["input_ids"]))


def test_lm_labels_only_on_the_correct_choice_and_real_eos_kept():
    eos = 0  # pad = eos
    input_ids = torch.tensor([[[5, 0, 6, 0], [7, 8, 0, 0]], [[9, 0, 0, 0], [4, 3, 2, 0]]])  # (B=2, C=2, T=4)
    attention_mask = torch.tensor([[[1, 1, 1, 1], [1, 1, 1, 0]], [[1, 1, 0, 0], [1, 1, 1, 1]]])
    labels = lm_labels(input_ids, attention_mask, torch.tensor([0, 1]))
    assert labels.tolist() == [[[5, eos, 6, eos], [-100] * 4],  # a real eos inside/at the end keeps its label
                               [[-100] * 4, [4, 3, 2, eos]]]
    labels = lm_labels(input_ids, attention_mask, torch.tensor([1, 0]))
    assert labels.tolist() == [[[-100] * 4, [7, 8, eos, -100]], [[9, eos, -100, -100], [-100] * 4]]


def make_module(mc_coef=1.0, lm_coef=0.5, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=64, pad_token_id=0)
    MultipleChoiceModule.configure_head(config, LabelSpace(MULTIPLE_CHOICE, ["0", "1", "2"]))
    model = GPT2DoubleHeadsModel(config).eval()
    evaluation = EvalSpec(metrics=["accuracy"], options={"mc_coef": mc_coef, "lm_coef": lm_coef})
    return MultipleChoiceModule(model, OptimSpec(), evaluation).eval()


def random_batch(lengths, seed):
    """A collated batch of random choices with the given lengths (B lists of C lengths), eos-ended."""
    gen = torch.Generator().manual_seed(seed)
    rows = [{"input_ids": [torch.randint(1, 300, (n - 1,), generator=gen).tolist() + [0] for n in choices],
             "labels": b % len(choices)} for b, choices in enumerate(lengths)]
    return ChoiceCollator(0)(rows)


def test_module_loss_and_logits_equal_the_hf_double_heads_model():
    module = make_module(mc_coef=1.0, lm_coef=0.5)
    batch = random_batch([[7, 7, 7], [7, 7, 7]], seed=1)  # unpadded
    batch["input_ids"][0, 0, 3] = 0  # a real eos inside a choice
    loss, out = module.step(batch)
    hf = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      mc_token_ids=batch["mc_token_ids"], mc_labels=batch["labels"],
                      labels=lm_labels(batch["input_ids"], batch["attention_mask"], batch["labels"]))
    torch.testing.assert_close(out["mc_logits"], hf.mc_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["mc_loss"].mean(), hf.mc_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, 1.0 * hf.mc_loss + 0.5 * hf.loss, rtol=1e-5, atol=1e-6)
    assert "lm_loss" in out and out["loss"].shape == (2,)
    # With lm_coef=0 the loss is HF's mc_loss alone and no LM logits are computed.
    loss0, out0 = make_module(lm_coef=0.0).step(batch)
    torch.testing.assert_close(loss0, hf.mc_loss, rtol=1e-5, atol=1e-6)
    assert "lm_loss" not in out0


def test_padded_batches_equal_hf_and_scores_are_padding_invariant():
    module = make_module()
    batch = random_batch([[3, 9, 5], [12, 4, 8], [6, 6, 6]], seed=2)
    loss, out = module.step(batch)
    hf = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      mc_token_ids=batch["mc_token_ids"], mc_labels=batch["labels"],
                      labels=lm_labels(batch["input_ids"], batch["attention_mask"], batch["labels"]))
    torch.testing.assert_close(loss, hf.mc_loss + 0.5 * hf.loss, rtol=1e-5, atol=1e-6)
    for b in range(3):  # each example alone, unpadded
        lengths = batch["attention_mask"][b].sum(-1).tolist()
        rows = [{"input_ids": [batch["input_ids"][b, c, :n].tolist() for c, n in enumerate(lengths)],
                 "labels": int(batch["labels"][b])}]
        _, alone = module.step(ChoiceCollator(0)(rows))
        torch.testing.assert_close(out["mc_logits"][b], alone["mc_logits"][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(out["lm_loss"][b], alone["lm_loss"][0], rtol=0, atol=1e-5)


def test_exported_config_reloads_as_gpt2_double_heads(tmp_path):
    module = make_module()
    module.model.save_pretrained(tmp_path)
    reloaded = GPT2DoubleHeadsModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.summary_type == "cls_index" and reloaded.config.num_labels == 1
    batch = random_batch([[5, 8, 6]], seed=3)
    args = {k: batch[k] for k in ("input_ids", "attention_mask", "mc_token_ids")}
    torch.testing.assert_close(reloaded(**args).mc_logits, module.model(**args).mc_logits)


def test_bad_rows_name_the_line_the_key_and_the_fix(tmp_path, tiny_tokenizer):
    three = {"context": "x", "endings": ["a", "b", "c"], "label": 0}
    with pytest.raises(UserError, match=r"data.train_file=.*train.jsonl, line 3: 3 endings, but the first "
                                        r"training row has 2.*Fix: give this row 2 endings"):
        datamodule(tmp_path, tiny_tokenizer, rows=ROWS + [three])
    with pytest.raises(UserError, match=r"data.validation_file=.*line 2: data.label_column='label' is 2, "
                                        r"outside the 2 choices \(0 to 1\)"):
        datamodule(tmp_path, tiny_tokenizer, val_rows=[ROWS[0], {**ROWS[1], "label": 2}])
    with pytest.raises(UserError, match=r"line 1: data.label_column='label' is 'B', not the index"):
        datamodule(tmp_path, tiny_tokenizer, rows=[{**ROWS[0], "label": "B"}])
    with pytest.raises(UserError, match=r"data.endings_column='endings' is a str, not a list"):
        datamodule(tmp_path, tiny_tokenizer, val_rows=[{**ROWS[0], "endings": "a|b"}])
    with pytest.raises(UserError, match=r"no column for data.endings_column='choices'"):
        datamodule(tmp_path, tiny_tokenizer, endings_column="choices")


def test_swag_style_columns_and_string_labels_from_a_headerless_tsv(tmp_path, tiny_tokenizer):
    tsv = tmp_path / "codah.tsv"
    tsv.write_text("o\tShe opened the fridge. She\ttook out milk.\tate the fridge.\tflew.\tsang.\t0\n"
                   "q\tHe lost his keys. He\tfound a cat.\tlooked for them.\twas a key.\tslept.\t1\n")
    columns = ["categories", "prompt", "ending0", "ending1", "ending2", "ending3", "label"]
    dm = MultipleChoiceDataModule(DataSpec(train_file=str(tsv), validation_file=str(tsv), column_names=columns,
                                           context_column=["categories", "prompt"],
                                           endings_column=columns[2:6], pair_separator=" ",
                                           cache_dir=str(tmp_path / "cache")), tiny_tokenizer)
    dm.setup("fit")
    assert dm.label_space.names == ["0", "1", "2", "3"]
    row = dm.datasets["val"].rows[1]
    assert row["labels"] == 1  # "1" from the TSV
    assert row["input_ids"][1] == tiny_tokenizer("q He lost his keys. He looked for them.")["input_ids"] + [
        tiny_tokenizer.eos_token_id]  # a list of context columns is joined with spaces


def test_empty_endings_are_counted_and_a_split_of_empty_ones_refused(tmp_path, tiny_tokenizer, caplog):
    rows = [*ROWS, {"context": "Sam ate.", "endings": ["", "He slept."], "label": 1}]
    datamodule(tmp_path, tiny_tokenizer, rows)
    assert "1 of 3 rows have an empty ending among their choices" in caplog.text and "line 3" in caplog.text
    with pytest.raises(UserError, match=r"all 1 rows have an empty data.endings_column='endings'"):
        datamodule(tmp_path, tiny_tokenizer, [{"context": "x", "endings": ["", " "], "label": 0}])
