"""Entity-level NER metrics with seqeval's default (conlleval) semantics, in-process.

`evaluate.load("seqeval")` fetches a metric script from the Hugging Face Hub and so fails offline;
this module reproduces `seqeval.metrics` in its default mode (not mode="strict") on plain lists.

Chunking follows conlleval: a tag is `<prefix>-<TYPE>` with prefix B, I, E, S (or `O`). An entity
starts at B-/S-, at an I-/E- that follows O or another type, and ends before O, B-, S-, or a type
change. Because an I- after O starts an entity, IOB1 (B- only between adjacent same-type
entities, as in the original CoNLL-2003 files) and IOB2 (B- at every start, as on the Hub) encodings
of the same entities give the same entities and so the same scores; IOBES's E-/S- are understood
too. `scheme` is checked and documented but does not change the chunking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

SCHEMES = ("IOB1", "IOB2", "IOBES")


def _split(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '_'). Like seqeval: the prefix is the first character."""
    return tag[0], tag[1:].split("-", 1)[-1] or "_"


def _ends(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev not in ("O", ".") and prev_type != kind


def _starts(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def get_entities(tags: Sequence[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """Entities as (type, start word index, end word index EXCLUSIVE), in order."""
    _check_scheme(scheme)
    entities: list[tuple[str, int, int]] = []
    prev, prev_type, begin = "O", "_", 0
    for i, tag in enumerate([*tags, "O"]):  # a final O closes an entity that runs to the end
        prefix, kind = _split(str(tag))
        if _ends(prev, prefix, prev_type, kind):
            entities.append((prev_type, begin, i))
        if _starts(prev, prefix, prev_type, kind):
            begin = i
        prev, prev_type = prefix, kind
    return entities


def _prf(correct: int, predicted: int, true: int) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / true if true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def ner_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]], scheme: str = "IOB2",
                per_type: bool = True) -> dict[str, float]:
    """Micro precision/recall/F1 over exact entities, word accuracy, and per-type P/R/F1/number."""
    _check_scheme(scheme)
    if len(true_tags) != len(pred_tags) or any(len(t) != len(p) for t, p in zip(true_tags, pred_tags)):
        raise ValueError("true_tags and pred_tags must have the same sentences and lengths")
    true_set, pred_set = set(), set()
    for s, (t, p) in enumerate(zip(true_tags, pred_tags)):
        true_set |= {(s, *e) for e in get_entities(t, scheme)}
        pred_set |= {(s, *e) for e in get_entities(p, scheme)}
    correct = true_set & pred_set
    words = sum(len(t) for t in true_tags)
    right = sum(a == b for t, p in zip(true_tags, pred_tags) for a, b in zip(t, p))
    precision, recall, f1 = _prf(len(correct), len(pred_set), len(true_set))
    out = {"precision": precision, "recall": recall, "f1": f1, "accuracy": right / words if words else 0.0}
    if per_type:
        n_true, n_pred, n_correct = (Counter(e[1] for e in group) for group in (true_set, pred_set, correct))
        for kind in sorted(set(n_true) | set(n_pred)):
            p, r, f = _prf(n_correct[kind], n_pred[kind], n_true[kind])
            out.update({f"{kind}_precision": p, f"{kind}_recall": r, f"{kind}_f1": f,
                        f"{kind}_number": float(n_true[kind])})
    return out


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """B- at every entity start (IOB2), from IOB1 or any tags the chunker reads."""
    out = ["O"] * len(tags)
    for kind, start, end in get_entities(tags, "IOB1"):
        out[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    return out


def entity_spans(words: Sequence[str], tags: Sequence[str], scheme: str = "IOB2") -> list[dict]:
    """Entities of one sentence with their words: [{type, start, end (exclusive), text}]."""
    return [{"type": kind, "start": start, "end": end, "text": " ".join(words[start:end])}
            for kind, start, end in get_entities(tags, scheme)]


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not one of {', '.join(SCHEMES)}")
