"""Entity-level NER metrics: hand-computed cases with seqeval's default (conlleval) chunking."""

import pytest
from pytest import approx

from gpt2tasks.tasks.token_cls import SCHEMES, entity_spans, get_entities, iob1_to_iob2, ner_metrics


def overall(out: dict) -> tuple:
    return out["precision"], out["recall"], out["f1"]


def entity_level(out: dict) -> dict:
    """All keys but word accuracy (which compares tag strings, so it sees the encoding)."""
    return {k: v for k, v in out.items() if k != "accuracy"}


def test_i_after_o_or_another_type_starts_an_entity():
    assert get_entities(["I-PER", "I-PER", "O", "I-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert get_entities(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]  # a type change splits
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert get_entities([]) == [] and get_entities(["O", "O"]) == []


def test_adjacent_same_type_entities_in_iob1():
    # IOB1 puts B- only where an entity directly follows one of the same type
    assert get_entities(["I-PER", "I-PER", "B-PER", "I-PER", "O"], "IOB1") == [("PER", 0, 2), ("PER", 2, 4)]
    assert get_entities(["I-PER"] * 4, "IOB1") == [("PER", 0, 4)]
    # predicting the two people as one span gets neither right
    out = ner_metrics([["I-PER", "I-PER", "B-PER", "I-PER"]], [["I-PER"] * 4], "IOB1")
    assert overall(out) == (0.0, 0.0, 0.0) and out["PER_number"] == 2.0 and out["accuracy"] == 0.75


def test_iobes_with_s_and_e():
    tags = ["S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "S-LOC", "S-LOC", "B-LOC", "E-LOC"]
    expected = [("PER", 0, 1), ("ORG", 2, 5), ("LOC", 5, 6), ("LOC", 6, 7), ("LOC", 7, 9)]
    assert get_entities(tags, "IOBES") == expected
    assert get_entities(tags, "IOB2") == expected  # the chunking is the same whatever the scheme
    true = [["S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "S-LOC"]]
    pred = [["S-PER", "O", "B-ORG", "E-ORG", "S-ORG", "S-LOC"]]  # ORG split in two: both wrong
    out = ner_metrics(true, pred, "IOBES")
    assert overall(out) == approx((2 / 4, 2 / 3, 4 / 7))  # 2 right of 4 predicted, 3 true
    assert (out["ORG_precision"], out["ORG_recall"], out["ORG_number"]) == (0.0, 0.0, 1.0)
    assert out["accuracy"] == approx(4 / 6)


def test_partial_overlap_counts_as_wrong():
    true = [["B-PER", "I-PER", "I-PER", "O"]]
    assert overall(ner_metrics(true, [["B-PER", "I-PER", "O", "O"]])) == (0.0, 0.0, 0.0)  # too short
    assert overall(ner_metrics(true, [["B-PER", "I-PER", "I-PER", "I-PER"]])) == (0.0, 0.0, 0.0)  # too long
    assert overall(ner_metrics(true, [["O", "B-PER", "I-PER", "O"]])) == (0.0, 0.0, 0.0)  # same length, shifted


def test_wrong_type_counts_as_wrong():
    out = ner_metrics([["B-LOC", "I-LOC", "O"]], [["B-ORG", "I-ORG", "O"]])
    assert overall(out) == (0.0, 0.0, 0.0) and out["accuracy"] == approx(1 / 3)
    assert (out["LOC_recall"], out["LOC_number"], out["ORG_precision"], out["ORG_number"]) == (0.0, 1.0, 0.0, 0.0)


def test_mixed_sentence():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "O", "O", "B-ORG", "O", "B-ORG"]]  # PER cut short, LOC typed ORG, ORG right
    out = ner_metrics(true, pred)
    assert overall(out) == approx((1 / 3, 1 / 3, 1 / 3)) and out["accuracy"] == approx(4 / 6)
    assert (out["ORG_precision"], out["ORG_recall"], out["ORG_f1"]) == approx((1 / 2, 1.0, 2 / 3))
    assert out["PER_f1"] == 0.0 and out["LOC_precision"] == 0.0 and out["LOC_number"] == 1.0


def test_per_type_numbers_over_sentences():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["B-PER", "O", "B-ORG", "O"]]
    out = ner_metrics(true, pred)
    # true: PER, LOC, PER, ORG; pred: PER, PER, PER, ORG(short); right: the two PER that are true
    assert overall(out) == approx((2 / 4, 2 / 4, 1 / 2)) and out["accuracy"] == approx(6 / 8)
    assert [out[f"PER_{k}"] for k in ("precision", "recall", "f1", "number")] == approx([2 / 3, 1.0, 0.8, 2.0])
    assert [out[f"LOC_{k}"] for k in ("precision", "recall", "f1", "number")] == [0.0, 0.0, 0.0, 1.0]
    assert [out[f"ORG_{k}"] for k in ("precision", "recall", "f1", "number")] == [0.0, 0.0, 0.0, 1.0]
    assert len(out) == 4 + 3 * 4 and all(type(v) is float for v in out.values())
    assert set(ner_metrics(true, pred, per_type=False)) == {"precision", "recall", "f1", "accuracy"}


def test_a_sentence_end_ends_an_entity():
    true = [["O", "B-PER", "I-PER"], ["I-PER", "O"]]  # two people, one at each side of the boundary
    assert overall(ner_metrics(true, [["O", "B-PER", "I-PER"], ["B-PER", "O"]])) == (1.0, 1.0, 1.0)
    assert ner_metrics(true, true)["PER_number"] == 2.0


def test_iob1_and_iob2_encodings_of_the_same_entities_score_the_same():
    # CoNLL-2003's original files are IOB1; the Hub's conll2003 is IOB2
    iob1 = [["I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "O"], ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    iob2 = [["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    assert [iob1_to_iob2(s) for s in iob1] == iob2
    assert [iob1_to_iob2(s) for s in iob2] == iob2  # IOB2 comes back unchanged
    pred = [["B-ORG", "O", "B-MISC", "O", "O", "O", "O", "O", "O"], ["B-PER", "I-PER", "I-PER", "O", "B-LOC"]]
    from_iob1, from_iob2 = ner_metrics(iob1, pred, "IOB1"), ner_metrics(iob2, pred, "IOB2")
    assert entity_level(from_iob1) == entity_level(from_iob2)
    # 6 true (ORG, MISC, MISC, PER, PER, LOC), 4 predicted (ORG, MISC, PER+PER merged, LOC), 3 right
    assert overall(from_iob2) == approx((3 / 4, 3 / 6, 0.6)) and from_iob2["accuracy"] == approx(12 / 14)
    assert ner_metrics(iob1, iob2, "IOB1")["f1"] == 1.0  # same entities, different encodings


def test_no_predictions_and_perfect_predictions():
    true = [["B-PER", "I-PER", "O", "B-LOC"]]
    out = ner_metrics(true, [["O"] * 4])
    assert overall(out) == (0.0, 0.0, 0.0) and out["accuracy"] == 0.25  # 0, not an error
    assert (out["PER_precision"], out["PER_number"]) == (0.0, 1.0)
    perfect = ner_metrics(true, true)
    assert all(v == 1.0 for k, v in perfect.items() if not k.endswith("_number"))
    assert ner_metrics([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 1.0}
    assert ner_metrics([], []) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}


def test_bad_input_raises():
    with pytest.raises(ValueError):
        ner_metrics([["O", "O"]], [["O"]])  # a sentence of another length
    with pytest.raises(ValueError):
        ner_metrics([["O"], ["O"]], [["O"]])  # another number of sentences
    with pytest.raises(ValueError):
        ner_metrics(["B-PER", "O"], ["B-PER", "O"])  # flat tags, not sentences
    for call in (lambda: get_entities(["O"], "BILOU"), lambda: ner_metrics([], [], "iob2")):
        with pytest.raises(ValueError, match=", ".join(SCHEMES)):
            call()


def test_entity_spans():
    words, tags = ["Anna", "Keller", "flew", "to", "New", "York"], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert entity_spans(words, tags) == [{"type": "PER", "start": 0, "end": 2, "text": "Anna Keller"},
                                         {"type": "LOC", "start": 4, "end": 6, "text": "New York"}]
    assert entity_spans(["Oslo"], ["S-LOC"], "IOBES") == [{"type": "LOC", "start": 0, "end": 1, "text": "Oslo"}]
    with pytest.raises(ValueError):
        entity_spans(words, tags[:-1])
