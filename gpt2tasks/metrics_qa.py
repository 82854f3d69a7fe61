"""Extractive QA: post-processing of per-window logits into answers, and the SQuAD metrics.

The metrics reproduce the official SQuAD v1.1 and v2.0 evaluation scripts (`evaluate.load("squad")`
fetches them from the Hub, which fails offline): answers are normalised (lower case, no
punctuation, no articles, single spaces), exact match and token F1 take the best gold answer, and
results are percentages. Post-processing follows Hugging Face's `postprocess_qa_predictions`:
the n-best start and end positions of every window of an example, spans inside the context and at
most `max_answer_length` tokens long, the best score over all windows; for SQuAD v2 the null score
is the minimum over windows of the summary token's start + end logits.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str, version_2: bool = False) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    if version_2 and (not pred or not gold):
        return float(pred == gold)  # v2: an empty answer is right only against an empty gold
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]],
                  version_2: bool = False) -> dict[str, float]:
    """EM and F1 (0-100) of each prediction against its best reference; v2 adds HasAns/NoAns splits."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    em, f1, has_answer = [], [], []
    for prediction, golds in zip(predictions, references):
        golds = list(golds) if golds or not version_2 else [""]  # v2: unanswerable = gold ""
        has_answer.append(any(normalize_answer(g) for g in golds) if version_2 else True)
        em.append(max((exact_match_score(prediction, g) for g in golds), default=0.0))
        f1.append(max((f1_score(prediction, g, version_2) for g in golds), default=0.0))
    out = {"exact_match": _percent(em), "f1": _percent(f1)}
    if version_2:
        for name, keep in (("HasAns", True), ("NoAns", False)):
            ids = [i for i, h in enumerate(has_answer) if h == keep]
            if ids:
                out.update({f"{name}_exact_match": _percent([em[i] for i in ids]),
                            f"{name}_f1": _percent([f1[i] for i in ids]), f"{name}_total": float(len(ids))})
    return out


def _percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


@dataclass
class Answer:
    text: str  # exact substring of the context, context[start:end]; "" for no answer
    start: int  # character offsets into the context; -1, -1 for no answer
    end: int
    score: float  # start + end logit of the chosen span (or the null score for no answer)
    null_score: float  # min over the example's windows of the summary token's start + end logits


def postprocess_qa(features: Sequence[Mapping], start_logits: np.ndarray, end_logits: np.ndarray,
                   contexts: Sequence[str], *, n_best: int = 20, max_answer_length: int = 30,
                   version_2: bool = False, null_threshold: float = 0.0) -> list[Answer]:
    """One Answer per context from the windows in `features` (see the module docstring).

    features[i]: {"example": index into contexts, "offset_start"/"offset_end": per-token character
    spans in the context (-1 for question, separator and summary tokens), "null_index": position of
    the summary token (default: the window's last token)}. Logits: (n_windows, T), T >= window length.
    """
    best: list[tuple[float, int, int] | None] = [None] * len(contexts)
    null = [np.inf] * len(contexts)
    seen = [False] * len(contexts)
    for i, feature in enumerate(features):
        example = int(feature["example"])
        seen[example] = True
        starts, ends = np.asarray(feature["offset_start"]), np.asarray(feature["offset_end"])
        n = len(starts)
        s_logits, e_logits = start_logits[i, :n], end_logits[i, :n]
        null_index = int(feature.get("null_index", n - 1))
        null[example] = min(null[example], float(s_logits[null_index] + e_logits[null_index]))
        in_context = starts >= 0
        top_s = [s for s in np.argsort(s_logits)[::-1][:n_best] if in_context[s]]
        top_e = [e for e in np.argsort(e_logits)[::-1][:n_best] if in_context[e]]
        for s in top_s:
            for e in top_e:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_logits[s] + e_logits[e])
                if best[example] is None or score > best[example][0]:
                    best[example] = (score, int(starts[s]), int(ends[e]))
    if not all(seen):
        raise ValueError(f"example {seen.index(False)} has no window")
    answers = []
    for example, context in enumerate(contexts):
        span = best[example]
        if span is None or (version_2 and null[example] - span[0] > null_threshold):
            answers.append(Answer("", -1, -1, null[example] if version_2 else -np.inf, null[example]))
        else:
            score, start, end = span
            answers.append(Answer(context[start:end], start, end, score, null[example]))
    return answers
