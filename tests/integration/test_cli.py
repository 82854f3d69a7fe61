"""The command line as a user runs it: exit codes, stdout/stderr, files on disk (in-process through
the `cli` fixture where a fresh interpreter adds only import time; real subprocesses below)."""

import json

import pytest

from tests.conftest import run_cli

# two epochs, so that the best checkpoint need not be the last; few samples: the check is equality
QUICK = ["trainer.max_epochs=2", "data.max_train_samples=64", "data.max_eval_samples=32",
         "trainer.enable_progress_bar=false"]


def test_train_then_eval_reproduces_validation_metrics(tmp_path, cli):
    # in-process (`cli`: the same entry point, Hydra included, without a fresh interpreter's
    # imports); the README commands test (slow tier) runs train and eval in real processes
    out = tmp_path / "run"
    done = cli("train", f"output_dir={out}", *QUICK)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"run:        {out}" in done.stdout and "re-evaluate: python -m gpt2tasks eval" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    evaluated = cli("eval", f"ckpt={out / 'checkpoints' / 'best.ckpt'}", f"output={tmp_path / 'eval.json'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert "scored val: 32 of 300 rows (data.max_eval_samples=32); test: 32 of 300 rows" in evaluated.stdout
    counts = {"val/rows": 32, "val/rows_in_file": 300, "test/rows": 32, "test/rows_in_file": 300}
    assert again == metrics and json.loads((tmp_path / "eval.json").read_text()) == {**metrics, **counts}
    assert {k.split("/")[0] for k in metrics} == {"val", "test"}


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_multirun_sweeps_into_one_folder_per_job(tmp_path):
    done = run_cli("train", "-m", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}", "logger=none",
                   "trainer.max_epochs=1", "data.max_train_samples=64", "data.max_eval_samples=32",
                   "trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "metrics.json").is_file()
    assert "seed: 2" in (tmp_path / "sweep" / "1" / "config.yaml").read_text()


def test_help_and_cfg_job():
    top = run_cli("--help")
    assert top.returncode == 0 and "train" in top.stdout and "eval" in top.stdout
    helped = run_cli("train", "--help")
    assert helped.returncode == 0 and "task: " in helped.stdout and "sst2" in helped.stdout
    cfg = run_cli("train", "--cfg", "job", "task=sst2", "model=gpt2")
    assert cfg.returncode == 0 and "name: sst2" in cfg.stdout and "openai-community/gpt2" in cfg.stdout


BAD_INPUTS = {  # overrides -> what stderr must say
    ("task=nope",): "Available options in 'task'",
    ("model=gpt3",): "Available options in 'model'",
    ("precision=fp8",): "precision='fp8' is not one of 32-true, 16-mixed, bf16-mixed, bf16-true",
    ("task=text_classification", "data.train_file={tmp}/missing.csv"): "data.train_file=",
}


def test_bad_inputs_exit_non_zero_with_one_message_and_leave_nothing(tmp_path, cli):
    # in-process (the same entry point; a fresh interpreter per case cost seconds each): the
    # subprocess test below proves the real exit status and stderr end to end
    for i, args in enumerate(BAD_INPUTS):
        out = tmp_path / f"out{i}"
        done = cli("train", f"output_dir={out}", *(a.format(tmp=tmp_path) for a in args))
        assert done.returncode != 0, args
        assert BAD_INPUTS[args] in done.stderr, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
        assert not out.exists(), f"{args} left {out} behind"
    unknown = cli("frobnicate")
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr
    missing = cli("eval", f"ckpt={tmp_path / 'nope.ckpt'}")
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_a_bad_input_in_a_real_process_exits_2_with_one_message_and_leaves_nothing(tmp_path):
    # the end-to-end form of the test above, for an error found after Hydra started the job (its
    # folder made, logging configured): the interpreter's exit status, no traceback, no folder
    out = tmp_path / "out"
    done = run_cli("train", f"output_dir={out}", "precision=fp8")
    assert done.returncode == 2, done.stderr[-3000:]
    assert BAD_INPUTS[("precision=fp8",)] in done.stderr and done.stderr.count("gpt2tasks: error: ") == 1
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_existing_run_is_refused_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 1\n")
    done = run_cli("train", f"output_dir={out}")
    # a folder with a config but no checkpoint: nothing to resume, so only overwrite=true is offered
    assert done.returncode == 2 and "holds a run that stopped before its first checkpoint" in done.stderr
    assert "overwrite=true" in done.stderr and "resume=true" not in done.stderr
    assert (out / "config.yaml").read_text() == "seed: 1\n"
