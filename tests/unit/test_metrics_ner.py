"""Entity-level NER metrics: hand-computed cases with seqeval's default (conlleval) chunking."""

import pytest
from pytest import approx

from gpt2tasks.metrics_ner import entity_spans, get_entities, iob1_to_iob2, ner_metrics


def test_chunking_of_iob1_iob2_and_iobes():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    # IOB1: I- after O starts an entity; B- only splits adjacent entities of one type
    assert get_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "IOB1") == [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]
    assert get_entities(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]  # a type change splits
    assert get_entities(["S-PER", "B-ORG", "E-ORG", "O"], "IOBES") == [("PER", 0, 1), ("ORG", 1, 3)]
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]


def test_partial_overlap_and_wrong_type_count_as_wrong():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "O", "O", "B-ORG", "O", "B-ORG"]]  # PER cut short, LOC typed ORG, ORG right
    out = ner_metrics(true, pred)
    assert out["precision"] == approx(1 / 3) and out["recall"] == approx(1 / 3) and out["f1"] == approx(1 / 3)
    assert out["accuracy"] == approx(4 / 6)
    assert out["ORG_precision"] == approx(1 / 2) and out["ORG_recall"] == 1.0 and out["ORG_f1"] == approx(2 / 3)
    assert out["PER_f1"] == 0.0 and out["LOC_recall"] == 0.0 and out["LOC_number"] == 1.0


def test_iob1_and_iob2_encodings_of_the_same_entities_score_the_same():
    iob1 = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"], ["O", "I-ORG"]]
    iob2 = [iob1_to_iob2(s) for s in iob1]
    pred = [["B-PER", "I-PER", "O", "O", "B-LOC"], ["O", "B-ORG"]]
    entity_level = lambda out: {k: v for k, v in out.items() if k != "accuracy"}  # noqa: E731 (tags differ)
    assert entity_level(ner_metrics(iob1, pred, "IOB1")) == entity_level(ner_metrics(iob2, pred, "IOB2"))
    assert ner_metrics(iob1, pred)["f1"] == approx(2 * 3 / (3 + 4))  # 3 right of 3 predicted, 4 true


def test_edge_cases():
    assert ner_metrics([["B-PER", "O"]], [["O", "O"]])["f1"] == 0.0  # nothing predicted: 0, not an error
    assert ner_metrics([["B-PER", "I-PER"]], [["B-PER", "I-PER"]])["f1"] == 1.0
    assert ner_metrics([], []) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    with pytest.raises(ValueError):
        ner_metrics([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="IOB1, IOB2, IOBES"):
        get_entities(["O"], "BILOU")
    assert entity_spans(["Anna", "Keller", "in", "Oslo"], ["B-PER", "I-PER", "O", "B-LOC"]) == [
        {"type": "PER", "start": 0, "end": 2, "text": "Anna Keller"}, {"type": "LOC", "start": 3, "end": 4, "text": "Oslo"}]
