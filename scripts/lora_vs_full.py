"""LoRA vs full fine-tuning for sequence classification, from the same local pretrained tiny GPT-2.

    python scripts/lora_vs_full.py                 # bundled sentiment sample, seed 42 (~30 min on 2 cores)
    python scripts/lora_vs_full.py --seeds 1 2 3

LoRA presumes a pretrained base (adapters on a random frozen network learn little), and no GPT-2
weights can be downloaded here, so step 1 makes one: gpt2tasks' own `language_modeling` task
trains the tiny model on the training texts (labels unused), and the LM checkpoint is saved with
`save_pretrained` as a user's local checkpoint would be. Step 2 fine-tunes it for classification
twice with the same recipe but the learning rate (LoRA's usual is 3-10x full fine-tuning's):
`peft=none`, and `peft=lora` with adapters on attention and the token embeddings (`--lora-targets`;
this small base's embeddings do not separate sentiment words, see docs/benchmark-history.md). Prints
held-out accuracy (validation and test) and the trainable share.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample_sentiment"


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from gpt2tasks.resources import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=["logger=none", "trainer.enable_progress_bar=false",
                                                              *overrides])


def pretrain_lm(work: Path, seed: int, epochs: int) -> Path:
    """Tiny GPT-2 LM on the training texts, saved as a plain HF folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2tasks.build import tokenizer_from_files
    from gpt2tasks.runfile import load_checkpoint
    from gpt2tasks.train import train

    for split in ("train", "validation"):
        with open(SAMPLE / f"{split}.csv", newline="") as f, open(work / f"{split}.txt", "w") as out:
            out.writelines(row["text"] + "\n" for row in csv.DictReader(f))
    run = work / "lm_run"
    metrics = train(compose("task=language_modeling", f"data.train_file={work / 'train.txt'}",
                            f"data.validation_file={work / 'validation.txt'}", "task.sample_prompts=[]",
                            "optim.lr=2e-3", "optim.warmup_ratio=0.1", f"trainer.max_epochs={epochs}",
                            f"seed={seed}", f"output_dir={run}"))
    print(f"LM pretraining: val/perplexity {metrics['val/perplexity']:.2f}", flush=True)
    # The LM module's weights as a plain HF folder (what `export` will do for any run).
    ckpt = load_checkpoint(str(run / "checkpoints" / "best.ckpt"))
    info = ckpt["gpt2tasks"]
    model = GPT2LMHeadModel(GPT2Config.from_dict(info["hf_config"]))
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    folder = work / "tiny_gpt2_lm"
    model.save_pretrained(folder)
    tokenizer_from_files(info["tokenizer_files"]).save_pretrained(folder)
    return folder


def finetune(model_dir: Path, work: Path, seed: int, peft: str, lr: float, epochs: int,
             *extra: str) -> tuple[dict, str]:
    from lightning.pytorch.callbacks import Callback

    from gpt2tasks.train import train

    class Summary(Callback):
        def on_fit_start(self, trainer, pl_module):
            self.text = pl_module.parameter_summary()

    overrides = ["task=sample_sentiment", f"model.name_or_path={model_dir}", f"peft={peft}", f"optim.lr={lr}",
                 f"trainer.max_epochs={epochs}", f"seed={seed}", f"output_dir={work / f'cls_{peft}_{seed}'}", *extra]
    summary = Summary()
    return train(compose(*overrides), callbacks=[summary]), summary.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[42])
    parser.add_argument("--lm-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--full-lr", type=float, default=1e-3)
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    # With a tiny base pretrained on 2,000 sentences, the words' embeddings do not separate
    # sentiment ("good" and "bad" share their contexts): the adapter on wte is what makes LoRA learn.
    parser.add_argument("--lora-targets", default="attention_embeddings")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            base = pretrain_lm(work, seed, args.lm_epochs)
            full, full_params = finetune(base, work, seed, "none", args.full_lr, args.epochs)
            lora, lora_params = finetune(base, work, seed, "lora", args.lora_lr, args.epochs,
                                         f"peft.targets={args.lora_targets}", "peft.dropout=0.0")
        rows.append((seed, full, lora))
        print(f"seed {seed}: full {full['val/accuracy']:.4f}/{full['test/accuracy']:.4f} ({full_params}); "
              f"LoRA {lora['val/accuracy']:.4f}/{lora['test/accuracy']:.4f} ({lora_params})", flush=True)
    print("\n| seed | full: val / test accuracy | LoRA: val / test accuracy | difference (test, points) |\n"
          "|---|---|---|---|")
    for seed, full, lora in rows:
        print(f"| {seed} | {full['val/accuracy']:.4f} / {full['test/accuracy']:.4f} | {lora['val/accuracy']:.4f} / "
              f"{lora['test/accuracy']:.4f} | {100 * (lora['test/accuracy'] - full['test/accuracy']):+.2f} |")


if __name__ == "__main__":
    main()
