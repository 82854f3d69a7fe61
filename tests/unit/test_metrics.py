"""Metrics against values computed by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest

from gpt2tasks import metrics as M
from gpt2tasks.errors import UserError

SINGLE, MULTI, REG = M.PROBLEM_TYPES


def test_binary_f1_precision_recall_are_for_class_1():
    preds = np.array([1, 1, 0, 0, 1, 0])
    labels = np.array([1, 0, 0, 1, 1, 1])
    # class 1: TP = idx 0, 4 -> 2; FP = idx 1 -> 1; FN = idx 3, 5 -> 2
    assert M.precision(preds, labels) == pytest.approx(2 / 3)
    assert M.recall(preds, labels) == pytest.approx(2 / 4)
    assert M.f1(preds, labels) == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))  # 4/7
    assert M.accuracy(preds, labels) == pytest.approx(3 / 6)


def test_multiclass_macro_and_micro_f1():
    preds = np.array([0, 1, 2, 2, 1, 0])
    labels = np.array([0, 1, 1, 2, 2, 2])
    # class 0: TP1 FP1 FN0 -> P 1/2 R 1 F1 2/3; class 1: TP1 FP1 FN1 -> F1 1/2; class 2: TP1 FP1 FN2 -> P 1/2 R 1/3 F1 2/5
    assert M.f1_macro(preds, labels) == pytest.approx((2 / 3 + 1 / 2 + 2 / 5) / 3)
    assert M.f1_micro(preds, labels) == pytest.approx(3 / 6)  # = accuracy for single-label
    # with 3 classes, "f1" is the macro average
    assert M.f1(preds, labels, num_classes=3) == pytest.approx(M.f1_macro(preds, labels))


def test_mcc_binary_and_multiclass():
    preds = np.array([1, 1, 0, 0, 1])
    labels = np.array([1, 0, 0, 1, 1])
    # TP2 TN1 FP1 FN1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert M.mcc(preds, labels) == pytest.approx(1 / 6)
    preds3, labels3 = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    # c = 3 correct, s = 4, t = true counts (1, 2, 1), p = predicted counts (1, 1, 2)
    # (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (12 - 5) / sqrt((16 - 6)(16 - 6)) = 0.7
    assert M.mcc(preds3, labels3) == pytest.approx(0.7)
    assert M.mcc(np.array([1, 1, 1]), np.array([1, 0, 1])) == 0.0  # undefined -> 0


def test_pearson_spearman_with_ties():
    preds = np.array([1.0, 2.0, 3.0, 4.0])
    labels = np.array([2.0, 4.0, 6.0, 9.0])
    # deviations x = (-1.5, -.5, .5, 1.5), y = (-3.25, -1.25, .75, 3.75)
    # x.y = 4.875 + .625 + .375 + 5.625 = 11.5; |x|^2 = 5; |y|^2 = 10.5625 + 1.5625 + .5625 + 14.0625 = 26.75
    assert M.pearson(preds, labels) == pytest.approx(11.5 / math.sqrt(5 * 26.75))
    assert M.spearman(preds, labels) == pytest.approx(1.0)  # same order
    tied = np.array([1.0, 1.0, 2.0, 3.0])
    # ranks of tied = (1.5, 1.5, 3, 4); of labels = (1, 2, 3, 4)
    # deviations (-1, -1, .5, 1.5) and (-1.5, -.5, .5, 1.5): dot 4.5, norms^2 4.5 and 5
    assert M.spearman(tied, labels) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert M.pearson_spearman(preds, labels) == pytest.approx((M.pearson(preds, labels) + 1) / 2)
    assert M.pearson(np.ones(4), labels) == 0.0  # constant predictions: 0, not nan


def test_regression_errors():
    assert M.mse(np.array([1.0, 3.0]), np.array([2.0, 1.0])) == pytest.approx((1 + 4) / 2)
    assert M.mae(np.array([1.0, 3.0]), np.array([2.0, 1.0])) == pytest.approx((1 + 2) / 2)


def test_multi_label_metrics_and_threshold():
    logits = np.array([[2.0, -1.0, 0.3], [-2.0, 1.0, -0.1], [1.0, 1.0, 1.0]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    # preds at 0.5 (logit > 0): [[1,0,1],[0,1,0],[1,1,1]]
    # per label: 0 -> TP2 FP0 FN0 (F1 1); 1 -> TP1 FP1 FN0 (F1 2/3); 2 -> TP1 FP1 FN0 (F1 2/3)
    out = M.compute_metrics(["accuracy", "f1_micro", "f1_macro", "hamming_loss", "precision_micro"], MULTI,
                            logits, labels)
    assert out["accuracy"] == pytest.approx(1 / 3)  # only row 2 matches exactly
    assert out["f1_micro"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 0))  # TP4 FP2 FN0 -> 0.8
    assert out["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert out["hamming_loss"] == pytest.approx(2 / 9)
    assert out["precision_micro"] == pytest.approx(4 / 6)
    # threshold 0.6 (logit > 0.405): row 0 label 2 (0.3) drops out -> row 0 matches exactly too
    assert M.compute_metrics(["accuracy"], MULTI, logits, labels, threshold=0.6)["accuracy"] == pytest.approx(2 / 3)


def test_zero_division_is_zero():
    assert M.f1(np.array([0, 0]), np.array([0, 0])) == 0.0  # no positives anywhere
    assert M.compute_metrics(["f1_micro"], MULTI, np.full((2, 2), -5.0), np.zeros((2, 2)))["f1_micro"] == 0.0


def test_compute_metrics_single_label_from_logits_and_order():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    out = M.compute_metrics(["f1", "accuracy"], SINGLE, logits, np.array([1, 1, 1]))
    assert list(out) == ["f1", "accuracy"] and out["accuracy"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(0.8)  # TP2 FP0 FN1: P 1, R 2/3


def test_unknown_metric_names_list_the_valid_ones():
    with pytest.raises(UserError) as err:
        M.check_metric_names(["accuracy", "bleu"], REG, key="task.metrics")
    msg = str(err.value)
    assert "task.metrics" in msg and "'accuracy', 'bleu'" in msg and "pearson, spearman" in msg
