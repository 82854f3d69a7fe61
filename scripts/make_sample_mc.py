"""Make data/sample_mc: the bundled, offline multiple-choice sample (synthetic, SWAG-shaped).

Each row is {"context", "endings" (4), "label"}: a short story in which Mary meets "the <adjective>
<noun>", sometimes a second thing, and a stem ("Then Mary"); the endings continue the stem with
one action on "the <adjective> <noun>". All four endings use the same action and the story's
adjective; only the correct one names the story's noun, the distractors nouns the story never
mentions (not even the second thing). Every noun is equally frequent, so an ending cannot be told
right on its own: the model has to find its noun in the context (for a causal model, the summary
token after the ending sees both). Labels are balanced over the four positions. The words are
ones the bundled tiny tokenizer keeps whole (it was trained on the review sample), so a choice
is about 25 tokens.

Deterministic from --seed: the same files, byte for byte, on every run.

    python scripts/make_sample_mc.py     # writes data/sample_mc/{train,validation,test}.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 2000, "validation": 300, "test": 300}
CHOICES = 4

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PLACES = ["Paris", "London", "New York", "Germany"]
ADJECTIVES = ["good", "great", "bad", "dull", "fun", "flat", "poor", "weak", "fresh", "solid", "smart", "bland",
              "stale", "messy", "lovely", "awful", "clever", "superb", "boring", "fantastic"]
NOUNS = ["movie", "film", "book", "album", "song", "show", "game", "phone", "laptop", "hotel", "meal", "pizza",
         "coffee", "app", "screen", "novel", "sequel", "trailer", "plot", "script", "series", "episode",
         "restaurant", "camera", "soundtrack", "headphones", "product", "story"]
MET = ["liked", "loved", "hated", "enjoyed", "disliked", "adored"]
STEMS = ["The next time, Mary", "Then Mary", "Overall, Mary", "Honestly, Mary"]
ACTIONS = ["would recommend", "would avoid", "said that she liked", "said that she hated", "expected",
           "looked at", "could not finish", "really enjoyed"]


def make_row(rng: random.Random, label: int) -> dict:
    adj, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    story = [f"On {rng.choice(DAYS)} Mary {rng.choice(MET)} the {adj} {noun} in {rng.choice(PLACES)}."]
    mentioned = {noun}
    if rng.random() < 0.5:  # a second thing in the story, never named by an ending
        noun2 = rng.choice([n for n in NOUNS if n != noun])
        story.append(f"The {noun2} was {rng.choice(ADJECTIVES)}.")
        mentioned.add(noun2)
    context = " ".join(story) + " " + rng.choice(STEMS)
    wrong = [(adj, n) for n in rng.sample([n for n in NOUNS if n not in mentioned], CHOICES - 1)]
    items = wrong[:label] + [(adj, noun)] + wrong[label:]
    action = rng.choice(ACTIONS)
    return {"context": context, "endings": [f"{action} the {a} {n}." for a, n in items], "label": label}


def make_splits(seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    seen: set[str] = set()  # no story is in two splits
    splits = {}
    for split, size in SIZES.items():
        labels = [i % CHOICES for i in range(size)]
        rng.shuffle(labels)
        rows = []
        for label in labels:
            row = make_row(rng, label)
            while row["context"] + row["endings"][label] in seen:
                row = make_row(rng, label)
            seen.add(row["context"] + row["endings"][label])
            rows.append(row)
        splits[split] = rows
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "data", help="writes OUT_DIR/sample_mc/*.jsonl")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    for split, rows in make_splits(args.seed).items():
        path = args.out_dir / "sample_mc" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {path}: {len(rows)} rows, {CHOICES} endings each, labels "
              f"{[sum(r['label'] == i for r in rows) for i in range(CHOICES)]}")


if __name__ == "__main__":
    main()
