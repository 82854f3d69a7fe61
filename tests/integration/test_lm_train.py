"""Language modelling end to end: the bundled sample through train/eval (in-process and CLI), and
the shared WikiText-2 files (skipped when absent)."""

import json
import math

import pytest

from gpt2tasks.build import build_for_training
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.tasks.lm import unigram_perplexity
from gpt2tasks.train import train
from tests.conftest import run_cli, shared_dataset


def unigram_baseline(cfg) -> float:
    """Perplexity of the validation tokens under the training tokens' unigram distribution."""
    datamodule, _, tokenizer = build_for_training(cfg)
    (task,) = datamodule.tasks.values()
    tokens = {split: [t for row in task.datasets[split].rows for t in row["input_ids"]] for split in ("train", "val")}
    return unigram_perplexity(tokens["train"], tokens["val"], len(tokenizer))


def test_sample_lm_beats_the_unigram_baseline_and_eval_reproduces_it(cfg_factory, tmp_path):
    out = tmp_path / "lm"
    cfg = cfg_factory("task=sample_lm", "trainer.max_epochs=2", "data.max_train_samples=1200",
                      "data.max_eval_samples=150", output_dir=out)
    unigram = unigram_baseline(cfg)
    metrics = train(cfg)
    assert set(metrics) == {"val/loss", "val/perplexity", "test/loss", "test/perplexity"}
    assert metrics["val/perplexity"] == math.exp(metrics["val/loss"])
    assert 30 < unigram and metrics["val/perplexity"] < unigram / 5, (metrics, unigram)
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_cli_train_then_eval(tmp_path):
    out = tmp_path / "cli"
    done = run_cli("train", "task=sample_lm", f"output_dir={out}", "trainer.max_epochs=1", "data.max_train_samples=200",
                   "data.max_eval_samples=40", "trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sample at step" in done.stdout + done.stderr  # continuations of task.sample_prompts are logged
    evaluated = run_cli("eval", f"ckpt={out / 'checkpoints' / 'best.ckpt'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout[evaluated.stdout.index("{"):]) == json.loads((out / "metrics.json").read_text())


@pytest.mark.slow  # real data, tens of seconds; CI runs -m slow too (.ci/run)
def test_wikitext2_preset_on_the_shared_files(cfg_factory):
    tokenizer = shared_dataset("gpt2_tokenizer")
    valid, test = shared_dataset("wikitext-2", "valid.txt"), shared_dataset("wikitext-2", "test.txt")
    # Train on the first paragraphs of the validation file, validate on the start of the test file.
    # The offline files are WikiText-2's tokenized variant (one paragraph per line, blank lines skipped).
    cfg = cfg_factory("task=wikitext2", f"model.tokenizer_name_or_path={tokenizer}", f"data.train_file={valid}",
                      f"data.validation_file={test}", "data.max_train_samples=100", "data.max_eval_samples=60",
                      "data.block_size=64", "data.batch_size=8", "trainer.max_epochs=1", "optim.lr=5e-3",
                      "task.sample_prompts=[]")
    unigram = unigram_baseline(cfg)
    metrics = train(cfg)
    # A random-init tiny model over GPT-2's 50,257 tokens starts near perplexity 50k; ~12 steps on ~6k
    # tokens take it to about 1,640, half the unigram baseline (about 3,360 with these limits, seed 42).
    assert set(metrics) == {"val/loss", "val/perplexity"}
    assert metrics["val/perplexity"] < 0.75 * unigram, (metrics, unigram)
