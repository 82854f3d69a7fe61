"""LM parity: gpt2tasks vs a plain run_clm-style Hugging Face `Trainer`, on WikiText-2 text.

    python scripts/bench_lm_parity.py --seeds 0 1 2 3 4                   # each system as a user runs it
    python scripts/bench_lm_parity.py --seeds 0 --same-blocks --same-batches --no-dropout   # equal to the last digit
    python scripts/bench_lm_parity.py --seeds 0 --same-batches --no-dropout                 # + run_clm's own blocks

Both sides start from the same random-init checkpoint (conf/model/tiny.yaml's architecture: 2 layers,
4 heads, 128 wide, with the GPT-2 tokenizer from ../shared/datasets/gpt2_tokenizer, so 50,257
tokens), and train 2 epochs of blocks of 128 tokens, batch 8, lr 1e-3 decayed linearly to 0, no
warmup, no weight decay, clipping 1.0, AdamW (0.9, 0.999, 1e-8).
The shared folder holds only WikiText-2's valid and test files, so: training text = the first
`--train-lines` lines of valid.txt, gpt2tasks' validation file = its last 200 lines (not trained
on), test = the first `--test-lines` lines of test.txt.

The gpt2tasks side is docs/recipes.md's offline WikiText-2 command (`task=wikitext2`, model=tiny
with the GPT-2 tokenizer); its initial weights are checked equal to the Trainer's.
The Trainer side is run_clm's preprocessing: every line of the file with its line break (blank
lines too, `keep_linebreaks` is on by default) tokenized without eos, each map batch of 1,000 lines
concatenated and cut into blocks, the remainder of the batch dropped. Its test perplexity is exp(mean NLL) over its own test blocks (what run_clm's
`trainer.evaluate()` reports: all blocks are full, so the mean of batch losses is the token mean).
The Trainer's model is also scored on gpt2tasks' test blocks (documents + eos, nothing dropped),
token-weighted as gpt2tasks computes it: that column compares the two trainings on one yardstick.

Switches that take the differences out:
  --same-blocks   the Trainer trains on gpt2tasks' training blocks (its datamodule's rows)
  --same-batches  the Trainer draws them in gpt2tasks' order (the same sampler, seed and epochs)
  --no-dropout    dropout 0 on both sides (no RNG stream left to differ)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
sys.path.insert(0, str(REPO / "scripts"))

from compare_hf_trainer import hf_train  # noqa: E402  (the Trainer set-up the other parity checks use)


def write_subsets(args, folder: Path) -> dict[str, Path]:
    """The train / validation / test text files both systems read: `head -n 600 valid.txt`,
    `tail -n 200 valid.txt`, `head -n 300 test.txt` (with the default line counts)."""
    def lines(name: str) -> list[str]:
        with open(args.wikitext / name, encoding="utf-8", newline="") as f:
            return f.readlines()

    valid, test = lines("valid.txt"), lines("test.txt")
    files = {"train": valid[:args.train_lines], "validation": valid[-200:], "test": test[:args.test_lines]}
    paths = {}
    for name, part in files.items():
        paths[name] = folder / f"{name}.txt"
        with open(paths[name], "w", encoding="utf-8", newline="") as f:
            f.write("".join(part))
    return paths


def make_checkpoint(folder: Path, tokenizer_dir: Path, seed: int) -> None:
    """conf/model/tiny.yaml's architecture with the GPT-2 tokenizer, random weights from `seed`:
    the weights `train model=tiny model.tokenizer_name_or_path=<tokenizer_dir> seed=<seed>` starts
    from (it seeds, then builds the model first; checked by --check-init)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=128, n_positions=1024, vocab_size=len(tok),
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def gpt2tasks_datamodule(args, model_dir: Path, files: dict[str, Path], seed: int):
    """gpt2tasks' LM datamodule over the files, as `train task=language_modeling` builds it."""
    from transformers import AutoTokenizer

    from gpt2tasks.datamodules.base import DataSpec
    from gpt2tasks.datamodules.lm import LanguageModelingDataModule

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.eos_token
    spec = DataSpec(train_file=str(files["train"]), validation_file=str(files["validation"]),
                    test_file=str(files["test"]), block_size=args.block_size, batch_size=args.batch_size,
                    cache_dir=str(args.cache))
    dm = LanguageModelingDataModule(spec, tok, seed=seed)
    dm.setup("fit")
    return dm


# ---- gpt2tasks -----------------------------------------------------------------------------------
def run_gpt2tasks(args, model_dir: Path, files: dict[str, Path], out: Path, seed: int) -> float:
    """Test perplexity of the recipe's run (final weights: no checkpoint to pick another)."""
    from hydra import compose, initialize_config_dir

    from gpt2tasks.resources import CONF_DIR, register_resolvers
    from gpt2tasks.train import train

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            *gpt2tasks_recipe(args, files, seed), f"data.cache_dir={args.cache}", f"output_dir={out}",
            "logger=none", "task.sample_prompts=[]", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
            "checkpoint.save_top_k=0", "checkpoint.save_last=false",  # test = the final weights, as the Trainer's
            *(["+model.config_overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"] if args.no_dropout else []),
            *args.override])
    return train(cfg, callbacks=[SameInitialWeights(model_dir)])["test/perplexity"]


class SameInitialWeights:
    """Checks, as training starts, that gpt2tasks' random init is the saved checkpoint's: both
    sides then start from the same weights."""

    def __new__(cls, model_dir: Path):
        import torch
        from lightning.pytorch import Callback
        from transformers import GPT2LMHeadModel

        class Check(Callback):
            def on_fit_start(self, trainer, module):
                saved = GPT2LMHeadModel.from_pretrained(model_dir).state_dict()
                ours = module.model.state_dict()
                if not all(torch.equal(ours[k].cpu(), v) for k, v in saved.items()):
                    raise SystemExit(f"gpt2tasks' initial weights differ from {model_dir}")

        return Check()


def gpt2tasks_recipe(args, files: dict[str, Path], seed: int) -> list[str]:
    """The command line of docs/recipes.md's offline WikiText-2 recipe (model=tiny is the default)."""
    return ["task=wikitext2", f"model.tokenizer_name_or_path={args.tokenizer}", f"data.train_file={files['train']}",
            f"data.validation_file={files['validation']}", f"data.test_file={files['test']}",
            f"data.block_size={args.block_size}", f"data.batch_size={args.batch_size}", f"optim.lr={args.lr}",
            f"trainer.max_epochs={args.epochs}", f"seed={seed}"]


# ---- run_clm-style Trainer ------------------------------------------------------------------------
def run_clm_blocks(path: Path, tok, block_size: int) -> list[list[int]]:
    """run_clm.py's tokenize_function + group_texts over `datasets.load_dataset("text")` rows."""
    from datasets import load_dataset

    # run_clm's default --keep_linebreaks true: each row is a line with its "\n" (a blank line is "\n")
    raw = load_dataset("text", data_files={"split": str(path)}, split="split", keep_linebreaks=True)
    tokenized = raw.map(lambda batch: tok(batch["text"]), batched=True, remove_columns=["text"])

    def group_texts(examples):  # verbatim logic of run_clm: the remainder of each map batch is dropped
        concatenated = {k: sum(examples[k], []) for k in examples}
        total = len(concatenated["input_ids"]) // block_size * block_size
        return {k: [t[i:i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}

    return tokenized.map(group_texts, batched=True)["input_ids"]


def score(model, blocks: list[list[int]]) -> float:
    """exp(total NLL / predicted tokens) over `blocks` (one at a time: no padding to get right)."""
    import torch

    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for block in blocks:
            ids = torch.tensor([block])
            nll += float(model(input_ids=ids, labels=ids).loss) * (len(block) - 1)
            count += len(block) - 1
    return math.exp(nll / count)


def run_trainer(args, model_dir: Path, files: dict[str, Path], dm, out: Path, seed: int) -> tuple[float, float]:
    """(test perplexity on run_clm's test blocks, on gpt2tasks' test blocks)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2LMHeadModel, Trainer, default_data_collator

    from gpt2tasks.datamodules.batching import LengthGroupedSampler

    tok = AutoTokenizer.from_pretrained(model_dir)
    train_blocks = ([r["input_ids"] for r in dm.datasets["train"].rows] if args.same_blocks
                    else run_clm_blocks(files["train"], tok, args.block_size))
    if args.same_order:
        sampler = LengthGroupedSampler([len(b) for b in train_blocks], args.batch_size, shuffle=True, seed=seed,
                                       group_by_length=False)

        class SameBatches(Trainer):
            def _get_train_sampler(self, train_dataset=None):
                return sampler  # gpt2tasks' order; the Trainer's loop calls set_epoch on it as Lightning does
        trainer_class = SameBatches
    else:
        trainer_class = Trainer
    # A last short block (gpt2tasks keeps it) needs padding; pad = eos, masked out of the labels.
    collator = default_data_collator if len({len(b) for b in train_blocks}) == 1 else padded_collator(tok)
    train_set = Dataset.from_dict({"input_ids": train_blocks, "labels": train_blocks})
    args.steps = args.epochs * math.ceil(len(train_blocks) / args.batch_size)
    args.seed = seed
    trainer, _ = hf_train(args, GPT2LMHeadModel, model_dir, out, train_set, collator, trainer_class=trainer_class)
    ours_test = [r["input_ids"] for r in dm.datasets["test"].rows]
    return score(trainer.model, run_clm_blocks(files["test"], tok, args.block_size)), score(trainer.model, ours_test)


def per_word_exponents(files: dict[str, Path], dm) -> tuple[float, float]:
    """(gpt2tasks, run_clm) exponents e with perplexity per word = perplexity per token ** e.

    Per token, the two streams are different yardsticks (gpt2tasks: documents + eos, blank lines
    skipped; run_clm: a newline per line and per blank line, the remainder dropped). Per word they
    are one: e = scored targets / words covered, words = whitespace words + one end of paragraph
    per document (eos, or the line's newline: the same information), run_clm's scaled by the share
    of its tokens it keeps."""
    tok = dm.tokenizer
    with open(files["test"], encoding="utf-8", newline="") as f:
        lines = f.readlines()
    words = sum(len(line.split()) for line in lines) + sum(1 for line in lines if line.strip())
    ours = sum(len(r["input_ids"]) - 1 for r in dm.datasets["test"].rows)
    blocks = run_clm_blocks(files["test"], tok, dm.spec.block_size)
    kept = sum(len(b) for b in blocks) / sum(len(tok(line)["input_ids"]) for line in lines)
    return ours / words, sum(len(b) - 1 for b in blocks) / (words * kept)


def padded_collator(tok):
    import torch

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), tok.eos_token_id)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    return collate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--wikitext", type=Path, default=SHARED / "wikitext-2")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "gpt2_tokenizer")
    parser.add_argument("--train-lines", type=int, default=600)
    parser.add_argument("--test-lines", type=int, default=300)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--same-blocks", action="store_true")
    # not `same_batches`: hf_train reads that name as "length-grouped batches" (the QA comparison's)
    parser.add_argument("--same-batches", dest="same_order", action="store_true")
    parser.add_argument("--no-dropout", action="store_true")
    parser.add_argument("--override", nargs="*", default=[], help="extra gpt2tasks overrides (key=value)")
    args = parser.parse_args()
    # what hf_train reads besides the above
    args.warmup_ratio, args.weight_decay = 0.0, 0.0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from gpt2tasks.tasks.lm import unigram_perplexity

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args.cache = tmp / "cache"
        files = write_subsets(args, tmp)
        for seed in args.seeds:
            model_dir = tmp / f"tiny_{seed}"
            make_checkpoint(model_dir, args.tokenizer, seed)
            dm = gpt2tasks_datamodule(args, model_dir, files, seed)
            start = time.perf_counter()
            ours = run_gpt2tasks(args, model_dir, files, tmp / f"gpt2tasks_{seed}", seed)
            middle = time.perf_counter()
            theirs, theirs_on_ours = run_trainer(args, model_dir, files, dm, tmp / f"hf_{seed}", seed)
            rows.append((seed, ours, theirs, theirs_on_ours, middle - start, time.perf_counter() - middle))
            print(f"seed {seed}: gpt2tasks {ours:.4f}  Trainer {theirs:.4f} (on gpt2tasks' test blocks "
                  f"{theirs_on_ours:.4f})", flush=True)
        ours_e, theirs_e = per_word_exponents(files, dm)
        unigram = unigram_perplexity((t for r in dm.datasets["train"].rows for t in r["input_ids"]),
                                     (t for r in dm.datasets["test"].rows for t in r["input_ids"]), len(dm.tokenizer))
        print(f"\nunigram baseline (gpt2tasks' test tokens under its training tokens' add-one unigram): {unigram:.1f}")
        print(f"train {args.train_lines} lines of valid.txt ({len(dm.datasets['train'])} gpt2tasks blocks), "
              f"test {args.test_lines} lines of test.txt; {args.epochs} epochs, block {args.block_size}, "
              f"batch {args.batch_size}, lr {args.lr}; same blocks {args.same_blocks}, same batches "
              f"{args.same_order}, no dropout {args.no_dropout}, overrides {args.override}")
    print("| seed | gpt2tasks test ppl | Trainer test ppl (run_clm blocks) | Trainer on gpt2tasks' test blocks "
          "| gpt2tasks s | Trainer s |\n|---|---|---|---|---|---|")
    for seed, ours, theirs, theirs_on_ours, ours_s, theirs_s in rows:
        print(f"| {seed} | {ours:.4f} | {theirs:.4f} | {theirs_on_ours:.4f} | {ours_s:.0f} | {theirs_s:.0f} |")
    if len(rows) > 1:
        cells = [f"{statistics.mean(c):.2f} ± {statistics.stdev(c):.2f}" for c in list(zip(*rows))[1:4]]
        print(f"| mean ± sd | {' | '.join(cells)} | | |")
    print(f"\nper word (exponents {ours_e:.4f} / {theirs_e:.4f}; see per_word_exponents)\n"
          "| seed | gpt2tasks | Trainer (run_clm blocks) |\n|---|---|---|")
    words = [(seed, ours ** ours_e, theirs ** theirs_e) for seed, ours, theirs, *_ in rows]
    for seed, ours, theirs in words:
        print(f"| {seed} | {ours:.1f} | {theirs:.1f} |")
    if len(words) > 1:
        print("| mean ± sd | " + " | ".join(f"{statistics.mean(c):.1f} ± {statistics.stdev(c):.1f}"
                                           for c in list(zip(*words))[1:]) + " |")


if __name__ == "__main__":
    main()
