"""Token classification (NER) over GPT2ForTokenClassification; entity-level metrics over words.

The module is the HF head as is (backbone -> dropout -> classifier on every position). Metrics
are computed over words, not sub-tokens: each word's tag is the prediction at its first sub-token,
gathered across the windows of its sentence, then scored with seqeval's (conlleval) chunking.
"""

from __future__ import annotations

import re

from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpt2tasks.datamodules.base import PREDICT
from gpt2tasks.datamodules.packing import unpack
from gpt2tasks.errors import UserError
from gpt2tasks.metrics_ner import SCHEMES, entity_spans, ner_metrics
from gpt2tasks.plots import confusion_counts
from gpt2tasks.tasks.base import TaskModule

METRICS = ("precision", "recall", "f1", "accuracy")


class TokenClsModule(TaskModule):
    head_modules = ("classifier",)
    min_max_length = 8
    eval_pad_values = {"preds": -100, "labels": -100, "word_ids": -1}
    metric_names = METRICS
    metric_note = "per entity type, <TYPE>_precision/_recall/_f1 are always reported"
    eval_options = {"tag_scheme": "IOB2"}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, T, C) of a padded batch, or of a packed one's B examples."""
        return unpack(self.model(**self.backbone_inputs(batch), use_cache=False).logits, batch)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self(batch).float()
        labels = batch["labels"]  # (B, T), -100 on padding and on later sub-tokens
        per_token = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (B, T), 0 where -100
        counts = (labels != -100).sum(-1)
        # The HF head's loss: the mean over every labelled token of the batch.
        loss = per_token.sum() / counts.sum().clamp(min=1)
        per_example = per_token.sum(-1) / counts.clamp(min=1)
        return loss, {"loss": per_example, "labels": labels, **self._tag_outputs(logits, batch)}

    def predict_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._tag_outputs(self(batch), batch)

    @staticmethod
    def _tag_outputs(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predicted tag ids (B, T) (-100 where no word), with what maps them back to words."""
        word_ids = batch["word_ids"]
        preds = logits.argmax(-1).masked_fill(word_ids < 0, -100)
        return {"preds": preds, "word_ids": word_ids, "example": batch["example"]}

    def compute_metrics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, float]:
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        preds = words_by_example(outputs["example"], outputs["word_ids"], outputs["preds"])
        golds = words_by_example(outputs["example"], outputs["word_ids"], outputs["labels"])
        true = [[id2label[int(t)] for t in golds[e]] for e in sorted(golds)]
        pred = [[id2label[int(t)] for t in preds[e]] for e in sorted(golds)]
        scores = ner_metrics(true, pred, scheme=self.evaluation.options["tag_scheme"])
        overall = set(METRICS)
        return {k: v for k, v in scores.items() if k in self.evaluation.metrics or k not in overall}

    def diagnostics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, Any]:
        """The confusion of word-level tags (each word's first sub-token, as the metrics score)."""
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        names = [id2label[i] for i in range(len(id2label))]
        preds = words_by_example(outputs["example"], outputs["word_ids"], outputs["preds"])
        golds = words_by_example(outputs["example"], outputs["word_ids"], outputs["labels"])
        true = np.array([t for e in sorted(golds) for t in golds[e]], dtype=np.int64)
        pred = np.array([t for e in sorted(golds) for t in preds[e]], dtype=np.int64)
        return {"confusion": confusion_counts(true, pred, len(names)), "labels": names, "what": "word tags"}

    def predict_rows(self, outputs: dict[str, np.ndarray], datamodule) -> list[dict[str, Any]]:
        """One tag per input word (its first sub-token's prediction, across windows) and the entity
        spans they make: {"type", "start", "end" (word indices, end exclusive), "text"}."""
        names = datamodule.label_space.names
        by_example = words_by_example(outputs["example"], outputs["word_ids"], outputs["preds"]) if outputs else {}
        rows = []
        for e, example in enumerate(datamodule.examples[PREDICT]):
            words = [str(w) for w in example[datamodule.spec.tokens_column]]
            tags = [names[int(t)] for t in by_example.get(e, [])]  # a sentence with no words has no windows
            rows.append({"tags": tags, "entities": entity_spans(words, tags, self.evaluation.options["tag_scheme"])})
        return rows

    @classmethod
    def check_metrics(cls, names: list[str], label_space, key: str = "task.metrics") -> None:
        super().check_metrics(names, label_space, key)
        # Entity-level metrics read the first letter of a tag as its prefix: a bare "PER" would be
        # scored as an entity of type "ER", silently.
        entity = [n for n in names if n != "accuracy"]
        odd = [t for t in label_space.names if t != "O" and not re.fullmatch(r"[BIES]-.+", t)]
        if entity and odd:
            raise UserError(f"{key}={entity}: entity-level metrics need tags O or B-/I-/E-/S-<TYPE>, but the tags "
                            f"include {odd[:10]}. Fix: rename them (e.g. PER -> B-PER/I-PER), or score words only "
                            "with task.metrics=[accuracy] (e.g. for part-of-speech tags) and task.monitor=val/accuracy.")

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[str]:
        if options["tag_scheme"] not in SCHEMES:
            return [f"task.tag_scheme={options['tag_scheme']!r} is not one of {', '.join(SCHEMES)}. "
                    "Fix: IOB1 for the original CoNLL-2003 files, IOB2 for most others."]
        return []

    @staticmethod
    def configure_head(config, label_space) -> None:
        config.num_labels = len(label_space.names)
        config.id2label = dict(enumerate(label_space.names))
        config.label2id = {name: i for i, name in enumerate(label_space.names)}


def words_by_example(examples: np.ndarray, word_ids: np.ndarray, values: np.ndarray) -> dict[int, list]:
    """example -> the value at each word's first sub-token, in word order.

    `examples` (n,), `word_ids` and `values` (n, T): one row per window, padded with word id -1.
    Windows of an example hold consecutive, disjoint words, so sorting by word id restores order.
    """
    words: dict[int, dict[int, Any]] = defaultdict(dict)
    for example, ids, vals in zip(examples, word_ids, values):
        previous = -1
        for w, v in zip(ids, vals):
            if w >= 0 and w != previous:  # first sub-token of word w
                words[int(example)].setdefault(int(w), v)
            previous = w
    return {e: [by_word[w] for w in sorted(by_word)] for e, by_word in words.items()}
