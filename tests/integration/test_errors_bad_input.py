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


# ---- keys and trainer values: refused before Hydra or before the run folder --------------------------
def _cli_refuses(cli, tmp_path, *args):
    # `cli`: the command line's entry point in-process (tests/conftest.py); test_cli.py runs one
    # bad input in a real process for the interpreter's exit status
    out = tmp_path / "out"
    done = cli("train", f"output_dir={out}", *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stderr.count("gpt2tasks: error: ") == 1
    assert not out.exists(), f"{args} left {out} behind"
    return done.stderr.split("gpt2tasks: error: ")[1]  # the message (after any progress output)


def test_cli_misspelt_keys_name_the_key_meant_with_or_without_plus(tmp_path, cli):
    err = _cli_refuses(cli, tmp_path, "data.bach_size=8", "+trainer.max_epoch=3", "++optim.lrr=1e-4", "trainer.lr=1",
                       "checkpoint.save_lst=false", "sed=3")
    assert "6 unknown keys" in err and "To append to your config use +" not in err
    for fix in ("data.batch_size=8", "trainer.max_epochs=3", "optim.lr=1e-4", "optim.lr=1", "checkpoint.save_last=false",
                "seed=3"):
        assert f"Fix: {fix}." in err, (fix, err)
    assert "Hydra's `+` does not help" in err


def test_cli_bad_trainer_values_and_a_sweep_are_one_message_each(tmp_path, cli):
    err = _cli_refuses(cli, tmp_path, "trainer.accumulate_grad_batches=0", "trainer.max_epochs=abc", "trainer.devices=0",
                       "trainer.gradient_clip_val=-1", "trainer.precision=bf16")
    assert err.startswith("5 problems in the config")
    assert "trainer.accumulate_grad_batches=0 must be an integer >= 1" in err
    assert "trainer.max_epochs='abc' must be an integer or null" in err and "trainer.devices=0" in err
    assert "trainer.gradient_clip_val=-1 must be >= 0" in err and "use precision=" in err
    sweep = _cli_refuses(cli, tmp_path, "-m", f"hydra.sweep.dir={tmp_path / 'out'}", "data.bach_size=8,16")
    assert "did you mean data.batch_size?" in sweep


def test_cli_val_check_interval_longer_than_the_epoch(tmp_path, cli):
    err = _cli_refuses(cli, tmp_path, "data.max_train_samples=64", "data.batch_size=16", "trainer.val_check_interval=10")
    assert "trainer.val_check_interval=10 is more than the 4 training batches of an epoch" in err
    assert "trainer.check_val_every_n_epoch=null" in err


def test_cli_a_typo_label_is_refused_with_its_line(tmp_path, cli):
    rows = [f"review {i},{'positive' if i % 2 else 'negative'}" for i in range(300)]
    rows[41] = "review 41,postive"
    train_file = _csv(tmp_path / "train.csv", "text,label\n" + "\n".join(rows) + "\n")
    err = _cli_refuses(cli, tmp_path, "task=text_classification", f"data.train_file={train_file}",
                       f"data.validation_file={train_file}")
    assert f"'postive' (1)" in err and f"data.train_file={train_file}, line 43" in err
    assert "data.allow_rare_labels=true" in err


def test_trainer_keywords_need_no_plus_and_unknown_keys_are_refused_after_composition(cfg_factory, tmp_path):
    from gpt2tasks.config import validate_config
    from gpt2tasks.keys import check_overrides

    argv = check_overrides(["trainer.fast_dev_run=true", "trainer.max_epochs=2"])
    assert argv == ["++trainer.fast_dev_run=true", "trainer.max_epochs=2"]
    cfg = cfg_factory(*argv)
    validate_config(cfg)
    assert cfg.trainer.fast_dev_run is True
    msg = _fails(cfg_factory, "+data.bach_size=8", "+trainer.max_epoch=1")
    assert "data.bach_size: no such key (did you mean data.batch_size?)" in msg
    assert "trainer.max_epoch: no such key (did you mean trainer.max_epochs?)" in msg
    assert not (tmp_path / "run").exists()


def test_val_check_interval_is_checked_before_the_folder_in_process(cfg_factory, tmp_path):
    msg = _fails(cfg_factory, "task=sample_sentiment", "data.max_train_samples=40", "data.batch_size=8",
                 "trainer.val_check_interval=6", "trainer.limit_train_batches=3")
    assert "trainer.val_check_interval=6 is more than the 3 training batches" in msg
    assert not (tmp_path / "run").exists()
