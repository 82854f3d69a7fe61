"""Token classification and QA end to end: bundled samples through train/eval (in-process and CLI),
and the real CoNLL-2003 and SQuAD files from ../shared/datasets (skip when absent)."""

import json

import pytest

from gpt2tasks.datamodules.qa import flatten_squad
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.train import train
from tests.conftest import run_cli, shared_dataset

QUICK = ("trainer.max_epochs=2", "data.max_train_samples=400", "data.max_eval_samples=80")


def test_ner_sample_learns_and_eval_reproduces_it(cfg_factory, tmp_path):
    out = tmp_path / "ner"
    metrics = train(cfg_factory("task=sample_ner", "trainer.max_epochs=3", "data.max_train_samples=800",
                                "data.max_eval_samples=120", output_dir=out))
    assert {"val/f1", "val/precision", "val/recall", "val/accuracy", "val/PER_f1", "test/f1"} <= set(metrics)
    assert metrics["val/f1"] > 0.3  # from 0 at random init; the full default run is in the README
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics


def test_qa_sample_writes_exact_context_substrings(cfg_factory, tmp_path):
    out = tmp_path / "qa"
    metrics = train(cfg_factory("task=sample_qa", *QUICK, output_dir=out))
    assert {"val/f1", "val/exact_match", "val/loss", "test/f1"} <= set(metrics)
    predictions = json.loads((out / "predictions.json").read_text())
    rows = [json.loads(line) for line in open(cfg_factory("task=sample_qa").data.validation_file)][:80]
    assert list(predictions) == [r["id"] for r in rows]
    assert all(text in r["context"] for text, r in zip(predictions.values(), rows))
    assert (out / "test_predictions.json").is_file()
    assert evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt")) == metrics


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_cli_train_then_eval_for_both_kinds(tmp_path):
    for task in ("sample_ner", "sample_qa"):
        out = tmp_path / task
        done = run_cli("train", f"task={task}", f"output_dir={out}", "trainer.max_epochs=1",
                       "data.max_train_samples=128", "data.max_eval_samples=48", "trainer.enable_progress_bar=false")
        assert done.returncode == 0, done.stderr[-3000:]
        evaluated = run_cli("eval", f"ckpt={out / 'checkpoints' / 'best.ckpt'}")
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert json.loads(evaluated.stdout[evaluated.stdout.index("{"):]) == json.loads((out / "metrics.json").read_text())


@pytest.mark.slow  # real data, tens of seconds; CI runs -m slow too (.ci/run)
def test_conll2003_preset_on_the_original_iob1_files(cfg_factory):
    tokenizer = shared_dataset("gpt2_tokenizer")
    train_file, dev_file = shared_dataset("conll2003", "eng.train"), shared_dataset("conll2003", "eng.testa")
    metrics = train(cfg_factory("task=conll2003", f"model.tokenizer_name_or_path={tokenizer}",
                                f"data.train_file={train_file}", f"data.validation_file={dev_file}",
                                "data.max_train_samples=2000", "data.max_eval_samples=400", "trainer.max_epochs=2",
                                "optim.lr=1e-3", "data.max_length=64"))
    # IOB1 tags read with the Hub's IOB2 label list; entity F1 over words. A random-init 2-layer model
    # on 2 x 3k sentences learns the frequent entities only: well above 0, far from a trained model.
    assert metrics["val/f1"] > 0.15 and metrics["val/accuracy"] > 0.8


@pytest.mark.slow  # real data, tens of seconds; CI runs -m slow too (.ci/run)
def test_squad_dev_file_split_by_article(cfg_factory, tmp_path):
    tokenizer = shared_dataset("gpt2_tokenizer")
    articles = json.loads(shared_dataset("squad_v1.1", "dev-v1.1.json").read_text())["data"]
    for name, part in (("train.json", articles[:40]), ("dev.json", articles[40:])):
        (tmp_path / name).write_text(json.dumps({"version": "1.1", "data": part}))
    n_dev = len(flatten_squad(articles[40:], "dev.json", "data.validation_file"))
    metrics = train(cfg_factory("task=squad", f"model.tokenizer_name_or_path={tokenizer}",
                                f"data.train_file={tmp_path / 'train.json'}",
                                f"data.validation_file={tmp_path / 'dev.json'}", "data.max_train_samples=800",
                                "data.max_eval_samples=200", "trainer.max_epochs=1", "data.max_length=256",
                                "data.doc_stride=64", "optim.lr=1e-3", output_dir=tmp_path / "run"))
    assert n_dev > 200 and set(metrics) == {"val/exact_match", "val/f1", "val/loss"}
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert len(predictions) == 200 and 0.0 <= metrics["val/f1"] <= 100.0
