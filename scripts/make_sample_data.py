"""Make data/sample_sentiment: the bundled, offline default task (synthetic review sentiment).

Short reviews from templates and word lists, labelled negative/positive. Negation ("was not
good" -> negative) and contrast ("X, but Y" -> label of Y) mean a bag of words cannot solve it,
while a tiny GPT-2 trained for a few minutes on 2 CPU cores can. Deterministic from --seed; the
three splits are disjoint.

    python scripts/make_sample_data.py            # writes data/sample_sentiment/{train,validation,test}.csv
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

NOUNS = ["movie", "film", "plot", "acting", "story", "ending", "soundtrack", "script", "cast", "director",
         "camera work", "dialogue", "pacing", "book", "novel", "album", "song", "show", "series", "episode",
         "restaurant", "meal", "service", "hotel", "room", "phone", "battery", "screen", "laptop", "game",
         "sequel", "performance", "trailer", "design", "product", "headphones", "coffee", "pizza", "staff", "app"]
POSITIVE = ["good", "great", "excellent", "wonderful", "brilliant", "superb", "delightful", "charming",
            "enjoyable", "fantastic", "moving", "clever", "beautiful", "solid", "fun", "memorable",
            "impressive", "gripping", "lovely", "satisfying", "outstanding", "pleasant", "smart", "fresh"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "dull", "weak", "clumsy", "painful", "disappointing",
            "poor", "mediocre", "tedious", "bland", "forgettable", "messy", "annoying", "lifeless",
            "predictable", "shallow", "sloppy", "flat", "dreadful", "stale", "confusing"]
INTENSIFIERS = ["", "", "very ", "really ", "truly ", "quite ", "pretty ", "incredibly ", "rather ", "so "]
OPENERS = ["", "", "honestly, ", "overall, ", "i think ", "to be fair, ", "in my opinion, ", "frankly, ",
           "for what it is worth, ", "all in all, "]
VERBS = ["was", "is", "felt", "seemed", "turned out to be", "looked"]
FILLERS = ["", "", " from start to finish", " in every way", " for the most part", " overall",
           " at times", " as expected", " if you ask me", " this time"]
LIKES = ["loved", "enjoyed", "liked", "adored", "recommend"]
DISLIKES = ["hated", "disliked", "regret", "could not stand", "would avoid"]


def clause(rng: random.Random, positive: bool) -> str:
    """One judgement; half of them reach their polarity through negation."""
    noun, verb = rng.choice(NOUNS), rng.choice(VERBS)
    negated = rng.random() < 0.35
    word = rng.choice(NEGATIVE if positive == negated else POSITIVE)
    if negated:
        return f"the {noun} {verb} not {rng.choice(INTENSIFIERS)}{word}"
    if rng.random() < 0.2:
        return f"i {rng.choice(LIKES if positive else DISLIKES)} the {noun}"
    return f"the {noun} {verb} {rng.choice(INTENSIFIERS)}{word}{rng.choice(FILLERS)}"


def review(rng: random.Random, positive: bool) -> str:
    shape = rng.random()
    if shape < 0.55:
        text = rng.choice(OPENERS) + clause(rng, positive)
    elif shape < 0.85:  # contrast: the clause after "but" decides
        text = f"{clause(rng, not positive)}, but {clause(rng, positive)}"
    else:  # two sentences that agree
        text = f"{clause(rng, positive)}. {rng.choice(OPENERS)}{clause(rng, positive)}"
    return text + rng.choice([".", ".", "!", ""])


def make_splits(seed: int, sizes: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {}
    for name, size in sizes.items():
        rows: list[tuple[str, str]] = []
        while len(rows) < size:
            positive = len(rows) % 2 == 0  # exactly balanced before shuffling
            text = review(rng, positive)
            if text in seen:
                continue
            seen.add(text)
            rows.append((text, "positive" if positive else "negative"))
        rng.shuffle(rows)
        splits[name] = rows
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "sample_sentiment")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in make_splits(args.seed, {"train": 2000, "validation": 300, "test": 300}).items():
        with open(args.out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        print(f"wrote {args.out_dir / f'{name}.csv'} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
