"""Length-grouped, DDP-aware batching and dynamic right padding."""

import math
import random

import pytest
import torch
from torch.utils.data import BatchSampler

from gpt2tasks.datamodules.batching import Collator, LengthGroupedSampler, RankBatchSampler


def _batches(sampler, batch_size):
    return list(BatchSampler(sampler, batch_size, drop_last=False))


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(1, 120) for _ in range(n)]


def test_train_order_covers_every_example_once_and_is_seeded_per_epoch():
    lengths = _lengths()
    s = LengthGroupedSampler(lengths, 32, shuffle=True, seed=3)
    first = list(s)
    assert sorted(first) == list(range(len(lengths)))
    assert list(s) == first  # same epoch, same order
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == list(range(len(lengths)))


def test_grouping_cuts_padding():
    lengths = _lengths()

    def padding(group):
        batches = _batches(LengthGroupedSampler(lengths, 32, shuffle=True, seed=0, group_by_length=group), 32)
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(True) < 0.2 * padding(False)


def test_only_the_last_batch_can_be_partial():
    lengths = _lengths(1000)
    batches = _batches(LengthGroupedSampler(lengths, 32, shuffle=True, seed=0), 32)
    assert [len(b) for b in batches[:-1]] == [32] * (len(batches) - 1) and len(batches[-1]) == 1000 % 32


def test_ranks_get_disjoint_equal_shards_in_training():
    lengths = _lengths(1000)
    shards = [list(LengthGroupedSampler(lengths, 16, shuffle=True, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert len({len(_batches(s, 16)) for s in shards}) == 1  # same number of steps on every rank
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat))


@pytest.mark.parametrize("n, world", [(101, 2), (101, 3), (5, 2), (1, 3), (96, 2)])
def test_eval_shards_are_the_single_process_batches_dealt_evenly(n, world):
    lengths = _lengths(n)
    single = LengthGroupedSampler(lengths, 8, shuffle=False).rank_batches()
    assert [lengths[i] for b in single for i in b] == sorted(lengths, reverse=True)
    shards = [LengthGroupedSampler(lengths, 8, shuffle=False, rank=r, world_size=world).rank_batches()
              for r in range(world)]
    # every example on some rank, each batch exactly one a single process runs (same outputs)...
    assert sorted({i for s in shards for b in s for i in b}) == list(range(n))
    assert all(b in single for s in shards for b in s)
    # ...and the same number of batches on every rank (a rank with fewer repeats a whole batch)
    assert {len(s) for s in shards} == {math.ceil(len(single) / world)}
    assert [len(b) for b in RankBatchSampler(LengthGroupedSampler(lengths, 8, shuffle=False, rank=world - 1,
                                                                  world_size=world))] == [len(b) for b in shards[-1]]


def test_collator_pads_right_and_builds_the_mask():
    collate = Collator(pad_token_id=99, pad_to_multiple_of=4, padded={"tags": -100})
    batch = collate([{"input_ids": [1, 2, 3], "tags": [5, 6, 7], "labels": 1, "idx": 0},
                     {"input_ids": [4], "tags": [8], "labels": 0, "idx": 1}])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 99], [4, 99, 99, 99]]
    assert batch["tags"].tolist() == [[5, 6, 7, -100], [8, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["idx"].dtype == torch.long


def test_batch_sampler_reads_the_epoch_at_the_first_batch():
    # Lightning may make the DataLoader's iterator before it calls set_epoch (on resume it does)
    sampler = LengthGroupedSampler(_lengths(100), 8, shuffle=True, seed=0)
    batches = iter(RankBatchSampler(sampler))
    sampler.set_epoch(1)
    assert list(batches) == sampler.rank_batches() != LengthGroupedSampler(_lengths(100), 8, shuffle=True,
                                                                          seed=0).rank_batches()
