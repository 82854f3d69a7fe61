"""Every metric against values computed by hand; the arithmetic is in the comments."""

import math
import warnings

import numpy as np
import pytest

from gpt2tasks import metrics as M
from gpt2tasks.errors import UserError

SINGLE, MULTI, REG = M.PROBLEM_TYPES
approx = pytest.approx


def onehot_logits(preds, num_classes):
    """Logits whose argmax is `preds`."""
    return np.eye(num_classes)[preds] * 2.0 - 1.0


# ---- single-label ----------------------------------------------------------------------------
BIN_PREDS = np.array([1, 1, 0, 0, 1, 0])
BIN_LABELS = np.array([1, 0, 0, 1, 1, 1])
# idx:   0   1   2   3   4   5
# kind: TP  FP  TN  FN  TP  FN   -> TP 2, FP 1, FN 2, TN 1


def test_binary_f1_precision_recall_are_for_class_1():
    assert M.precision(BIN_PREDS, BIN_LABELS) == approx(2 / 3)  # TP / (TP + FP) = 2 / 3
    assert M.recall(BIN_PREDS, BIN_LABELS) == approx(2 / 4)  # TP / (TP + FN) = 2 / 4
    assert M.f1(BIN_PREDS, BIN_LABELS) == approx(4 / 7)  # 2TP / (2TP + FP + FN) = 4 / 7
    assert M.accuracy(BIN_PREDS, BIN_LABELS) == approx(3 / 6)  # TP + TN = 3 of 6
    out = M.compute_metrics(["precision", "recall", "f1", "accuracy"], SINGLE,
                            onehot_logits(BIN_PREDS, 2), BIN_LABELS)
    assert out == {"precision": approx(2 / 3), "recall": approx(1 / 2), "f1": approx(4 / 7),
                   "accuracy": approx(1 / 2)}


MC_PREDS = np.array([0, 1, 2, 2, 1, 0])
MC_LABELS = np.array([0, 1, 1, 2, 2, 2])
# class 0: preds at 0,5; labels at 0     -> TP 1 (0), FP 1 (5), FN 0      P 1/2 R 1   F1 2/3
# class 1: preds at 1,4; labels at 1,2   -> TP 1 (1), FP 1 (4), FN 1 (2)  P 1/2 R 1/2 F1 1/2
# class 2: preds at 2,3; labels at 3,4,5 -> TP 1 (3), FP 1 (2), FN 2      P 1/2 R 1/3 F1 2/5
MC_F1_MACRO = (2 / 3 + 1 / 2 + 2 / 5) / 3  # = 47/90


def test_multiclass_macro_and_micro():
    assert M.f1_macro(MC_PREDS, MC_LABELS) == approx(47 / 90)
    assert MC_F1_MACRO == approx(47 / 90)
    # micro: TP 3, FP 3, FN 3 -> 6 / 12; equal to accuracy (3 of 6) for single-label data
    assert M.f1_micro(MC_PREDS, MC_LABELS) == approx(1 / 2)
    assert M.accuracy(MC_PREDS, MC_LABELS) == approx(1 / 2)
    # with more than two classes f1/precision/recall are macro averages
    assert M.f1(MC_PREDS, MC_LABELS, num_classes=3) == approx(47 / 90)
    assert M.precision(MC_PREDS, MC_LABELS, num_classes=3) == approx((1 / 2 + 1 / 2 + 1 / 2) / 3)
    assert M.recall(MC_PREDS, MC_LABELS, num_classes=3) == approx((1 + 1 / 2 + 1 / 3) / 3)  # 11/18


def test_compute_metrics_takes_num_classes_from_logits_and_macro_skips_absent_classes():
    # 3 logit columns -> "f1" is macro, not the class-1 F1 (which would be 2*1/(2+1+1) = 1/2)
    out = M.compute_metrics(["f1", "f1_macro", "f1_micro"], SINGLE, onehot_logits(MC_PREDS, 3), MC_LABELS)
    assert out == {"f1": approx(47 / 90), "f1_macro": approx(47 / 90), "f1_micro": approx(1 / 2)}
    # a 4th class that occurs in neither preds nor labels is left out of the average
    # (sklearn's default): still 47/90, not (2/3 + 1/2 + 2/5 + 0) / 4
    out4 = M.compute_metrics(["f1", "f1_macro"], SINGLE, onehot_logits(MC_PREDS, 4), MC_LABELS)
    assert out4 == {"f1": approx(47 / 90), "f1_macro": approx(47 / 90)}
    # a class that occurs only in preds does count: preds (0, 1), labels (0, 0)
    # class 0: TP 1 FN 1 -> F1 2/3; class 1: FP 1 -> F1 0; macro 1/3
    assert M.f1_macro(np.array([0, 1]), np.array([0, 0])) == approx(1 / 3)


def test_mcc_binary():
    preds, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    # TP 2 (0, 4), FP 1 (1), TN 1 (2), FN 1 (3)
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    # covariance form: c = 3 correct, s = 5, t = p = (2, 3) -> (15 - 13) / sqrt((25 - 13)(25 - 13)) = 1/6
    assert M.mcc(preds, labels) == approx(1 / 6)
    assert M.mcc(labels, labels) == approx(1.0)
    # all wrong: c = 0, s = 4, t = p = (2, 2) -> (0 - 8) / sqrt((16 - 8)(16 - 8)) = -1
    assert M.mcc(np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])) == approx(-1.0)


def test_mcc_multiclass():
    # covariance form (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))
    preds, labels = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    # c = 3, s = 4, t = (1, 2, 1), p = (1, 1, 2): t.p = 1 + 2 + 2 = 5, p.p = t.t = 6
    # (12 - 5) / sqrt((16 - 6)(16 - 6)) = 7/10
    assert M.mcc(preds, labels) == approx(0.7)
    # MC arrays: c = 3, s = 6, t = (1, 2, 3), p = (2, 2, 2): t.p = 12, p.p = 12, t.t = 14
    # (18 - 12) / sqrt((36 - 12)(36 - 14)) = 6 / sqrt(528)
    assert M.mcc(MC_PREDS, MC_LABELS) == approx(6 / math.sqrt(528))
    assert M.compute_metrics(["mcc"], SINGLE, onehot_logits(MC_PREDS, 3), MC_LABELS)["mcc"] == approx(
        6 / math.sqrt(528))


def test_mcc_undefined_is_zero():
    # every prediction the same class: s^2 - p.p = 9 - 9 = 0
    assert M.mcc(np.array([1, 1, 1]), np.array([1, 0, 1])) == 0.0
    # every label the same class: s^2 - t.t = 0
    assert M.mcc(np.array([1, 0, 1]), np.array([2, 2, 2])) == 0.0


def test_single_label_zero_division_is_zero():
    no_pos = np.array([0, 0])
    # no predicted and no true positives: P = 0/0, R = 0/0, F1 = 0/0 -> all 0.0
    assert (M.precision(no_pos, no_pos), M.recall(no_pos, no_pos), M.f1(no_pos, no_pos)) == (0.0, 0.0, 0.0)
    # true positives but none predicted: P = 0/0 -> 0; R = 0/2 = 0
    assert M.precision(no_pos, np.array([1, 1])) == 0.0 and M.recall(no_pos, np.array([1, 1])) == 0.0
    # predicted positives but none true: P = 0/2 = 0; R = 0/0 -> 0
    assert M.precision(np.array([1, 1]), no_pos) == 0.0 and M.recall(np.array([1, 1]), no_pos) == 0.0
    # macro precision with a never-predicted class: preds (0, 0), labels (0, 1)
    # class 0: P 1/2; class 1: P 0/0 -> 0; mean 1/4
    assert M.precision(no_pos, np.array([0, 1]), num_classes=3) == approx(1 / 4)


def test_compute_metrics_single_label_order_types_and_float_labels():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=np.float32)  # argmax (1, 0, 1)
    out = M.compute_metrics(["f1", "accuracy"], SINGLE, logits, np.array([1.0, 1.0, 1.0]))
    assert list(out) == ["f1", "accuracy"]  # the requested order
    assert all(type(v) is float for v in out.values())  # python floats, JSON-ready
    assert out["accuracy"] == approx(2 / 3)
    assert out["f1"] == approx(0.8)  # TP 2, FP 0, FN 1 -> 4 / 5


def test_empty_eval_set_gives_zeros_not_nan():
    for problem_type, logits, labels in [(SINGLE, np.zeros((0, 3)), np.zeros(0)),
                                         (MULTI, np.zeros((0, 2)), np.zeros((0, 2))),
                                         (REG, np.zeros((0, 1)), np.zeros(0))]:
        out = M.compute_metrics(M.available_metrics(problem_type), problem_type, logits, labels)
        assert out == {name: 0.0 for name in M.available_metrics(problem_type)}


# ---- multi-label -----------------------------------------------------------------------------
ML_LOGITS = np.array([[2.0, -1.0, 0.3], [-2.0, 1.0, -0.1], [1.0, 1.0, 1.0]])
ML_LABELS = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
# threshold 0.5 <=> logit > 0: preds [[1,0,1], [0,1,0], [1,1,1]]
# row 0: FP on label 2; row 1: exact; row 2: FP on label 1
# label 0: TP 2 FP 0 FN 0 -> F1 1; label 1: TP 1 FP 1 FN 0 -> F1 2/3; label 2: TP 1 FP 1 FN 0 -> F1 2/3


def test_multi_label_metrics():
    out = M.compute_metrics(M.available_metrics(MULTI), MULTI, ML_LOGITS, ML_LABELS)
    assert out == {
        "accuracy": approx(1 / 3),  # only row 1 is an exact match
        "f1": approx(0.8),  # micro: TP 4, FP 2, FN 0 -> 8 / (8 + 2)
        "f1_micro": approx(0.8),
        "f1_macro": approx((1 + 2 / 3 + 2 / 3) / 3),  # = 7/9
        "precision_micro": approx(4 / 6),
        "recall_micro": approx(4 / 4),
        "hamming_loss": approx(2 / 9),  # 2 wrong cells of 9
    }


def test_multi_label_threshold():
    names = ["accuracy", "f1_micro", "precision_micro", "recall_micro", "hamming_loss"]
    # threshold 0.6 <=> logit > ln(0.6/0.4) = 0.405: row 0 label 2 (0.3) drops out
    # preds [[1,0,0], [0,1,0], [1,1,1]]: rows 0 and 1 exact; TP 4, FP 1, FN 0
    assert M.compute_metrics(names, MULTI, ML_LOGITS, ML_LABELS, threshold=0.6) == {
        "accuracy": approx(2 / 3), "f1_micro": approx(8 / 9), "precision_micro": approx(4 / 5),
        "recall_micro": approx(1.0), "hamming_loss": approx(1 / 9)}
    # threshold 0.8 <=> logit > ln 4 = 1.386: only row 0 label 0 (2.0) stays
    # preds [[1,0,0], [0,0,0], [0,0,0]]: row 0 exact; TP 1, FP 0, FN 3 (r1 l1, r2 l0, r2 l2)
    assert M.compute_metrics(names, MULTI, ML_LOGITS, ML_LABELS, threshold=0.8) == {
        "accuracy": approx(1 / 3), "f1_micro": approx(2 / 5), "precision_micro": approx(1.0),
        "recall_micro": approx(1 / 4), "hamming_loss": approx(3 / 9)}


def test_multi_label_float_labels_and_huge_logits():
    # BCE labels arrive as 0.0/1.0 floats; logits of +-1000 must not overflow the sigmoid
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = M.compute_metrics(["accuracy", "f1"], MULTI, np.array([[1000.0, -1000.0]]), np.array([[1.0, 0.0]]))
    assert out == {"accuracy": 1.0, "f1": 1.0}


def test_multi_label_macro_counts_every_column_and_zero_division():
    # label 1 is never true and never predicted: its F1 is 0/0 -> 0 and it still counts (all
    # num_labels columns are labels, as in sklearn), so macro = (1 + 0) / 2
    logits, labels = np.array([[3.0, -3.0], [-3.0, -3.0]]), np.array([[1, 0], [0, 0]])
    out = M.compute_metrics(["f1_macro", "f1_micro"], MULTI, logits, labels)
    assert out == {"f1_macro": approx(0.5), "f1_micro": approx(1.0)}  # micro: TP 1 FP 0 FN 0
    # nothing predicted, nothing true: every ratio is 0/0 -> 0.0, but all rows match exactly
    out = M.compute_metrics(M.available_metrics(MULTI), MULTI, np.full((2, 2), -5.0), np.zeros((2, 2)))
    assert out == {"accuracy": 1.0, "f1": 0.0, "f1_micro": 0.0, "f1_macro": 0.0,
                   "precision_micro": 0.0, "recall_micro": 0.0, "hamming_loss": 0.0}


# ---- regression ------------------------------------------------------------------------------
def test_pearson():
    preds, labels = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 9.0])
    # means 2.5 and 5.25; deviations x = (-1.5, -.5, .5, 1.5), y = (-3.25, -1.25, .75, 3.75)
    # x.y = 4.875 + .625 + .375 + 5.625 = 11.5; x.x = 5; y.y = 10.5625 + 1.5625 + .5625 + 14.0625 = 26.75
    r = 11.5 / math.sqrt(5 * 26.75)
    assert M.pearson(preds, labels) == approx(r)
    assert M.spearman(preds, labels) == approx(1.0)  # same order: ranks identical
    assert M.pearson_spearman(preds, labels) == approx((r + 1) / 2)
    assert M.pearson(preds, -labels) == approx(-r)


def test_spearman_ties_get_average_ranks():
    preds, labels = np.array([1.0, 1.0, 2.0, 3.0, 3.0]), np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    # ranks: preds (1.5, 1.5, 3, 4.5, 4.5), labels (1, 2.5, 2.5, 4, 5); both mean 3
    # deviations a = (-1.5, -1.5, 0, 1.5, 1.5), b = (-2, -.5, -.5, 1, 2)
    # a.b = 3 + .75 + 0 + 1.5 + 3 = 8.25; a.a = 4 * 2.25 = 9; b.b = 4 + .25 + .25 + 1 + 4 = 9.5
    rho = 8.25 / math.sqrt(9 * 9.5)
    assert M.spearman(preds, labels) == approx(rho)
    # preds are also Pearson-testable: means 2 and 2.4, x = (-1, -1, 0, 1, 1), y = (-1.4, -.4, -.4, .6, 1.6)
    # x.y = 1.4 + .4 + 0 + .6 + 1.6 = 4; x.x = 4; y.y = 1.96 + .16 + .16 + .36 + 2.56 = 5.2
    r = 4 / math.sqrt(4 * 5.2)
    assert M.pearson(preds, labels) == approx(r)
    assert M.compute_metrics(["pearson_spearman"], REG, preds[:, None], labels) == {
        "pearson_spearman": approx((r + rho) / 2)}


def test_constant_predictions_give_zero_correlation():
    labels = np.array([1.0, 2.0, 3.0])
    for const in (np.ones(3), np.full(3, 0.1)):  # 0.1: mean-centering leaves ~1e-17 residues
        assert M.pearson(const, labels) == 0.0
        assert M.spearman(const, labels) == 0.0
        assert M.pearson_spearman(const, labels) == 0.0
    assert M.pearson(labels, np.ones(3)) == 0.0  # constant labels
    assert M.pearson(np.array([1.0]), np.array([2.0])) == 0.0  # one example


def test_regression_errors_and_logit_shapes():
    preds, labels = np.array([1.0, 3.0, 2.5]), np.array([2.0, 1.0, 2.5])
    # errors -1, 2, 0
    assert M.mse(preds, labels) == approx((1 + 4 + 0) / 3)
    assert M.mae(preds, labels) == approx((1 + 2 + 0) / 3)
    expected = {"mse": approx(5 / 3), "mae": approx(1.0)}
    assert M.compute_metrics(["mse", "mae"], REG, preds[:, None], labels) == expected  # (n, 1)
    assert M.compute_metrics(["mse", "mae"], REG, preds, labels) == expected  # (n,)
    assert M.compute_metrics(["mse", "mae"], REG, preds[:, None], labels[:, None]) == expected


# ---- names -----------------------------------------------------------------------------------
def test_available_metrics():
    assert M.available_metrics(SINGLE) == ["accuracy", "f1", "precision", "recall", "f1_macro", "f1_micro", "mcc"]
    assert M.available_metrics(MULTI) == ["accuracy", "f1", "f1_micro", "f1_macro", "precision_micro",
                                          "recall_micro", "hamming_loss"]
    assert M.available_metrics(REG) == ["pearson", "spearman", "pearson_spearman", "mse", "mae"]


def test_unknown_metric_names_raise_user_error_listing_the_valid_ones():
    M.check_metric_names(["mse", "pearson"], REG)  # valid: no error
    with pytest.raises(UserError) as err:
        M.check_metric_names(["accuracy", "mse", "bleu"], REG, key="task.metrics")
    msg = str(err.value)
    assert "task.metrics" in msg and "'accuracy'" in msg and "'bleu'" in msg and "'mse'" not in msg
    assert all(name in msg for name in M.available_metrics(REG))
    with pytest.raises(UserError, match="evaluation.metrics"):
        M.check_metric_names(["mcc"], MULTI, key="evaluation.metrics")  # mcc is single-label only
    with pytest.raises(UserError, match="task.metrics"):
        M.compute_metrics(["hamming_loss"], SINGLE, np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(UserError, match="task.problem_type"):
        M.available_metrics("ranking")
