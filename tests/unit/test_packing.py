"""Packed training batches (data.pack_examples): the sampler's guarantees, and for every packable
kind, in fp32, per-example outputs equal to each example run alone and the unpacked batch's loss."""

import pytest
import torch
from transformers import (GPT2Config, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                          GPT2ForTokenClassification)

from gpt2tasks.datamodules.batching import Collator, RankBatchSampler
from gpt2tasks.datamodules.labels import SINGLE, LabelSpace
from gpt2tasks.datamodules.packing import PackedCollator, PackedSampler, balanced_rows, default_layout, next_fit
from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
from gpt2tasks.errors import UserError
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.qa import QAModule
from gpt2tasks.tasks.seq_cls import SeqClsModule
from gpt2tasks.tasks.token_cls import TokenClsModule
from tests.conftest import file_datamodule

PAD = 0
LENGTHS = [3, 17, 9, 1, 12, 5, 30, 8, 2, 21, 14, 6, 11, 4, 25, 7, 10, 13, 16, 19]


# ---- the sampler ----------------------------------------------------------------------------------
def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(RankBatchSampler(sampler))


def test_every_example_once_per_epoch_in_batches_that_fit_and_a_fixed_count():
    sampler = PackedSampler(LENGTHS, rows=3, row_len=32, seed=5)
    counts = set()
    for epoch in range(4):
        batches = epoch_batches(sampler, epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
        assert all(len(next_fit([LENGTHS[i] for i in b], 32)) <= 3 for b in batches)
        assert len(sampler) == len(LENGTHS)
        counts.add(len(batches))
    assert counts == {sampler.num_batches}  # Lightning fixes the epoch length at the first epoch
    assert epoch_batches(sampler, 0) != epoch_batches(sampler, 1)  # a new draw each epoch


def test_deterministic_given_seed_and_epoch():
    a = PackedSampler(LENGTHS, rows=2, row_len=32, seed=3)
    b = PackedSampler(LENGTHS, rows=2, row_len=32, seed=3)
    epoch_batches(a, 4)
    assert epoch_batches(a, 2) == epoch_batches(b, 2)  # the order depends on (seed, epoch) only
    assert epoch_batches(a, 2) != epoch_batches(PackedSampler(LENGTHS, rows=2, row_len=32, seed=4), 2)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_equal_batch_counts_and_share_every_example(world_size):
    ranks = [PackedSampler(LENGTHS, rows=2, row_len=32, seed=1, rank=r, world_size=world_size)
             for r in range(world_size)]
    per_rank = [epoch_batches(s, 1) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1
    seen = [i for batches in per_rank for b in batches for i in b]
    assert sorted(seen) == list(range(len(LENGTHS)))  # enough examples: none repeated, none dropped


def test_tiny_data_on_many_ranks_repeats_rather_than_leaving_a_rank_empty():
    ranks = [PackedSampler([4, 5], rows=1, row_len=16, seed=0, rank=r, world_size=4) for r in range(4)]
    per_rank = [epoch_batches(s, 0) for s in ranks]
    assert [len(b) for b in per_rank] == [1, 1, 1, 1] and all(b[0] for b in per_rank)
    assert {i for batches in per_rank for b in batches for i in b} == {0, 1}


def sample_sentiment_lengths(tokenizer):
    import csv

    from gpt2tasks.resources import DATA_DIR

    with open(DATA_DIR / "sample_sentiment" / "train.csv") as f:
        return [len(tokenizer(row["text"])["input_ids"]) for row in csv.DictReader(f)]


def test_packed_batches_are_the_random_order_batches_on_the_bundled_sample(tiny_tokenizer):
    """The stalled packed seed (docs/benchmark-history.md): packing to a token budget alone gave the
    sample (2,000 rows, mean 13 tokens, batch_size 32) 4 rows x 128 tokens = batches of 2 to 44
    examples around 37 -- 54 optimizer steps an epoch where random order takes 63, and each
    epoch's last step on as few as 2 examples weighted like 44. Capped at batch_size, every batch
    is 32 examples of the random permutation except the epoch's tail, as in random order."""
    lengths = sample_sentiment_lengths(tiny_tokenizer)
    assert (len(lengths), sum(lengths), max(lengths)) == (2000, 26017, 28)
    rows, row_len = default_layout(lengths, batch_size=32, n_positions=1024)
    assert (rows, row_len) == (4, 128)
    budget_only = PackedSampler(lengths, rows, row_len, seed=1)  # no max_examples: the old behaviour
    sizes = [[len(b) for b in epoch_batches(budget_only, epoch)] for epoch in range(3)]
    assert [(len(s), min(s), max(s)) for s in sizes] == [(54, 8, 43), (54, 2, 42), (54, 11, 42)]
    for seed in (0, 1, 42):
        sampler = PackedSampler(lengths, rows, row_len, max_examples=32, seed=seed)
        for epoch in (0, 1, 7):
            sizes = [len(b) for b in epoch_batches(sampler, epoch)]
            assert sizes == [32] * 62 + [16]  # random order's 63 batches: 62 full + the 16 left over


def test_max_examples_caps_batches_and_default_layout_fits_them():
    lengths = [1 + (7 * i) % 23 for i in range(500)]  # 1..23 tokens, mean ~12
    rows, row_len = default_layout(lengths, batch_size=16, n_positions=1024)
    assert (rows, row_len) == (2, 128)  # 16 x mean 12 = 192 tokens: 2 rows; the draws fit them
    sampler = PackedSampler(lengths, rows, row_len, max_examples=16, seed=0)
    for epoch in range(3):
        batches = epoch_batches(sampler, epoch)
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert [len(b) for b in batches] == [16] * 31 + [4]  # 500 = 31 x 16 + 4, as random order
        assert all(len(next_fit([lengths[i] for i in b], row_len)) <= rows for b in batches)


def test_seeds_do_not_share_epoch_orders():
    """seed s+1's epoch e is not seed s's epoch e+1 (it was, when epochs were seeded by seed + epoch)."""
    a, b = PackedSampler(LENGTHS, rows=2, row_len=32, seed=0), PackedSampler(LENGTHS, rows=2, row_len=32, seed=1)
    assert epoch_batches(a, 1) != epoch_batches(b, 0)


def test_default_layout_is_batch_size_examples_worth_of_tokens():
    rows, row_len = default_layout([10, 20, 30], batch_size=32, n_positions=1024)
    assert row_len == 128 and rows == 5  # 32 x mean 20 = 640 tokens -> 5 rows of 128
    assert default_layout([300, 20], 3, 1024) == (2, 304)  # rows hold the longest; 3 x 160 tokens: 2 rows
    assert default_layout([300, 20], 3, 1024, max_tokens_per_row=512) == (1, 512)


def test_collator_packs_rows_with_restarting_positions():
    features = [{"input_ids": list(range(1, n + 1)), "labels": 0, "idx": i} for i, n in enumerate([3, 2, 4])]
    batch = PackedCollator(Collator(PAD), rows=2, row_len=6, pad_token_id=PAD)(features)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 1, 2, PAD], [1, 2, 3, 4, PAD, PAD]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]  # per example
    assert batch["pack_index"][:, 0].tolist() == [0, 3, 6]


def test_collator_without_a_fixed_shape_takes_the_rows_the_batch_needs_filled_evenly():
    lengths = [5, 9, 3, 12, 1, 7, 4]  # 41 tokens: 3 rows of 16 at least
    rows = balanced_rows(lengths, 16)
    assert len(rows) == 3 and sorted(e for r in rows for e in r) == list(range(7))
    assert sorted(sum(lengths[e] for e in r) for r in rows) == [13, 13, 15]  # next_fit: 14, 16, 11 (+ tails)
    assert [len(r) for r in balanced_rows([10, 10, 10], 16)] == [1, 1, 1]  # 30 tokens, but 2 rows cannot hold them
    features = [{"input_ids": list(range(1, n + 1)), "labels": 0, "idx": i} for i, n in enumerate(lengths)]
    batch = PackedCollator(Collator(PAD), row_len=16, pad_token_id=PAD, multiple=8)(features)
    assert batch["input_ids"].shape == (3, 16)  # the fullest row (15) rounded up to a multiple of 8
    assert PackedCollator(Collator(PAD), row_len=16, pad_token_id=PAD)(features)["input_ids"].shape == (3, 15)
    flat = batch["input_ids"].flatten()
    for e, n in enumerate(lengths):  # every example's tokens where pack_index says, in order
        assert flat[batch["pack_index"][e, :n]].tolist() == list(range(1, n + 1))


def test_max_tokens_per_row_below_the_longest_row_is_refused(tmp_path, tiny_tokenizer):
    rows = [{"text": "a fairly long sentence with several words in it", "label": "x"}, {"text": "b", "label": "y"}]
    with pytest.raises(UserError, match="data.max_tokens_per_row=2 must be between"):
        file_datamodule(SeqClsDataModule, tmp_path, tiny_tokenizer, rows, pack_examples=True, max_tokens_per_row=2)


# ---- each kind: packed == alone, and the same loss --------------------------------------------------
def config(**kw):
    return GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=64, pad_token_id=PAD,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kw)


def seq_cls_module():
    cfg = config()
    SeqClsModule.configure_head(cfg, LabelSpace(SINGLE, ["a", "b", "c"]))
    return SeqClsModule(GPT2ForSequenceClassification(cfg), OptimSpec(), EvalSpec()).eval()


def token_cls_module():
    return TokenClsModule(GPT2ForTokenClassification(config(num_labels=5)), OptimSpec(), EvalSpec()).eval()


def qa_module():
    return QAModule(GPT2ForQuestionAnswering(config(num_labels=2)), OptimSpec(), EvalSpec(metrics=["f1"])).eval()


def features(kind, lengths):
    gen = torch.Generator().manual_seed(7)
    out = []
    for i, n in enumerate(lengths):
        ids = torch.randint(1, 300, (n,), generator=gen).tolist()
        ids[-1] = PAD if i == 1 else ids[-1]  # a real trailing eos equal to the pad id
        row = {"input_ids": ids, "idx": i, "example": i}
        if kind == "seq_cls":
            row["labels"] = i % 3
        elif kind == "token_cls":
            row["labels"] = [t % 5 if t % 3 else -100 for t in ids]
            row["word_ids"] = list(range(n))
        else:
            row["start_positions"], row["end_positions"] = min(2, n - 1), n - 1
        out.append(row)
    return out


KINDS = {
    "seq_cls": (seq_cls_module, {}, ["logits"]),
    "token_cls": (token_cls_module, {"labels": -100, "word_ids": -1}, ["preds"]),
    "qa": (qa_module, {}, ["start_logits", "end_logits"]),
}


@pytest.mark.parametrize("fixed_rows", [3, None])  # one static shape (compile), or the rows each batch needs
@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # sdpa: our block mask; eager: transformers' own
@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_outputs_equal_each_example_alone_and_the_loss_the_unpacked_one(kind, attention, fixed_rows):
    torch.manual_seed(0)
    make, padded, fields = KINDS[kind]
    module = make()
    module.model.set_attn_implementation(attention)
    assert module.backbone.config._attn_implementation == attention
    rows = features(kind, [5, 9, 3, 12, 1, 7, 4])
    collator = Collator(PAD, padded=padded)
    packed = PackedCollator(collator, rows=fixed_rows, row_len=16, pad_token_id=PAD)(rows)
    shape = (3, 16) if fixed_rows else (3, 15)
    assert packed["input_ids"].shape == shape and packed["position_ids"].shape == shape
    assert len(next_fit([len(r["input_ids"]) for r in rows], 16)) > 1 and max(
        len(m) for m in next_fit([len(r["input_ids"]) for r in rows], 16)) > 1  # rows really hold several
    with torch.no_grad():
        packed_loss, packed_out = module.step(packed)
        unpacked_loss, unpacked_out = module.step(collator(rows))
        torch.testing.assert_close(packed_loss, unpacked_loss, rtol=0, atol=1e-5)
        torch.testing.assert_close(packed_out["loss"], unpacked_out["loss"], rtol=0, atol=1e-5)
        for e, row in enumerate(rows):
            alone_loss, alone = module.step(collator([row]))
            n = len(row["input_ids"])
            for name in fields:
                got, want = packed_out[name][e], alone[name][0]
                if got.dim():  # per-token outputs: the example's own positions
                    got, want = got[:n], want[:n]
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
            torch.testing.assert_close(packed_out["loss"][e], alone_loss, rtol=0, atol=1e-5)
    if kind != "seq_cls":  # logits at every real position, not just the argmax
        with torch.no_grad():
            together = module(packed)
            for e, row in enumerate(rows):
                n = len(row["input_ids"])
                alone = module(collator([row]))
                for a, b in (zip(together, alone) if kind == "qa" else [(together, alone)]):
                    torch.testing.assert_close(a[e, :n], b[0, :n], rtol=0, atol=1e-5)


def test_packed_training_batches_from_a_datamodule_feed_the_module(tmp_path, tiny_tokenizer):
    rows = [{"text": " ".join(["word"] * (1 + i % 7)), "label": "xyz"[i % 3]} for i in range(40)]
    dm = file_datamodule(SeqClsDataModule, tmp_path, tiny_tokenizer, rows, pack_examples=True, batch_size=8)
    tokens = sum(len(r["input_ids"]) for r in dm.datasets["train"].rows)
    dm.static_shapes = True
    static = list(dm.train_dataloader())
    assert len({tuple(b["input_ids"].shape) for b in static}) == 1  # one fixed shape: static-shape compile, CUDA graphs
    dm.static_shapes = False
    eager = list(dm.train_dataloader())
    assert [b["idx"].tolist() for b in eager] == [b["idx"].tolist() for b in static]  # the same batches, laid out tighter
    assert sum(len(b["idx"]) for b in eager) == 40
    assert tokens / sum(b["input_ids"].numel() for b in eager) > 0.9 > tokens / sum(b["input_ids"].numel() for b in static)


@pytest.mark.parametrize("overrides, packed", [
    ((), True),  # the default: packed
    (("data.group_by_length=true",), False),  # length grouping asked for: padded, length-sorted
    (("data.pack_examples=false",), False),  # random order, padded
    (("task=sample_lm",), False),  # language modelling has its own data.packing
    (("task=sample_mc",), False),  # multiple choice is not packed
])
def test_which_training_batches_are_packed(cfg_factory, overrides, packed):
    from gpt2tasks.build import build_for_training

    datamodule, _, _ = build_for_training(cfg_factory(*overrides, "data.max_train_samples=40", "data.max_eval_samples=8"))
    batch = next(iter(datamodule.train_dataloader()))
    assert ("pack_index" in batch) == packed


def test_packed_batches_have_one_shape_when_the_model_is_compiled(cfg_factory):
    from gpt2tasks.build import build_for_training

    for compile_, shapes in (("false", "several"), ("true", "one")):
        datamodule, _, _ = build_for_training(cfg_factory(f"model.compile={compile_}", "data.max_train_samples=200",
                                                          "data.max_eval_samples=8"))
        seen = {tuple(b["input_ids"].shape) for b in datamodule.train_dataloader()}
        assert datamodule.tasks["sample_sentiment"].static_shapes == (compile_ == "true") and (len(seen) == 1) == (shapes == "one")


def test_packed_batches_compile_to_one_static_graph():
    """model.compile=true: packed batches of different examples are one (rows, row_len) graph --
    no recompile per batch (padded batches of new lengths recompile). The dynamo backend "eager"
    keeps this cheap; guards and graph breaks are the same as inductor's."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    module = seq_cls_module()
    module.model.transformer.compile(backend="eager")
    collator = PackedCollator(Collator(PAD), rows=3, row_len=16, pad_token_id=PAD)
    for lengths in ([5, 2, 7, 3], [6, 6, 6, 1, 4], [2, 3]):
        batch = collator(features("seq_cls", lengths))
        loss, _ = module.step(batch)
        loss.backward()
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


@pytest.mark.parametrize("task", ["sample_sentiment", "sample_ner", "sample_qa"])
def test_packed_training_end_to_end_and_eval_reproduces_it(cfg_factory, tmp_path, task):
    """Train on packed batches, evaluate on padded ones: the checkpoint re-evaluates to the same
    numbers (the weights and HF heads are those of an unpacked run)."""
    from gpt2tasks.evaluation import evaluate_checkpoint
    from gpt2tasks.train import train

    out = tmp_path / task
    metrics = train(cfg_factory(f"task={task}", "data.pack_examples=true", "trainer.max_epochs=1",
                                "data.max_train_samples=96", "data.max_eval_samples=24", "data.batch_size=16",
                                output_dir=out))
    assert metrics and all(v == v for v in metrics.values())  # no NaN from an empty mask row
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics
