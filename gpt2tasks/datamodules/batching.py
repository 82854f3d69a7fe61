"""Batching: length-grouped, DDP-aware index order and dynamic right padding.

Why: GPT-2 sentences vary a lot in length; padding every batch to a fixed 128 wastes most of the
compute. Sorting by length inside large shuffled "mega-batches" keeps batches homogeneous (little
padding) while the batch order stays random. Each rank takes every world_size-th batch of the same
seeded order, so no DistributedSampler is needed and shards never overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's training order, seeded by the pair (seed, epoch) mixed into one
    32-bit seed. Not `seed + epoch`: run seed s+1 would then draw at epoch e exactly what seed s
    draws at epoch e+1, so a seed sweep's runs would share their data orders. (torch's CPU generator
    keeps only the low 32 bits of a seed, so no bit-shifting either.)"""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0]))


class LengthGroupedSampler(Sampler[int]):
    """Yields indices so that each run of `batch_size` consecutive indices is one batch.

    Train (`shuffle=True`): seeded by (seed, epoch); mega-batches of `batch_size * mega_batches`
    are sorted by length, cut into batches, and the batches shuffled. Ranks get equal numbers of
    batches and every example exactly once per epoch on exactly one rank (`_deal_evenly`).
    Eval (`shuffle=False`): all indices sorted by length (longest first), batched, batches dealt
    round-robin to ranks; every example appears on some rank, none is dropped, and each batch is the
    one a single process would run (so outputs, and metrics, do not depend on the number of ranks).
    Ranks get equal numbers of batches: one with fewer repeats a whole batch (removed by idx).
    Iterating yields the indices of this rank's batches in a row; `RankBatchSampler(sampler)` yields the
    batches themselves (what the DataLoaders use). Lightning calls `set_epoch`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0,
                 group_by_length: bool = True, mega_batches: int = 50, rank: int = 0, world_size: int = 1):
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega = batch_size * mega_batches
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            # Always longest first (data.group_by_length is about training batches): least padding,
            # and the order never changes an eval result (outputs are put back by idx).
            order = torch.argsort(self.lengths, descending=True, stable=True)
            return [order[i:i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        g = epoch_generator(self.seed, self.epoch)
        perm = torch.randperm(n, generator=g)
        batches: list[list[int]] = []
        step = self.mega if self.group_by_length else n
        for start in range(0, n, step):
            chunk = perm[start:start + step]
            if self.group_by_length:
                chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.group_by_length:
            # Shuffle the full batches; the one partial batch (from the last mega-batch) goes last,
            # so a BatchSampler re-chunking this flat stream reproduces exactly these batches.
            full = [b for b in batches if len(b) == self.batch_size]
            partial = [b for b in batches if len(b) < self.batch_size]
            batches = [full[i] for i in torch.randperm(len(full), generator=g).tolist()] + partial
        sorted_batches = self.group_by_length or not self.shuffle
        return _deal_evenly(batches, self.world_size, self.lengths if sorted_batches else None)

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches, in order."""
        batches = self._batches()
        mine = batches[self.rank::self.world_size]
        if not self.shuffle and batches:
            # Equal batch counts on every rank: Lightning refuses a rank without a batch, and FSDP /
            # ZeRO-3 forwards are collective. The extra batch repeats a whole batch (this rank's
            # last, or the first), so its outputs are those of the original; gathering by idx
            # keeps each example once.
            per_rank = math.ceil(len(batches) / self.world_size)
            mine += [mine[-1] if mine else batches[0]] * (per_rank - len(mine))
        return mine

    def __iter__(self) -> Iterator[int]:
        for batch in self.rank_batches():
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self.rank_batches())


class RankSampler(Protocol):
    """What a DataLoader and the multi-task mixer need of a sampler: this rank's batches of the
    epoch set last (LengthGroupedSampler, packing.PackedSampler)."""

    def set_epoch(self, epoch: int) -> None: ...

    def rank_batches(self) -> list[list[int]]: ...


class RankBatchSampler(BatchSampler):
    """Yields a LengthGroupedSampler's batches as they are (never re-chunked: a repeated partial
    eval batch stays its own batch). `.sampler` is where Lightning calls `set_epoch`."""

    def __init__(self, sampler: RankSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the batches are computed at the first batch, not when the DataLoader makes
        # its iterator -- Lightning may make it before it calls set_epoch (on resume, it does).
        yield from self.sampler.rank_batches()

    def __len__(self) -> int:
        return len(self.sampler.rank_batches())


@dataclass
class BatchSource:
    """A split's batches on this rank: which rows (`sampler`) and how they become tensors (`collate`).
    A task's DataLoader is made from it here, and a multi-task run's mixer interleaves the same
    sources (datamodules/multitask.py), so the batches a task trains on alone and among others are
    made in one place."""

    sampler: RankSampler
    collate: Callable[[list[dict]], dict]

    def loader(self, dataset: Dataset, num_workers: int = 0) -> DataLoader:
        return DataLoader(dataset, batch_sampler=RankBatchSampler(self.sampler), collate_fn=self.collate,
                          num_workers=num_workers, persistent_workers=num_workers > 0)


def _deal_evenly(batches: list[list[int]], world_size: int, lengths: torch.Tensor | None = None) -> list[list[int]]:
    """Batches for round-robin dealing with equal step counts on every rank (DDP needs that) and no
    example dropped: the last len % world_size batches are pooled and split into world_size smaller
    batches, one per rank, dealt last. Only when that pool holds fewer than world_size examples are a
    few repeated (as DistributedSampler pads) so that no rank gets an empty batch."""
    cut = len(batches) - len(batches) % world_size
    rest = [i for batch in batches[cut:] for i in batch]
    if not rest:
        return batches
    if lengths is not None:  # contiguous slices of the pool sorted by length stay length-homogeneous
        rest = [rest[j] for j in torch.argsort(lengths[rest], descending=True, stable=True).tolist()]
    # Fewer examples than ranks: rank r >= len(rest) repeats the one of rank r % len(rest), never its own.
    rest += [rest[r % len(rest)] for r in range(len(rest), world_size)]
    return batches[:cut] + [rest[r * len(rest) // world_size:(r + 1) * len(rest) // world_size]
                            for r in range(world_size)]


class Collator:
    """Pads each batch to its own longest sequence (rounded up to `pad_to_multiple_of`), on the right.

    `padded` maps a field to its pad value (input_ids -> pad id, token labels -> -100); other fields
    are stacked as they are, except those in `skip` (per-row data kept for metrics, not the model).
    attention_mask is built here, so datasets never store it. A row may hold one sequence per
    choice (multiple choice): its padded fields and attention_mask then become (batch, choices, T).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None,
                 padded: dict[str, int] | None = None, skip: tuple[str, ...] = ()):
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padded = {"input_ids": pad_token_id, **(padded or {})}
        self.skip = set(skip)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = torch.as_tensor([_lengths(f["input_ids"]) for f in features])  # (B,), or (B, C) for choices
        longest = int(lengths.max())
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, torch.Tensor] = {}
        for name in features[0]:
            if name in self.skip:
                continue
            values = [f[name] for f in features]
            if name in self.padded:
                # (B, longest) or (B, C, longest), right padding
                out = torch.full((*lengths.shape, longest), self.padded[name], dtype=torch.long)
                for index, seq in _sequences(values):
                    out[index][:len(seq)] = torch.as_tensor(seq, dtype=torch.long)
                batch[name] = out
            else:
                batch[name] = torch.as_tensor(values)
        batch["attention_mask"] = (torch.arange(longest) < lengths[..., None]).long()
        return batch


class ChoiceCollator(Collator):
    """Collator for rows of choices, adding `mc_token_ids` (B, C): the position of each choice's last
    real token -- its summary token -- never a padding position."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        batch["mc_token_ids"] = batch["attention_mask"].sum(-1) - 1  # (B, C)
        return batch


def longest_sequence(ids: list) -> int:
    """Length the sampler groups a row by: its sequence, or its longest choice."""
    lengths = _lengths(ids)
    return max(lengths) if isinstance(lengths, list) else lengths


def _lengths(ids: list) -> int | list[int]:
    return [len(seq) for seq in ids] if ids and isinstance(ids[0], list) else len(ids)


def _sequences(values: list[list]):
    """(index, sequence) of every sequence in a batch: (row,) for flat rows, (row, choice) for choices."""
    for row, value in enumerate(values):
        if value and isinstance(value[0], list):
            for choice, seq in enumerate(value):
                yield (row, choice), seq
        else:
            yield (row,), value
