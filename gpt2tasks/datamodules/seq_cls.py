"""Sequence classification data: one text (or a pair) -> a class id, multi-hot vector or float."""

from __future__ import annotations

from typing import Any

from gpt2tasks.datamodules.base import RawSplit, TaskDataModule, check_texts
from gpt2tasks.datamodules.labels import LabelSpace, check_labels, encode_labels, infer_label_space


class SeqClsDataModule(TaskDataModule):
    packable = True

    def required_columns(self, labelled: bool) -> dict[str, str]:
        s = self.spec
        columns = {"data.text_column": s.text_column}
        if s.text_pair_column:
            columns["data.text_pair_column"] = s.text_pair_column
        if labelled:
            columns["data.label_column"] = s.label_column
        return columns

    def fit_label_space(self, rows: list[dict]) -> LabelSpace:
        return infer_label_space([r[self.spec.label_column] for r in rows], self.problem_type, self.label_names)

    def check_split(self, part: RawSplit, training: bool) -> None:
        s = self.spec
        check_texts(part, [r[s.text_column] for r in part.rows], f"data.text_column={s.text_column!r}")
        if s.text_pair_column:
            check_texts(part, [r[s.text_pair_column] for r in part.rows], f"data.text_pair_column={s.text_pair_column!r}")
        check_labels([r[s.label_column] for r in part.rows], part.locate_rows, f"data.label_column={s.label_column!r}",
                     problem_type=self.problem_type, label_names=self.label_names, training=training,
                     allow_rare=s.allow_rare_labels)

    def encode_rows(self, rows: list[dict], part: RawSplit) -> dict[str, list]:
        s = self.spec
        columns: dict[str, list[Any]] = {"text": [_text(r[s.text_column]) for r in rows]}
        if s.text_pair_column:
            columns["text_pair"] = [_text(r[s.text_pair_column]) for r in rows]
        if part.labelled:
            columns["labels"] = encode_labels([r[s.label_column] for r in rows], self.label_space, part.key)
        return columns

    def tokenize_batch(self, batch: dict[str, list]) -> dict[str, list]:
        tok, max_length = self.tokenizer, self.spec.max_length
        first = tok(batch["text"], add_special_tokens=False)["input_ids"]
        if "text_pair" not in batch:
            ids = [seq[:max_length] for seq in first]
        else:
            # GPT-2 joins a pair with no separator: put ours between, then truncate the longer
            # text first so both keep as much as fits.
            sep = tok(self.spec.pair_separator, add_special_tokens=False)["input_ids"]
            second = tok(batch["text_pair"], add_special_tokens=False)["input_ids"]
            ids = [_join_pair(a, b, sep, max_length) for a, b in zip(first, second)]
        # An empty text still needs one position to classify from.
        out = {"input_ids": [seq or [tok.eos_token_id] for seq in ids]}
        if "labels" in batch:
            out["labels"] = batch["labels"]
        return out


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _join_pair(a: list[int], b: list[int], sep: list[int], max_length: int) -> list[int]:
    """a + sep + b in at most max_length tokens, cutting the longer text first (longest-first)."""
    budget = max(max_length - len(sep), 2)
    la, lb = len(a), len(b)
    if la + lb > budget:
        if la <= budget // 2:
            lb = budget - la
        elif lb <= budget // 2:
            la = budget - lb
        else:
            la, lb = budget - budget // 2, budget // 2
    return a[:la] + sep + b[:lb]
