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


def test_seeds_do_not_share_epoch_orders():
    """Each (seed, epoch) has its own draw: with seed + epoch, seed 1's epoch 0 was seed 0's epoch 1."""
    lengths = _lengths()
    a, b = LengthGroupedSampler(lengths, 32, shuffle=True, seed=0), LengthGroupedSampler(lengths, 32, shuffle=True, seed=1)
    a.set_epoch(1)
    assert list(a) != list(b)


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


def test_every_index_once_per_epoch_per_rank_and_the_union_is_exact():
    # Sizes where the batches do not divide evenly among ranks, down to fewer leftovers than ranks.
    # (n, batch size, ranks, repeated examples): only a leftover pool smaller than the rank count
    # (65 = 32 + 32 + 1 on 2 ranks) needs a repeat, DistributedSampler-style.
    for n, batch_size, world, repeats in [(1000, 16, 3, 0), (1000, 32, 2, 0), (1001, 8, 4, 0), (97, 32, 4, 0),
                                          (33, 32, 2, 0), (1000, 32, 1, 0), (65, 32, 2, 1)]:
        lengths = _lengths(n, seed=n)
        for epoch in (0, 1):
            shards = []
            for rank in range(world):
                sampler = LengthGroupedSampler(lengths, batch_size, shuffle=True, seed=5, rank=rank, world_size=world)
                sampler.set_epoch(epoch)
                shard = list(sampler)
                assert len(shard) == len(set(shard)) == len(sampler)  # once per epoch on this rank
                shards.append(shard)
            # the same number of steps on every rank: DDP would hang otherwise
            assert len({len(_batches(s, batch_size)) for s in shards}) == 1, (n, batch_size, world)
            union = [i for s in shards for i in s]
            assert set(union) == set(range(n)) and len(union) == n + repeats, (n, batch_size, world)


def test_batches_are_length_homogeneous():
    lengths = _lengths(2000)
    for world in (1, 3):
        spreads = []
        for rank in range(world):
            sampler = LengthGroupedSampler(lengths, 32, shuffle=True, seed=0, rank=rank, world_size=world)
            for batch in _batches(sampler, 32):
                in_batch = [lengths[i] for i in batch]
                assert in_batch == sorted(in_batch, reverse=True)  # a slice of a length-sorted pool
                spreads.append(max(in_batch) - min(in_batch))
        # Lengths 1..120: a random batch of 32 spans ~110; a slice of a sorted 1,600-example
        # mega-batch ~2.5 (the last, smaller mega-batch and the ranks' leftover pool a little more).
        assert sum(spreads) / len(spreads) < 6 and max(spreads) < 30
