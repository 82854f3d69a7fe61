"""A checkpoint and an export info file written by an older gpt2tasks (tests/data/run_ba90ff0, see
its README) still load for eval, predict and export, and give the numbers they gave then."""

from __future__ import annotations

import json
import shutil

import pytest

from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.export import ExportOptions, export
from gpt2tasks.predict import predict
from gpt2tasks.resources import DATA_DIR
from tests.conftest import REPO

OLD = REPO / "tests" / "data" / "run_ba90ff0"
VALIDATION = DATA_DIR / "sample_sentiment" / "validation.csv"


@pytest.fixture
def rows(tmp_path):
    """The 16 validation rows the old predictions were made on."""
    path = tmp_path / "input.csv"
    path.write_text("".join(VALIDATION.read_text().splitlines(keepends=True)[:17]))  # header + 16 rows
    return path


def expected_lines() -> list[dict]:
    return [json.loads(line) for line in (OLD / "predictions.jsonl").read_text().splitlines()]


def test_old_checkpoint_evaluates_to_its_metrics():
    # its saved data paths are gone: the eval set is given again, as a user on another machine would;
    # a file named on the command line is scored whole unless the run's limit is given too (16 rows)
    metrics = evaluate_checkpoint(str(OLD / "best.ckpt"), [f"data.validation_file={VALIDATION}",
                                                           "data.max_eval_samples=16"])
    assert metrics == pytest.approx(json.loads((OLD / "metrics.json").read_text()), abs=1e-6)


def test_old_checkpoint_predicts_what_it_predicted(rows, tmp_path):
    predict(str(OLD / "best.ckpt"), str(rows), str(tmp_path / "p.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    for line, old in zip(lines, expected_lines(), strict=True):
        assert line["index"] == old["index"] and line["label"] == old["label"]
        assert line["scores"] == pytest.approx(old["scores"], abs=1e-6)


def test_old_checkpoint_exports_and_an_old_export_info_predicts(rows, tmp_path):
    folder = export(ExportOptions(ckpt=str(OLD / "best.ckpt"), out=str(tmp_path / "export")))
    assert (folder / "model.safetensors").is_file()
    new_info = json.loads((folder / "gpt2tasks.json").read_text())
    old_info = json.loads((OLD / "export_gpt2tasks.json").read_text())
    assert new_info["kind"] == old_info["kind"] == "seq_cls" and new_info["label_space"] == old_info["label_space"]
    shutil.copyfile(OLD / "export_gpt2tasks.json", folder / "gpt2tasks.json")  # the info file as it was written then
    predict(str(folder), str(rows), str(tmp_path / "p.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    for line, old in zip(lines, expected_lines(), strict=True):
        assert line["label"] == old["label"] and line["scores"] == pytest.approx(old["scores"], abs=1e-6)
