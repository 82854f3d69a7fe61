"""Label spaces for classification: infer the kind from the training labels, encode every split.

Rules (the contract): ints or strings -> single-label classes, sorted for determinism (numbers
numerically, strings alphabetically) and written to id2label; non-integer floats -> regression;
lists -> multi-label over the sorted union of their items. `task.label_names` fixes the classes
instead: int labels then index into it and string labels must be among its names.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gpt2tasks.errors import UserError

SINGLE = "single_label_classification"
MULTI = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = ("auto", SINGLE, MULTI, REGRESSION)
# The label spaces of the other head kinds (not inferred: each kind's datamodule makes its own).
TOKEN_CLS = "token_classification"  # names = the tag list
QUESTION_ANSWERING = "question_answering"  # no names: the targets are start/end positions
LANGUAGE_MODELING = "language_modeling"  # no names: the targets are the next tokens
MULTIPLE_CHOICE = "multiple_choice"  # names = the choice indices "0".."C-1": the number of choices


@dataclass
class LabelSpace:
    problem_type: str
    names: list[str]  # class names in id order; [] for regression

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == REGRESSION else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names)) if self.names else {0: "score"}

    def to_dict(self) -> dict[str, Any]:
        return {"problem_type": self.problem_type, "names": list(self.names)}


def _scalar(value: Any) -> Any:
    """CSV gives strings: '1' -> 1, '3.8' -> 3.8, 'pos' -> 'pos'; 2.0 stays a float. Text that is
    not a number is kept exactly as written (spaces included): class names are the user's data."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
            return number if math.isfinite(number) else value
        except ValueError:
            return value
    return value


def _sort_key(name: Any) -> tuple:
    return (0, name, "") if isinstance(name, (int, float)) else (1, 0, str(name))


# A class is "rare" when it has at most RARE_MAX_COUNT rows while the median class has at least
# RARE_RATIO times as many. A handful of rows next to classes of hundreds or thousands is almost
# always a typo or a stray value ('postive' among 'positive'/'negative'), and even when it is real
# it can be neither learned nor measured from so few. Small data sets never trip it (a class of 1
# next to classes of 50 is not singled out: nothing is typical yet), nor do skewed but real label
# sets: CoNLL-2003's rarest tag (I-MISC) has over 1,000 tokens, SST-2's smaller class 30,000 rows.
RARE_MAX_COUNT = 5
RARE_RATIO = 100


def _is_missing(value: Any) -> bool:
    """An empty cell: None, NaN (a float, or the text NaN that tools write for it), blank text."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and (not value.strip() or value.strip().lower() == "nan"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_regression(values: Sequence[Any], problem_type: str, label_names: Sequence[str] | None) -> bool:
    """task.problem_type=regression, or auto with numeric labels of which some are not integers."""
    if problem_type != "auto":
        return problem_type == REGRESSION
    if label_names or any(isinstance(v, (list, tuple)) for v in values):
        return False
    scalars = [_scalar(v) for v in values]
    return all(_is_number(v) or isinstance(v, bool) for v in scalars) and any(
        isinstance(v, float) and not v.is_integer() for v in scalars)


def check_labels(labels: Sequence[Any], locate: Callable[[list[int]], str], column: str, *,
                 problem_type: str = "auto", label_names: Sequence[str] | None = None, training: bool = False,
                 allow_rare: bool = False, multi_item: bool = False) -> None:
    """Refuse labels that would train (or score) silently on garbage, naming the rows (`locate`
    turns row numbers into 'data.train_file=..., lines 3 and 17'):
    - an empty label (None, NaN, blank text): it would become a class '' (a multi-label row's
      empty list is fine: no label);
    - numbers mixed with text ('1' among 'positive'/'negative' would become a class of its own;
      a column of digit strings read from CSV counts as numbers throughout), unless
      task.label_names lists the classes;
    - in the training split, classes inferred from the data that are rare (see RARE_MAX_COUNT),
      unless data.allow_rare_labels.
    `labels[i]` is row i's label, or with `multi_item` a list of labels (multi-label rows, a
    sentence's tags). `column` names the key, e.g. "data.label_column='label'"."""
    rows = [list(v) if multi_item and isinstance(v, (list, tuple)) else [v] for v in labels]
    if not multi_item and problem_type in ("auto", MULTI) and any(isinstance(v, (list, tuple)) for v in labels):
        lists = [i for i, v in enumerate(labels) if isinstance(v, (list, tuple))]
        others = [i for i, v in enumerate(labels) if not isinstance(v, (list, tuple))]
        if others:
            raise UserError(f"{column}: {len(lists)} labels are lists (multi-label) and {len(others)} are not "
                            f"({locate(others)}). Fix: make every label a list, e.g. [] for no label.")
        rows = [list(v) for v in labels]
        multi_item = True  # from here on, a row's label is a list of classes (multi-label)
    nested = [i for i, items in enumerate(rows) if any(isinstance(x, (dict, list, tuple)) for x in items)]
    if nested:
        raise UserError(f"{column}: {len(nested)} rows have a label that is a {type(rows[nested[0]][0]).__name__}, "
                        f"not a class name, number{'' if multi_item else ' or list of classes'} ({locate(nested)}). "
                        "Fix: store each label as a plain value.")
    empty = [i for i, items in enumerate(rows) if any(_is_missing(x) for x in items)]
    if empty:
        raise UserError(f"{column}: {len(empty)} of {len(rows)} rows have an empty label ({locate(empty)}); it would "
                        "become a class ''. Fix: fill in those labels or remove the rows.")
    values = [[_scalar(x) for x in items] for items in rows]
    regression = not multi_item and is_regression(labels, problem_type, label_names)
    numbers = [i for i, items in enumerate(values) if any(_is_number(x) for x in items)]
    texts = [i for i, items in enumerate(values) if any(not _is_number(x) for x in items)]
    if regression and texts:
        raise UserError(f"{column}: regression needs numeric labels, but {len(texts)} rows have text "
                        f"({locate(texts)}, e.g. {rows[texts[0]][0]!r}). Fix: correct those labels, or set "
                        "task.problem_type=single_label_classification if the labels are classes.")
    if numbers and texts and not label_names:
        few, many = (numbers, texts) if len(numbers) <= len(texts) else (texts, numbers)
        kind, other = ("numbers", "text") if few is numbers else ("text", "numbers")
        example = next(x for x in values[few[0]] if _is_number(x) == (few is numbers))
        raise UserError(f"{column}: the labels mix numbers and text: {len(few)} rows have {kind} ({locate(few)}, "
                        f"e.g. {example!r}) among {len(many)} rows of {other}, so each would become a class of its "
                        "own. Fix: make the labels one kind (all class names or all class ids), or list every "
                        "class in task.label_names=[...] (numbers then index into it).")
    if not training or regression:
        return
    counts = Counter(str(int(x) if isinstance(x, float) and x.is_integer() else x) for items in values for x in items)
    if not multi_item and not label_names and len(counts) < 2:
        # one class: nothing to tell apart (and a 1-label head would be trained as a regression)
        raise UserError(f"{column}: every training row has the same label ({next(iter(counts), 'none')!r}), so there "
                        "is nothing to classify. Fix: check data.label_column and the file, or list the classes in "
                        "task.label_names=[...] if the others only appear in other splits.")
    if len(counts) < 2 or label_names or allow_rare:
        return
    median = statistics.median(counts.values())
    rare = sorted((n, c) for c, n in counts.items() if n <= RARE_MAX_COUNT and n * RARE_RATIO <= median)
    if rare:
        names = {c for _, c in rare}
        where = [i for i, items in enumerate(values)
                 if any(str(int(x) if isinstance(x, float) and x.is_integer() else x) in names for x in items)]
        shown = ", ".join(f"{c!r} ({n})" for n, c in rare[:10])
        raise UserError(f"{column}: {len(rare)} class(es) have only a handful of rows: {shown}, next to a median of "
                        f"{median:g} per class ({locate(where)}). Such a class is almost always a typo or a stray "
                        "value, and too small to learn or measure. Fix: correct or remove those rows; or list the "
                        "classes in task.label_names=[...], or set data.allow_rare_labels=true to train with them.")


def infer_label_space(values: Sequence[Any], problem_type: str = "auto",
                      label_names: Sequence[str] | None = None) -> LabelSpace:
    """The label space of the training split (see module docstring)."""
    if problem_type not in PROBLEM_TYPES:
        raise UserError(f"task.problem_type={problem_type!r} is not one of {PROBLEM_TYPES}. "
                        "Fix: task.problem_type=auto infers it from the labels.")
    is_list = [isinstance(v, (list, tuple)) for v in values]
    if problem_type == MULTI or (problem_type == "auto" and any(is_list)):
        if not all(is_list):
            raise UserError("data.label_column: some labels are lists (multi-label) and some are not. "
                            "Fix: make every label a list, e.g. [] for no label.")
        names = list(label_names) if label_names else [
            str(n) for n in sorted({_scalar(x) for v in values for x in v}, key=_sort_key)]
        if not names:
            raise UserError("data.label_column: every training label is an empty list, so there are no classes. "
                            "Fix: check data.label_column, or list the classes in task.label_names=[...].")
        return LabelSpace(MULTI, names)
    scalars = [_scalar(v) for v in values]
    numeric = all(isinstance(v, (int, float)) for v in scalars)
    non_integer = any(isinstance(v, float) and not v.is_integer() for v in scalars)
    if problem_type == REGRESSION or (problem_type == "auto" and numeric and non_integer and not label_names):
        if not numeric:
            bad = next(v for v in scalars if not isinstance(v, (int, float)))
            raise UserError(f"data.label_column: regression needs numeric labels, found {bad!r}. "
                            "Fix: clean the label column or set task.problem_type=auto.")
        return LabelSpace(REGRESSION, [])
    if label_names:
        if len(label_names) < 2:
            raise UserError(f"task.label_names={list(label_names)} lists {len(label_names)} class(es); a classifier "
                            "needs at least 2. Fix: list every class, e.g. task.label_names=[negative,positive].")
        return LabelSpace(SINGLE, [str(n) for n in label_names])
    classes = sorted({int(v) if isinstance(v, float) else v for v in scalars}, key=_sort_key)
    return LabelSpace(SINGLE, [str(c) for c in classes])


def encode_labels(values: Sequence[Any], space: LabelSpace, split_key: str) -> list[Any]:
    """Map raw labels to model targets: class ids, multi-hot float vectors, or floats.

    Raises one UserError listing the labels this split has that the label space does not (e.g.
    validation labels training never saw), naming `split_key` (the data file/split key).
    """
    index = {name: i for i, name in enumerate(space.names)}

    def class_id(value: Any) -> int | None:
        if isinstance(value, str) and value in index:  # a name as written, even one that reads as a number ("1e3")
            return index[value]
        value = _scalar(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        name = str(value)
        if name in index:
            return index[name]
        # int labels index into explicit task.label_names (GLUE files store 0/1 for named classes)
        if isinstance(value, int) and 0 <= value < len(space.names) and not any(n.lstrip("-").isdigit() for n in space.names):
            return value
        return None

    out: list[Any] = []
    unknown: list[Any] = []
    for value in values:
        if space.problem_type == REGRESSION:
            number = _scalar(value)
            if not isinstance(number, (int, float)):
                unknown.append(value)
                continue
            out.append(float(number))
        elif space.problem_type == MULTI:
            if not isinstance(value, (list, tuple)):
                unknown.append(value)
                continue
            hot = [0.0] * len(space.names)
            for item in value:
                i = class_id(item)
                if i is None:
                    unknown.append(item)
                else:
                    hot[i] = 1.0
            out.append(hot)
        else:
            i = class_id(value)
            if i is None:
                unknown.append(value)
            out.append(i)
    if unknown:
        shown = sorted({str(u) for u in unknown})[:10]
        expected = "numbers" if space.problem_type == REGRESSION else ", ".join(space.names[:20])
        raise UserError(
            f"{split_key}: {len(unknown)} label(s) not in the label space learned from the training "
            f"data: {shown} (known: {expected}). Fix: make sure every split uses the training "
            "split's labels, or list all classes in task.label_names=[...]."
        )
    return out
