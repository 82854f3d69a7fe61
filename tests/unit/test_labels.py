"""Label kinds are inferred from the training labels and applied to every split."""

import pytest

from gpt2tasks.datamodules.labels import (
    MULTI, RARE_MAX_COUNT, RARE_RATIO, REGRESSION, SINGLE, LabelSpace, check_labels, encode_labels, infer_label_space,
)
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


# ---- labels that would train silently on garbage (check_labels) ------------------------------------
def _rows(ids):
    return "rows " + ",".join(map(str, ids))


def _refused(labels, **kw):
    with pytest.raises(UserError) as err:
        check_labels(labels, _rows, "data.label_column='label'", training=True, **kw)
    return str(err.value)


def test_a_typo_class_among_thousands_is_refused_with_its_rows():
    labels = ["positive", "negative"] * 1500
    labels[17] = "postive"
    msg = _refused(labels)
    assert "'postive' (1)" in msg and "median of 1499" in msg and "rows 17" in msg
    assert "data.allow_rare_labels=true" in msg and "task.label_names" in msg
    check_labels(labels, _rows, "k", training=True, allow_rare=True)  # deliberately accepted
    check_labels(labels, _rows, "k", training=False)  # only the training split's classes are judged
    # the rule: <= 5 rows and >= 100x fewer than the median class
    assert RARE_MAX_COUNT == 5 and RARE_RATIO == 100
    check_labels(["a"] * 60 + ["b"] * 60 + ["c"], _rows, "k", training=True)  # small data: not singled out
    check_labels(["a"] * 600 + ["b"] * 600 + ["c"] * 6, _rows, "k", training=True)  # 6 rows: a real class
    assert "'c' (5)" in _refused(["a"] * 600 + ["b"] * 600 + ["c"] * 5)


def test_empty_labels_are_refused_with_their_rows():
    msg = _refused(["pos", "", "neg", None, "pos", float("nan"), "  "])
    assert "4 of 7 rows have an empty label" in msg and "rows 1,3,5,6" in msg
    check_labels([["a"], [], ["b"]], _rows, "k", training=True)  # multi-label: [] means no label
    assert "rows 1" in _refused([["a"], ["", "b"]])


def test_numbers_mixed_with_text_are_refused_unless_the_classes_are_listed():
    msg = _refused(["positive", "negative", "1", "positive"])
    assert "mix numbers and text" in msg and "1 rows have numbers (rows 2, e.g. 1)" in msg
    check_labels(["0", "1", "1", "0"], _rows, "k", training=True)  # digit strings from CSV: all numbers
    check_labels(["positive", "1"], _rows, "k", label_names=["1", "positive"], training=True)
    msg = _refused(["3.5", "2.0", "n/a", "4.1"])  # a regression column with text
    assert "rows 2" in msg and "'n/a'" in msg
    msg = _refused(["3.5", "oops"], problem_type=REGRESSION)
    assert "regression needs numeric labels" in msg and "rows 1" in msg


def test_lists_mixed_with_scalars_name_the_rows():
    msg = _refused([["a"], "b", ["c"]])
    assert "rows 1" in msg and "every label a list" in msg


def test_the_datamodule_names_the_file_and_lines_and_counts_empty_texts(tmp_path, tiny_tokenizer, caplog):
    from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
    from gpt2tasks.datamodules.base import DataSpec

    rows = [f"movie {i},{'positive' if i % 2 else 'negative'}" for i in range(400)]
    rows[10] = "movie 10,postive"
    rows[20], rows[30] = ",negative", "   ,positive"  # empty texts: warned, kept
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "\n".join(rows) + "\n")

    def setup(**spec):
        dm = SeqClsDataModule(DataSpec(train_file=str(train), validation_file=str(train),
                                       cache_dir=str(tmp_path / "cache"), **spec), tiny_tokenizer)
        dm.setup("fit")
        return dm

    with pytest.raises(UserError, match=rf"'postive' \(1\).*data.train_file={train}, line 12\b"):
        setup()
    dm = setup(allow_rare_labels=True)
    assert dm.label_space.names == ["negative", "positive", "postive"]
    assert "2 of 400 rows have an empty data.text_column='text'" in caplog.text and "lines 22 and 32" in caplog.text
    train.write_text("text,label\n,a\n  ,b\n")
    with pytest.raises(UserError, match="all 2 rows have an empty data.text_column='text'"):
        setup()


def test_label_sets_that_cannot_train_a_classifier_are_refused():
    assert "every training row has the same label ('pos')" in _refused(["pos"] * 30)
    assert "a label that is a dict" in _refused([{"x": 1}, "a"])
    assert "1 of 3 rows have an empty label" in _refused(["a", "NaN", "b"])  # what tools write for a missing cell
    with pytest.raises(UserError, match="every training label is an empty list"):
        infer_label_space([[], []])
    with pytest.raises(UserError, match=r"task.label_names=\['pos'\] lists 1 class"):
        infer_label_space(["pos", "pos"], label_names=["pos"])


def test_inputs_that_are_not_text_are_refused_with_their_rows(tmp_path, tiny_tokenizer):
    from gpt2tasks.datamodules.seq_cls import SeqClsDataModule
    from tests.conftest import file_datamodule

    rows = [{"text": f"movie {i}", "label": i % 2} for i in range(6)]
    rows[4]["text"] = ["a", "list"]
    with pytest.raises(UserError, match=r"1 rows have a data.text_column='text' that is not text \(.*line 5;"):
        file_datamodule(SeqClsDataModule, tmp_path, tiny_tokenizer, rows)


def test_text_labels_are_kept_exactly():
    """Class names are data: spaces kept, and a name that reads as a number matches task.label_names as written."""
    space = infer_label_space([" a", "a", "b "])
    assert space.names == [" a", "a", "b "]
    assert encode_labels(["a", " a", "b "], space, "k") == [1, 0, 2]
    named = infer_label_space(["1e3", "yes"], label_names=["yes", "1e3", "null"])
    assert encode_labels(["1e3", "null", "yes"], named, "k") == [1, 2, 0]
