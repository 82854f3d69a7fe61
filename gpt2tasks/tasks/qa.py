"""Extractive QA over GPT2ForQuestionAnswering: start/end logits per window -> answer text, SQuAD EM/F1.

Padding positions are masked out of the start/end softmax (the HF head leaves them in, so its loss
would change with the batch's padding); on an unpadded batch the loss equals the HF head's.
Evaluation post-processes all windows of each example together (n-best spans inside the context,
`task.max_answer_length`, SQuAD v2's null-score threshold) and keeps the predicted texts in
`latest_predictions` for predictions.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpt2tasks.datamodules.base import PREDICT
from gpt2tasks.datamodules.packing import unpack
from gpt2tasks.metrics_qa import Answer, postprocess_qa, squad_metrics
from gpt2tasks.tasks.base import TaskModule


class QAModule(TaskModule):
    head_modules = ("qa_outputs",)
    eval_pad_values = {"start_logits": -np.inf, "end_logits": -np.inf}
    metric_names = ("exact_match", "f1")
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
