"""Accuracy parity check: gpt2tasks vs plain Hugging Face `Trainer` on the same text-classification run.

Training a small random-init model is chaotic (the same recipe swings by many points between
seeds, for both systems), so compare over several seeds (--seeds) or in a converged setting.

Same local GPT-2 checkpoint, CSV data, steps, batch size, learning rate (linear decay, no warmup,
no weight decay, clipping 1.0) and seed; prints both validation accuracies and training times.
Without --model-dir it saves a random-init tiny GPT-2 (2 layers, 128 wide, the bundled tokenizer)
to a temporary folder first, as a user's local checkpoint would be.

    python scripts/compare_hf_trainer.py                      # the bundled sentiment sample
    python scripts/compare_hf_trainer.py --train-file train.csv --validation-file dev.csv --model-dir DIR
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample_sentiment"


def make_tiny_checkpoint(path: Path, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(REPO / "data" / "tokenizer")
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=128, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                        bos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)


def run_gpt2tasks(args, model_dir: Path, out: Path) -> tuple[float, float]:
    from hydra import compose, initialize_config_dir

    from gpt2tasks.resources import CONF_DIR, register_resolvers
    from gpt2tasks.train import train

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "task=text_classification", f"model.name_or_path={model_dir}", f"data.train_file={args.train_file}",
            f"data.validation_file={args.validation_file}", f"data.text_column={args.text_column}",
            f"data.label_column={args.label_column}", f"data.batch_size={args.batch_size}",
            f"data.max_length={args.max_length}", f"optim.lr={args.lr}", "optim.warmup_ratio=0",
            "optim.weight_decay=0", f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1",
            f"trainer.val_check_interval={args.steps}", "trainer.check_val_every_n_epoch=null",
            "task.monitor=val/loss", "task.mode=min", f"seed={args.seed}", "logger=none",
            "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"output_dir={out}", *args.override,
            *(["+model.config_overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"] if args.no_dropout else [])])
    start = time.perf_counter()
    metrics = train(cfg)
    return metrics["val/accuracy"], time.perf_counter() - start


def run_hf_trainer(args, model_dir: Path, out: Path) -> tuple[float, float]:
    import numpy as np
    from datasets import Dataset
    from transformers import (AutoTokenizer, DataCollatorWithPadding, GPT2ForSequenceClassification, Trainer,
                              TrainingArguments, set_seed)

    def read(path):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    train_rows, val_rows = read(args.train_file), read(args.validation_file)
    classes = sorted({r[args.label_column] for r in train_rows})
    label2id = {c: i for i, c in enumerate(classes)}
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.eos_token

    def encode(rows):
        enc = tok([r[args.text_column] for r in rows], truncation=True, max_length=args.max_length)
        return Dataset.from_dict({**enc, "labels": [label2id[r[args.label_column]] for r in rows]})

    set_seed(args.seed)
    extra = dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), 0.0) if args.no_dropout else {}
    model = GPT2ForSequenceClassification.from_pretrained(model_dir, num_labels=len(classes),
                                                          pad_token_id=tok.pad_token_id, **extra)
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, max_steps=args.steps, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, seed=args.seed, report_to=[], save_strategy="no", eval_strategy="no",
        use_cpu=True, disable_tqdm=True, logging_steps=50)
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(train_rows),
                      data_collator=DataCollatorWithPadding(tok))
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    pred = trainer.predict(encode(val_rows))
    # predictions and label_ids come back in the same order, whatever the sampler did
    return float(np.mean(pred.predictions.argmax(-1) == pred.label_ids)), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-file", default=str(SAMPLE / "train.csv"))
    parser.add_argument("--validation-file", default=str(SAMPLE / "validation.csv"))
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="*", help="several seeds: per-seed rows and mean ± sd")
    parser.add_argument("--override", nargs="*", default=[], help="extra gpt2tasks overrides (key=value)")
    parser.add_argument("--no-dropout", action="store_true", help="dropout 0 in both (isolates RNG streams)")
    parser.add_argument("--skip-hf", action="store_true", help="only run gpt2tasks (for quick experiments)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = []
    for seed in args.seeds or [args.seed]:
        args.seed = seed
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model_dir or Path(tmp) / "tiny_gpt2"
            if args.model_dir is None:
                make_tiny_checkpoint(model_dir, seed)
            ours, ours_s = run_gpt2tasks(args, model_dir, Path(tmp) / "gpt2tasks_run")
            theirs, theirs_s = ((float("nan"), 0.0) if args.skip_hf
                                else run_hf_trainer(args, model_dir, Path(tmp) / "hf_run"))
        rows.append((seed, ours, theirs, ours_s, theirs_s))
    print(f"\n{args.steps} steps, batch {args.batch_size}, lr {args.lr}\n"
          "| seed | gpt2tasks val acc | HF Trainer val acc | difference (points) | gpt2tasks s | HF s |\n|---|---|---|---|---|---|")
    for seed, ours, theirs, ours_s, theirs_s in rows:
        print(f"| {seed} | {ours:.4f} | {theirs:.4f} | {100 * (ours - theirs):+.2f} | {ours_s:.1f} | {theirs_s:.1f} |")
    if len(rows) > 1:
        import statistics as st

        ours_all, theirs_all = [r[1] for r in rows], [r[2] for r in rows]
        print(f"| mean ± sd | {st.mean(ours_all):.4f} ± {st.stdev(ours_all):.4f} | "
              f"{st.mean(theirs_all):.4f} ± {st.stdev(theirs_all):.4f} | "
              f"{100 * (st.mean(ours_all) - st.mean(theirs_all)):+.2f} | | |")

if __name__ == "__main__":
    main()
