"""What commands may replace or delete, one writer per run folder, and errors for what Python or a
library would reject late (issue 28, classes 2, 3 and 10).

Most checks fail before any checkpoint is loaded, so a missing ckpt= is enough to reach them."""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpt2tasks import outputs
from gpt2tasks.errors import UserError, redact
from gpt2tasks.export import ExportOptions, clean_stale_staging, export
from gpt2tasks.train import train
from tests.conftest import REPO, compose

TINY = ("trainer.max_epochs=1", "data.max_train_samples=32", "data.max_eval_samples=16")


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its text (links as `-> target`), to prove nothing changed."""
    return {str(p.relative_to(folder)): (f"-> {os.readlink(p)}" if p.is_symlink() else p.read_text())
            for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()}


def _a_run(folder: Path, marker: bool = True) -> Path:
    """A run folder as `train` leaves it (with or without the marker of this version)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_text("weights")
    (folder / "config.yaml").write_text("seed: 1\n")
    if marker:
        outputs.write_run_marker(folder)
    return folder


def _an_export(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / outputs.EXPORT_MARKER).write_text("written by gpt2tasks export\n")
    (folder / "model.safetensors").write_text("weights")
    return folder


# ---- class 2: nothing deletes what gpt2tasks did not write ------------------------------------------
@pytest.fixture
def home_and_cwd(tmp_path, monkeypatch):
    """HOME and the working directory in tmp_path, each holding a file of the user's."""
    home, cwd = tmp_path / "home", tmp_path / "home" / "work" / "project"
    cwd.mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    (cwd / "data.csv").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    return home, cwd


@pytest.mark.parametrize("given", ["~", ".", "..", "/"])
def test_home_cwd_its_parents_and_the_root_are_never_replaced(home_and_cwd, given):
    home, cwd = home_and_cwd
    before = {"notes.txt": "mine", "work/project/data.csv": "mine"}
    assert outputs.protected_reason(Path(given)) is not None
    (cwd / outputs.RUN_MARKER).write_text("{}")  # even when marked (e.g. a run folder one cd'd into)
    with pytest.raises(UserError, match="overwrite=true would delete everything in it"):
        train(compose(f"output_dir='{given}'", "logger=none", *TINY, "overwrite=true"))
    with pytest.raises(UserError, match=r"out=.* is (the working directory|a folder above|the home folder|a filesystem"
                                        r" root).*Fix: choose a folder of its own"):
        export(ExportOptions(ckpt="missing.ckpt", out=given, overwrite=True))
    (cwd / outputs.RUN_MARKER).unlink()
    assert {k: v for k, v in _tree(home).items() if not k.startswith(".cache")} == before  # (matplotlib's cache)


def test_overwrite_replaces_only_a_gpt2tasks_run_or_export(tmp_path, cfg_factory):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    (mine / "config.yaml").write_text("not a run's")  # a run's file name among other files: still not a run
    with pytest.raises(UserError, match=r"output_dir=.*mine is not empty and was not written by gpt2tasks.*Fix"):
        train(cfg_factory(*TINY, "overwrite=true", output_dir=mine))
    with pytest.raises(UserError, match=r"out=.*mine is not empty and was not written by gpt2tasks"):
        export(ExportOptions(ckpt="missing.ckpt", out=str(mine), overwrite=True))
    assert _tree(mine) == {"config.yaml": "not a run's", "thesis.tex": "mine"}
    # a run is not an export, nor an export a run
    run, exported = _a_run(tmp_path / "run"), _an_export(tmp_path / "exported")
    assert outputs.is_run(run) and not outputs.is_export(run)
    assert outputs.is_export(exported) and not outputs.is_run(exported)
    with pytest.raises(UserError, match="not written by gpt2tasks"):
        export(ExportOptions(ckpt="missing.ckpt", out=str(run), overwrite=True))
    with pytest.raises(UserError, match="not written by gpt2tasks"):
        outputs.check_output_dir(exported, overwrite=True, resume=False)
    # versions before the markers: recognised by their layout
    legacy_run, legacy_export = _a_run(tmp_path / "old_run", marker=False), tmp_path / "old_export"
    legacy_export.mkdir()
    (legacy_export / "gpt2tasks.json").write_text("{}")
    assert outputs.is_run(legacy_run) and outputs.check_output_dir(legacy_run, overwrite=True, resume=False) is None
    assert outputs.is_export(legacy_export)


def test_symlinks_are_never_followed_into_a_deletion(tmp_path, cfg_factory):
    real_run = _a_run(tmp_path / "real_run")
    link = tmp_path / "link"
    link.symlink_to(real_run)
    before = _tree(real_run)
    with pytest.raises(UserError, match=r"output_dir=.*link is a symbolic link"):
        train(cfg_factory(*TINY, "overwrite=true", output_dir=link))
    real_export = _an_export(tmp_path / "real_export")
    (tmp_path / "export_link").symlink_to(real_export)
    with pytest.raises(UserError, match=r"out=.*export_link is a symbolic link"):
        export(ExportOptions(ckpt="missing.ckpt", out=str(tmp_path / "export_link"), overwrite=True))
    assert _tree(real_run) == before and (real_export / "model.safetensors").read_text() == "weights"
    assert link.is_symlink() and (tmp_path / "export_link").is_symlink()


def test_a_link_inside_a_replaced_folder_is_removed_as_a_link_and_its_target_untouched(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    run = _a_run(tmp_path / "run")
    (run / "plots").symlink_to(outside)  # a link where the run keeps a folder
    kept = outputs.set_aside(run)  # overwrite=true: the old run goes to run.previous ...
    assert (kept / "plots").is_symlink()
    outputs.remove_marked(kept, outputs.is_run, "run")  # ... and is deleted once the new run has a checkpoint
    exported = _an_export(tmp_path / "exported")
    (exported / "escape").symlink_to(outside)
    outputs.remove_marked(exported, outputs.is_export, "export")
    assert not kept.exists() and not exported.exists()
    assert _tree(outside) == {"precious.txt": "mine"}
    # a failed new run (put_back) unlinks what it wrote, links included, and the old run returns
    run2 = _a_run(tmp_path / "run2")
    kept2 = outputs.set_aside(run2)
    (run2 / "stray").symlink_to(outside)
    outputs.put_back(run2, kept2)
    assert not (run2 / "stray").is_symlink() and (run2 / "config.yaml").exists() and not kept2.exists()
    assert _tree(outside) == {"precious.txt": "mine"}


def test_staging_folders_are_removed_only_with_the_marker(tmp_path):
    out = tmp_path / "model"
    partial = tmp_path / f"model{'.partial-export'}"
    partial.mkdir()
    (partial / "thesis.tex").write_text("someone's folder of that name")
    with pytest.raises(UserError, match=r"model\.partial-export is in the way.*not a export folder gpt2tasks wrote"
                                        r".*Fix: move or delete it yourself"):
        clean_stale_staging(out)
    assert (partial / "thesis.tex").exists()
    (partial / outputs.EXPORT_MARKER).write_text("")  # what a killed export leaves: staging_dir marks it first
    clean_stale_staging(out)
    assert not partial.exists()
    # train's <run>.previous: same rule
    previous = outputs.previous_dir(tmp_path / "run")
    previous.mkdir()
    (previous / "thesis.tex").write_text("mine")
    with pytest.raises(UserError, match="in the way"):
        outputs.remove_marked(previous, outputs.is_run, "run")
    previous_link = outputs.previous_dir(tmp_path / "run2")
    previous_link.symlink_to(_a_run(tmp_path / "elsewhere"))
    with pytest.raises(UserError, match="in the way"):
        outputs.remove_marked(previous_link, outputs.is_run, "run")
    assert (previous / "thesis.tex").exists() and (tmp_path / "elsewhere" / "config.yaml").exists()


@pytest.mark.parametrize("command", ["eval", "predict", "combine"])
def test_output_files_are_replaced_only_with_overwrite_and_only_when_regular(command, tmp_path, cli):
    data = tmp_path / "in.csv"
    data.write_text("text\nhi\n")
    target = tmp_path / "target.txt"
    target.write_text("mine")
    key = "out" if command == "combine" else "output"

    def run(output: Path, *more: str):
        args = {"eval": ["ckpt=missing.ckpt"], "predict": ["ckpt=missing.ckpt", f"input={data}"],
                "combine": ["ckpt=a.ckpt", "ckpt=b.ckpt"]}[command]
        return cli(command, *args, f"{key}={output}", *more)

    done = run(target)  # eval overwrote an unrelated file without overwrite=true before
    assert done.returncode == 2 and f"{key}={target} already exists" in done.stderr and "overwrite=true" in done.stderr
    link = tmp_path / "link.json"
    link.symlink_to(target)
    done = run(link, "overwrite=true")
    assert done.returncode == 2 and "is a symbolic link" in done.stderr
    done = run(tmp_path, "overwrite=true")
    assert done.returncode == 2 and "is a folder" in done.stderr
    assert target.read_text() == "mine" and link.is_symlink()
    assert "Traceback" not in done.stderr


# ---- class 3: one run folder, one writer ------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gpt2tasks import outputs
    out = Path(sys.argv[1])
    with outputs.run_lock(out):
        outputs.write_run_marker(out)
        print("locked", flush=True)
        time.sleep(600)
""")


def test_a_second_train_into_a_live_run_is_refused_until_the_first_is_gone(tmp_path, cfg_factory):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        host = socket.gethostname()
        for extra in ((), ("overwrite=true",), ("resume=true",)):  # a new run, a replacement, a resume
            with pytest.raises(UserError, match=rf"output_dir=.*run is in use by pid {holder.pid} on host {host} "
                                                r"since .*Fix: wait for that run"):
                train(cfg_factory(*TINY, *extra, output_dir=out))
        assert [p.name for p in out.iterdir()] == [outputs.RUN_MARKER]  # nothing written, nothing set aside
    finally:
        holder.kill()  # SIGKILL: no cleanup runs; the kernel drops the lock with the process
        holder.wait()
    metrics = train(cfg_factory(*TINY, output_dir=out))
    assert "val/accuracy" in metrics and (out / "checkpoints" / "last.ckpt").is_file()
    assert f'"pid": {os.getpid()}' in (out / outputs.RUN_MARKER).read_text()  # the marker names the last writer


def test_ranks_other_than_zero_are_not_refused_by_their_own_runs_lock(tmp_path, cfg_factory, monkeypatch):
    from gpt2tasks import distributed

    out = tmp_path / "run"
    with outputs.run_lock(out):  # rank 0 of this run holds it
        monkeypatch.setattr(distributed, "is_rank_zero", lambda: False)  # a rank Lightning or torchrun started
        assert "val/accuracy" in train(cfg_factory(*TINY, output_dir=out))


def test_the_lock_survives_overwrite_moving_the_runs_files(tmp_path):
    run = _a_run(tmp_path / "run")
    with outputs.run_lock(run):
        kept = outputs.set_aside(run)  # what overwrite=true does while the new run starts
        with pytest.raises(UserError, match="is in use by"), outputs.run_lock(run):
            pass
        outputs.put_back(run, kept)
    with outputs.run_lock(run):  # released on exit
        pass
    with outputs.run_lock(tmp_path / "fresh"):
        pass
    assert not (tmp_path / "fresh").exists()  # made for the lock, removed with nothing in it


# ---- class 10: errors, not tracebacks -------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**32), "1e30", "abc", "true"])
def test_seeds_outside_numpys_range_are_refused(seed, cli, tmp_path):
    done = cli("train", f"seed={seed}", f"output_dir={tmp_path / 'run'}", "logger=none")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "must be an integer from 0 to 4294967295" in done.stderr and not (tmp_path / "run").exists()


def test_seed_bounds_are_accepted(cfg_factory):
    from gpt2tasks.config import validate_config

    for seed in (0, 2**32 - 1):
        validate_config(cfg_factory(f"seed={seed}"), training=True)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, cfg_factory, monkeypatch):
    import torch

    out, real_save, writes = tmp_path / "run", torch.save, []
    args = ("trainer.max_epochs=2", "data.max_train_samples=32", "data.max_eval_samples=16")

    def save(obj, f, *more, **kwargs):  # torch.save as resume.DirectCheckpointIO calls it
        if str(getattr(f, "name", "")).endswith(".ckpt.partial"):
            writes.append(f.name)
            if len(writes) >= 2:  # epoch 1 wrote best.ckpt (last.ckpt: a link to it); then the disk is full
                f.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *more, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(UserError, match=r"checkpoint .*\.ckpt could not be written \(No space left on device\); the "
                                        r"previous .*\.ckpt is kept.*Fix: free space"):
        train(cfg_factory(*args, output_dir=out))
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no .partial
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0  # epoch 1's, intact
    assert "val/accuracy" in train(cfg_factory(*args, "resume=true", output_dir=out))


def test_a_filesystem_error_anywhere_is_a_message_and_exit_2(capsys):
    from gpt2tasks.cli import run_and_report

    def write_on_a_full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/metrics.json")

    with pytest.raises(SystemExit) as stop:
        run_and_report(write_on_a_full_disk)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("gpt2tasks: error: /data/run/metrics.json: No space left on device.")
    assert "Fix: free space" in err
    with pytest.raises(KeyError):  # not the user's to fix: raised as it is
        run_and_report(lambda: {}["x"])


def _unwritable(folder: Path, monkeypatch) -> None:
    """`folder` read-only: chmod 0o500, or, as root (whom chmod does not stop), every file creation
    in it refused as the kernel would."""
    folder.chmod(0o500)
    if os.geteuid() == 0:
        import tempfile

        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_a_read_only_or_impossible_output_folder_is_said_up_front(tmp_path, cli, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    locked = tmp_path / "locked"
    locked.mkdir()
    _unwritable(locked, monkeypatch)
    try:
        for parent, why in ((a_file, "is a file, so no file can be written below it"),
                            (locked, r"cannot write in .*locked \(Permission denied\)")):
            done = cli("train", f"output_dir={parent / 'run'}", "logger=none")
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            assert re.search(rf"output_dir=.*{why}", done.stderr), done.stderr
            with pytest.raises(UserError, match=rf"out=.*{why}"):
                export(ExportOptions(ckpt="missing.ckpt", out=str(parent / "model")))
            done = cli("predict", "ckpt=missing.ckpt", f"input={a_file}", f"output={parent / 'p.jsonl'}")
            assert done.returncode == 2 and re.search(rf"output=.*{why}", done.stderr), done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "locked"] and not any(locked.iterdir())
    finally:
        locked.chmod(0o700)


SECRET = "hf_SeCrEt1234567890"


@pytest.mark.parametrize("args", [
    ("export", "ckpt=missing.ckpt", "out=x", f"hub.token={SECRET}"),  # not an option of export
    ("eval", "ckpt=missing.ckpt", f"data.api_key={SECRET}"),
    ("predict", "ckpt=missing.ckpt", "input=missing.csv", "output=p.jsonl", f"hub_token={SECRET}"),
    ("train", f"hub.token={SECRET}"),  # unknown key: the message names the key, not the value
    ("train", f"logger.wandb.api_key={SECRET}"),
    ("train", f"model.config_overrides.secret_key='{SECRET}"),  # Hydra's grammar error
    ("train", f"optim.lr={SECRET}", f"my_password={SECRET}"),  # a secret echoed through another key
])
def test_no_secret_from_the_command_line_is_echoed_in_an_error(args, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = cli(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert SECRET not in done.stderr + done.stdout and "gpt2tasks: error:" in done.stderr


def test_redact_hides_secret_environment_variables_and_key_value_pairs():
    env = {"HF_TOKEN": "hf_EnvSecret123", "WANDB_API_KEY": "0123456789abcdef", "PATH": "/usr/bin"}
    text = "token hf_EnvSecret123 wandb 0123456789abcdef path /usr/bin db_password=abc its keys: a, b"
    assert redact(text, argv=[], environ=env) == "token *** wandb *** path /usr/bin db_password=*** its keys: a, b"
    from gpt2tasks.errors import redact_args

    assert redact_args(["seed=1", "hub.token=x", "+logger.wandb.api_key=y"]) == [
        "seed=1", "hub.token=***", "+logger.wandb.api_key=***"]
