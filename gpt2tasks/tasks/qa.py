"""Extractive QA over GPT2ForQuestionAnswering: start/end logits per window -> answer text, SQuAD EM/F1.

Padding positions are masked out of the start/end softmax (the HF head leaves them in, so its loss
would change with the batch's padding); on an unpadded batch the loss equals the HF head's.
Evaluation post-processes all windows of each example together (n-best spans inside the context,
`task.max_answer_length`, SQuAD v2's null-score threshold) and keeps the predicted texts in
`latest_predictions` for predictions.json.

The SQuAD metrics (below QAModule) reproduce the official v1.1 and v2.0 evaluation scripts
(`evaluate.load("squad")` fetches them from the Hub, which fails offline): answers are normalised
(lower case, no punctuation, no articles, single spaces), exact match and token F1 take the best
gold answer, and results are percentages. Post-processing follows Hugging Face's `postprocess_qa_predictions`:
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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpt2tasks.datamodules.base import PREDICT
from gpt2tasks.datamodules.packing import unpack
from gpt2tasks.tasks.base import TaskModule


class QAModule(TaskModule):
    head_modules = ("qa_outputs",)
    eval_pad_values = {"start_logits": -np.inf, "end_logits": -np.inf}
    metric_names = ("exact_match", "f1")
    headline_metrics = ("f1", "exact_match")
    metric_scale = 100.0  # SQuAD's official EM/F1 are percentages
    metric_note = "with task.version_2=true the HasAns_/NoAns_ splits are always reported"
    eval_options = {"version_2": False, "n_best": 20, "max_answer_length": 30, "null_threshold": 0.0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.latest_predictions: dict[str, dict[str, str]] = {}  # eval set -> {id: answer text}

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, end) logits, (B, T) each, of a padded batch or of a packed one's B examples."""
        out = self.model(**self.backbone_inputs(batch), use_cache=False)
        padding = batch["attention_mask"] == 0
        # (B, T) each; padding (and, packed, the next example's tokens) can never be a start or an end
        return (unpack(out.start_logits, batch).float().masked_fill(padding, -torch.inf),
                unpack(out.end_logits, batch).float().masked_fill(padding, -torch.inf))

    def predict_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        start_logits, end_logits = self(batch)
        return {"start_logits": start_logits, "end_logits": end_logits}

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.predict_outputs(batch)
        per_example = (F.cross_entropy(out["start_logits"], batch["start_positions"], reduction="none")
                       + F.cross_entropy(out["end_logits"], batch["end_positions"], reduction="none")) / 2
        return per_example.mean(), {"loss": per_example, **out}

    def best_answers(self, outputs: dict[str, np.ndarray], datamodule, split: str) -> tuple[list[str], list[Answer]]:
        """(example ids, the best answer of each example over all its windows) of a split."""
        windows = datamodule.datasets[split].rows
        ids, contexts = datamodule.contexts(split)  # predict inputs have no gold answers
        opts = self.evaluation.options
        return ids, postprocess_qa([windows[int(i)] for i in outputs["idx"]], outputs["start_logits"],
                                   outputs["end_logits"], contexts, n_best=int(opts["n_best"]),
                                   max_answer_length=int(opts["max_answer_length"]),
                                   version_2=bool(opts["version_2"]), null_threshold=float(opts["null_threshold"]))

    def compute_metrics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, float]:
        datamodule = self.datamodule
        ids, answers = self.best_answers(outputs, datamodule, eval_set)
        texts = [a.text for a in answers]
        self.latest_predictions[eval_set] = dict(zip(ids, texts))
        golds = datamodule.references(eval_set)[2]
        return squad_metrics(texts, golds, version_2=bool(self.evaluation.options["version_2"]))

    def predict_rows(self, outputs: dict[str, np.ndarray], datamodule) -> list[dict[str, Any]]:
        """The answer text, its score (start + end logit) and character offsets into the context
        (context[start:end] == answer); no answer (SQuAD v2 null): "" with start/end null."""
        _, answers = self.best_answers(outputs, datamodule, PREDICT)
        return [{"answer": a.text, "score": a.score if np.isfinite(a.score) else None,
                 "start": a.start if a.start >= 0 else None, "end": a.end if a.start >= 0 else None}
                for a in answers]

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[str]:
        problems = []
        for key in ("n_best", "max_answer_length"):
            value = options[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"task.{key}={value!r} must be a positive integer.")
        if not isinstance(options["null_threshold"], (int, float)):
            problems.append(f"task.null_threshold={options['null_threshold']!r} must be a number.")
        return problems

    @staticmethod
    def configure_head(config, label_space) -> None:
        config.num_labels = 2  # GPT2ForQuestionAnswering's qa_outputs: start and end logits


# ---- answers from per-window logits, and the SQuAD metrics (see the module docstring) -----------------
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
