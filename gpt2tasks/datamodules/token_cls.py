"""Token classification data (NER): pre-split words with one tag each -> sub-token labels.

GPT-2 facts handled here:
- Words are tokenized with a leading space each (`add_prefix_space=True` + `is_split_into_words`
  semantics), so a word gets the same tokens wherever it stands in the sentence.
- Only the first sub-token of a word carries its label (others -100), unless
  `data.label_all_tokens=true` (then every sub-token, with B-X turned into I-X after the first).
- A sentence longer than `max_length` tokens is cut, between words, into consecutive windows;
  every word lands in exactly one window, so predictions map back to one tag per input word.
Each row keeps `word_ids` (the word index of each token, -1 for none) and `example`, which is all
the metric needs to rebuild word-level tags per sentence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt2tasks.datamodules.base import RawSplit, TaskDataModule, check_texts
from gpt2tasks.datamodules.files import CONLL_SUFFIXES, read_conll
from gpt2tasks.datamodules.labels import TOKEN_CLS, LabelSpace, check_labels
from gpt2tasks.errors import UserError

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


class TokenClsDataModule(TaskDataModule):
    padded_fields = {"labels": -100, "word_ids": -1}
    packable = True

    def iter_file(self, path: str, key: str) -> Iterator[tuple[dict, int | None]]:
        suffix = Path(path).suffix.lower()
        if suffix in JSON_SUFFIXES:
            return super().iter_file(path, key)
        if suffix not in CONLL_SUFFIXES:
            raise UserError(f"{key}={path}: unsupported file type {suffix!r} for token classification. Fix: "
                            f"use JSON lines ({', '.join(JSON_SUFFIXES)}) with data.tokens_column/data.tags_column "
                            "lists, or a CoNLL column file (.conll, .txt, or no suffix).")
        # A CoNLL file is read whole (its sentences span lines); JSON lines stream.
        return zip(*read_conll(path, key, self.spec.tokens_column, self.spec.tags_column, self.spec.conll_tag_column))

    def required_columns(self, labelled: bool) -> dict[str, str]:
        columns = {"data.tokens_column": self.spec.tokens_column}
        if labelled:
            columns["data.tags_column"] = self.spec.tags_column
        return columns

    def fit_label_space(self, rows: list[dict]) -> LabelSpace:
        if self.label_names:
            return LabelSpace(TOKEN_CLS, [str(n) for n in self.label_names])
        tags = {t for r in rows for t in r[self.spec.tags_column]}
        if any(not isinstance(t, str) for t in tags):
            raise UserError(f"data.tags_column={self.spec.tags_column!r}: the tags are numbers, but nothing says "
                            "which tag each number is. Fix: list the tag names in id order, e.g. "
                            "task.label_names=[O,B-PER,I-PER,...].")
        # "O" first, then entity tags sorted by type and prefix: a stable, readable id2label.
        return LabelSpace(TOKEN_CLS, sorted(tags, key=lambda t: (t != "O", t[2:], t)))

    def check_split(self, part: RawSplit, training: bool) -> None:
        s = self.spec
        check_texts(part, [r[s.tokens_column] for r in part.rows], f"data.tokens_column={s.tokens_column!r}", items=True)
        tags = [r[s.tags_column] if isinstance(r[s.tags_column], list) else [] for r in part.rows]  # a non-list: encode_rows says so
        check_labels(tags, part.locate_rows, f"data.tags_column={s.tags_column!r}", label_names=self.label_names,
                     training=training, allow_rare=s.allow_rare_labels, multi_item=True)

    def encode_rows(self, rows: list[dict], part: RawSplit) -> dict[str, list]:
        s = self.spec
        index = {name: i for i, name in enumerate(self.label_space.names)}
        words_out: list[list[str]] = []
        labels_out: list[list[int]] = []
        unknown: set[str] = set()
        for i, row in enumerate(rows):
            words = row[s.tokens_column]
            if not isinstance(words, list):
                raise UserError(f"{part.key}={part.where}, {part.locate(i)}: data.tokens_column={s.tokens_column!r} "
                                f"is a {type(words).__name__}, not a list of words. Fix: store pre-split words, "
                                'e.g. "tokens": ["John", "lives", "in", "Paris"].')
            words_out.append([str(w) for w in words])
            if not part.labelled:
                continue
            tags = row[s.tags_column]
            if not isinstance(tags, list) or len(tags) != len(words):
                found = f"{len(tags)} tags" if isinstance(tags, list) else f"a {type(tags).__name__}"
                raise UserError(f"{part.key}={part.where}, {part.locate(i)}: {len(words)} words but {found}. "
                                "Fix: give exactly one tag per word.")
            ids = []
            for tag in tags:
                if isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag < len(index):
                    ids.append(tag)  # int tags index into task.label_names
                elif str(tag) in index:
                    ids.append(index[str(tag)])
                else:
                    unknown.add(str(tag))
            labels_out.append(ids)
        if unknown:
            raise UserError(f"{part.key}={part.where}: tag(s) {sorted(unknown)[:10]} are not in the tag list "
                            f"({', '.join(self.label_space.names)}). Fix: make every split use the training "
                            "split's tags, or list all of them in task.label_names=[...].")
        return {"words": words_out, **({"labels": labels_out} if part.labelled else {})}

    def preprocessing_params(self) -> dict[str, Any]:
        return {"max_length": self.spec.max_length, "label_all_tokens": self.spec.label_all_tokens}

    def tokenize_batch(self, batch: dict[str, list]) -> dict[str, list]:
        labelled = "labels" in batch
        out: dict[str, list] = {"input_ids": [], **({"labels": []} if labelled else {}), "word_ids": [], "example": []}
        inside = self._inside_tag_ids()
        # Unlabelled rows (predict inputs): every word "unlabelled", and no labels column comes out.
        all_labels = batch["labels"] if labelled else [[-100] * len(words) for words in batch["words"]]
        for words, labels, example in zip(batch["words"], all_labels, batch["example"]):
            # " " + word == what add_prefix_space=True does to each word under is_split_into_words
            pieces = self.tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"] if words else []
            for window in _windows([len(p) for p in pieces], self.spec.max_length):
                ids, tags, word_ids = [], [], []
                for w in window:
                    piece = pieces[w][:self.spec.max_length]  # one word longer than a window: keep its start
                    first, rest = labels[w], (inside.get(labels[w], labels[w]) if self.spec.label_all_tokens else -100)
                    ids += piece
                    tags += [first] + [rest if first != -100 else -100] * (len(piece) - 1)
                    word_ids += [w] * len(piece)
                out["input_ids"].append(ids)
                if labelled:
                    out["labels"].append(tags)
                out["word_ids"].append(word_ids)
                out["example"].append(example)
        return out

    def _inside_tag_ids(self) -> dict[int, int]:
        """B-X id -> I-X id, for labelling the later sub-tokens of a word that begins an entity."""
        index = {name: i for i, name in enumerate(self.label_space.names)}
        return {i: index[f"I-{name[2:]}"] for name, i in index.items()
                if name.startswith("B-") and f"I-{name[2:]}" in index}


def _windows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Consecutive runs of word indices whose token counts fit in max_length (at least one word each)."""
    windows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for w, n in enumerate(lengths):
        n = min(n, max_length)
        if current and used + n > max_length:
            windows.append(current)
            current, used = [], 0
        current.append(w)
        used += n
    if current:
        windows.append(current)
    return windows
