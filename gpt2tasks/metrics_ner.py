"""Entity-level NER metrics with seqeval's default (conlleval) semantics, computed in-process.

Why in-process: `evaluate.load("seqeval")` fetches its metric script from the Hugging Face Hub, so it
fails offline, and the `seqeval` package would be one more dependency for ~50 lines of logic. This
module reproduces `seqeval.metrics.{precision,recall,f1,accuracy}_score` in their DEFAULT mode (not
mode="strict") on plain lists of tag strings, with zero_division giving 0.0.

Chunking (conlleval): a tag is `<prefix>-<TYPE>` with prefix B, I, E or S, or `O`. An entity starts
at B-/S-, at an I-/E- after O, E- or S-, and at any tag whose type differs from the previous one; it
ends before O, B- or S-, after E-/S-, and on a type change. An entity is correct only if its type,
start and end all match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

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
