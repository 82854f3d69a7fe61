"""Packed training batches (`data.pack_examples=true`): whole examples, several per row.

Why: length-grouped batches (the sampler in batching.py) cut padding by making batches length-
homogeneous, which makes them non-random (a measured accuracy cost, docs/benchmark-history.md), and every
batch has a new shape, which defeats static-shape `torch.compile` / CUDA graphs. Packing keeps the
draw random: every epoch draws the examples in a seeded random order, each exactly once, in
batches that fit whole into `rows` rows of `row_len` tokens; only the tail of a row is padding.
With model.compile=true every training batch is that one shape, (rows, row_len), on every rank;
without it each batch is laid out in as few, evenly filled rows as its tokens need (PackedCollator).

Each example sees only itself: position ids restart at 0 for every example (and for the padding
tail), and the backbone gets no 2D attention mask. transformers (5.x) then builds a block-diagonal
causal mask from the position ids (`masking_utils.find_packed_sequence_indices`) for every attention
implementation -- sdpa and eager take it as a dense boolean mask, flash-attention as varlen, flex as
a block mask that skips the masked blocks. The padding tail is its own "sequence" (it attends only
to padding, so no row of the mask is empty and nothing is NaN).

The batch also carries everything the unpacked collator makes for the same examples (labels,
attention_mask (E, T), word_ids, ...), and `pack_index` (E, T): where token t of example e sits in
the flattened (rows * row_len) batch. A task module runs the backbone on the packed rows and
`unpack`s its per-token outputs to (E, T, ...): from there on, pooling, losses and per-example
outputs are exactly those of an unpacked batch of the same examples.

The sampler is deterministic given (seed, epoch), like LengthGroupedSampler, and has the same
interface (set_epoch, rank_batches, __iter__, __len__), so RankBatchSampler and generic resume
(skip the first k batches) work unchanged. Its number of batches is the same every epoch and on
every rank (Lightning fixes the epoch length at its first epoch; DDP needs equal step counts).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from gpt2tasks.datamodules.batching import Collator, epoch_generator

#: default row length floor: short-sentence data gets rows of 128 tokens (several sentences each);
#: longer examples get rows as long as the longest (one example must always fit in a row).
MIN_ROW_LEN = 128
#: share of a packed epoch's batches that must hold all batch_size examples (default_layout's rows)
FULL_BATCHES = 0.98


def default_layout(lengths: Sequence[int], batch_size: int, n_positions: int,
                   max_tokens_per_row: int | None = None) -> tuple[int, int]:
    """(rows per batch, tokens per row) that hold `batch_size` examples of these lengths.

    Rows are `max_tokens_per_row` long, or by default max(longest example, 128) rounded up to a
    multiple of 8, at most n_positions. Rows per batch: the fewest with which a seeded random epoch,
    packed with no example waiting for a later batch, fills at least FULL_BATCHES of its batches
    with batch_size examples -- from batch_size examples of the mean length upwards, since a random
    draw of batch_size examples is often longer than that, and whole examples leave a little room at
    the end of each row. So examples rarely wait (PackedSampler), and the order stays random.
    """
    longest = max(lengths)
    row_len = max_tokens_per_row or min(n_positions, 8 * math.ceil(max(longest, MIN_ROW_LEN) / 8))
    rows = max(1, math.ceil(batch_size * sum(lengths) / len(lengths) / row_len))
    while batch_size > 1:
        batches = pack_epoch(lengths, rows, row_len, batch_size, epoch_generator(0, 0), look_ahead=False)
        if sum(len(_members(b)) == batch_size for b in batches[:-1]) >= FULL_BATCHES * (len(batches) - 1):
            break
        rows += 1
    return rows, row_len


def next_fit(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Positions of `lengths` grouped into consecutive rows of at most row_len tokens, in order.
    On a concatenation of rows that each fit, it never uses more rows than that concatenation had
    (greedy is optimal for cutting a sequence into contiguous runs) -- what lets the collator
    rebuild at most `rows` rows from the flat index order the sampler yields."""
    rows: list[list[int]] = []
    used = row_len + 1
    for i, n in enumerate(lengths):
        if used + n > row_len:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def pack_epoch(lengths: Sequence[int], rows: int, row_len: int, max_examples: int | None,
               generator: torch.Generator, look_ahead: bool = True) -> list[list[list[int]]]:
    """One epoch's batches (lists of rows of indices). The examples wait in a random order; each
    goes into the current batch's first row with room (first fit), a new row while the batch has
    fewer than `rows`. One that finds no room waits for the next batch (first in line there) while
    the batch fills up with those after it, up to max_examples examples (with look_ahead, at most
    max_examples may wait per batch); without look_ahead, or with no max_examples, the first that
    finds no room closes the batch."""
    waiting = deque(torch.randperm(len(lengths), generator=generator).tolist())
    batches: list[list[list[int]]] = []
    while waiting:
        batch: list[list[int]] = []
        fills: list[int] = []
        skipped: list[int] = []
        count = 0
        while waiting and (max_examples is None or count < max_examples):
            i = waiting.popleft()
            n = lengths[i]
            row = next((r for r, used in enumerate(fills) if used + n <= row_len), None)
            if row is None and len(batch) < rows:
                batch.append([])
                fills.append(0)
                row = len(batch) - 1
            if row is None:
                skipped.append(i)
                if not look_ahead or max_examples is None or len(skipped) >= max_examples:
                    break
                continue
            batch[row].append(i)
            fills[row] += n
            count += 1
        waiting.extendleft(reversed(skipped))
        batches.append(batch)
    return batches


def _members(batch: list[list[int]]) -> list[int]:
    return [i for row in batch for i in row]


class PackedSampler(Sampler[int]):
    """Yields indices so that each batch of `rank_batches()` packs whole into (rows, row_len).

    An epoch: a random permutation seeded by (seed, epoch), packed by `pack_epoch` into batches of
    `max_examples` (the data.batch_size) examples; a rare example that finds no room waits for the
    next batch. With rows enough for max_examples examples (default_layout), the batches are then
    those of random order -- consecutive runs of batch_size examples of a random permutation, the
    same count per epoch, every example weighted alike in the mean loss -- laid out without padding. (A
    token budget alone, without the cap, made batches of 2 to 44 examples around a mean of 37 on the
    bundled sample (batch_size 32): 14% fewer, larger optimizer steps, and an epoch's last step on
    as few as 2 examples -- training that measurably differed from random order, docs/benchmark-history.md.)
    The batch count is then made equal to the epoch-0 count (plus a small
    slack, rounded up to a multiple of world_size) by splitting batches along rows, or -- rarely,
    when an epoch needs more -- merging the two emptiest batches. Batches are dealt round-robin.
    """

    def __init__(self, lengths: Sequence[int], rows: int, row_len: int, *, max_examples: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths = [int(n) for n in lengths]
        too_long = max(self.lengths)
        if too_long > row_len:
            raise ValueError(f"an example of {too_long} tokens does not fit a row of {row_len}")
        self.rows, self.row_len, self.max_examples = rows, row_len, max_examples
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None
        first = len(self._pack(0))
        # Capped: random order's count, ceil(examples / batch_size) (an example that finds no room
        # waits for the next batch, so batches stay full). A token budget alone: the first epoch's
        # count plus a little slack, so that an epoch whose draw packs a little worse still fits.
        count = max(first, math.ceil(len(self.lengths) / max_examples) if max_examples else first + max(1, first // 50))
        self.num_batches = world_size * math.ceil(count / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pack(self, epoch: int) -> list[list[list[int]]]:
        """Batches (lists of rows of dataset indices) of one epoch, before the count is fixed."""
        return pack_epoch(self.lengths, self.rows, self.row_len, self.max_examples, epoch_generator(self.seed, epoch))

    def _batches(self) -> list[list[int]]:
        """All ranks' batches of this epoch, as flat index lists (rows one after another)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self._pack(self.epoch)
        while len(batches) > self.num_batches:
            batches = self._merge_emptiest(batches)
        while len(batches) < self.num_batches:
            batches = self._split_largest(batches)
        flat = [[i for row in batch for i in row] for batch in batches]
        self._cache = (self.epoch, flat)
        return flat

    def _tokens(self, batch: list[list[int]]) -> int:
        return sum(self.lengths[i] for row in batch for i in row)

    def _merge_emptiest(self, batches: list[list[list[int]]]) -> list[list[list[int]]]:
        order = sorted(range(len(batches)), key=lambda b: self._tokens(batches[b]))
        a, b = order[0], order[1]
        examples = sorted((i for row in batches[a] + batches[b] for i in row), key=lambda i: -self.lengths[i])
        rows: list[list[int]] = []
        fills: list[int] = []
        for i in examples:  # first fit decreasing
            r = next((r for r, used in enumerate(fills) if used + self.lengths[i] <= self.row_len), None)
            if r is None:
                rows.append([])
                fills.append(0)
                r = len(rows) - 1
            rows[r].append(i)
            fills[r] += self.lengths[i]
        if len(rows) > self.rows:
            raise RuntimeError(f"packing epoch {self.epoch}: {len(batches)} batches do not fit the fixed count "
                               f"{self.num_batches}; raise data.max_tokens_per_row or data.batch_size")
        return [batch for k, batch in enumerate(batches) if k not in (a, b)] + [rows]

    def _split_largest(self, batches: list[list[list[int]]]) -> list[list[list[int]]]:
        """One more batch: the last of the batches with the most examples is cut into two halves of
        its examples (each half still fits its rows: next_fit of a prefix or suffix of rows that
        fit needs no more rows); with a single example left everywhere (tiny data, many ranks), one
        example is repeated (as DistributedSampler pads)."""
        k = max(reversed(range(len(batches))), key=lambda b: len(_members(batches[b])))
        members = _members(batches[k])
        if len(members) == 1:
            return batches + [batches[k]]
        halves = [members[:len(members) // 2], members[len(members) // 2:]]
        return batches[:k] + [[[half[j] for j in row] for row in next_fit([self.lengths[i] for i in half], self.row_len)]
                              for half in halves] + batches[k + 1:]

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches, in order: every world_size-th of the epoch's."""
        return self._batches()[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        for batch in self.rank_batches():
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self.rank_batches())


class PackedCollator:
    """The unpacked collator's batch of the same examples (per-example labels, attention_mask,
    ...), with `input_ids` replaced by the packed ids, plus `position_ids` restarting at 0 per
    example and `pack_index` (E, T).

    Two layouts of the same examples (the sampler decides which examples a batch holds, so both
    train on the same batches):
    - `rows` given (static shapes, for model.compile): every batch is (rows, row_len), the examples
      in the sampler's rows, each row's tail padded -- one graph, no recompiles, CUDA graphs.
    - `rows=None` (eager): each batch gets as few rows as its tokens need, the examples spread
      longest first over them so that the rows end evenly, and the rows only as wide as the fullest
      (rounded up to `multiple`). On SST-2 sentences that leaves under 1% of the positions as padding
      where the fixed shape leaves about 23% (docs/benchmarks.md); shapes that change per batch
      cost nothing without compile.
    """

    def __init__(self, collator: Collator, row_len: int, pad_token_id: int, rows: int | None = None,
                 multiple: int = 1):
        self.collator, self.rows, self.row_len, self.pad_token_id = collator, rows, row_len, pad_token_id
        self.multiple = multiple

    def _layout(self, lengths: list[int]) -> tuple[list[list[int]], int]:
        """(rows of example positions, tokens per row) of this batch."""
        if self.rows is None:
            rows = balanced_rows(lengths, self.row_len)
            widest = max(sum(lengths[e] for e in row) for row in rows)
            return rows, self.multiple * math.ceil(widest / self.multiple)
        rows = next_fit(lengths, self.row_len)
        if len(rows) > self.rows:
            raise RuntimeError(f"{len(lengths)} examples need {len(rows)} rows, the batch has {self.rows}")
        return rows + [[] for _ in range(self.rows - len(rows))], self.row_len

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        lengths = [len(f["input_ids"]) for f in features]
        rows, row_len = self._layout(lengths)
        ids = torch.full((len(rows), row_len), self.pad_token_id, dtype=torch.long)
        positions = torch.arange(row_len).repeat(len(rows), 1)  # padding tails: their own sequence
        width = batch["attention_mask"].shape[-1]
        index = torch.zeros((len(features), width), dtype=torch.long)
        for r, members in enumerate(rows):
            start = 0
            for e in members:
                n = lengths[e]
                ids[r, start:start + n] = torch.as_tensor(features[e]["input_ids"], dtype=torch.long)
                positions[r, start:start + n] = torch.arange(n)
                positions[r, start + n:] = torch.arange(row_len - start - n)
                # past an example's end: its first token (any real index; masked by attention_mask)
                index[e] = r * row_len + start + torch.arange(width).masked_fill(torch.arange(width) >= n, 0)
                start += n
        batch["input_ids"], batch["position_ids"], batch["pack_index"] = ids, positions, index
        return batch


def balanced_rows(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Positions of `lengths` in as few rows of at most row_len tokens as a longest-first spread
    manages, starting from the fewest the total allows: each example, longest first, goes into the
    emptiest row, so the rows end within about one example of each other (little tail padding)."""
    order = sorted(range(len(lengths)), key=lambda e: -lengths[e])
    count = max(1, math.ceil(sum(lengths) / row_len))
    while True:
        rows: list[list[int]] = [[] for _ in range(count)]
        fills = [0] * count
        for e in order:
            r = min(range(count), key=fills.__getitem__)
            rows[r].append(e)
            fills[r] += lengths[e]
        if max(fills) <= row_len:  # always true by len(lengths) rows: one example per row fits
            return rows
        count += 1


def is_packed(batch: dict[str, torch.Tensor]) -> bool:
    return "pack_index" in batch


def backbone_inputs(batch: dict[str, torch.Tensor], sdpa: bool = False) -> dict[str, torch.Tensor]:
    """What the backbone (or an HF head) is called with for a packed batch: the rows and their
    position ids, plus under SDPA the (rows, 1, T, T) block-diagonal causal mask built here.
    Without that mask transformers derives it from the position ids, but first checks on the host
    whether any row is packed (masking_utils.find_packed_sequence_indices: a GPU sync per forward);
    a 4-D mask is used as given. Other attention implementations get the position ids only."""
    positions = batch["position_ids"]
    inputs = {"input_ids": batch["input_ids"], "position_ids": positions}
    if sdpa:
        inputs["attention_mask"] = block_causal_mask(positions)
    return inputs


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """(rows, T) position ids restarting at 0 per example -> (rows, 1, T, T) boolean mask: a token
    attends to the earlier tokens of its own example only (a row's padding tail is one more
    segment, whose outputs are never read)."""
    segment = (position_ids == 0).cumsum(dim=-1)  # (rows, T): which example of its row each token is
    same = segment[:, :, None] == segment[:, None, :]
    length = position_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    return (same & causal)[:, None]


def unpack(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token outputs (rows, row_len, ...) of a packed batch -> (E, T, ...) per example, laid out
    as the unpacked batch would have them (positions past an example's end hold junk, masked by
    the batch's attention_mask as padding is). An unpacked batch's outputs are returned as they are."""
    if not is_packed(batch):
        return values
    flat = values.reshape(-1, *values.shape[2:])  # (rows * row_len, ...)
    return flat[batch["pack_index"]]
