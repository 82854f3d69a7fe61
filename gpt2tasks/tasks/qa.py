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

from gpt2tasks.metrics_qa import postprocess_qa, squad_metrics
from gpt2tasks.tasks.base import TaskModule


class QAModule(TaskModule):
    head_modules = ("qa_outputs",)
    eval_pad_values = {"start_logits": -np.inf, "end_logits": -np.inf}
    metric_names = ("exact_match", "f1")
    metric_note = "with task.version_2=true the HasAns_/NoAns_ splits are always reported"
    eval_options = {"version_2": False, "n_best": 20, "max_answer_length": 30, "null_threshold": 0.0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.latest_predictions: dict[str, dict[str, str]] = {}  # eval set -> {id: answer text}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        padding = attention_mask == 0
        # (B, T) each; padding can never be a start or an end
        return (out.start_logits.float().masked_fill(padding, -torch.inf),
                out.end_logits.float().masked_fill(padding, -torch.inf))

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        start_logits, end_logits = self(batch["input_ids"], batch["attention_mask"])
        per_example = (F.cross_entropy(start_logits, batch["start_positions"], reduction="none")
                       + F.cross_entropy(end_logits, batch["end_positions"], reduction="none")) / 2
        return per_example.mean(), {"loss": per_example, "start_logits": start_logits, "end_logits": end_logits}

    def compute_metrics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, float]:
        datamodule = self.trainer.datamodule
        windows = datamodule.datasets[eval_set].rows
        ids, contexts, golds = datamodule.references(eval_set)
        opts = self.evaluation.options
        answers = postprocess_qa([windows[int(i)] for i in outputs["idx"]], outputs["start_logits"],
                                 outputs["end_logits"], contexts, n_best=int(opts["n_best"]),
                                 max_answer_length=int(opts["max_answer_length"]),
                                 version_2=bool(opts["version_2"]), null_threshold=float(opts["null_threshold"]))
        texts = [a.text for a in answers]
        self.latest_predictions[eval_set] = dict(zip(ids, texts))
        return squad_metrics(texts, golds, version_2=bool(opts["version_2"]))

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
