"""Extractive QA data (SQuAD v1.1 / v2.0 style): question + context -> answer span, in windows.

GPT-2 facts handled here:
- Causal attention: the question goes *before* the context, so every context token has seen it.
- Each window is  question + separator + a slice of the context + a final summary token (eos).
  The summary token is the "no answer" position: under causal attention it is the only one that
  has seen the whole window (position 0 has seen only itself).
- Long contexts are cut into windows of context tokens sharing `data.doc_stride` tokens; each
  window keeps the character offsets of its context tokens, so an answer maps back to an exact
  substring of the context, chosen over all windows of its example.
Training labels point at the answer's first and last token when the answer lies inside the
window, else (answer elsewhere, or no answer) at the summary token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from gpt2tasks.datamodules.base import RawSplit, TaskDataModule, check_texts
from gpt2tasks.datamodules.labels import QUESTION_ANSWERING, LabelSpace
from gpt2tasks.errors import UserError

log = logging.getLogger(__name__)
# The fewest context tokens a window may hold: fewer, and most answers (and the words around them
# that locate them) no longer fit in one window.
MIN_CONTEXT_TOKENS = 16


class QADataModule(TaskDataModule):
    unbatched_fields = ("offset_start", "offset_end")  # for post-processing, not for the model
    packable = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s = self.spec
        sep = len(self.tokenizer(s.pair_separator, add_special_tokens=False)["input_ids"])
        # The smallest window (longest question) must still move forward past its shared tokens.
        context_budget = s.max_length - min(s.max_question_length, s.max_length) - sep - 1
        if s.max_question_length < 1 or context_budget < MIN_CONTEXT_TOKENS:
            raise UserError(f"data.max_length={s.max_length} leaves {max(context_budget, 0)} context tokens per window "
                            f"after the question (data.max_question_length={s.max_question_length}, at least 1), the "
                            f"separator ({sep}) and the summary token (1); a window needs at least {MIN_CONTEXT_TOKENS}. "
                            f"Fix: data.max_length={max(s.max_question_length, 1) + sep + 1 + 4 * MIN_CONTEXT_TOKENS} "
                            "or more (384 for SQuAD), or a smaller data.max_question_length.")
        if s.doc_stride < 0 or s.doc_stride >= context_budget:
            raise UserError(f"data.doc_stride={s.doc_stride} must be between 0 and the context tokens of a window "
                            f"({context_budget} = data.max_length {s.max_length} - data.max_question_length "
                            f"{s.max_question_length} - separator {sep} - 1 summary token). Fix: lower "
                            "data.doc_stride (e.g. a quarter of max_length) or data.max_question_length, or raise "
                            "data.max_length.")

    # ---- reading ------------------------------------------------------------------------------
    def iter_file(self, path: str, key: str) -> Iterator[tuple[dict, int | None]]:
        pairs = super().iter_file(path, key)
        first = next(pairs, None)
        if first is None:
            return
        if "paragraphs" in first[0]:  # the official nested SQuAD JSON ({"data": [articles]}): read whole
            articles = [first[0], *(article for article, _ in pairs)]
            yield from ((row, None) for row in flatten_squad(articles, path, key))
            return
        yield first  # flat rows (JSON lines, CSV): streamed
        yield from pairs

    def required_columns(self, labelled: bool) -> dict[str, str]:
        s = self.spec
        columns = {"data.question_column": s.question_column, "data.context_column": s.context_column}
        if labelled:
            columns["data.answers_column"] = s.answers_column
        return columns

    def fit_label_space(self, rows: list[dict]) -> LabelSpace:
        return LabelSpace(QUESTION_ANSWERING, [])

    def holdout_group(self, row: dict) -> Any:
        # A context's questions stay together in data.validation_fraction's hold-out: a validation
        # question whose paragraph was trained on (under another question) is scored on seen text.
        return super().holdout_group(row) if self.spec.validation_group_column else row[self.spec.context_column]

    # ---- examples -> columns ------------------------------------------------------------------
    def example_id(self, row: dict, i: int) -> str:
        return str(row.get(self.spec.id_column, i))

    def answers(self, row: dict) -> list[tuple[str, int]]:
        """(text, answer_start) pairs of a row: {text: [...], answer_start: [...]} or [{text, answer_start}]."""
        raw = row.get(self.spec.answers_column) or []
        if isinstance(raw, dict):
            return list(zip(map(str, raw.get("text", [])), map(int, raw.get("answer_start", []))))
        return [(str(a["text"]), int(a["answer_start"])) for a in raw]

    def contexts(self, split: str) -> tuple[list[str], list[str]]:
        """(ids, contexts) of a split's examples, in example order: what answers are cut from."""
        rows = self.examples[split]
        return [self.example_id(r, i) for i, r in enumerate(rows)], [str(r[self.spec.context_column]) for r in rows]

    def references(self, eval_set: str) -> tuple[list[str], list[str], list[list[str]]]:
        """(ids, contexts, gold answer texts) of an eval set, in example order, for the metrics."""
        return *self.contexts(eval_set), [[text for text, _ in self.answers(r)] for r in self.examples[eval_set]]

    def check_split(self, part: RawSplit, training: bool) -> None:
        s = self.spec
        check_texts(part, [r[s.question_column] for r in part.rows], f"data.question_column={s.question_column!r}")
        check_texts(part, [r[s.context_column] for r in part.rows], f"data.context_column={s.context_column!r}",
                    empty_ok=True)  # an empty context: encode_rows refuses the row
        # {text: [x], answer_start: []} would zip to no answer at all: an answerable question
        # trained (and scored) as unanswerable.
        uneven = [i for i, r in enumerate(part.rows) if isinstance(r.get(s.answers_column), dict)
                  and len(r[s.answers_column].get("text") or []) != len(r[s.answers_column].get("answer_start") or [])]
        if uneven:
            first = part.rows[uneven[0]][s.answers_column]
            raise UserError(f"{len(uneven)} rows have data.answers_column={s.answers_column!r} whose text and "
                            f"answer_start lists differ in length ({part.locate_rows(uneven)}; e.g. {first}). Fix: "
                            "give each answer text its answer_start (both [] for no answer).")
        if training and not any(_has_answer(r.get(s.answers_column)) for r in part.rows):
            raise UserError(f"{part.key}={part.where}: none of the {len(part.rows)} rows has an answer in "
                            f"data.answers_column={s.answers_column!r}, so the model would learn to answer nothing. "
                            "Fix: check data.answers_column and the file (answers: {\"text\": [...], "
                            "\"answer_start\": [...]}).")

    def encode_rows(self, rows: list[dict], part: RawSplit) -> dict[str, list]:
        s = self.spec
        columns: dict[str, list[Any]] = {"question": [], "context": [], "answer_start": [], "answer_end": []}
        if not part.labelled:
            del columns["answer_start"], columns["answer_end"]
        bad: list[str] = []
        for i, row in enumerate(rows):
            context = str(row[s.context_column] or "")
            if not context.strip():
                raise UserError(f"{part.key}={part.where}, {part.locate(i)}: empty data.context_column="
                                f"{s.context_column!r}; there is nothing to extract an answer from. Fix: remove "
                                "the row or give it its context.")
            if not part.labelled:  # predict: question and context only
                columns["question"].append(str(row[s.question_column] or ""))
                columns["context"].append(context)
                continue
            try:
                answers = self.answers(row)
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{part.key}={part.where}, {part.locate(i)}: data.answers_column={s.answers_column!r} "
                                "must be {\"text\": [...], \"answer_start\": [...]} or a list of {\"text\", "
                                "\"answer_start\"} objects ([] for no answer). Fix: rewrite that row.") from None
            good = [(text, start) for text, start in answers if context[start:start + len(text)] == text and text]
            if answers and not good:
                bad.append(self.example_id(row, i))
            # Train on the first answer that really is where answer_start says (-1: no answer).
            start, end = (good[0][1], good[0][1] + len(good[0][0])) if good else (-1, -1)
            columns["question"].append(str(row[s.question_column] or ""))
            columns["context"].append(context)
            columns["answer_start"].append(start)
            columns["answer_end"].append(end)
        if bad:
            message = (f"{part.key}={part.where}: {len(bad)} of {len(rows)} rows have answers whose answer_start "
                       f"does not point at their text in the context (ids {bad[:5]}).")
            if len(bad) > s.max_bad_answer_fraction * len(rows):
                raise UserError(f"{message} That is over data.max_bad_answer_fraction={s.max_bad_answer_fraction}. "
                                "Fix: correct answer_start (a character offset into the context), or raise "
                                "data.max_bad_answer_fraction to skip such rows.")
            log.warning("%s They are treated as having no answer in training; their answer texts still count "
                        "in evaluation.", message)
        return columns

    def preprocessing_params(self) -> dict[str, Any]:
        s = self.spec
        return {"max_length": s.max_length, "doc_stride": s.doc_stride, "max_question_length": s.max_question_length,
                "pair_separator": s.pair_separator}

    # ---- columns -> windows -------------------------------------------------------------------
    def tokenize_batch(self, batch: dict[str, list]) -> dict[str, list]:
        tok, s = self.tokenizer, self.spec
        sep = tok(s.pair_separator, add_special_tokens=False)["input_ids"]
        questions = tok(batch["question"], add_special_tokens=False)["input_ids"]
        contexts = tok(batch["context"], add_special_tokens=False, return_offsets_mapping=True)
        labelled = "answer_start" in batch  # predict inputs have no answers: no target positions
        out: dict[str, list] = {k: [] for k in ("input_ids", "start_positions", "end_positions", "offset_start",
                                                "offset_end", "example") if labelled or not k.endswith("_positions")}
        for i, example in enumerate(batch["example"]):
            context = batch["context"][i]
            prefix = questions[i][:s.max_question_length] + sep
            ids = contexts["input_ids"][i]
            # Byte-level BPE offsets include a token's leading space; answers never start with one.
            offsets = [_strip_space(context, a, b) for a, b in contexts["offset_mapping"][i]]
            budget = s.max_length - len(prefix) - 1
            for lo, hi in _context_windows(len(ids), budget, s.doc_stride):
                window = prefix + ids[lo:hi] + [tok.eos_token_id]  # (T,) question, sep, context, summary
                out["input_ids"].append(window)
                if labelled:
                    null = len(window) - 1
                    start, end = _answer_tokens(offsets, lo, hi, batch["answer_start"][i], batch["answer_end"][i])
                    out["start_positions"].append(null if start is None else len(prefix) + start - lo)
                    out["end_positions"].append(null if end is None else len(prefix) + end - lo)
                pad = [-1] * len(prefix)
                out["offset_start"].append(pad + [a for a, _ in offsets[lo:hi]] + [-1])
                out["offset_end"].append(pad + [b for _, b in offsets[lo:hi]] + [-1])
                out["example"].append(example)
        return out


def _strip_space(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    return start, end


def _context_windows(n: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """[lo, hi) token ranges of up to `budget` context tokens, consecutive ones sharing `stride`."""
    windows, lo = [], 0
    while True:
        hi = min(lo + budget, n)
        windows.append((lo, hi))
        if hi >= n:
            return windows
        lo = hi - stride


def _answer_tokens(offsets: list[tuple[int, int]], lo: int, hi: int, start: int, end: int
                   ) -> tuple[int | None, int | None]:
    """First and last context token (indices into the whole context) of the answer's characters
    [start, end), when all of them lie in tokens lo..hi-1; (None, None) otherwise or for no answer."""
    if start < 0:
        return None, None
    covering = [t for t in range(lo, hi) if offsets[t][0] < end and offsets[t][1] > start]
    if not covering or offsets[covering[0]][0] > start or offsets[covering[-1]][1] < end:
        return None, None  # the answer is (partly) outside this window
    return covering[0], covering[-1]


def _has_answer(raw: Any) -> bool:
    if isinstance(raw, dict):
        return bool(raw.get("text"))
    return isinstance(raw, list) and bool(raw)


def flatten_squad(articles: list[dict], path: str, key: str) -> list[dict]:
    """The official nested SQuAD JSON -> one row per question: id, title, context, question, answers."""
    rows = []
    try:
        for article in articles:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                    rows.append({"id": str(qa["id"]), "title": article.get("title", ""),
                                 "context": paragraph["context"], "question": qa["question"],
                                 "answers": {"text": [a["text"] for a in answers],
                                             "answer_start": [int(a["answer_start"]) for a in answers]}})
    except (KeyError, TypeError) as exc:
        raise UserError(f"{key}={path}: looks like a nested SQuAD JSON file but lacks {exc} in an article. "
                        "Fix: use the official format ({\"data\": [{\"title\", \"paragraphs\": [{\"context\", "
                        "\"qas\": [{\"id\", \"question\", \"answers\"}]}]}]}) or flattened JSON lines.") from None
    if not rows:
        raise UserError(f"{key}={path}: the SQuAD file has no questions, so this split is empty. "
                        "Fix: point it at a file with questions.")
    return rows
