"""The datamodule of every run: N >= 1 tasks, every training batch from one task, a seeded rule
says which.

Each task keeps its own datamodule (its files, tokenization, batches and collator); this module
only interleaves their training batches and lists their eval sets. A task's training batches are
exactly those its own `train_dataloader` gives -- packed where it packs (data.pack_examples), padded
otherwise, dealt to ranks the same way -- since both come from its `train_batches()`; the batch
only gains `task` (its name). With one task the mixer is the identity: the batches, epoch after
epoch, are that task's own, in its order.

`TaskMixer` decides the task of every step. It is computed from (seed, epoch) alone, and every
rank has the same number of batches per task (LengthGroupedSampler's `_deal_evenly`; a
PackedSampler's count is fixed at construction and a multiple of world_size), so all ranks draw
the same task at the same step: the heads' collectives under DDP always match.

Per epoch (as many steps as all tasks' batches together, N = sum of n_t) the rule gives task t
exactly c_t steps, in a shuffled order: c_t = N * p_t rounded (largest remainder), with p_t
proportional to n_t (`proportional`), 1 / tasks (`uniform`) or n_t ** (1 / T) (`temperature`).
Each task reads its batches as an endless stream of passes (pass k = its sampler's epoch k order):
a task drawn more often than it has batches starts another shuffled pass within the epoch (repeats),
one drawn less picks up where it stopped in the next epoch (nothing is skipped). `proportional`
gives c_t = n_t: every epoch is exactly one pass over every task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from gpt2tasks.datamodules.base import TEST, TRAIN, TaskDataModule
from gpt2tasks.datamodules.batching import RankSampler


def eval_plan(tasks: dict[str, TaskDataModule], split: str) -> list[tuple[str, str]]:
    """(task, eval set) of each val (`split="val"`) or test dataloader of a run over the tasks'
    datamodules, in dataloader order: the loaders below and the run's module
    (tasks/multitask.py, which reads its tasks' datamodules) both follow it."""
    if split == TEST:
        return [(name, TEST) for name, dm in tasks.items() if dm.has_test]
    return [(name, s) for name, dm in tasks.items() for s in dm.eval_sets]


class TaskMixer:
    """The (task, batch indices) of every training step of an epoch, for this rank."""

    def __init__(self, samplers: dict[str, RankSampler], sampling: str = "proportional",
                 temperature: float = 2.0, seed: int = 0):
        self.samplers = samplers
        self.sampling, self.temperature, self.seed = sampling, temperature, seed
        self.epoch = 0
        # Batches per pass: fixed for a sampler (the same count every epoch), equal on every rank;
        # the positions below count on it (checked at every new pass).
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
                passes[(name, pass_)] = self._pass(name, pass_)
            position[name] += 1
            yield name, passes[(name, pass_)][offset]

    def _pass(self, name: str, pass_: int) -> list[list[int]]:
        sampler = self.samplers[name]
        sampler.set_epoch(pass_)
        batches = sampler.rank_batches()
        if len(batches) != self.sizes[name]:  # a sampler whose count varies would skip or repeat batches
            raise RuntimeError(f"task {name}: pass {pass_} has {len(batches)} batches on this rank, pass 0 had "
                               f"{self.sizes[name]}; the mixer needs the same count every pass")
        return batches

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

    def __init__(self, collators: dict[str, Callable[[list[dict]], dict]]):
        self.collators = collators

    def __call__(self, features: list[tuple[str, dict]]) -> dict:
        name = features[0][0]
        return {**self.collators[name]([row for _, row in features]), "task": name}


class MultiTaskDataModule(L.LightningDataModule):
    """The tasks' datamodules (`self.tasks`), one mixed training loader, every eval set in order.

    `eval_plan` / `test_plan`: (task, eval set) of each val / test dataloader, in dataloader order;
    the eval batches are the task's own, without `task` (the plan says whose they are).
    `named_tasks`: whether the run's config holds each task under `tasks.<name>` (`task=multitask`,
    even with one task): data file keys are then `tasks.<name>.data.*` and eval sets `<name>/val`;
    false for a single-task config: `data.*` and `val`, as a single-task run has always reported
    them (resume compares the file keys with the checkpoint's). A flag, not the number of tasks:
    a `task=multitask` run of one task keeps its `tasks.<name>` keys and `<name>/` metrics.
    """

    def __init__(self, tasks: dict[str, TaskDataModule], sampling: str = "proportional",
                 temperature: float = 2.0, seed: int = 0, named_tasks: bool = True):
        super().__init__()
        if not tasks:
            raise ValueError("a run has at least one task")
        if not named_tasks and len(tasks) > 1:
            raise ValueError(f"{len(tasks)} tasks need named_tasks: their keys would collide")
        self.tasks = tasks
        self.sampling, self.temperature, self.seed = sampling, temperature, seed
        self.named_tasks = named_tasks

    def setup(self, stage: str | None = None) -> None:
        for dm in self.tasks.values():
            dm.setup(stage)

    def _key(self, name: str, key: str) -> str:
        """A task's config key as the run's config spells it (tasks.<name>.data.x or data.x)."""
        return f"tasks.{name}.{key}" if self.named_tasks else key

    def _set(self, name: str, eval_set: str) -> str:
        """A task's eval set as its metrics name it (<name>/val or val)."""
        return f"{name}/{eval_set}" if self.named_tasks else eval_set

    @property
    def file_digests(self) -> dict[str, tuple[str, str]]:
        """Every task's data files, by their config key: see TaskDataModule and `named_tasks`."""
        return {self._key(name, key): found for name, dm in self.tasks.items() for key, found in dm.file_digests.items()}

    def eval_rows(self) -> dict[str, tuple[int, int, str | None]]:
        """Per eval set, named as its metrics are (`named_tasks`): (rows scored, rows its file holds,
        the key that cut it, or None when it is read whole)."""
        rows = {}
        for name, dm in self.tasks.items():
            for eval_set, (scored, in_file) in dm.scored_rows().items():
                cut = self._key(name, dm.row_limit_key(eval_set)) if scored < in_file else None
                rows[self._set(name, eval_set)] = (scored, in_file, cut)
        return rows

    def _attach(self) -> None:
        # The task datamodules shard batches by the Trainer's rank and world size.
        for dm in self.tasks.values():
            dm.trainer = self.trainer

    @property
    def eval_plan(self) -> list[tuple[str, str]]:
        return eval_plan(self.tasks, "val")

    @property
    def test_plan(self) -> list[tuple[str, str]]:
        return eval_plan(self.tasks, TEST)

    @property
    def has_test(self) -> bool:
        return bool(self.test_plan)

    def train_dataloader(self) -> DataLoader:
        self._attach()
        sources = {name: dm.train_batches() for name, dm in self.tasks.items()}
        mixer = TaskMixer({name: source.sampler for name, source in sources.items()},
                          self.sampling, self.temperature, self.seed)
        num_workers = max(dm.spec.num_workers for dm in self.tasks.values())
        return DataLoader(MultiTaskDataset({name: dm.datasets[TRAIN] for name, dm in self.tasks.items()}),
                          batch_sampler=MultiTaskBatchSampler(mixer),
                          collate_fn=MultiTaskCollator({name: source.collate for name, source in sources.items()}),
                          num_workers=num_workers, persistent_workers=num_workers > 0)

    def val_dataloader(self) -> list[DataLoader]:
        self._attach()
        return [self.tasks[name]._loader(s, train=False) for name, s in self.eval_plan]

    def test_dataloader(self) -> list[DataLoader]:
        # a list of one loader is one loader to Lightning (no dataloader_idx), as a single task's
        self._attach()
        return [self.tasks[name]._loader(s, train=False) for name, s in self.test_plan]

    def describe(self) -> str:
        if not self.named_tasks:
            (dm,) = self.tasks.values()
            return dm.describe()
        return "; ".join(f"{name}: {dm.describe()}" for name, dm in self.tasks.items())
