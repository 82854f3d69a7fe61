"""resume=true continues the run as it was started: its own config.yaml is the base (not the
defaults), keys that change what it computes are refused, the allowed ones are recorded, and the
data files must hold what they held when it started (content hashes, not mtimes)."""

import os
import shutil

import pytest
import torch
import yaml

from gpt2tasks.runfile import RESUME_MAY_CHANGE, may_change_on_resume
from gpt2tasks.train import train
from tests.conftest import REPO, compose

# 32 rows in batches of 8: 4 steps an epoch, 12 in all; the sample preset's own default is 24 epochs
RUN = ("trainer.max_epochs=3", "data.max_train_samples=32", "data.max_eval_samples=16", "data.batch_size=8",
       "logger=none", "trainer.enable_progress_bar=false")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-epoch run over copies of the bundled sample files (so that tests can edit them)."""
    base = tmp_path_factory.mktemp("resume_config")
    data = base / "data"
    shutil.copytree(REPO / "data" / "sample_sentiment", data)
    files = [f"data.train_file={data / 'train.csv'}", f"data.validation_file={data / 'validation.csv'}",
             f"data.test_file={data / 'test.csv'}"]
    train(compose(f"output_dir={base / 'run'}", *RUN, *files))
    return base


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run (its data files stay where the run read them)."""
    shutil.copytree(finished / "run", tmp_path / "run")
    return tmp_path / "run"


def _step(run) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]


def _settings(path):
    return yaml.safe_load(path.read_text())


def test_bare_resume_takes_the_runs_own_settings_not_the_defaults(run, cli):
    before = (run / "config.yaml").read_bytes()
    done = cli("train", f"output_dir={run}", "resume=true")
    # the defaults would have said 24 epochs and trained on; the run's own 3 are done
    assert done.returncode == 2, done.stderr[-3000:]
    assert "finished run (epoch 3, step 12, under trainer.max_epochs=3" in done.stderr
    assert (run / "config.yaml").read_bytes() == before and not (run / "config.1.yaml").exists()


@pytest.mark.parametrize("override,key,old,new", [
    ("seed=7", "seed", 42, 7),
    ("optim.lr=0.5", "optim.lr", 0.001, 0.5),
    ("data.batch_size=4", "data.batch_size", 8, 4),
    ("optim.scheduler=cosine", "optim.scheduler", "linear", "cosine"),
    ("data.max_length=32", "data.max_length", 64, 32),
    ("data.train_file={data}/validation.csv", "data.train_file", "{data}/train.csv", "{data}/validation.csv"),
])
def test_resume_refuses_a_key_that_changes_what_the_run_computes(run, finished, cli, override, key, old, new):
    data = finished / "data"
    override, old, new = (v.format(data=data) if isinstance(v, str) else v for v in (override, old, new))
    before = (run / "config.yaml").read_bytes()
    done = cli("train", f"output_dir={run}", "resume=true", "trainer.max_epochs=4", override)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{key}: the run has {old!r}, this command {new!r}" in done.stderr
    assert f"drop {key}=" in done.stderr and "overwrite=true" in done.stderr and "Traceback" not in done.stderr
    assert (run / "config.yaml").read_bytes() == before and _step(run) == 12


def test_resume_extends_the_run_and_records_the_change(run, cli):
    started = _settings(run / "config.yaml")
    done = cli("train", f"output_dir={run}", "resume=true", "trainer.max_epochs=4", "trainer.log_every_n_steps=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _step(run) == 16  # one more epoch of 4 steps, at the run's own batch size
    now, kept = _settings(run / "config.yaml"), _settings(run / "config.1.yaml")
    assert kept == started  # the settings the run started with are kept
    assert now["trainer"]["max_epochs"] == 4 and now["trainer"]["log_every_n_steps"] == 2 and now["resume"] is True
    changed = {k for k in now if now[k] != kept[k]}
    assert changed == {"trainer", "resume", "output_dir"}  # output_dir: this copy of the run lives elsewhere
    assert {k for k in now["trainer"] if now["trainer"][k] != kept["trainer"][k]} == {"max_epochs", "log_every_n_steps"}


def test_resume_refuses_a_data_file_edited_in_place(run, finished, cli):
    train_file = finished / "data" / "train.csv"
    original = train_file.read_bytes()
    stat = os.stat(train_file)
    try:
        # same size, mtime put back (what `cp -p` or `rsync -a` of an edited file leave)
        train_file.write_bytes(original.replace(b"i would avoid the phone", b"i would dodge the phone", 1))
        os.utime(train_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert os.stat(train_file).st_size == stat.st_size and train_file.read_bytes() != original
        done = cli("train", f"output_dir={run}", "resume=true", "trainer.max_epochs=4")
        assert done.returncode == 2, done.stderr[-3000:]
        assert f"data.train_file={train_file} changed since the run started" in done.stderr
        assert "overwrite=true" in done.stderr and _step(run) == 12
    finally:
        train_file.write_bytes(original)
        os.utime(train_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_allow_list_is_explicit_and_unknown_keys_are_refused():
    assert may_change_on_resume("trainer.max_epochs") and may_change_on_resume("logger.wandb.project")
    for key in ("seed", "optim.lr", "data.batch_size", "data.train_file", "precision", "model.name_or_path",
                "peft.r", "trainer.accumulate_grad_batches", "trainer.some_new_key", "logger"):
        assert not may_change_on_resume(key), key
    assert all(why for why in RESUME_MAY_CHANGE.values())  # each entry says why it is safe
