"""Multiple choice end to end: the bundled sample through train/eval (in-process and CLI), and the
real CODAH file from ../shared/datasets (skipped when absent)."""

import csv
import json

import pytest

from gpt2tasks.backbone import load_model_config
from gpt2tasks import runspec
from gpt2tasks.build import build_datamodule
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.train import train
from tests.conftest import run_cli, shared_dataset


def test_labels_choices_and_summary_tokens_line_up_end_to_end(cfg_factory, tmp_path):
    # The bundled sample's rows with one word added to every correct ending: a model that sees
    # that word at the summary token learns it in a few dozen steps -- but only if labels, choice
    # order and mc_token_ids line up through reading, tokenizing, sampling and collating (any
    # mix-up leaves it at chance, 0.25). Learning the sample itself (matching the ending's noun to
    # the story) takes a few hundred steps: the README has that number.
    rows = [json.loads(line) for line in open(cfg_factory("task=sample_mc").data.train_file)][:800]
    for row in rows:
        row["endings"][row["label"]] = "truly " + row["endings"][row["label"]]
    for name, part in (("train.jsonl", rows[:600]), ("dev.jsonl", rows[600:])):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    out = tmp_path / "run"
    metrics = train(cfg_factory("task=sample_mc", f"data.train_file={tmp_path / 'train.jsonl'}",
                                f"data.validation_file={tmp_path / 'dev.jsonl'}", "data.test_file=null",
                                "data.batch_size=16", "optim.lr=3e-3", "optim.warmup_ratio=0", "trainer.max_epochs=1",
                                output_dir=out))
    assert set(metrics) == {"val/accuracy", "val/loss", "val/mc_loss"}
    assert metrics["val/accuracy"] > 0.6, metrics
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_cli_train_then_eval_with_the_lm_loss(tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", "task=sample_mc", f"output_dir={out}", "trainer.max_epochs=1", "task.lm_coef=0.5",
                   "data.max_train_samples=128", "data.max_eval_samples=48", "trainer.enable_progress_bar=false",
                   "logger=none")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val/accuracy", "val/mc_loss", "val/lm_loss", "test/lm_loss"} <= set(metrics)
    # val/loss is mc_coef * mc_loss + lm_coef * lm_loss, each averaged over the examples
    assert abs(metrics["val/loss"] - (metrics["val/mc_loss"] + 0.5 * metrics["val/lm_loss"])) < 1e-5
    evaluated = run_cli("eval", f"ckpt={out / 'checkpoints' / 'best.ckpt'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout[evaluated.stdout.index("{"):]) == metrics


@pytest.mark.slow  # real data, tens of seconds; CI runs -m slow too (.ci/run)
def test_codah_converted_to_jsonl_trains_with_the_generic_task(cfg_factory, tmp_path):
    tokenizer = shared_dataset("gpt2_tokenizer")
    with open(shared_dataset("codah", "full_data.tsv"), encoding="utf-8", newline="") as f:
        rows = [{"context": r[1], "endings": r[2:6], "label": int(r[6])}
                for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert len(rows) == 2776 and all(len(r["endings"]) == 4 for r in rows)
    for name, part in (("train.jsonl", rows[:300]), ("dev.jsonl", rows[-100:])):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    metrics = train(cfg_factory("task=multiple_choice", f"model.tokenizer_name_or_path={tokenizer}",
                                f"data.train_file={tmp_path / 'train.jsonl'}",
                                f"data.validation_file={tmp_path / 'dev.jsonl'}", "data.pair_separator=' '",
                                "data.max_length=48", "trainer.max_epochs=1", output_dir=tmp_path / "run"))
    # A random-init model cannot do commonsense from 300 questions: this checks the real data's
    # plumbing (4 choices, string endings, exact eval), not a score.
    assert set(metrics) == {"val/accuracy", "val/loss", "val/mc_loss"} and 0.0 <= metrics["val/accuracy"] <= 1.0


def test_codah_preset_reads_the_headerless_tsv_fold(cfg_factory, tiny_tokenizer):
    fold = shared_dataset("codah", "cv_split", "fold_0")
    cfg = cfg_factory("task=codah", f"data.train_file={fold / 'train.tsv'}", f"data.validation_file={fold / 'dev.tsv'}",
                      f"data.test_file={fold / 'test.tsv'}")
    run = runspec.parse(cfg)
    config = load_model_config(run.model, tiny_tokenizer)
    datamodule = build_datamodule(run, run.tasks["codah"], tiny_tokenizer, config)
    datamodule.setup("fit")
    # SOURCE.md: 1,665 / 556 / 555 rows; dev labels 149/140/124/143
    assert {k: len(v) for k, v in datamodule.datasets.items()} == {"train": 1665, "val": 556, "test": 555}
    assert datamodule.label_space.names == ["0", "1", "2", "3"]
    labels = [r["labels"] for r in datamodule.datasets["val"].rows]
    assert [labels.count(i) for i in range(4)] == [149, 140, 124, 143]
    first = datamodule.examples["train"][0]
    eos = tiny_tokenizer.eos_token_id
    assert datamodule.datasets["train"].rows[0]["input_ids"][0][-1] == eos
    assert datamodule.context(first) == first["prompt"] and len(datamodule.endings(first, "")) == 4
