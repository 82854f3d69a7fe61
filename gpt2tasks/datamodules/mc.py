"""Multiple-choice data (SWAG style): a context and a fixed number of endings -> the correct one.

Each choice is  context + separator + ending + a summary token (eos), so a row holds one token
sequence per choice; the collator pads them to (batch, choices, T) and points `mc_token_ids` at
each choice's summary token, the only position that has seen the whole choice (causal attention).
A choice longer than `data.max_length` loses the *start* of its context first: the ending (and
the summary token) are what is being scored, and in SWAG-style data the ending continues the
context's last words. Separator and ending are tokenized as one text, so with
`data.pair_separator=" "` a choice reads (and tokenizes) exactly like natural running text.
"""

from __future__ import annotations

import logging
from typing import Any

from gpt2tasks.datamodules.base import RawSplit, TaskDataModule, check_texts
from gpt2tasks.datamodules.batching import ChoiceCollator
from gpt2tasks.datamodules.labels import MULTIPLE_CHOICE, LabelSpace
from gpt2tasks.errors import UserError

log = logging.getLogger(__name__)


class MultipleChoiceDataModule(TaskDataModule):
    collator_class = ChoiceCollator

    # ---- columns --------------------------------------------------------------------------------
    def _keyed(self, key: str, value: str | list[str]) -> dict[str, str]:
        """{"data.endings_column[0]": "ending0", ...} for a list of columns; {key: column} for one."""
        if isinstance(value, (list, tuple)):
            return {f"{key}[{i}]": str(c) for i, c in enumerate(value)}
        return {key: str(value)}

    def required_columns(self, labelled: bool) -> dict[str, str]:
        s = self.spec
        columns = {**self._keyed("data.context_column", s.context_column),
                   **self._keyed("data.endings_column", s.endings_column)}
        if labelled:
            columns["data.label_column"] = s.label_column
        return columns

    def context(self, row: dict) -> str:
        columns = self.spec.context_column
        parts = [row[c] for c in columns] if isinstance(columns, (list, tuple)) else [row[columns]]
        return " ".join(str(p).strip() for p in parts if p is not None and str(p).strip())

    def endings(self, row: dict, where: str) -> list[str]:
        """The row's endings; `where` ("data.train_file=..., line 3") names the row in errors."""
        columns = self.spec.endings_column
        if isinstance(columns, (list, tuple)):
            return ["" if row[c] is None else str(row[c]) for c in columns]
        value = row[columns]
        if not isinstance(value, list):
            raise UserError(f"{where}: data.endings_column={columns!r} is a {type(value).__name__}, not a list "
                            'of endings. Fix: store the endings as a JSON list, e.g. "endings": ["...", "..."], '
                            "or name one column per ending: data.endings_column=[ending0,ending1,...].")
        return ["" if e is None else str(e) for e in value]

    def fit_label_space(self, rows: list[dict]) -> LabelSpace:
        # The first training row fixes the number of choices; encode_rows holds every row to it.
        n = len(self.endings(rows[0], "data.train_file, its first row"))
        if n < 2:
            raise UserError(f"data.endings_column={self.spec.endings_column!r}: the first training row has {n} "
                            "ending(s); a multiple-choice example needs at least 2. Fix: point "
                            "data.endings_column at the list (or columns) holding all the candidate endings.")
        return LabelSpace(MULTIPLE_CHOICE, [str(i) for i in range(n)])

    def check_split(self, part: RawSplit, training: bool) -> None:
        s = self.spec
        for column in (s.context_column if isinstance(s.context_column, (list, tuple)) else [s.context_column]):
            check_texts(part, [r[column] for r in part.rows], f"data.context_column={column!r}", empty_ok=True)
        check_texts(part, [self.context(r) for r in part.rows], f"data.context_column={s.context_column!r}")
        if isinstance(s.endings_column, (list, tuple)):
            for column in s.endings_column:
                check_texts(part, [r[column] for r in part.rows], f"data.endings_column={column!r}", empty_ok=True)
        else:  # a list per row (endings() says so when it is not); a None ending reads as ""
            check_texts(part, [[e for e in r[s.endings_column] if e is not None] if isinstance(r[s.endings_column], list)
                               else [] for r in part.rows], f"data.endings_column={s.endings_column!r}",
                        items=True, empty_ok=True)
        endings = [self.endings(r, f"{part.key}={part.where}, {part.locate(i)}") for i, r in enumerate(part.rows)]
        # every ending of a row empty: nothing to choose between
        check_texts(part, [[e for e in row if e.strip()] for row in endings], f"data.endings_column={s.endings_column!r}",
                    items=True)
        some = [i for i, row in enumerate(endings) if any(not e.strip() for e in row) and any(e.strip() for e in row)]
        if some:
            log.warning("%d of %d rows have an empty ending among their choices (%s).", len(some), len(part.rows),
                        part.locate_rows(some))

    # ---- rows -> columns ------------------------------------------------------------------------
    def encode_rows(self, rows: list[dict], part: RawSplit) -> dict[str, list]:
        s, n = self.spec, len(self.label_space.names)
        columns: dict[str, list[Any]] = {"context": [], "endings": [], **({"labels": []} if part.labelled else {})}
        for i, row in enumerate(rows):
            where = f"{part.key}={part.where}, {part.locate(i)}"
            endings = self.endings(row, where)
            if len(endings) != n:
                raise UserError(f"{where}: {len(endings)} endings, but the first training row has {n} and every "
                                f"example needs the same number of choices (data.endings_column="
                                f"{s.endings_column!r}). Fix: give this row {n} endings, or remove it.")
            columns["context"].append(self.context(row))
            columns["endings"].append(endings)
            if part.labelled:
                columns["labels"].append(_choice_index(row[s.label_column], n, where, s.label_column))
        return columns

    # ---- columns -> token ids -------------------------------------------------------------------
    def tokenize_batch(self, batch: dict[str, list]) -> dict[str, list]:
        tok, s = self.tokenizer, self.spec
        contexts = tok(batch["context"], add_special_tokens=False)["input_ids"]
        n = len(batch["endings"][0])  # the same for every row (checked in encode_rows)
        tails = tok([s.pair_separator + e for endings in batch["endings"] for e in endings],
                    add_special_tokens=False)["input_ids"]
        input_ids = [[_choice(context, tails[r * n + c], tok.eos_token_id, s.max_length) for c in range(n)]
                     for r, context in enumerate(contexts)]  # (rows, choices, its own length)
        return {"input_ids": input_ids, **({"labels": batch["labels"]} if "labels" in batch else {})}


def _choice(context: list[int], tail: list[int], summary: int, max_length: int) -> list[int]:
    """context + tail (separator + ending) + summary in at most max_length tokens, cutting the start
    of the context first, then (an ending longer than a whole choice) the end of the tail."""
    tail = tail[:max(max_length - 1, 0)]
    room = max(max_length - 1 - len(tail), 0)
    return context[len(context) - min(room, len(context)):] + tail + [summary]


def _choice_index(value: Any, n: int, where: str, column: str) -> int:
    """The label as a choice index 0..n-1: an int, or a string of one (CSV/TSV)."""
    label = value
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label.strip())
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool):
        raise UserError(f"{where}: data.label_column={column!r} is {value!r}, not the index of the correct "
                        f"ending. Fix: use an int from 0 to {n - 1} (the position of the correct ending).")
    if not 0 <= label < n:
        raise UserError(f"{where}: data.label_column={column!r} is {label}, outside the {n} choices (0 to "
                        f"{n - 1}). Fix: use the 0-based position of the correct ending; an unlabelled test "
                        "split should leave the label column out.")
    return label
