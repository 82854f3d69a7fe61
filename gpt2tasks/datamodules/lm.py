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
Empty (or whitespace-only) documents are skipped and counted; a split with nothing else is refused.
"""

from __future__ import annotations

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
        if not part.labelled:
            return {"text": texts}  # predict prompts: an empty one still gets its continuation
        empty = sum(not t.strip() for t in texts)
        if empty == len(texts):
            raise UserError(f"{part.key}={part.where}: all {len(texts)} documents are empty (data.text_column="
                            f"{column!r}), so there is nothing to learn from. Fix: point {part.key} at a file "
                            "with text, or check data.text_column.")
        if empty:
            log.warning("%s=%s: skipped %d of %d documents that are empty or only whitespace (e.g. blank "
                        "lines).", part.key, part.where, empty, len(texts))
        return {"text": texts}

    def preprocessing_params(self) -> dict[str, Any]:
        # line_by_line changes the rows read from the same file, so it belongs in the cache key too
        return {"block_size": self.spec.block_size, "packing": self.spec.packing, "line_by_line": self.spec.line_by_line}

    def tokenize_batch(self, batch: dict[str, list]) -> dict[str, list]:
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        kept = [(seq + [eos], example) for seq, text, example in zip(ids, batch["text"], batch["example"])
                if text.strip()]
        documents, examples = [d for d, _ in kept], [e for _, e in kept]
        cut = pack if self.spec.packing else split_documents
        rows, starts = cut(documents, self.spec.block_size)
        return {"input_ids": rows, "example": [examples[d] for d in starts]}

    def tokenize_inputs(self, batch: dict[str, list]) -> dict[str, list]:
        """`predict` prompts: one row per document, eos first (in training, every document after the
        first starts right after an eos), no eos after it, never packed. Generation keeps the last
        tokens that fit the model with the new ones."""
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [[eos] + seq for seq in ids], "example": batch["example"]}


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
