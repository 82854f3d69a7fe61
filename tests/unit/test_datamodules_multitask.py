"""MultiTaskDataModule is the datamodule of every run: with one task it gives exactly the task's own
batches (train, val, test; every kind, packed or not, on one rank or two, epoch after epoch), and
with several each task's training batches are the ones it trains on alone, interleaved."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gpt2tasks.datamodules.base import TEST, DataSpec, TaskDataModule
from gpt2tasks.datamodules.batching import LengthGroupedSampler
from gpt2tasks.datamodules.lm import LanguageModelingDataModule
from gpt2tasks.datamodules.mc import MultipleChoiceDataModule
from gpt2tasks.datamodules.multitask import MultiTaskDataModule, TaskMixer
from gpt2tasks.datamodules.packing import PackedSampler, default_layout
from gpt2tasks.datamodules.qa import QADataModule
from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
from gpt2tasks.datamodules.token_cls import TokenClsDataModule
from gpt2tasks.resources import DATA_DIR

# The bundled samples, cut small: (datamodule class, folder, file extension, the preset's data keys)
KINDS = {
    "seq_cls": (SeqClsDataModule, "sample_sentiment", "csv", {"max_length": 64}),
    "token_cls": (TokenClsDataModule, "sample_ner", "jsonl", {"max_length": 64}),
    "qa": (QADataModule, "sample_qa", "jsonl", {"max_length": 128, "doc_stride": 32, "max_question_length": 32}),
    "lm": (LanguageModelingDataModule, "sample_lm", "txt", {"block_size": 32}),
    "mc": (MultipleChoiceDataModule, "sample_mc", "jsonl", {"pair_separator": " ", "max_length": 48}),
}
EPOCHS = 3


def sample_datamodule(kind: str, tmp_path, tokenizer, pack: bool, batch_size: int = 8, train_rows: int = 60,
                      seed: int = 5) -> TaskDataModule:
    """The kind's bundled sample (train/validation/test), packed or not: data.pack_examples, and for
    lm its own data.packing (blocks of joined documents vs one padded document per row)."""
    cls, folder, ext, keys = KINDS[kind]
    files = {f"{split}_file": str(DATA_DIR / folder / f"{name}.{ext}")
             for split, name in (("train", "train"), ("validation", "validation"), ("test", "test"))}
    spec = DataSpec(**files, **keys, batch_size=batch_size, pack_examples=pack, max_train_samples=train_rows,
                    max_eval_samples=20, cache_dir=str(tmp_path / "cache"), **({"packing": pack} if kind == "lm" else {}))
    dm = cls(spec, tokenizer, seed=seed)
    dm.setup("fit")
    return dm


def on_rank(datamodule, rank: int, world: int) -> None:
    """What the Trainer gives a datamodule: its rank and world size."""
    datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=world)


def epoch(loader, e: int) -> list[dict]:
    """Epoch e's batches, as Lightning runs them: set_epoch on the batch sampler's sampler first."""
    loader.batch_sampler.sampler.set_epoch(e)
    return list(loader)


def assert_same_batches(ours: list[dict], theirs: list[dict], task: str | None) -> None:
    assert len(ours) == len(theirs)
    for mine, own in zip(ours, theirs, strict=True):
        if task is not None:
            assert mine["task"] == task
            mine = {k: v for k, v in mine.items() if k != "task"}
        assert mine.keys() == own.keys()
        for key, value in own.items():
            assert torch.equal(mine[key], value), key


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("pack", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_one_task_gives_the_task_own_batches(kind, pack, world, tmp_path, tiny_tokenizer):
    task = sample_datamodule(kind, tmp_path, tiny_tokenizer, pack)
    # what packs: seq_cls, token_cls and qa with data.pack_examples (lm's data.packing cuts blocks; mc never packs)
    assert task.packs == (pack and kind in ("seq_cls", "token_cls", "qa"))
    # one task: any rule is the identity
    run = MultiTaskDataModule({"only": task}, sampling="uniform", seed=11, named_tasks=False)
    for rank in range(world):
        on_rank(run, rank, world)
        mixed = run.train_dataloader()  # hands the task its rank first
        alone = task.train_dataloader()
        assert len(mixed) == len(alone)
        for e in range(EPOCHS):
            batches = epoch(alone, e)
            assert_same_batches(epoch(mixed, e), batches, task="only")
            assert all("pack_index" in b for b in batches) == task.packs
        for mine, own in zip(run.val_dataloader(), task.val_dataloader(), strict=True):
            assert_same_batches(list(mine), list(own), task=None)
        (test,) = run.test_dataloader()
        assert_same_batches(list(test), list(task.test_dataloader()), task=None)
    assert run.eval_plan == [("only", "val")] and run.test_plan == [("only", TEST)] and run.has_test


@pytest.mark.parametrize("world", [1, 2])
def test_each_task_trains_on_its_own_packed_batches_among_others(world, tmp_path, tiny_tokenizer):
    tasks = {"reviews": sample_datamodule("seq_cls", tmp_path, tiny_tokenizer, pack=True, train_rows=90),
             "news": sample_datamodule("token_cls", tmp_path, tiny_tokenizer, pack=True, train_rows=40, seed=6)}
    run = MultiTaskDataModule(tasks, sampling="proportional", seed=3)
    for rank in range(world):
        on_rank(run, rank, world)
        mixed = run.train_dataloader()
        own = {name: dm.train_dataloader() for name, dm in tasks.items()}
        order = []
        for e in range(2):
            batches = epoch(mixed, e)
            order.append([b["task"] for b in batches])
            for name, loader in own.items():  # proportional: one pass of each task per epoch, in its order
                assert_same_batches([b for b in batches if b["task"] == name], epoch(loader, e), task=name)
        assert order[0] != order[1] and all(set(o) == set(tasks) for o in order)  # interleaved, reshuffled
        assert all("pack_index" in b for b in batches)


def packed(sizes: dict[str, int], rank: int, world: int) -> dict[str, PackedSampler]:
    """Packed samplers of 6 examples a batch over rows of 3 to 40 tokens, laid out as a datamodule
    lays them out (default_layout): some batches hold fewer, so the count is fixed by merging or
    splitting batches per epoch (PackedSampler._batches)."""
    samplers = {}
    for name, n in sizes.items():
        lengths = [3 + (7 * i) % 38 for i in range(n)]
        rows, row_len = default_layout(lengths, 6, n_positions=1024)
        samplers[name] = PackedSampler(lengths, rows, row_len, max_examples=6, seed=9, rank=rank, world_size=world)
    return samplers


@pytest.mark.parametrize("world", [1, 2, 3])
def test_packed_samplers_keep_the_mixer_s_assumptions_over_many_passes(world):
    # uniform: 19 draws an epoch of the small task's 4 batches, ~5 passes: each must have pass 0's count, on every rank
    sizes = {"big": 200, "small": 23}
    ranks = [TaskMixer(packed(sizes, r, world), "uniform", seed=4) for r in range(world)]
    assert len({len(m) for m in ranks}) == 1
    for e in range(3):
        steps = []
        for m in ranks:
            m.set_epoch(e)
            steps.append(list(m))
        assert len({tuple(t for t, _ in s) for s in steps}) == 1  # every rank draws the same task at every step
    for name, sampler in packed(sizes, 0, world).items():
        counts = set()
        for p in range(40):
            sampler.set_epoch(p)
            counts.add(len(sampler.rank_batches()))
        assert counts == {ranks[0].sizes[name]}


class Shrinking(LengthGroupedSampler):
    """A sampler whose later passes lose a batch: what the mixer must not silently step over."""

    def rank_batches(self) -> list[list[int]]:
        batches = super().rank_batches()
        return batches[:-1] if self.epoch else batches


def test_a_sampler_whose_batch_count_changes_is_refused_at_its_pass():
    mixer = TaskMixer({"a": Shrinking(list(range(1, 11)), 2, shuffle=True)}, "uniform")
    assert len(list(mixer)) == 5
    mixer.set_epoch(1)
    with pytest.raises(RuntimeError, match="task a: pass 1 has 4 batches on this rank, pass 0 had 5"):
        list(mixer)


def test_keys_and_names_of_one_task_are_a_single_task_run_s(tmp_path, tiny_tokenizer):
    task = sample_datamodule("seq_cls", tmp_path, tiny_tokenizer, pack=True)
    digests = task.file_digests
    assert set(digests) == {"data.train_file", "data.validation_file", "data.test_file"}
    alone = MultiTaskDataModule({"sample_sentiment": task}, named_tasks=False)  # a single-task config
    assert alone.file_digests == digests
    assert alone.describe() == task.describe()
    cut = "data.max_eval_samples=20"
    assert alone.eval_rows() == {"val": (20, 300, cut), "test": (20, 300, cut)}
    # a task=multitask run of one task keeps the tasks.<name> keys its config has
    listed = MultiTaskDataModule({"sst": task})
    assert listed.file_digests == {f"tasks.sst.{key}": found for key, found in digests.items()}
    assert listed.eval_rows() == {"sst/val": (20, 300, f"tasks.sst.{cut}"), "sst/test": (20, 300, f"tasks.sst.{cut}")}
    assert listed.describe() == f"sst: {task.describe()}"
    with pytest.raises(ValueError, match="2 tasks need named_tasks"):
        MultiTaskDataModule({"a": task, "b": task}, named_tasks=False)


def test_the_task_name_rides_to_the_device_with_the_batch(tmp_path, tiny_tokenizer):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from gpt2tasks.tasks.base import EvalSpec, OptimSpec
    from gpt2tasks.tasks.seq_cls import SeqClsModule

    task = sample_datamodule("seq_cls", tmp_path, tiny_tokenizer, pack=True)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=len(tiny_tokenizer), n_positions=256,
                        pad_token_id=tiny_tokenizer.pad_token_id)
    SeqClsModule.configure_head(config, task.label_space)
    module = SeqClsModule(GPT2ForSequenceClassification(config), OptimSpec(), EvalSpec())
    batch = next(iter(MultiTaskDataModule({"reviews": task}, named_tasks=False).train_dataloader()))
    moved = module.transfer_batch_to_device(module.on_before_batch_transfer(batch, 0), torch.device("cpu"), 0)
    assert moved["task"] == "reviews" and torch.equal(moved["input_ids"], batch["input_ids"])
    loss, _ = module.step(moved)
    assert torch.isfinite(loss)
