"""Sequence-classification metrics computed in-process with numpy and scipy.

`evaluate.load("accuracy")` fetches metric scripts from the Hugging Face Hub and so fails offline;
these functions are exact, small and run on the gathered predictions of the whole eval set.

Conventions follow scikit-learn and GLUE:
  * single-label `f1`/`precision`/`recall` with two classes are for the positive class 1 (the
    GLUE MRPC/QQP convention); with more than two classes they are macro averages.
  * macro averages run over the classes that occur in the labels or the predictions (sklearn's
    default `labels=None`): a class absent from both has no defined F1 and is left out rather
    than counted as 0.
  * a 0/0 (no predicted or no true positives) gives 0.0, sklearn's `zero_division` default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata

from gpt2tasks.errors import UserError

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def _div(num: float, den: float) -> float:
    """num / den, or 0.0 when den is 0 (sklearn's zero_division=0)."""
    return float(num) / float(den) if den else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0  # no classes at all (empty eval set)


def _f1(tp: float, fp: float, fn: float) -> float:
    # 2PR / (P + R) simplified; identical whenever defined and 0.0 when TP = FP = FN = 0.
    return _div(2 * tp, 2 * tp + fp + fn)


# ---- single-label: preds and labels are (n,) class ids ---------------------------------------
def _counts(preds: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class (tp, fp, fn) arrays, one entry per class in `classes`."""
    p, y = preds[:, None] == classes, labels[:, None] == classes  # (n, classes) one-hot
    return (p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0)


def _present(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.union1d(preds, labels)  # classes in labels or preds: sklearn's macro-average set


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose predicted class equals the label."""
    return float(np.mean(preds == labels)) if len(labels) else 0.0


def precision(preds: np.ndarray, labels: np.ndarray, num_classes: int = 2) -> float:
    """TP / (TP + FP) of class 1 for two classes; macro average over present classes for more."""
    if num_classes <= 2:
        tp, fp, _ = _counts(preds, labels, np.array([1]))
        return _div(tp[0], tp[0] + fp[0])
    tp, fp, _ = _counts(preds, labels, _present(preds, labels))
    return _mean([_div(t, t + f) for t, f in zip(tp, fp)])


def recall(preds: np.ndarray, labels: np.ndarray, num_classes: int = 2) -> float:
    """TP / (TP + FN) of class 1 for two classes; macro average over present classes for more."""
    if num_classes <= 2:
        tp, _, fn = _counts(preds, labels, np.array([1]))
        return _div(tp[0], tp[0] + fn[0])
    tp, _, fn = _counts(preds, labels, _present(preds, labels))
    return _mean([_div(t, t + f) for t, f in zip(tp, fn)])


def f1(preds: np.ndarray, labels: np.ndarray, num_classes: int = 2) -> float:
    """F1 of class 1 for two classes (GLUE MRPC/QQP); `f1_macro` for more than two."""
    if num_classes <= 2:
        tp, fp, fn = _counts(preds, labels, np.array([1]))
        return _f1(tp[0], fp[0], fn[0])
    return f1_macro(preds, labels)


def f1_macro(preds: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over the classes present in labels or preds."""
    return _mean([_f1(*c) for c in zip(*_counts(preds, labels, _present(preds, labels)))])


def f1_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the summed TP/FP/FN over classes. For single-label data this equals accuracy, since
    every wrong prediction is exactly one FP (predicted class) and one FN (true class)."""
    tp, fp, fn = (x.sum() for x in _counts(preds, labels, _present(preds, labels)))
    return _f1(tp, fp, fn)


def mcc(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation; the multiclass form (Gorodkin 2004) that sklearn uses:
    (c*s - t.p) / sqrt((s^2 - p.p) * (s^2 - t.t)), with c = correct, s = examples, t and p the
    per-class true and predicted counts. 0.0 when undefined (all labels or all preds one class)."""
    classes = _present(preds, labels)
    t = (labels[:, None] == classes).sum(0).astype(np.float64)
    p = (preds[:, None] == classes).sum(0).astype(np.float64)
    c, s = float(np.sum(preds == labels)), float(len(labels))
    return _div(c * s - t @ p, np.sqrt((s * s - p @ p) * (s * s - t @ t)))


# ---- multi-label: preds and labels are (n, num_labels) of 0/1 --------------------------------
def _label_counts(preds: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-label (tp, fp, fn) arrays of length num_labels."""
    p, y = preds.astype(bool), labels.astype(bool)
    return (p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0)


def subset_accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose whole label set is predicted exactly (exact match)."""
    return float(np.mean(np.all(preds == labels, axis=1))) if len(labels) else 0.0


def multilabel_f1_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the TP/FP/FN summed over all labels and examples."""
    return _f1(*(x.sum() for x in _label_counts(preds, labels)))


def multilabel_f1_macro(preds: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of the per-label F1 over all num_labels columns (as sklearn: every column
    is a label, so one never predicted nor true scores 0.0)."""
    return _mean([_f1(*c) for c in zip(*_label_counts(preds, labels))])


def multilabel_precision_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    """Summed TP / summed (TP + FP) over all labels."""
    tp, fp, _ = (x.sum() for x in _label_counts(preds, labels))
    return _div(tp, tp + fp)


def multilabel_recall_micro(preds: np.ndarray, labels: np.ndarray) -> float:
    """Summed TP / summed (TP + FN) over all labels."""
    tp, _, fn = (x.sum() for x in _label_counts(preds, labels))
    return _div(tp, tp + fn)


def hamming_loss(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of (example, label) cells predicted wrong; lower is better."""
    return float(np.mean(preds != labels)) if labels.size else 0.0


# ---- regression: preds and labels are (n,) floats --------------------------------------------
def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation. Constant preds or labels (or fewer than 2 examples) give 0.0, not nan:
    a nan metric breaks checkpoint monitoring (nan never compares as better or worse), and a
    constant-prediction model has no correlation to report anyway."""
    # Test constancy exactly: x - x.mean() of equal floats can leave ~1e-17 residues whose
    # "correlation" would be noise.
    if len(labels) < 2 or np.all(preds == preds[0]) or np.all(labels == labels[0]):
        return 0.0
    x, y = preds - preds.mean(), labels - labels.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    """Spearman correlation: Pearson of the ranks, ties getting their average rank (as scipy)."""
    return pearson(rankdata(preds), rankdata(labels))


def pearson_spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    """Mean of Pearson and Spearman: GLUE's combined STS-B score."""
    return (pearson(preds, labels) + spearman(preds, labels)) / 2


def mse(preds: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error."""
    return float(np.mean((preds - labels) ** 2)) if len(labels) else 0.0


def mae(preds: np.ndarray, labels: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(preds - labels))) if len(labels) else 0.0


_METRICS: dict[str, dict[str, Callable[..., float]]] = {
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
        "pearson": pearson, "spearman": spearman, "pearson_spearman": pearson_spearman,
        "mse": mse, "mae": mae,
    },
}
_BINARY_OR_MACRO = (f1, precision, recall)  # need the number of classes from the logits


def available_metrics(problem_type: str) -> list[str]:
    """Metric names valid for `problem_type`, in a stable order."""
    if problem_type not in _METRICS:
        raise UserError(f"task.problem_type={problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}. "
                        "Fix: set task.problem_type to one of them (or auto).")
    return list(_METRICS[problem_type])


def check_metric_names(names: Sequence[str], problem_type: str, key: str = "task.metrics") -> None:
    """Raise UserError naming `key`, the unknown names and the valid ones for this problem type."""
    names = [names] if isinstance(names, str) else list(names)
    valid = available_metrics(problem_type)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UserError(f"{key}: {', '.join(map(repr, unknown))} not available for {problem_type}; "
                        f"valid metrics: {', '.join(valid)}. Fix: {key}=[{valid[0]}] or any list of those.")


MULTI_LABEL_THRESHOLD = 0.5  # a class is predicted when its sigmoid score is above this (metrics and predict)


def compute_metrics(names: Sequence[str], problem_type: str, logits: np.ndarray, labels: np.ndarray,
                    threshold: float = MULTI_LABEL_THRESHOLD) -> dict[str, float]:
    """Turn logits into predictions and compute each named metric.

    logits: (n, num_labels) floats; labels: (n,) ints for single-label, (n, num_labels) of 0/1 for
    multi-label, (n,) floats for regression. Predictions: argmax (single-label), sigmoid(logits) >
    threshold (multi-label), logits[:, 0] (regression; (n,) logits are accepted too).
    Returns {name: python float} in the order of `names`.
    """
    names = [names] if isinstance(names, str) else list(names)
    check_metric_names(names, problem_type)
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits rows but {len(labels)} labels")
    if problem_type == "regression":
        preds = logits[:, 0] if logits.ndim == 2 else logits
        labels = labels.astype(np.float64).reshape(len(labels))  # (n,) or (n, 1)
    elif problem_type == "multi_label_classification":
        preds = (expit(logits) > threshold).astype(np.int64)  # expit: sigmoid without exp overflow
        labels = labels.astype(np.int64)  # BCE labels arrive as 0.0/1.0 floats
    else:
        preds = logits.argmax(axis=1)
        labels = labels.astype(np.int64)
    out: dict[str, float] = {}
    for name in names:
        fn = _METRICS[problem_type][name]
        out[name] = float(fn(preds, labels, logits.shape[1]) if fn in _BINARY_OR_MACRO else fn(preds, labels))
    return out
