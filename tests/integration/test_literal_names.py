"""Values read from files are data (issue 28, class 1): a name in a checkpoint's run information or
an export's gpt2tasks.json that would become a path outside its folder (`../x.pth`, an absolute
path, `a/b`, `..`) is refused by every command that reads the file, with exit 2 naming the file and
the key, before anything is written.

The hostile files are plain data built here from the bundled old checkpoint (tests/data), so
nothing is trained.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from gpt2tasks.errors import UserError
from gpt2tasks.literal import check_file_name, literal_config, literal_yaml
from gpt2tasks.resources import DATA_DIR
from tests.conftest import REPO

OLD = REPO / "tests" / "data" / "run_ba90ff0"
INPUT = DATA_DIR / "sample_sentiment" / "validation.csv"
COMMANDS = ("eval", "predict", "export", "combine")
# {escape}: a file beside the command's temporary folder; {absolute}: a path of its own
HOSTILE = ("../{escape}", "{absolute}", "a/b", "..", ".", "", " ", "a\\b", "x\0y", "line\nbreak", "C:x.pth", "n" * 256)


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """Temporary folders are made under tmp_path/tmp, so `../name` from one of them is in tmp_path."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


def left_in_tmp(sandbox: Path) -> list[str]:
    """What the commands left in the temporary folder (torch's compiler cache is not theirs)."""
    return [p.name for p in (sandbox / "tmp").iterdir() if not p.name.startswith("torchinductor")]


def args_of(command: str, ckpt: Path, out: Path) -> list[str]:
    # the old run's data paths are gone: eval is given its eval set, so that it would get as far as writing
    return {"eval": [f"ckpt={ckpt}", f"output={out / 'metrics.json'}", f"data.validation_file={INPUT}"],
            "predict": [f"ckpt={ckpt}", f"input={INPUT}", f"output={out / 'p.jsonl'}"],
            "export": [f"ckpt={ckpt}", f"out={out / 'exported'}"],
            "combine": [f"ckpt={ckpt}", f"ckpt={ckpt}", f"out={out / 'combined.ckpt'}"]}[command]


def hostile_checkpoint(folder: Path, edit) -> Path:
    checkpoint = torch.load(OLD / "best.ckpt", map_location="cpu", weights_only=True)
    edit(checkpoint["gpt2tasks"])
    path = folder / "hostile.ckpt"
    torch.save(checkpoint, path)  # plain data: loads with weights_only=True
    return path


@pytest.mark.parametrize("name", HOSTILE)
def test_a_tokenizer_file_name_that_leaves_its_folder_is_refused_by_every_command(name, sandbox, cli):
    name = name.format(escape="x.pth", absolute=sandbox / "abs.pth")
    ckpt = hostile_checkpoint(sandbox, lambda info: info["tokenizer_files"].update({name: b"import os\n"}))
    out = sandbox / "out"
    for command in COMMANDS:
        result = cli(command, *args_of(command, ckpt, out))
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
        assert f"ckpt={ckpt}: run information: tokenizer_files: {name!r}" in result.stderr, result.stderr
        assert "cannot be used as a file name" in result.stderr and "Fix: pass an unmodified" in result.stderr
        # nothing written: not the escaping file, not the command's output, no temporary folder left
        assert not (sandbox / "x.pth").exists() and not (sandbox / "abs.pth").exists()
        assert not out.exists() and left_in_tmp(sandbox) == []


@pytest.mark.parametrize("key, edit", [
    ("config.data.extra_validation", lambda info: info["config"]["data"].update(
        extra_validation={"../../escaped": {"file": str(INPUT), "split": None}})),
    ("tasks", lambda info: info.update(tasks={"/abs": {}})),
])
def test_names_in_the_saved_config_that_become_file_names_are_refused(key, edit, sandbox, cli):
    """eval writes val_<name>_predictions.json beside output=; export writes a folder per task."""
    ckpt = hostile_checkpoint(sandbox, edit)
    out = sandbox / "deep" / "er" / "out"
    for command in COMMANDS:
        result = cli(command, *args_of(command, ckpt, out))
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
        assert f"ckpt={ckpt}: run information: {key}: " in result.stderr, result.stderr
    assert sorted(p.name for p in sandbox.iterdir()) == ["hostile.ckpt", "tmp"]


def test_a_hostile_export_info_is_refused(sandbox, cli):
    """An exported folder's gpt2tasks.json (predict reads it; the other commands take .ckpt files)."""
    folder = sandbox / "exported"
    folder.mkdir()
    info = json.loads((OLD / "export_gpt2tasks.json").read_text())
    info["config"]["data"]["extra_validation"] = {"../escaped": {"file": str(INPUT)}}
    (folder / "gpt2tasks.json").write_text(json.dumps(info))
    out = sandbox / "out"
    for command in COMMANDS:
        result = cli(command, *args_of(command, folder, out))
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
    result = cli("predict", *args_of("predict", folder, out))
    assert f"ckpt={folder}: gpt2tasks.json: config.data.extra_validation: '../escaped'" in result.stderr
    assert "Fix: export the run again" in result.stderr
    assert not out.exists() and sorted(p.name for p in sandbox.iterdir()) == ["exported", "tmp"]


def test_the_tokenizer_files_are_checked_where_they_become_paths(sandbox):
    """build.tokenizer_from_files checks again, whoever calls it."""
    from gpt2tasks.build import tokenizer_from_files

    with pytest.raises(UserError, match=r"tokenizer_files: '\.\./x\.pth' holds a path separator"):
        tokenizer_from_files({"../x.pth": b"import os\n"})
    assert not (sandbox / "x.pth").exists()


def test_what_a_file_name_may_be():
    for name in ("tokenizer.json", "vocab.json", "val_x", "ünï €.txt", "a..b", "-x", "$x^$"):
        assert check_file_name(name, "here", "fix") == name
    for name, problem in (("..", "names a folder itself or its parent"), ("a/b", "holds a path separator"),
                          ("a\\b", "holds a path separator"), ("", "is empty"), ("/x", "holds a path separator"),
                          ("C:x", "is an absolute path"), ("x\0", "holds a control character"),
                          (3, "is a int, not text"), ("é" * 128, "is longer than 255 bytes")):
        with pytest.raises(UserError, match=f"^here: .* {problem}, so it cannot be used as a file name.*Fix: fix$"):
            check_file_name(name, "here", "fix")


def test_an_extra_validation_name_is_checked_in_the_training_config(cfg_factory):
    from omegaconf import open_dict

    from gpt2tasks.config import validate_config

    cfg = cfg_factory("task=sample_sentiment")
    with open_dict(cfg):
        cfg.data.extra_validation = {"../up": {"file": str(INPUT)}}
    with pytest.raises(UserError, match=r"data\.extra_validation\.\.\./up: the name '\.\./up' holds a path separator"):
        validate_config(cfg, training=True)


# ---- a saved config's strings stay literal ---------------------------------------------------------
LITERAL = ["${x}", "${oc.env:HOME}", "a\\${x}", "\\\\${y}", "${", "\\", "c:\\path\\", "$x^$", "plain"]


def test_saved_values_read_back_as_written():
    """What literal_config / literal_yaml keep: every string exactly, none an interpolation."""
    from omegaconf import OmegaConf

    values = {"task": {"label_names": LITERAL}, "data": {"text_column": "${data.label_column}"}}
    cfg = literal_config(values)
    assert OmegaConf.to_container(cfg, resolve=True) == values
    assert OmegaConf.to_container(OmegaConf.create(literal_yaml(cfg)), resolve=True) == values


def test_eval_reads_a_checkpoint_whose_config_holds_dollar_braces(sandbox):
    """A saved config's "${...}" (here a label name) is text: eval neither resolves nor fails on it."""
    from gpt2tasks.evaluation import evaluate_checkpoint

    ckpt = hostile_checkpoint(sandbox, lambda info: info["config"]["task"].update(label_names=["${oc.env:HOME}", "${x}"]))
    data = str(shutil.copy(INPUT, sandbox / "val.csv"))
    expected = json.loads((OLD / "metrics.json").read_text())
    # a named eval file is scored whole unless the command limits it: the old run scored its first 16 rows
    scored = evaluate_checkpoint(str(ckpt), [f"data.validation_file={data}", "data.max_eval_samples=16"])
    assert scored == pytest.approx(expected, abs=1e-6)


def test_tokenizer_files_that_make_no_tokenizer_are_one_message(sandbox, cli):
    def edit(info):
        info["tokenizer_files"]["tokenizer.json"] = b"{not json"
        info["tokenizer_files"]["tokenizer_config.json"] = b'{"auto_map": {"AutoTokenizer": ["x.X", null]}}'

    ckpt = hostile_checkpoint(sandbox, edit)
    result = cli("predict", *args_of("predict", ckpt, sandbox / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the checkpoint's tokenizer_files do not make a tokenizer" in result.stderr, result.stderr
    assert not (sandbox / "out").exists() and left_in_tmp(sandbox) == []


@pytest.mark.parametrize("edit", [
    lambda info: info.update(kind="os.system"),
    lambda info: info["config"]["task"].update(kind=["seq_cls"]),
])
def test_a_task_kind_gpt2tasks_does_not_have_is_refused_by_every_command(edit, sandbox, cli):
    """A kind picks the classes that build the model: only the registry's names are accepted, and an
    unknown one is one message (it was a KeyError traceback in export and combine)."""
    ckpt = hostile_checkpoint(sandbox, edit)
    out = sandbox / "out"
    for command in COMMANDS:
        result = cli(command, *args_of(command, ckpt, out))
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
        assert "names the task kind" in result.stderr and "Fix: pass an unmodified" in result.stderr
        assert not out.exists() and left_in_tmp(sandbox) == []
