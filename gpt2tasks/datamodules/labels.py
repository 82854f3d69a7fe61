"""Label spaces for classification: infer the kind from the training labels, encode every split.

Rules (the contract): ints or strings -> single-label classes, sorted for determinism (numbers
numerically, strings alphabetically) and written to id2label; non-integer floats -> regression;
lists -> multi-label over the sorted union of their items. `task.label_names` fixes the classes
instead: int labels then index into it and string labels must be among its names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    """CSV gives strings: '1' -> 1, '3.8' -> 3.8, 'pos' -> 'pos'; 2.0 stays a float."""
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
            return number if math.isfinite(number) else text
        except ValueError:
            return text
    return value


def _sort_key(name: Any) -> tuple:
    return (0, name, "") if isinstance(name, (int, float)) else (1, 0, str(name))


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
