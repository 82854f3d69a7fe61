"""Classification and regression metrics, computed in-process with numpy/scipy.

`evaluate.load("accuracy")` downloads metric scripts from the Hub, so it fails offline; these
functions are exact, tiny and run on the gathered predictions of every rank.
Conventions follow scikit-learn / GLUE: binary F1/precision/recall are for class 1 (MRPC, QQP);
with more than two classes they are macro averages over the classes present in labels or
predictions. Undefined values (0/0, constant predictions for a correlation) are 0.0, not nan:
nan would break checkpoint monitoring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from gpt2tasks.errors import UserError

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def _div(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    return precision, recall, _div(2 * precision * recall, precision + recall)


# ---- single-label ----------------------------------------------------------------------------
def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(preds == labels)) if len(labels) else 0.0


def _per_class(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(classes present, 3) rows of tp, fp, fn."""
    classes = np.union1d(preds, labels)
    return np.array([[np.sum((preds == c) & (labels == c)), np.sum((preds == c) & (labels != c)),
                      np.sum((preds != c) & (labels == c))] for c in classes], dtype=float)


def _macro(preds: np.ndarray, labels: np.ndarray, which: int) -> float:
    rows = _per_class(preds, labels)
    return float(np.mean([_prf(*r)[which] for r in rows])) if len(rows) else 0.0


def _binary_or_macro(which: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(preds: np.ndarray, labels: np.ndarray, num_classes: int = 2) -> float:
        if num_classes <= 2:
            positive = (preds == 1), (labels == 1)
            tp = np.sum(positive[0] & positive[1])
            return _prf(tp, np.sum(positive[0] & ~positive[1]), np.sum(~positive[0] & positive[1]))[which]
        return _macro(preds, labels, which)
    return metric


precision, recall, f1 = (_binary_or_macro(i) for i in range(3))


def f1_macro(preds: np.ndarray, labels: np.ndarray) -> float:
    return _macro(preds, labels, 2)


def f1_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    # single-label micro F1 equals accuracy: every error is one FP and one FN
    tp, fp, fn = _per_class(preds, labels).sum(axis=0)
    return _prf(tp, fp, fn)[2]


def mcc(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation, multiclass form (Gorodkin 2004), as scikit-learn computes it."""
    classes = np.union1d(preds, labels)
    t = np.array([np.sum(labels == c) for c in classes], dtype=float)  # true counts per class
    p = np.array([np.sum(preds == c) for c in classes], dtype=float)  # predicted counts per class
    c, s = float(np.sum(preds == labels)), float(len(labels))
    denom = np.sqrt(s * s - p @ p) * np.sqrt(s * s - t @ t)
    return _div(c * s - t @ p, denom)


# ---- multi-label (preds, labels: (n, num_labels) of 0/1) -------------------------------------
def subset_accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.all(preds == labels, axis=1))) if len(labels) else 0.0


def _ml_counts(preds: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, y = preds.astype(bool), labels.astype(bool)
    return (p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0)  # per label


def multilabel_f1_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    tp, fp, fn = (x.sum() for x in _ml_counts(preds, labels))
    return _prf(tp, fp, fn)[2]


def multilabel_f1_macro(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([_prf(*c)[2] for c in zip(*_ml_counts(preds, labels))]))


def multilabel_precision_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    tp, fp, fn = (x.sum() for x in _ml_counts(preds, labels))
    return _prf(tp, fp, fn)[0]


def multilabel_recall_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    tp, fp, fn = (x.sum() for x in _ml_counts(preds, labels))
    return _prf(tp, fp, fn)[1]


def hamming_loss(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(preds != labels)) if labels.size else 0.0


# ---- regression -------------------------------------------------------------------------------
def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    x, y = preds - preds.mean(), labels - labels.mean()
    return _div(float(x @ y), float(np.sqrt((x @ x) * (y @ y))))


def spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    return pearson(rankdata(preds), rankdata(labels))  # ties get their average rank


def pearson_spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    return (pearson(preds, labels) + spearman(preds, labels)) / 2


def mse(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((preds - labels) ** 2)) if len(labels) else 0.0


def mae(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.abs(preds - labels))) if len(labels) else 0.0


_METRICS: dict[str, dict[str, Callable]] = {
    "single_label_classification": {
        "accuracy": accuracy, "f1": f1, "precision": precision, "recall": recall,
        "f1_macro": f1_macro, "f1_micro": f1_micro, "mcc": mcc,
    },
    "multi_label_classification": {
        "accuracy": subset_accuracy, "f1": multilabel_f1_micro, "f1_micro": multilabel_f1_micro,
        "f1_macro": multilabel_f1_macro, "precision_micro": multilabel_precision_micro,
        "recall_micro": multilabel_recall_micro, "hamming_loss": hamming_loss,
    },
    "regression": {
        "pearson": pearson, "spearman": spearman, "pearson_spearman": pearson_spearman, "mse": mse, "mae": mae,
    },
}
_NEEDS_NUM_CLASSES = {f1, precision, recall}


def available_metrics(problem_type: str) -> list[str]:
    return list(_METRICS[problem_type])


def check_metric_names(names: Sequence[str], problem_type: str, key: str = "task.metrics") -> None:
    unknown = [n for n in names if n not in _METRICS[problem_type]]
    if unknown:
        raise UserError(f"{key}: {unknown} are not metrics for {problem_type} (valid: "
                        f"{', '.join(_METRICS[problem_type])}). Fix: {key}=[{', '.join(list(_METRICS[problem_type])[:2])}].")


def compute_metrics(names: Sequence[str], problem_type: str, logits: np.ndarray, labels: np.ndarray,
                    threshold: float = 0.5) -> dict[str, float]:
    """Predictions from logits, then each named metric: argmax (single-label), sigmoid > threshold
    (multi-label), the raw score (regression)."""
    check_metric_names(names, problem_type)
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if problem_type == "regression":
        preds = logits.reshape(len(logits), -1)[:, 0] if logits.ndim > 1 else logits
        labels = labels.astype(np.float64)
    elif problem_type == "multi_label_classification":
        preds = (1 / (1 + np.exp(-logits)) > threshold).astype(np.int64)
        labels = labels.astype(np.int64)
    else:
        preds = logits.argmax(axis=-1)
    out = {}
    for name in names:
        fn = _METRICS[problem_type][name]
        out[name] = fn(preds, labels, logits.shape[-1]) if fn in _NEEDS_NUM_CLASSES else fn(preds, labels)
    return out
