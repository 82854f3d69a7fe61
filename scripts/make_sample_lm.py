"""Make data/sample_lm: a bundled, offline language-modelling sample (synthetic, plain text).

One document per line: a short review diary in 4-6 templated sentences, e.g.

    On Monday , Mary saw the film in London . The plot was brilliant and the cast was charming .
    Mary said the film was brilliant . Mary would recommend the film . Overall , the day was great .

The text has strong regularities a tiny model can learn in a minute: fixed templates, words drawn
from small lists, the person, item and city repeated inside a document, aspects that fit the item
(plot/cast for a film, battery/screen for a phone), and one polarity per document (positive words
-> "would recommend", negative -> "would avoid"). A unigram model knows none of this, so its
perplexity stays far above a trained model's. Words come mostly from the bundled tokenizer's
vocabulary (data/tokenizer), so a word is about one token.

Deterministic from --seed: the same files, byte for byte, on every run.

    python scripts/make_sample_lm.py     # writes data/sample_lm/{train,validation,test}.txt
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 2400, "validation": 300, "test": 300}

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PEOPLE = ["Mary", "Anna", "Paul", "Peter", "Sara", "David", "Emma", "Leon"]
CITIES = ["London", "Paris", "New York", "Germany"]
# item -> (verb phrase for seeing/using it, aspects that fit it)
ITEMS = {
    "film": ("saw", ["plot", "cast", "ending", "dialogue", "soundtrack", "pacing", "script"]),
    "movie": ("saw", ["plot", "cast", "ending", "dialogue", "soundtrack", "pacing", "script"]),
    "series": ("watched", ["plot", "cast", "ending", "pacing", "script", "episode"]),
    "album": ("heard", ["song", "sound", "soundtrack", "pacing"]),
    "novel": ("read", ["plot", "ending", "dialogue", "premise", "pacing"]),
    "phone": ("tried", ["battery", "screen", "camera", "design", "sound"]),
    "laptop": ("tried", ["battery", "screen", "design", "sound"]),
    "restaurant": ("visited", ["service", "staff", "meal", "coffee", "pizza"]),
    "hotel": ("visited", ["service", "staff", "room", "coffee"]),
}
GOOD = ["brilliant", "charming", "delightful", "excellent", "fantastic", "lovely", "superb", "wonderful",
        "impressive", "outstanding"]
BAD = ["awful", "boring", "dreadful", "terrible", "dull", "tedious", "bland", "mediocre", "messy", "sloppy"]


def document(rng: random.Random) -> str:
    day, person, city = rng.choice(DAYS), rng.choice(PEOPLE), rng.choice(CITIES)
    item = rng.choice(sorted(ITEMS))
    verb, aspects = ITEMS[item]
    good = rng.random() < 0.5
    words = GOOD if good else BAD
    a1, a2 = rng.sample(aspects, 2)
    sentences = [f"On {day} , {person} {verb} the {item} in {city} .",
                 f"The {a1} was {rng.choice(words)} and the {a2} was {rng.choice(words)} ."]
    if rng.random() < 0.6:
        sentences.append(f"{person} said the {item} was {rng.choice(words)} .")
    sentences.append(f"{person} would {'recommend' if good else 'avoid'} the {item} .")
    if rng.random() < 0.5:
        sentences.append(f"Overall , the day in {city} was {'great' if good else 'bad'} .")
    return " ".join(sentences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "data" / "sample_lm")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for split, n in SIZES.items():
        lines = [document(rng) for _ in range(n)]
        (args.out_dir / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
        print(f"{split}: {n} documents -> {args.out_dir / f'{split}.txt'}")


if __name__ == "__main__":
    main()
