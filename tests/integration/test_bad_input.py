"""Every mistake a user can make ends in one UserError naming the key and the fix (in-process)."""

import logging

import pytest
import torch

from gpt2tasks.build import clamp_max_length
from gpt2tasks.errors import UserError
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.train import train


def _csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def files(tmp_path):
    ok = _csv(tmp_path / "ok.csv", "text,label\ngood movie,pos\nbad movie,neg\nfine film,pos\n")
    return tmp_path, ok


def _fails(cfg_factory, *overrides):
    with pytest.raises(UserError) as err:
        train(cfg_factory("task=text_classification", *overrides))
    return str(err.value)


def test_missing_file(cfg_factory, files):
    tmp, ok = files
    msg = _fails(cfg_factory, f"data.train_file={tmp / 'nope.csv'}", f"data.validation_file={ok}")
    assert "data.train_file=" in msg and "file not found" in msg


def test_missing_columns_lists_what_was_found(cfg_factory, files):
    tmp, ok = files
    msg = _fails(cfg_factory, f"data.train_file={ok}", f"data.validation_file={ok}", "data.text_column=sentence",
                 "data.label_column=y")
    assert "data.text_column='sentence'" in msg and "data.label_column='y'" in msg
    assert "Columns found: text, label" in msg and "Fix: set data.text_column=" in msg


def test_empty_split(cfg_factory, files):
    tmp, ok = files
    empty = _csv(tmp / "empty.csv", "text,label\n")
    msg = _fails(cfg_factory, f"data.train_file={ok}", f"data.validation_file={empty}")
    assert "data.validation_file=" in msg and "empty" in msg


def test_validation_label_never_seen_in_training(cfg_factory, files):
    tmp, ok = files
    val = _csv(tmp / "val.csv", "text,label\nmeh,neutral\ngood,pos\n")
    msg = _fails(cfg_factory, f"data.train_file={ok}", f"data.validation_file={val}")
    assert "data.validation_file" in msg and "['neutral']" in msg and "known: neg, pos" in msg


def test_malformed_csv_line_is_named(cfg_factory, files):
    tmp, ok = files
    bad = _csv(tmp / "bad.csv", "text,label\ngood,pos\nbad,movie,neg\n")
    msg = _fails(cfg_factory, f"data.train_file={bad}", f"data.validation_file={ok}")
    assert "data.train_file=" in msg and "line 3" in msg and "expected 2 fields" in msg


def test_malformed_jsonl_line_is_named(cfg_factory, files):
    tmp, ok = files
    bad = _csv(tmp / "bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    msg = _fails(cfg_factory, f"data.train_file={bad}", f"data.validation_file={ok}")
    assert "line 2" in msg and "invalid JSON" in msg


def test_several_config_problems_are_reported_together(cfg_factory, files):
    tmp, ok = files
    msg = _fails(cfg_factory, f"data.train_file={ok}", f"data.validation_file={ok}", "precision=fp8",
                 "optim.lr=-1", "data.batch_size=0")
    assert msg.startswith("3 problems") and "precision='fp8'" in msg and "optim.lr=-1" in msg
    assert "data.batch_size=0" in msg and "32-true" in msg


def test_unknown_metric_for_the_label_kind(cfg_factory, files):
    tmp, ok = files
    msg = _fails(cfg_factory, f"data.train_file={ok}", f"data.validation_file={ok}",
                 "task.metrics=[accuracy,pearson]")
    assert "task.metrics" in msg and "pearson" in msg and "valid" in msg and "accuracy" in msg


def test_no_training_data(cfg_factory):
    msg = _fails(cfg_factory)
    assert "data.train_file" in msg


def test_hub_model_offline_says_so(cfg_factory, files):
    tmp, ok = files
    msg = _fails(cfg_factory, f"data.train_file={ok}", f"data.validation_file={ok}", "model=gpt2")
    assert "model.name_or_path=openai-community/gpt2" in msg and "offline" in msg
    assert "`hf download openai-community/gpt2 --local-dir <dir>`" in msg and "model.pretrained=false" in msg


def test_missing_local_model_dir(cfg_factory, files):
    tmp, ok = files
    msg = _fails(cfg_factory, f"data.train_file={ok}", f"data.validation_file={ok}",
                 f"model.name_or_path={tmp / 'no' / 'such' / 'dir'}")
    assert "no such directory" in msg


def test_hub_dataset_offline_points_to_local_files(cfg_factory):
    with pytest.raises(UserError) as err:
        train(cfg_factory("task=sst2"))
    assert "nyu-mll/glue" in str(err.value) and "data.train_file=" in str(err.value)


def test_max_length_above_n_positions_warns_and_clamps(caplog):
    from transformers import GPT2Config

    with caplog.at_level(logging.WARNING):
        assert clamp_max_length(4096, GPT2Config(n_positions=1024)) == 1024
    assert "data.max_length=4096" in caplog.text and "clamping to 1024" in caplog.text


def test_eval_of_missing_or_foreign_checkpoints(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        evaluate_checkpoint(str(tmp_path / "missing.ckpt"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not written by gpt2tasks"):
        evaluate_checkpoint(str(foreign))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("hello")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        evaluate_checkpoint(str(garbage))
