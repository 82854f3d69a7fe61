"""Batches for a multi-task run: every batch holds one task; a seeded rule says which task.

Each task keeps its own datamodule (its files, tokenization, length-grouped batches and collator);
this module only mixes their training batches and lists their eval sets. `TaskMixer` decides the
task of every step. It is computed from (seed, epoch) alone, and every rank has the same number of
batches per task (see `_deal_evenly`), so all ranks draw the same task at the same step: the
heads' collectives under DDP always match.

Per epoch (as many steps as all tasks' batches together, N = sum of n_t) the rule gives task t
exactly c_t steps, in a shuffled order: c_t = N * p_t rounded (largest remainder), with p_t
proportional to n_t (`proportional`), 1 / tasks (`uniform`) or n_t ** (1 / T) (`temperature`).
Each task reads its batches as an endless stream of passes (pass k = its sampler's epoch k order):
a task drawn more often than it has batches starts another shuffled pass within the epoch (repeats),
one drawn less picks up where it stopped in the next epoch (nothing is skipped). `proportional`
gives c_t = n_t: every epoch is exactly one pass over every task.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from gpt2tasks.datamodules.base import TEST, TRAIN, TaskDataModule
from gpt2tasks.datamodules.batching import Collator, LengthGroupedSampler


class TaskMixer:
    """The (task, batch indices) of every training step of an epoch, for this rank."""

    def __init__(self, samplers: dict[str, LengthGroupedSampler], sampling: str = "proportional",
                 temperature: float = 2.0, seed: int = 0):
        self.samplers = samplers
        self.sampling, self.temperature, self.seed = sampling, temperature, seed
        self.epoch = 0
        # Batches per pass: fixed for a sampler (same sizes every epoch), equal on every rank.
        self.sizes = {name: len(s.rank_batches()) for name, s in samplers.items()}

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before every epoch
        self.epoch = epoch

    def probabilities(self) -> dict[str, float]:
        if self.sampling == "uniform":
            weights = {name: 1.0 for name in self.sizes}
        elif self.sampling == "temperature":
            weights = {name: n ** (1.0 / self.temperature) for name, n in self.sizes.items()}
        else:
            weights = {name: float(n) for name, n in self.sizes.items()}
        total = sum(weights.values())
        return {name: w / total for name, w in weights.items()}

    def counts(self) -> dict[str, int]:
        """Steps per task in one epoch: N * p_t, rounded so that they add up to N."""
        total = sum(self.sizes.values())
        exact = {name: total * p for name, p in self.probabilities().items()}
        counts = {name: int(x) for name, x in exact.items()}
        by_remainder = sorted(exact, key=lambda name: (counts[name] - exact[name], list(exact).index(name)))
        for name in by_remainder[:total - sum(counts.values())]:
            counts[name] += 1
        return counts

    def schedule(self, epoch: int) -> list[str]:
        """The task of every step of `epoch`, in order (the same on every rank)."""
        names = [name for name, c in self.counts().items() for _ in range(c)]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return [names[i] for i in torch.randperm(len(names), generator=g).tolist()]

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        counts = self.counts()
        position = {name: self.epoch * counts[name] for name in counts}  # batches read in earlier epochs
        passes: dict[tuple[str, int], list[list[int]]] = {}
        for name in self.schedule(self.epoch):
            pass_, offset = divmod(position[name], self.sizes[name])
            if (name, pass_) not in passes:
                sampler = self.samplers[name]
                sampler.set_epoch(pass_)
                passes[(name, pass_)] = sampler.rank_batches()
            position[name] += 1
            yield name, passes[(name, pass_)][offset]

    def __len__(self) -> int:
        return sum(self.sizes.values())


class MultiTaskBatchSampler(BatchSampler):
    """Batches of (task, row) keys; `.sampler` (the mixer) is where Lightning calls set_epoch."""

    def __init__(self, mixer: TaskMixer):
        self.sampler = mixer

    def __iter__(self) -> Iterator[list[tuple[str, int]]]:
        for name, batch in self.sampler:
            yield [(name, i) for i in batch]

    def __len__(self) -> int:
        return len(self.sampler)


class MultiTaskDataset(Dataset):
    def __init__(self, datasets: dict[str, Dataset]):
        self.datasets = datasets

    def __getitem__(self, key: tuple[str, int]) -> tuple[str, dict]:
        name, i = key
        return name, self.datasets[name][i]

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values())


class MultiTaskCollator:
    """The task's own collator, plus `task` (its name) in the batch."""

    def __init__(self, collators: dict[str, Collator]):
        self.collators = collators

    def __call__(self, features: list[tuple[str, dict]]) -> dict:
        name = features[0][0]
        return {**self.collators[name]([row for _, row in features]), "task": name}


class MultiTaskDataModule(L.LightningDataModule):
    """The tasks' datamodules (`self.tasks`), one mixed training loader, every eval set in order.

    `eval_plan` / `test_plan`: (task, eval set) of each val / test dataloader, in dataloader order.
    """

    def __init__(self, tasks: dict[str, TaskDataModule], sampling: str = "proportional",
                 temperature: float = 2.0, seed: int = 0):
        super().__init__()
        self.tasks = tasks
        self.sampling, self.temperature, self.seed = sampling, temperature, seed

    def setup(self, stage: str | None = None) -> None:
        for dm in self.tasks.values():
            dm.setup(stage)

    @property
    def file_digests(self) -> dict[str, tuple[str, str]]:
        """Every task's data files, by their config key (tasks.<name>.data.*): see TaskDataModule."""
        return {f"tasks.{name}.{key}": found for name, dm in self.tasks.items() for key, found in dm.file_digests.items()}

    def _attach(self) -> None:
        # The task datamodules shard batches by the Trainer's rank and world size.
        for dm in self.tasks.values():
            dm.trainer = self.trainer

    @property
    def eval_plan(self) -> list[tuple[str, str]]:
        return [(name, s) for name, dm in self.tasks.items() for s in dm.eval_sets]

    @property
    def test_plan(self) -> list[tuple[str, str]]:
        return [(name, TEST) for name, dm in self.tasks.items() if dm.has_test]

    @property
    def has_test(self) -> bool:
        return bool(self.test_plan)

    def mixer(self) -> TaskMixer:
        self._attach()
        return TaskMixer({name: dm.sampler(TRAIN, train=True) for name, dm in self.tasks.items()},
                         self.sampling, self.temperature, self.seed)

    def train_dataloader(self) -> DataLoader:
        num_workers = max(dm.spec.num_workers for dm in self.tasks.values())
        return DataLoader(MultiTaskDataset({name: dm.datasets[TRAIN] for name, dm in self.tasks.items()}),
                          batch_sampler=MultiTaskBatchSampler(self.mixer()),
                          collate_fn=MultiTaskCollator({name: dm.collator() for name, dm in self.tasks.items()}),
                          num_workers=num_workers, persistent_workers=num_workers > 0)

    def val_dataloader(self) -> list[DataLoader]:
        self._attach()
        return [self.tasks[name]._loader(s, train=False) for name, s in self.eval_plan]

    def test_dataloader(self) -> list[DataLoader]:
        self._attach()
        return [self.tasks[name]._loader(s, train=False) for name, s in self.test_plan]

    def describe(self) -> str:
        return "; ".join(f"{name}: {dm.describe()}" for name, dm in self.tasks.items())
