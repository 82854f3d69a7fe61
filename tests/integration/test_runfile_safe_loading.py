"""Loading a checkpoint never runs code, a run is evaluable from anywhere with only the files eval
reads, and eval / predict / export / combine refuse bad input with one message (exit 2) before any
work, leaving nothing behind.

One tiny run, trained once for the module from a folder of its own with *relative* data paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from gpt2tasks.errors import UserError
from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.runfile import load_checkpoint
from gpt2tasks.resources import DATA_DIR
from gpt2tasks.train import train
from tests.conftest import compose

COMMANDS = ("eval", "predict", "export", "combine")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A run trained in folder A with data.*_file relative to A: its checkpoint, metrics and files."""
    home = tmp_path_factory.mktemp("A")
    (home / "data").mkdir()
    for name in ("train.csv", "validation.csv"):
        shutil.copy(DATA_DIR / "sample_sentiment" / name, home / "data" / name)
    with contextlib.chdir(home):
        metrics = train(compose("task=sample_sentiment", "output_dir=run", "logger=none",
                                "trainer.enable_progress_bar=false", "trainer.max_epochs=1",
                                "trainer.limit_train_batches=3", "data.max_train_samples=48",
                                "data.max_eval_samples=12", "data.batch_size=8", "data.train_file=data/train.csv",
                                "data.validation_file=data/validation.csv", "data.test_file=null"))
    return {"home": home, "ckpt": home / "run" / "checkpoints" / "best.ckpt", "metrics": metrics,
            "input": home / "data" / "validation.csv"}


class Payload:
    """What an attacker puts in a checkpoint: unpickling it calls open(marker, "w")."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def payload(run, tmp_path) -> tuple[Path, Path]:
    """(a real gpt2tasks checkpoint carrying a pickle payload, the file the payload creates)."""
    marker = tmp_path / "payload-ran"
    checkpoint = torch.load(run["ckpt"], map_location="cpu", weights_only=True)
    checkpoint["gpt2tasks"]["note"] = Payload(marker)
    path = tmp_path / "shared.ckpt"
    torch.save(checkpoint, path)
    assert not marker.exists()
    return path, marker


def cli(command: str, *args: str, capsys) -> tuple[int, str, str]:
    """`python -m gpt2tasks <command> <args>` in-process: (exit code, stdout, stderr)."""
    from gpt2tasks.__main__ import main

    capsys.readouterr()
    try:
        main([command, *args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def command_args(command: str, ckpt: Path, run: dict, tmp_path: Path) -> list[str]:
    """Arguments that make `command` load `ckpt` (and write its output under tmp_path)."""
    return {"eval": [f"ckpt={ckpt}"],
            "predict": [f"ckpt={ckpt}", f"input={run['input']}", f"output={tmp_path / 'p.jsonl'}"],
            "export": [f"ckpt={ckpt}", f"out={tmp_path / 'exported'}"],
            "combine": [f"ckpt={ckpt}", f"ckpt={ckpt}", f"out={tmp_path / 'combined.ckpt'}"]}[command]


def written(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()} - {"shared.ckpt"}


# ---- 1. a checkpoint never runs code -----------------------------------------------------------
def test_every_checkpoint_of_a_run_is_plain_data(run):
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(run["ckpt"].parent / name, map_location="cpu", weights_only=True)
        assert {"gpt2tasks", "state_dict", "optimizer_states", "callbacks"} <= set(checkpoint)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_pickle_payload_is_refused_and_never_runs(command, run, payload, tmp_path, capsys):
    ckpt, marker = payload
    code, _, err = cli(command, *command_args(command, ckpt, run, tmp_path), capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert "holds Python objects besides tensors and plain data (it names io.open)" in err
    assert "can run code" in err and "trust_checkpoint=true" in err
    assert not marker.exists()  # the payload did not run
    assert written(tmp_path) == set()  # and nothing was written


@pytest.mark.parametrize("command", COMMANDS)
def test_trust_checkpoint_true_loads_it(command, run, payload, tmp_path, capsys):
    ckpt, marker = payload
    code, out, err = cli(command, *command_args(command, ckpt, run, tmp_path), "trust_checkpoint=true", capsys=capsys)
    assert marker.exists()  # the full unpickler ran what the file holds: the user's decision
    assert "Traceback" not in err
    if command == "combine":  # loaded, then refused for what it is: a single-task run
        assert code == 2 and "only multi-task runs with per-task LoRA adapters" in err
    else:
        assert code == 0, err[-2000:]
    if command == "eval":
        assert json.loads(out[out.index("{"):]) == pytest.approx(run["metrics"])
    if command == "predict":
        assert len((tmp_path / "p.jsonl").read_text().splitlines()) == len(run["input"].read_text().splitlines()) - 1
    if command == "export":
        assert (tmp_path / "exported" / "model.safetensors").is_file()


def test_resume_and_final_evaluation_load_weights_only(run, tmp_path, monkeypatch):
    """Lightning's own loading (fit/validate/test ckpt_path=) is asked for weights_only=True, so an
    environment that turns torch's default off changes nothing."""
    shutil.copytree(run["home"] / "run", tmp_path / "run")
    seen = []
    original = torch.load

    def load(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setattr(torch, "load", load)
    with contextlib.chdir(run["home"]):
        train(compose("task=sample_sentiment", f"output_dir={tmp_path / 'run'}", "resume=true", "logger=none",
                      "trainer.enable_progress_bar=false", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
                      "data.max_train_samples=48", "data.max_eval_samples=12", "data.batch_size=8",
                      "data.train_file=data/train.csv", "data.validation_file=data/validation.csv",
                      "data.test_file=null"))
    assert len(seen) >= 2 and all(value is True for value in seen)  # the resume and the final evaluation


@pytest.mark.parametrize("content, message", [
    (None, "not a readable PyTorch checkpoint (RuntimeError; the file may be truncated"),  # half of a real one
    (b"", "not a readable PyTorch checkpoint (EOFError"),
    (b"text,label\ngood,1\n", "not a readable PyTorch checkpoint"),
    ("module", "it names torch.nn.modules.linear.Linear"),
    ("list", "not written by gpt2tasks"),
])
def test_corrupt_and_foreign_files_are_refused_by_every_command(content, message, run, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    if content is None:
        data = run["ckpt"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif content == "module":
        torch.save({"model": torch.nn.Linear(2, 2)}, bad)
    elif content == "list":
        torch.save([1, 2, 3], bad)
    else:
        bad.write_bytes(content)
    for command in COMMANDS:
        code, _, err = cli(command, *command_args(command, bad, run, tmp_path), capsys=capsys)
        assert code == 2 and message in err and "Traceback" not in err, (command, err)
    assert {p.name for p in tmp_path.iterdir()} == {"bad.ckpt"}


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(gpt2tasks={}), "its run information is incomplete (no config, tokenizer_files, tasks)"),
    (lambda c: c["gpt2tasks"]["tasks"]["sample_sentiment"].pop("label_space"),
     "its run information is incomplete (no tasks.sample_sentiment.label_space)"),
    (lambda c: c.update(state_dict={}), "weights do not fit the model its run describes"),
    (lambda c: c["state_dict"].update({"model.score.weight": torch.zeros(2, 1)}),
     "weights do not fit the model its run describes"),
])
def test_edited_checkpoints_are_refused_by_every_command(edit, message, run, tmp_path, capsys):
    checkpoint = torch.load(run["ckpt"], map_location="cpu", weights_only=True)
    edit(checkpoint)
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    for command in ("eval", "predict", "export"):
        code, _, err = cli(command, *command_args(command, bad, run, tmp_path), capsys=capsys)
        assert code == 2 and message in err and "Traceback" not in err, (command, err)
    assert {p.name for p in tmp_path.iterdir()} == {"bad.ckpt"}


def test_settings_lightning_refuses_are_one_message(run, tmp_path, capsys):
    for command in ("eval", "predict"):
        args = command_args(command, run["ckpt"], run, tmp_path)
        code, _, err = cli(command, *args, "trainer.accelerator=tpu", capsys=capsys)  # no TPU anywhere here
        assert code == 2 and "lightning.Trainer refused the trainer settings" in err and "trainer.accelerator" in err
        assert "Traceback" not in err
    for args, message in ((["ckpt="], "ckpt= is empty"),
                          ([f"ckpt={run['ckpt']}", f"input={run['input']}", "output="], "output= is empty")):
        code, _, err = cli("eval" if len(args) == 1 else "predict", *args, capsys=capsys)
        assert code == 2 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_deepspeed_folder_needs_trust(tmp_path, monkeypatch):
    """Its shards are full pickles (Lightning's converter loads them with weights_only=False)."""
    from gpt2tasks import strategies

    folder = tmp_path / "best.ckpt"
    folder.mkdir()
    (folder / "latest").write_text("checkpoint")
    monkeypatch.setattr(strategies, "require_deepspeed", lambda what: None)  # as if deepspeed were installed
    with pytest.raises(UserError, match="DeepSpeed checkpoint folder: joining its shards .* trust_checkpoint=true"):
        load_checkpoint(str(folder))


def test_a_folder_or_a_missing_file_as_ckpt(run, tmp_path, capsys):
    for command in ("eval", "export", "combine"):
        code, _, err = cli(command, *command_args(command, tmp_path, run, tmp_path), capsys=capsys)
        assert code == 2 and f"ckpt={tmp_path} is a folder, not a checkpoint file" in err, err
        code, _, err = cli(command, *command_args(command, tmp_path / "nope.ckpt", run, tmp_path), capsys=capsys)
        assert code == 2 and "no such file" in err, err
    assert list(tmp_path.iterdir()) == []


# ---- 7. eval from anywhere, with only the files it reads --------------------------------------
def test_the_saved_config_holds_absolute_data_paths(run):
    home = run["home"]
    saved = yaml.safe_load((home / "run" / "config.yaml").read_text())["data"]
    stored = load_checkpoint(str(run["ckpt"]))["gpt2tasks"]["config"]["data"]
    for data in (saved, stored):
        assert data["train_file"] == str(home / "data" / "train.csv")
        assert data["validation_file"] == str(home / "data" / "validation.csv")


def test_eval_from_another_directory_without_the_training_file(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # B: nothing of the run here
    assert evaluate_checkpoint(str(run["ckpt"])) == pytest.approx(run["metrics"])
    # the training file is never read: missing, or overridden with a missing file, eval still works
    assert evaluate_checkpoint(str(run["ckpt"]), ["data.train_file=gone.csv"]) == pytest.approx(run["metrics"])
    train_file = run["home"] / "data" / "train.csv"
    train_file.rename(tmp_path / "aside.csv")
    try:
        assert evaluate_checkpoint(str(run["ckpt"])) == pytest.approx(run["metrics"])
    finally:
        (tmp_path / "aside.csv").rename(train_file)


def test_multitask_task_files_are_made_absolute(tmp_path, monkeypatch):
    from gpt2tasks import multitask
    from gpt2tasks.build import absolute_data_paths

    monkeypatch.chdir(tmp_path)
    cfg = compose("task=multitask", "multitask.tasks=[a:text_classification,sample_ner]",
                  *multitask.cli_overrides(["tasks.a.data.train_file=d/train.csv", "tasks.a.data.validation_file=../v.csv"]))
    multitask.expand(cfg)
    absolute_data_paths(cfg)
    assert cfg.tasks.a.data.train_file == str(tmp_path / "d" / "train.csv")
    assert cfg.tasks.a.data.validation_file == str(tmp_path.parent / "v.csv")
    assert cfg.tasks.sample_ner.data.train_file == str(DATA_DIR / "sample_ner" / "train.jsonl")


# ---- 10. outputs checked first, visible staging, usage errors --------------------------------
def test_unwritable_outputs_are_refused_before_loading_anything(run, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    missing_ckpt = tmp_path / "never-read.ckpt"  # the output is checked first: this is never looked at
    cases = [
        ("predict", [f"input={run['input']}", f"output={a_file / 'p.jsonl'}"], "is a file, so no file can be written"),
        ("predict", [f"input={run['input']}", f"output={tmp_path}"], "is a folder"),
        ("eval", [f"output={tmp_path}"], "is a folder"),
        ("eval", [f"output={a_file / 'metrics.json'}"], "is a file, so no file can be written"),
        ("export", [f"out={a_file / 'export'}"], "is a file, so no file can be written"),
        ("combine", [f"ckpt={missing_ckpt}", f"out={a_file / 'c.ckpt'}"], "is a file, so no file can be written"),
    ]
    for command, args, message in cases:
        code, _, err = cli(command, f"ckpt={missing_ckpt}", *args, capsys=capsys)
        assert code == 2 and message in err and "Traceback" not in err, (command, err)
    assert {p.name for p in tmp_path.iterdir()} == {"file.txt"}


def test_a_folder_where_files_cannot_be_created_is_refused(tmp_path, monkeypatch):
    """A read-only folder (root may write anywhere, so the refusal is simulated at the one place
    the check writes: its probe file)."""
    import tempfile

    from gpt2tasks.outputs import check_writable

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(UserError, match=r"output=.*: cannot write in .* \(Permission denied\)"):
        check_writable(tmp_path / "new" / "p.jsonl", "output")
    assert list(tmp_path.iterdir()) == []


def test_export_stages_visibly_and_cleans_up_after_a_killed_export(run, tmp_path, capsys):
    out = tmp_path / "model"
    # what an export killed mid-way leaves: its staging folder, marked as gpt2tasks' first thing
    stale = tmp_path / "model.partial-export"
    stale.mkdir()
    (stale / ".gpt2tasks-export").write_text("")
    (stale / "config.json").write_text("{half")
    code, _, err = cli("export", f"ckpt={run['ckpt']}", f"out={out}", capsys=capsys)
    assert code == 0, err[-2000:]
    assert {p.name for p in tmp_path.iterdir()} == {"model"} and (out / "model.safetensors").is_file()
    # killed while replacing (overwrite=true): the previous export was moved aside, out is gone
    out.rename(tmp_path / "model.previous-export")
    (tmp_path / "model.partial-export").mkdir()
    code, _, err = cli("export", f"ckpt={run['ckpt']}", f"out={out}", capsys=capsys)
    assert code == 2 and "is not empty" in err  # the previous export is back, and kept without overwrite=true
    assert {p.name for p in tmp_path.iterdir()} == {"model"} and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("command", COMMANDS)
def test_no_arguments_is_a_usage_error_and_help_is_not(command, capsys):
    code, out, err = cli(command, capsys=capsys)
    assert code == 2 and out == "" and err.startswith(f"usage: python -m gpt2tasks {command}")
    code, out, err = cli(command, "--help", capsys=capsys)
    assert code == 0 and out.startswith(f"usage: python -m gpt2tasks {command}") and "trust_checkpoint" in out


# ---- 9. the Hub offline: a quick, plain refusal -----------------------------------------------
@pytest.fixture
def silent_hub(monkeypatch):
    """An endpoint that accepts connections and never answers, with offline mode off: without the
    probe's timeout, huggingface_hub would wait and retry for minutes."""
    from huggingface_hub import constants

    from gpt2tasks import backbone as hub

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    import datasets

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub, "HUB_PROBE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(hub, "_hub_answers", {})
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    yield endpoint
    server.close()


def test_a_hub_id_fails_fast_when_the_hub_does_not_answer(silent_hub, cfg_factory):
    from gpt2tasks import backbone as hub

    cfg = cfg_factory("model.name_or_path=someone/no-such-model", "trainer.max_steps=1")
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        train(cfg)
    assert time.monotonic() - start < 5  # the probe's 1 s, not minutes of retries
    message = str(err.value)
    assert "model.name_or_path=someone/no-such-model" in message and "the Hub cannot be reached" in message
    assert "`hf download someone/no-such-model --local-dir <dir>`" in message
    assert hub._hub_answers == {silent_hub: False}  # asked once
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the rest of the process works offline, as with HF_HUB_OFFLINE=1


def test_download_command_follows_the_installed_huggingface_hub(monkeypatch):
    from importlib import metadata

    from gpt2tasks.backbone import download_command

    class Dist:
        def __init__(self, *scripts):
            self.entry_points = [metadata.EntryPoint(s, "x:y", "console_scripts") for s in scripts]

    monkeypatch.setattr(metadata, "distribution", lambda name: Dist("hf", "tiny-agents"))
    assert download_command("gpt2") == "hf download gpt2 --local-dir <dir>"
    monkeypatch.setattr(metadata, "distribution", lambda name: Dist("huggingface-cli"))  # huggingface_hub < 1.0
    assert download_command("gpt2") == "huggingface-cli download gpt2 --local-dir <dir>"


def test_a_missing_local_model_dir_is_not_sent_to_the_hub(silent_hub, cfg_factory, tmp_path):
    from gpt2tasks import backbone as hub

    with pytest.raises(UserError, match="no such directory"):
        train(cfg_factory(f"model.name_or_path={tmp_path / 'no' / 'model'}", "trainer.max_steps=1"))
    assert hub._hub_answers == {}  # a path is never looked up on the Hub
    assert os.listdir(tmp_path) == []
