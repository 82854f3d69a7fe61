"""Sequence classification over GPT2ForSequenceClassification: single-label, multi-label, regression.

Pooling: HF's head picks "the rightmost token that is not the pad id". With pad = eos that drops a
real trailing eos, so we pool the last *attended* position (right padding: attention_mask.sum - 1)
and apply the head's own `score` layer. Without a trailing eos this is exactly the HF head.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit, softmax

from gpt2tasks.datamodules.labels import MULTI, REGRESSION
from gpt2tasks.datamodules.packing import unpack
from gpt2tasks.metrics import MULTI_LABEL_THRESHOLD, available_metrics, check_metric_names, compute_metrics
from gpt2tasks.plots import class_report_picture, confusion
from gpt2tasks.tasks.base import TaskModule


class SeqClsModule(TaskModule):
    head_modules = ("score",)
    min_max_length = 8

    @classmethod
    def check_config(cls, task, data) -> list[str]:
        problems = super().check_config(task, data)
        if task.problem_type != "auto":
            unknown = [m for m in task.metrics if m not in available_metrics(task.problem_type)]
            if unknown:
                problems.append(f"task.metrics: {unknown} are not metrics for {task.problem_type} "
                                f"(valid: {', '.join(available_metrics(task.problem_type))}).")
        if data.label_column in {data.text_column, data.text_pair_column} - {None}:
            problems.append(f"data.label_column={data.label_column!r} is also an input column (data.text_column / "
                            "data.text_pair_column): the model would be asked to classify each text as itself. Fix: "
                            "point data.label_column at the label column.")
        return problems

    @property
    def problem_type(self) -> str:
        return self.model.config.problem_type

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, num_labels) of a padded batch, or of a packed one's B examples."""
        hidden = self.backbone(**self.backbone_inputs(batch), use_cache=False).last_hidden_state
        hidden = unpack(hidden, batch)  # (B, T, H) per example
        last = batch["attention_mask"].sum(dim=-1) - 1  # (B,) last real token of each example
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return self.model.score(pooled)  # (B, num_labels)

    def predict_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self(batch).float()}  # (B, num_labels)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.predict_outputs(batch)["logits"]
        labels = batch["labels"]
        # Same losses as the HF head, per example so evaluation can average exactly.
        if self.problem_type == REGRESSION:
            per_example = (logits.squeeze(-1) - labels.float()) ** 2
        elif self.problem_type == MULTI:
            per_example = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1)
        else:
            per_example = F.cross_entropy(logits, labels, reduction="none")
        return per_example.mean(), {"loss": per_example, "logits": logits, "labels": labels}

    def compute_metrics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, float]:
        labels = outputs["labels"]
        if self.problem_type not in (REGRESSION, MULTI):
            labels = labels.astype(np.int64)
        return compute_metrics(self.evaluation.metrics, self.problem_type, outputs["logits"], labels)

    def diagnostics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, Any]:
        if self.problem_type in (REGRESSION, MULTI):
            return {}
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        names = [id2label[i] for i in range(len(id2label))]
        preds = outputs["logits"].argmax(-1)
        return confusion(outputs["labels"], preds, names)

    def pictures(self, prefix: str, curves: dict[str, Any], evals, metrics: dict[str, float]) -> dict[str, Any]:
        """Single-label runs: precision/recall/F1 per class of the validation set's confusion."""
        val = self.latest_diagnostics.get("val", {})
        return {"class_report": class_report_picture(val)} if "confusion" in val else {}

    def predict_rows(self, outputs: dict[str, np.ndarray], datamodule) -> list[dict[str, Any]]:
        """Single-label: the argmax label + softmax scores per class; multi-label: the classes whose
        sigmoid score is above the metrics' threshold + those scores; regression: the value."""
        logits = outputs["logits"].astype(np.float64)  # (n, num_labels)
        names = datamodule.label_space.names
        if self.problem_type == REGRESSION:
            return [{"value": float(v)} for v in logits[:, 0]]
        if self.problem_type == MULTI:
            scores = expit(logits)
            return [{"labels": [n for n, p in zip(names, row) if p > MULTI_LABEL_THRESHOLD],
                     "scores": dict(zip(names, row.tolist()))} for row in scores]
        scores = softmax(logits, axis=-1)
        return [{"label": names[int(row.argmax())], "scores": dict(zip(names, row.tolist()))} for row in scores]

    @classmethod
    def check_metrics(cls, names: list[str], label_space, key: str = "task.metrics") -> None:
        check_metric_names(names, label_space.problem_type, key=key)

    @staticmethod
    def configure_head(config, label_space) -> None:
        config.num_labels = label_space.num_labels
        config.id2label = label_space.id2label
        config.label2id = {name: i for i, name in label_space.id2label.items()}
        config.problem_type = label_space.problem_type
