"""SQuAD metrics (official normalisation) and post-processing of windows into answers."""

import numpy as np
from pytest import approx

from gpt2tasks.tasks.qa import exact_match_score, f1_score, normalize_answer, postprocess_qa, squad_metrics


def test_normalisation_exact_match_and_f1():
    assert normalize_answer("  The Eiffel-Tower, in   PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day" and normalize_answer("the") == ""
    assert exact_match_score("the Denver Broncos", "Denver Broncos!") == 1.0
    # pred "denver broncos won" vs gold "broncos": P 1/3, R 1 -> F1 0.5
    assert f1_score("Denver Broncos won", "the Broncos") == approx(0.5)
    assert f1_score("", "the") == 0.0 and f1_score("", "the", version_2=True) == 1.0  # v1 vs v2 on empties


def test_squad_metrics_take_the_best_reference_and_split_v2():
    preds, refs = ["1975", "in Paris city"], [["in 1975", "1975"], ["Paris"]]
    out = squad_metrics(preds, refs)
    assert out == {"exact_match": approx(50.0), "f1": approx(75.0)}  # F1 of "in paris city" vs "paris": 0.5
    v2 = squad_metrics(["", "Paris", "x"], [[], ["Paris"], []], version_2=True)
    assert v2["exact_match"] == approx(200 / 3) and v2["HasAns_exact_match"] == 100.0
    assert v2["NoAns_exact_match"] == 50.0 and v2["NoAns_total"] == 2.0 and v2["HasAns_total"] == 1.0
    assert squad_metrics([], []) == {"exact_match": 0.0, "f1": 0.0}


def window(example, offsets, question=2):
    """A window: `question` non-context tokens, the context tokens' offsets, a summary token."""
    starts = [-1] * question + [a for a, _ in offsets] + [-1]
    return {"example": example, "offset_start": starts, "offset_end": [-1] * question + [b for _, b in offsets] + [-1]}


CONTEXT = "Anna Keller built it in 1931 near Oslo."
TOKENS = [(0, 4), (5, 11), (12, 17), (18, 20), (21, 23), (24, 28), (29, 33), (34, 38), (38, 39)]


def test_best_span_across_windows_and_limits():
    # two overlapping windows (stride 2) over the context: tokens 0-4 and 3-8
    w1, w2 = window(0, TOKENS[:5]), window(0, TOKENS[3:])
    start, end = np.full((2, 10), -5.0), np.full((2, 10), -5.0)
    start[0, 0] = end[0, 1] = 50.0  # best logits sit on question tokens: must be skipped
    start[0, 2], end[0, 3] = 3.0, 3.0  # "Anna Keller" in window 1: score 6
    start[1, 2 + 2], end[1, 2 + 2] = 4.0, 4.0  # "1931" (token 5 = window-2 position 2 + 2): score 8
    start[1, 7], end[1, 2] = 9.0, 9.0  # "." .. "it": end before start, skipped
    (answer,) = postprocess_qa([w1, w2], start, end, [CONTEXT])
    assert (answer.text, answer.start, answer.end, answer.score) == ("1931", 24, 28, 8.0)
    start[1, 3] = 20.0  # "in": "in 1931" (2 tokens) scores 24, "in" alone 15
    assert postprocess_qa([w1, w2], start, end, [CONTEXT])[0].text == "in 1931"
    assert postprocess_qa([w1, w2], start, end, [CONTEXT], max_answer_length=1)[0].text == "in"


def test_v2_null_score_is_the_min_over_windows_and_uses_the_threshold():
    w1, w2 = window(0, TOKENS[:5]), window(0, TOKENS[3:])
    start, end = np.zeros((2, 10)), np.zeros((2, 10))
    start[0, 2], end[0, 3] = 2.0, 2.0  # best span "Anna Keller": 4
    start[0, 7] = end[0, 7] = 3.0  # summary of window 1: 6
    start[1, 8] = end[1, 8] = 2.5  # summary of window 2: 5 -> null score = min = 5
    (answer,) = postprocess_qa([w1, w2], start, end, [CONTEXT], version_2=True)
    assert answer.null_score == 5.0 and (answer.text, answer.start) == ("", -1)  # 5 - 4 > 0
    (kept,) = postprocess_qa([w1, w2], start, end, [CONTEXT], version_2=True, null_threshold=1.5)
    assert kept.text == "Anna Keller"
    assert postprocess_qa([w1, w2], start, end, [CONTEXT])[0].text == "Anna Keller"  # v1 never abstains
