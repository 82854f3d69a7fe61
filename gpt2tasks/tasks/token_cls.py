"""Token classification (NER) over GPT2ForTokenClassification; entity-level metrics over words.

The module is the HF head as is (backbone -> dropout -> classifier on every position). Metrics
are computed over words, not sub-tokens: each word's tag is the prediction at its first sub-token,
gathered across the windows of its sentence, then scored with seqeval's (conlleval) chunking.

The entity-level metrics (below TokenClsModule) are seqeval's default (conlleval) mode, computed
in-process: `evaluate.load("seqeval")` fetches its metric script from the Hugging Face Hub, so it
fails offline, and the `seqeval` package would be one more dependency for ~50 lines of logic. They
reproduce `seqeval.metrics.{precision,recall,f1,accuracy}_score` in their DEFAULT mode (not
mode="strict") on plain lists of tag strings, with zero_division giving 0.0.

Chunking (conlleval): a tag is `<prefix>-<TYPE>` with prefix B, I, E or S, or `O`. An entity starts
at B-/S-, at an I-/E- after O, E- or S-, and at any tag whose type differs from the previous one; it
ends before O, B- or S-, after E-/S-, and on a type change. An entity is correct only if its type,
start and end all match.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpt2tasks.datamodules.base import PREDICT
from gpt2tasks.datamodules.packing import unpack
from gpt2tasks.errors import UserError
from gpt2tasks.plots import confusion, entity_picture
from gpt2tasks.tasks.base import TaskModule

METRICS = ("precision", "recall", "f1", "accuracy")


class TokenClsModule(TaskModule):
    head_modules = ("classifier",)
    min_max_length = 8
    eval_pad_values = {"preds": -100, "labels": -100, "word_ids": -1}
    metric_names = METRICS
    headline_metrics = ("f1", "precision", "recall")  # entity-level, over all types
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
        return confusion(true, pred, names, what="word tags")

    def pictures(self, prefix: str, curves: dict[str, Any], evals, metrics: dict[str, float]) -> dict[str, Any]:
        """Entity-level precision/recall/F1 per entity type, from the run's validation metrics."""
        report = entity_picture(metrics, f"{prefix}val")
        return {"entity_report": report} if report else {}

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


# ---- entity-level metrics, seqeval's default mode (see the module docstring) --------------------------
SCHEMES = ("IOB1", "IOB2", "IOBES")


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not one of {', '.join(SCHEMES)}")


def _parse(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'), 'O' -> ('O', '_').

    Read exactly as seqeval does: the first character is the prefix, the rest after the first '-'
    is the type. So a bare 'PER' is prefix 'P', type 'ER': odd tags score as seqeval scores them.
    """
    return tag[:1] or "O", tag[1:].split("-", 1)[-1] or "_"


def _ends(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    """Does an entity end between the previous word and this one?"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and cur in ("B", "S", "O"):
        return True
    return prev not in ("O", ".") and prev_type != cur_type


def _starts(prev: str, cur: str, prev_type: str, cur_type: str) -> bool:
    """Does an entity start at this word? (An I- after O does: that is what makes IOB1 work.)"""
    if cur in ("B", "S"):
        return True
    if prev in ("O", "E", "S") and cur in ("I", "E"):
        return True
    return cur not in ("O", ".") and prev_type != cur_type


def get_entities(tags: Sequence[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """Entities as (type, start word index, end word index EXCLUSIVE), in order.

    `scheme` must be one of SCHEMES but does not change the result: default-mode (conlleval)
    chunking is scheme-agnostic. Because an I- after O or after another type starts an entity and a
    B- always does, IOB1 (B- only between two adjacent entities of one type, as in the original
    CoNLL-2003 files) and IOB2 (B- at every start, as in the Hub's conll2003) encodings of the same
    entities chunk identically; IOBES's E-/S- are understood by the same rules.
    """
    _check_scheme(scheme)
    entities: list[tuple[str, int, int]] = []
    # prev_type starts as '' (not '_'), as in seqeval: only odd first tags (a bare 'X') notice.
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # the extra O closes an entity that runs to the end
        cur, cur_type = _parse(tag)
        if _ends(prev, cur, prev_type, cur_type):
            entities.append((prev_type, begin, i))
        if _starts(prev, cur, prev_type, cur_type):
            begin = i
        prev, prev_type = cur, cur_type
    return entities


def _prf(correct: int, predicted: int, true: int) -> tuple[float, float, float]:
    """Precision, recall, F1; a zero denominator gives 0.0 (seqeval's zero_division default)."""
    p = correct / predicted if predicted else 0.0
    r = correct / true if true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def ner_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]], scheme: str = "IOB2",
                per_type: bool = True) -> dict[str, float]:
    """Entity-level scores of sentence-level word tags, equal to seqeval's default mode.

    Returns `precision`, `recall`, `f1` (micro over exact entities), `accuracy` (word-level tags) and,
    if `per_type`, `{TYPE}_precision/_recall/_f1/_number` for each type in true or pred (`_number`:
    true entities of that type). All plain floats in [0, 1] (`_number` is a count). `scheme` is only
    validated (see `get_entities`): IOB1 and IOB2 encodings of the same entities score identically.
    Raises ValueError unless both have the same number of sentences and of words per sentence.
    """
    _check_scheme(scheme)
    if any(isinstance(s, str) for s in (*true_tags, *pred_tags)):
        raise ValueError("expected lists of sentences (lists of tags), got a flat list of tags")
    if len(true_tags) != len(pred_tags) or any(len(t) != len(p) for t, p in zip(true_tags, pred_tags)):
        raise ValueError("true_tags and pred_tags must have the same number of sentences and words per sentence")
    # Like seqeval, chunk the corpus as one sequence with an O after each sentence: positions are then
    # unique across sentences, and even malformed tags at a sentence end behave exactly as there.
    flat_true = [tag for sentence in true_tags for tag in [*sentence, "O"]]
    flat_pred = [tag for sentence in pred_tags for tag in [*sentence, "O"]]
    true_set, pred_set = set(get_entities(flat_true)), set(get_entities(flat_pred))
    correct = true_set & pred_set

    words = sum(len(t) for t in true_tags)
    right = sum(a == b for t, p in zip(true_tags, pred_tags) for a, b in zip(t, p))
    precision, recall, f1 = _prf(len(correct), len(pred_set), len(true_set))
    out = {"precision": precision, "recall": recall, "f1": f1, "accuracy": right / words if words else 0.0}
    if per_type:
        n_true, n_pred, n_correct = (Counter(e[0] for e in group) for group in (true_set, pred_set, correct))
        for kind in sorted(n_true.keys() | n_pred.keys()):
            p, r, f = _prf(n_correct[kind], n_pred[kind], n_true[kind])
            out.update({f"{kind}_precision": p, f"{kind}_recall": r, f"{kind}_f1": f,
                        f"{kind}_number": float(n_true[kind])})
    return out


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite IOB1 as IOB2: an I- that starts an entity becomes B-; every other tag is kept.

    The entities (and so the metrics) are unchanged; IOB2 input comes back as it was.
    """
    out: list[str] = []
    prev, prev_type = "O", ""
    for tag in tags:
        cur, cur_type = _parse(tag)
        out.append("B" + tag[1:] if cur == "I" and _starts(prev, cur, prev_type, cur_type) else tag)
        prev, prev_type = cur, cur_type
    return out


def entity_spans(words: Sequence[str], tags: Sequence[str], scheme: str = "IOB2") -> list[dict]:
    """Entities of one sentence with their words: [{"type", "start", "end" (exclusive), "text"}]."""
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    return [{"type": kind, "start": start, "end": end, "text": " ".join(words[start:end])}
            for kind, start, end in get_entities(tags, scheme)]
