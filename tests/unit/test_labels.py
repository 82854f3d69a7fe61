"""Label kinds are inferred from the training labels and applied to every split."""

import pytest

from gpt2tasks.datamodules.labels import MULTI, REGRESSION, SINGLE, LabelSpace, encode_labels, infer_label_space
from gpt2tasks.errors import UserError


def test_string_labels_are_sorted_classes():
    space = infer_label_space(["pos", "neg", "neutral", "pos"])
    assert space == LabelSpace(SINGLE, ["neg", "neutral", "pos"])
    assert space.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert encode_labels(["pos", "neg"], space, "data.train_file") == [2, 0]


def test_int_labels_from_csv_strings_sort_numerically():
    space = infer_label_space(["10", "2", "1", "2"])  # CSV gives strings
    assert space.names == ["1", "2", "10"]  # numeric order, not "1" < "10" < "2"
    assert encode_labels(["10", 1, "2"], space, "k") == [2, 0, 1]


def test_non_integer_floats_mean_regression():
    space = infer_label_space(["3.8", "5.0", "0"])
    assert space.problem_type == REGRESSION and space.num_labels == 1
    assert encode_labels(["3.8", 5, "0"], space, "k") == [3.8, 5.0, 0.0]


def test_lists_mean_multi_label_multi_hot():
    space = infer_label_space([["b", "a"], [], ["c"]])
    assert space == LabelSpace(MULTI, ["a", "b", "c"])
    assert encode_labels([["c", "a"], []], space, "k") == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


def test_explicit_label_names_take_int_and_string_labels():
    space = infer_label_space(["0", "1"], label_names=["negative", "positive"])
    assert space.names == ["negative", "positive"]
    assert encode_labels(["1", 0, "positive"], space, "k") == [1, 0, 1]


def test_forced_problem_type():
    assert infer_label_space(["1", "2"], problem_type=REGRESSION).problem_type == REGRESSION
    with pytest.raises(UserError, match="task.problem_type"):
        infer_label_space(["1"], problem_type="ranking")


def test_unseen_validation_label_is_named():
    space = infer_label_space(["a", "b"])
    with pytest.raises(UserError) as err:
        encode_labels(["a", "c", "d"], space, "data.validation_file")
    msg = str(err.value)
    assert "data.validation_file" in msg and "['c', 'd']" in msg and "known: a, b" in msg


def test_unseen_int_class_is_an_error_not_an_index():
    space = infer_label_space(["1", "2", "5"])  # star ratings: classes are the values, not indices
    with pytest.raises(UserError, match=r"\['3'\]"):
        encode_labels(["3"], space, "k")


def test_mixed_list_and_scalar_labels_are_rejected():
    with pytest.raises(UserError, match="data.label_column"):
        infer_label_space([["a"], "b"])
