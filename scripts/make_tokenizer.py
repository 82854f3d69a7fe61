"""Make data/tokenizer: the project's own small byte-level BPE tokenizer (GPT-2 style).

Used by `model=tiny`, so the default run and the tests need nothing from the Hub. Same design as
GPT-2's tokenizer -- byte-level pre-tokenizer (any text encodes), no prefix space by default,
`<|endoftext|>` as bos/eos/unk and no pad token (gpt2tasks sets the pad token itself) -- with a
2,048-token vocabulary trained on the bundled sample data plus a short generic English text.
Deterministic: the same files on every run.

    python scripts/make_tokenizer.py     # writes data/tokenizer/
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

EOS = "<|endoftext|>"
REPO = Path(__file__).resolve().parents[1]

# Generic English so that text beyond the sample (names, numbers, punctuation) still splits sensibly.
GENERIC = """
The quick brown fox jumps over the lazy dog. A question comes before the context, and the answer
follows. Who, what, when, where, why and how? It was the best of times, it was the worst of times.
Numbers like 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 and 50% appear in text, as do names such as
John, Mary, London, Paris, New York, Germany, Microsoft and the United Nations. People said that
they would go to the market on Monday, Tuesday, Wednesday, Thursday, Friday, Saturday or Sunday.
This sentence is neutral; that one is positive! Is this one negative? The premise entails the
hypothesis, contradicts it, or is neutral. Language models predict the next token of a document.
"""


def corpus(sample_dir: Path) -> list[str]:
    lines = [line.strip() for line in GENERIC.strip().splitlines()]
    with open(sample_dir / "train.csv", newline="", encoding="utf-8") as f:
        lines += [row["text"] for row in csv.DictReader(f)]
    return lines


def build(lines: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "data" / "tokenizer")
    parser.add_argument("--sample-dir", type=Path, default=REPO / "data" / "sample_sentiment")
    parser.add_argument("--vocab-size", type=int, default=2048)
    args = parser.parse_args()

    from transformers import GPT2TokenizerFast

    backend = build(corpus(args.sample_dir), args.vocab_size)
    tokenizer = GPT2TokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                  model_max_length=1024, add_prefix_space=False)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.out_dir)
    print(f"wrote {args.out_dir} (vocab {len(tokenizer)}, eos id {tokenizer.eos_token_id})")


if __name__ == "__main__":
    main()
