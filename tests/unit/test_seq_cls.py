"""The sequence-classification module: parity with the HF head, padding invariance, every label kind."""

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from gpt2tasks.datamodules.batching import Collator
from gpt2tasks.datamodules.labels import MULTI, REGRESSION, SINGLE, LabelSpace
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.seq_cls import SeqClsModule

EOS = 0  # the bundled tokenizer's eos, reused as pad


def make_module(problem_type=SINGLE, num_labels=3, pad_token_id=EOS):
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=100,
                        pad_token_id=pad_token_id, eos_token_id=EOS)
    names = [] if problem_type == REGRESSION else [f"c{i}" for i in range(num_labels)]
    SeqClsModule.configure_head(config, LabelSpace(problem_type, names))
    model = GPT2ForSequenceClassification(config).eval()
    return SeqClsModule(model, OptimSpec(), EvalSpec(metrics=["accuracy"]))


def batch_of(seqs, labels, pad_id=EOS):
    rows = [{"input_ids": s, "labels": y, "idx": i} for i, (s, y) in enumerate(zip(seqs, labels))]
    return Collator(pad_id)(rows)


SEQS = [[5, 17, 42, 8, 9, 11, 3], [7, 7, 21], [33, 2, 64, 12, EOS]]  # the last ends with a real eos


@pytest.mark.parametrize("problem_type,labels", [
    (SINGLE, [2, 0, 1]),
    (MULTI, [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    (REGRESSION, [0.5, -1.25, 3.0]),
])
def test_loss_and_logits_equal_the_hf_head(problem_type, labels):
    """Same numbers as calling GPT2ForSequenceClassification directly (no trailing eos here)."""
    module = make_module(problem_type, num_labels=1 if problem_type == REGRESSION else 3)
    batch = batch_of(SEQS[:2], labels[:2])
    with torch.no_grad():
        loss, out = module.step(batch)
        hf = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"])
    torch.testing.assert_close(out["logits"], hf.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, hf.loss, rtol=1e-5, atol=1e-6)


def test_each_example_scores_the_same_alone_and_in_a_padded_batch():
    module = make_module()
    with torch.no_grad():
        together = module(batch_of(SEQS, [0, 0, 0]))
        for i, seq in enumerate(SEQS):
            alone = batch_of([seq], [0])
            torch.testing.assert_close(module(alone)[0], together[i],
                                       rtol=1e-5, atol=1e-6)


def test_a_real_trailing_eos_is_not_treated_as_padding():
    """With pad = eos the HF head would pool the token *before* the final eos; we pool the eos."""
    module = make_module()
    seq = SEQS[2]
    without_eos = batch_of([seq[:-1]], [0])
    with_eos = batch_of([seq], [0])
    with torch.no_grad():
        ours = module(with_eos)
        hidden = module.backbone(input_ids=with_eos["input_ids"]).last_hidden_state
        expected = module.model.score(hidden[:, -1])  # the last real token: the eos itself
        hf_pools_previous = module(without_eos)
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, hf_pools_previous)


def test_dedicated_pad_token_gives_the_same_logits():
    """Pad id changes nothing for right-padded rows: the mask, not the id, decides."""
    a, b = make_module(pad_token_id=EOS), make_module(pad_token_id=99)
    with torch.no_grad():
        la = a(batch_of(SEQS, [0] * 3, pad_id=EOS))
        lb = b(batch_of(SEQS, [0] * 3, pad_id=99))
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)


def test_weight_decay_skips_biases_and_layernorms():
    module = make_module()

    class _T:  # configure_optimizers reads the step count from the trainer
        estimated_stepping_batches = 10

    module._trainer = _T()  # noqa: SLF001 - a stand-in trainer is enough here
    module.optim = OptimSpec(weight_decay=0.1)
    opt = module.configure_optimizers()["optimizer"]
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or ".ln_" in names[id(p)] for p in no_decay["params"])
    assert any("ln_f" in names[id(p)] for p in no_decay["params"])
    assert all(not names[id(p)].endswith("bias") and ".ln_" not in names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
