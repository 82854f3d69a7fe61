"""Multiple choice over GPT2DoubleHeadsModel: a score per choice (+ an optional LM loss), accuracy.

The module runs the HF head's own parts -- backbone, `multiple_choice_head` at `mc_token_ids`,
`lm_head` -- and equals calling `GPT2DoubleHeadsModel(input_ids, attention_mask, mc_token_ids,
labels=lm_labels(...), mc_labels=...)` (tested). One difference, for speed: the LM logits, the
(T x vocab) tensor that dominates the cost, are computed for the correct choice only, which is
the only one with LM labels; with `task.lm_coef=0` they are not computed at all.

Loss = task.mc_coef * cross-entropy over the choices + task.lm_coef * LM loss on the correct
choice (HF's: the mean over its real tokens, shifted). Padding is masked by the attention mask,
never by token id: pad = eos, and the summary token itself is a real eos.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax

from gpt2tasks.metrics import accuracy
from gpt2tasks.tasks.base import TaskModule


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LM targets (B, C, T) for HF's `labels=`: the tokens of each example's correct choice, -100 on
    the other choices and on padding (found by the attention mask, so a real eos keeps its label)."""
    correct = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] == labels[:, None]  # (B, C)
    keep = attention_mask.bool() & correct[..., None]
    return input_ids.masked_fill(~keep, -100)


class MultipleChoiceModule(TaskModule):
    head_modules = ("multiple_choice_head",)
    min_max_length = 8
    metric_names = ("accuracy",)
    headline_metrics = ("accuracy",)
    metric_note = "mc_loss is always reported, and lm_loss when task.lm_coef > 0"
    # Loss weights, read from task.*. lm_coef defaults to 0: the auxiliary LM loss costs a vocab-sized
    # softmax per token, and GPT-1 (Radford et al. 2018, sec. 5) found it helps large datasets but
    # not small ones; presets of large datasets may turn it on.
    eval_options = {"mc_coef": 1.0, "lm_coef": 0.0}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mc_token_ids: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states (B, C, T, H), mc_logits (B, C)) for input_ids/attention_mask (B, C, T)."""
        hidden = self.backbone(input_ids=input_ids.flatten(0, 1), attention_mask=attention_mask.flatten(0, 1),
                               use_cache=False).last_hidden_state  # (B*C, T, H)
        hidden = hidden.view(*input_ids.shape, hidden.shape[-1])  # (B, C, T, H)
        return hidden, self.model.multiple_choice_head(hidden, mc_token_ids).squeeze(-1)  # (B, C)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        options = self.evaluation.options
        mc_coef, lm_coef = float(options["mc_coef"]), float(options["lm_coef"])
        hidden, mc_logits = self(batch["input_ids"], batch["attention_mask"], batch["mc_token_ids"])
        mc_logits = mc_logits.float()
        labels = batch["labels"]  # (B,) the correct choice
        mc_loss = F.cross_entropy(mc_logits, labels, reduction="none")  # (B,)
        loss, per_example = mc_coef * mc_loss.mean(), mc_coef * mc_loss
        out = {"mc_logits": mc_logits, "labels": labels, "mc_loss": mc_loss}
        if lm_coef:
            rows = torch.arange(labels.shape[0], device=labels.device)
            logits = self.model.lm_head(hidden[rows, labels]).float()  # (B, T, V), correct choice only
            targets = lm_labels(batch["input_ids"], batch["attention_mask"], labels)[rows, labels]  # (B, T)
            per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets[:, 1:], reduction="none")  # (B, T-1)
            counts = (targets[:, 1:] != -100).sum(-1)
            loss = loss + lm_coef * per_token.sum() / counts.sum().clamp(min=1)  # HF: mean over the batch's tokens
            out["lm_loss"] = per_token.sum(-1) / counts.clamp(min=1)
            per_example = per_example + lm_coef * out["lm_loss"]
        return loss, {"loss": per_example, **out}

    def predict_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _, mc_logits = self(batch["input_ids"], batch["attention_mask"], batch["mc_token_ids"])
        return {"mc_logits": mc_logits.float()}  # (B, C)

    def predict_rows(self, outputs: dict[str, np.ndarray], datamodule) -> list[dict[str, Any]]:
        """The chosen ending's index and every ending's probability (softmax over the choices)."""
        scores = softmax(outputs["mc_logits"].astype(np.float64), axis=-1)  # (n, C)
        return [{"choice": int(row.argmax()), "scores": row.tolist()} for row in scores]

    def compute_metrics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, float]:
        metrics = {"accuracy": accuracy(outputs["mc_logits"].argmax(-1), outputs["labels"].astype(np.int64)),
                   "mc_loss": float(outputs["mc_loss"].mean())}
        if "lm_loss" in outputs:
            metrics["lm_loss"] = float(outputs["lm_loss"].mean())
        return metrics

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[str]:
        problems = [f"task.{key}={options[key]!r} must be a number >= 0." for key in ("mc_coef", "lm_coef")
                    if not isinstance(options[key], (int, float)) or isinstance(options[key], bool) or options[key] < 0]
        if not problems and not options["mc_coef"] and not options["lm_coef"]:
            problems.append("task.mc_coef and task.lm_coef are both 0: nothing would be learned. Fix: "
                            "task.mc_coef=1.0.")
        return problems

    @staticmethod
    def configure_head(config, label_space) -> None:
        # GPT2DoubleHeadsModel's summary: the hidden state at mc_token_ids (the summary token),
        # projected to one score per choice; written to the config so the export reloads as is.
        config.summary_type = "cls_index"
        config.summary_use_proj = True
        config.summary_proj_to_labels = True
        config.summary_activation = None
        config.num_labels = 1
