"""Which task each multi-task step draws: exact per-epoch counts per rule, every batch read in
passes (nothing skipped, repeats only as whole new passes), the same sequence on every rank."""

from __future__ import annotations

from collections import Counter

import pytest

from gpt2tasks.datamodules.batching import LengthGroupedSampler
from gpt2tasks.datamodules.multitask import TaskMixer

SIZES = {"big": 90, "small": 10}  # examples; batch 2 below -> 45 and 5 batches per pass


def mixer(sampling: str, temperature: float = 2.0, rank: int = 0, world: int = 1, sizes=SIZES) -> TaskMixer:
    samplers = {name: LengthGroupedSampler(list(range(1, n + 1)), 2, shuffle=True, seed=7, rank=rank, world_size=world)
                for name, n in sizes.items()}
    return TaskMixer(samplers, sampling, temperature, seed=3)


def epoch(m: TaskMixer, e: int) -> list[tuple[str, list[int]]]:
    m.set_epoch(e)
    return list(m)


def test_proportional_is_one_pass_over_every_task_per_epoch():
    m = mixer("proportional")
    assert len(m) == 50 and m.counts() == {"big": 45, "small": 5}
    for e in range(2):
        steps = epoch(m, e)
        for name, n in SIZES.items():
            seen = sorted(i for task, batch in steps if task == name for i in batch)
            assert seen == list(range(n))  # every example of every task exactly once
    assert [t for t, _ in epoch(m, 0)] != [t for t, _ in epoch(m, 1)]  # reshuffled each epoch
    assert epoch(m, 1) == epoch(mixer("proportional"), 1)  # from (seed, epoch) alone: resumable


@pytest.mark.parametrize("sampling, temperature, expected", [
    ("uniform", 2.0, {"big": 25, "small": 25}),
    # sizes ** (1 / T) with T = 2: sqrt(45) : sqrt(5) = 3 : 1 of 50 steps -> 37.5 / 12.5, largest remainder
    ("temperature", 2.0, {"big": 38, "small": 12}),
    ("temperature", 1.0, {"big": 45, "small": 5}),  # T = 1 is proportional
])
def test_rules_give_exact_counts_every_epoch(sampling, temperature, expected):
    m = mixer(sampling, temperature)
    assert m.counts() == expected and sum(expected.values()) == len(m)
    for e in range(3):
        assert Counter(t for t, _ in epoch(m, e)) == expected


def test_tasks_repeat_in_whole_passes_and_continue_across_epochs():
    m = mixer("uniform")  # small: 25 draws a epoch over 5 batches = 5 passes; big: 25 of 45 batches
    stream = {name: [] for name in SIZES}
    for e in range(9):  # 9 epochs x 25 draws of big = 225 = 5 full passes over its 45 batches
        for task, batch in epoch(m, e):
            stream[task].append(batch)
    for name, n in SIZES.items():
        batches = stream[name]
        per_pass = n // 2
        assert len(batches) % per_pass == 0
        for start in range(0, len(batches), per_pass):  # each pass is a full permutation of the task's rows
            assert sorted(i for b in batches[start:start + per_pass] for i in b) == list(range(n))
    small = stream["small"]
    assert small[:5] != small[5:10]  # a new pass is a new shuffle, not the same batches again


def test_every_rank_draws_the_same_task_at_every_step():
    sizes = {"a": 37, "b": 20, "c": 9}  # uneven: the last batches are pooled and dealt to both ranks
    ranks = [mixer("temperature", 3.0, rank=r, world=2, sizes=sizes) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    for e in range(2):
        steps = [epoch(m, e) for m in ranks]
        assert [t for t, _ in steps[0]] == [t for t, _ in steps[1]]
    # proportional under two ranks: together the ranks read every row of every task; a row is on
    # both only where a task's leftover is one example (_deal_evenly repeats it for the second rank)
    ranks = [mixer("proportional", rank=r, world=2, sizes=sizes) for r in range(2)]
    rows = [{(t, i) for t, b in epoch(m, 0) for i in b} for m in ranks]
    assert {t: sum(1 for task, _ in rows[0] | rows[1] if task == t) for t in sizes} == sizes
    assert sorted(t for t, _ in rows[0] & rows[1]) == ["a", "c"]  # 37 and 9 rows: one left over each
