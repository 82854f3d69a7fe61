"""Language-modelling data: documents (TXT lines or files, or a text column) -> token blocks.

Every non-empty document is tokenized and followed by eos, so the model learns where documents end.
- Packing (`data.packing=true`, default): the documents of a whole split are concatenated into one
  token stream and cut into consecutive blocks of `data.block_size` tokens. No padding, and every
  token lands in exactly one block; the last, shorter block is kept (dropping it would leave
  tokens out of the evaluation). Because the blocks depend on the whole split, `datasets.map` gets
  the split as one batch (`map_batch_size = None`) and the cache stores the blocks.
- Unpacked (`data.packing=false`): one document per row, split into consecutive windows of at most
  `block_size` tokens (never truncated); batches are right-padded and the loss ignores padding
  by the attention mask, so a document's real eos still counts.
Each row keeps `example`: the document it starts in (a packed block may span several documents).
Empty (or whitespace-only) documents -- WikiText's blank lines between paragraphs -- are dropped as
the split is read, counted in a warning, so everything that counts rows counts documents:
`data.max_train_samples` / `max_eval_samples`, `data.validation_fraction`'s hold-out and the start-up
log. A split with nothing else is refused.
Validation sets are scored on their first `data.max_val_tokens` tokens (null: whole), so a large
validation file does not make every validation slow; the test split is always scored whole.
"""

from __future__ import annotations

import dataclasses
import logging
from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

from gpt2tasks.datamodules.base import RawSplit, TaskDataModule
from gpt2tasks.datamodules.files import SUPPORTED, check_file, iter_lines, read_text
from gpt2tasks.datamodules.labels import LANGUAGE_MODELING, LabelSpace
from gpt2tasks.errors import UserError

log = logging.getLogger(__name__)


class LanguageModelingDataModule(TaskDataModule):
    @property
    def row_name(self) -> str:  # the start-up log's split sizes: documents, then these
        return f"{'blocks' if self.spec.packing else 'windows'} of up to {self.spec.block_size} tokens"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Packing cuts one stream per split, so tokenize_batch must see the whole split.
        self.map_batch_size = None if self.spec.packing else TaskDataModule.map_batch_size
        self.val_tokens_cut: dict[str, tuple[int, int]] = {}  # eval set -> (tokens scored, tokens it holds)

    def check_model_limits(self, n_positions: int) -> None:
        check_block_size(self.spec.block_size, n_positions)

    def iter_file(self, path: str, key: str) -> Iterator[tuple[dict, int | None]]:
        if Path(path).suffix.lower() in SUPPORTED:  # CSV/TSV/JSON/JSONL with a text column
            yield from super().iter_file(path, key)
            return
        # Anything else is plain text (.txt, WikiText's .tokens, ...): one document per line, read
        # line by line, or the whole file as one document.
        column = self.spec.text_column
        if not self.spec.line_by_line:
            yield {column: read_text(path, key)[0]}, 1
            return
        file, _ = check_file(path, key)
        # Lines end at \n alone (not at U+2028 and friends, as splitlines() would); the file's final
        # newline ends the last line, it does not start a new one.
        for number, line in enumerate(iter_lines(file, key, newline="\n"), start=1):
            yield {column: line.removesuffix("\n").rstrip("\r")}, number

    def _load(self, key: str, file: str | None, hub_split: str | None) -> RawSplit | None:
        """The split's documents: its rows (file lines, CSV/JSON rows, Hub rows) without the empty ones.
        Dropped here, before anything counts rows, so that `data.max_*_samples` count documents (a
        WikiText file is one third blank lines). Rows whose text is not a string stay, for
        encode_rows to name, and so do rows without the column, for the column check to name."""
        part = super()._load(key, file, hub_split)
        if part is None:
            return None
        column = self.spec.text_column
        kept = [i for i, row in enumerate(part.rows) if column not in row or not _empty(row[column])]
        if not kept:
            raise UserError(f"{part.key}={part.where}: all {len(part.rows)} documents are empty (data.text_column="
                            f"{column!r}), so there is nothing to learn from. Fix: point {part.key} at a file "
                            "with text, or check data.text_column.")
        if len(kept) < len(part.rows):
            log.warning("%s=%s: skipped %d of %d documents that are empty or only whitespace (e.g. blank "
                        "lines).", part.key, part.where, len(part.rows) - len(kept), len(part.rows))
        lines = [part.lines[i] for i in kept] if part.lines else part.lines
        return dataclasses.replace(part, rows=[part.rows[i] for i in kept], lines=lines)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        budget = self.spec.max_val_tokens
        for split in self.eval_sets if budget else ():
            if split not in self.spec.whole_eval_sets:
                self._cut_to_tokens(split, budget)

    def _cut_to_tokens(self, split: str, budget: int) -> None:
        """Keep the eval set's first rows up to `budget` tokens (at least one row). Why validation
        only: it runs many times and only ranks checkpoints, for which a sample of tens of thousands
        of tokens is plenty (the mean NLL's standard error is well under 1%); the test split runs
        once and is the number a user reports, so it is scored whole, as published perplexities are.
        Idempotent (setup runs more than once)."""
        rows = self.datasets[split].rows
        ends = list(accumulate(len(r["input_ids"]) for r in rows))
        keep = max(1, bisect_right(ends, budget))
        if keep < len(rows):
            self.datasets[split].rows = rows[:keep]
            self.examples[split] = self.examples[split][:rows[keep - 1]["example"] + 1]  # documents scored (in part)
            self.val_tokens_cut[split] = (ends[keep - 1], ends[-1])

    def row_limit_key(self, split: str) -> str:
        if split in self.val_tokens_cut:
            scored, total = self.val_tokens_cut[split]
            return f"data.max_val_tokens={self.spec.max_val_tokens}: {scored:,} of {total:,} tokens"
        return super().row_limit_key(split)

    def required_columns(self, labelled: bool) -> dict[str, str]:
        return {"data.text_column": self.spec.text_column}  # the text is its own label

    def fit_label_space(self, rows: list[dict]) -> LabelSpace:
        return LabelSpace(LANGUAGE_MODELING, [])

    def encode_rows(self, rows: list[dict], part: RawSplit) -> dict[str, list]:
        column = self.spec.text_column
        texts = []
        for i, row in enumerate(rows):
            value = row[column]
            if isinstance(value, (list, dict)):
                raise UserError(f"{part.key}={part.where}, {part.locate(i)}: data.text_column={column!r} holds a "
                                f"{type(value).__name__}, not text. Fix: store each document as one string.")
            texts.append("" if value is None else str(value))
        return {"text": texts}  # training splits hold no empty documents (_load); an empty prompt is continued

    def preprocessing_params(self) -> dict[str, Any]:
        # line_by_line changes the rows read from the same file, so it belongs in the cache key too
        return {"block_size": self.spec.block_size, "packing": self.spec.packing, "line_by_line": self.spec.line_by_line}

    def tokenize_batch(self, batch: dict[str, list]) -> dict[str, list]:
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        documents = [seq + [eos] for seq in ids]
        cut = pack if self.spec.packing else split_documents
        rows, starts = cut(documents, self.spec.block_size)
        return {"input_ids": rows, "example": [batch["example"][d] for d in starts]}

    def tokenize_inputs(self, batch: dict[str, list]) -> dict[str, list]:
        """`predict` prompts: one row per document, eos first (in training, every document after the
        first starts right after an eos), no eos after it, never packed. Generation keeps the last
        tokens that fit the model with the new ones."""
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [[eos] + seq for seq in ids], "example": batch["example"]}


def _empty(text: Any) -> bool:
    return text is None or (isinstance(text, str) and not text.strip())


def check_block_size(block_size: Any, n_positions: int) -> None:
    if not isinstance(block_size, int) or isinstance(block_size, bool) or not 2 <= block_size <= n_positions:
        raise UserError(f"data.block_size={block_size!r} must be an integer from 2 (one token to predict from "
                        f"another) to the model's n_positions={n_positions} (GPT-2 has absolute position "
                        f"embeddings). Fix: e.g. data.block_size={min(n_positions, 1024)}, or less to save memory.")


def pack(documents: list[list[int]], block_size: int) -> tuple[list[list[int]], list[int]]:
    """Cut the documents' concatenation into blocks of block_size tokens (the last may be shorter).
    Returns the blocks and, for each, the index of the document its first token belongs to."""
    stream = list(chain.from_iterable(documents))
    ends = list(accumulate(len(d) for d in documents))  # ends[d] = stream offset just past document d
    offsets = range(0, len(stream), block_size)
    return [stream[i:i + block_size] for i in offsets], [bisect_right(ends, i) for i in offsets]


def split_documents(documents: list[list[int]], block_size: int) -> tuple[list[list[int]], list[int]]:
    """Each document on its own rows: consecutive windows of at most block_size tokens."""
    rows, starts = [], []
    for d, doc in enumerate(documents):
        for i in range(0, len(doc), block_size):
            rows.append(doc[i:i + block_size])
            starts.append(d)
    return rows, starts
