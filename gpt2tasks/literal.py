"""Values read from files are data, never paths, code or markup: the shared checks.

A checkpoint, an export's gpt2tasks.json, a saved config or a data file is a file someone else may
have written. Two things here keep what it holds from acting as anything but data:
- `check_file_name`: where a name it holds becomes a file or folder name (the tokenizer's files,
  an eval set's predictions file, a task's export folder), a name such as
  `../../site-packages/x.pth` or `/etc/x` would make gpt2tasks write outside the folder it means
  to. Every such name is checked first, so that it can only ever name one entry inside its
  folder; a bad one is a UserError naming the file and the key, raised before anything is written.
- `literal_config` / `literal_yaml`: a saved config's strings (label names, columns, paths) read
  back by OmegaConf stay text, never interpolations.
Text that libraries parse as markup is kept literal where it is drawn or written: plots.py
(matplotlib's mathtext), export.py (the model card's markdown; its YAML goes through yaml.safe_dump).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PureWindowsPath
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gpt2tasks.errors import UserError

# Most file systems allow 255 bytes per name; a longer one fails late, half-way through writing.
MAX_NAME_BYTES = 255


def file_name_problem(name: Any) -> str | None:
    """Why `name` cannot be one plain file name inside a folder, or None when it can."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    if not name.strip():
        return "is empty"
    if name in (".", ".."):
        return "names a folder itself or its parent"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if "\0" in name or any(ord(c) < 32 for c in name):
        return "holds a control character"
    if PureWindowsPath(name).drive or PureWindowsPath(name).is_absolute():
        return "is an absolute path"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_file_name(name: Any, where: str, fix: str) -> str:
    """`name` when it is one plain file name; otherwise a UserError: `where` names the file and key
    it came from (e.g. "ckpt=run.ckpt: tokenizer_files"), `fix` says what to do."""
    problem = file_name_problem(name)
    if problem:
        raise UserError(f"{where}: {name!r} {problem}, so it cannot be used as a file name (names read from a "
                        f"file are used only inside the folder they belong to). Fix: {fix}")
    return name


def check_file_names(named: Iterator[tuple[str, Any]], where: str, fix: str) -> None:
    """`check_file_name` for every (key, name) pair; `where` names the file the pairs were read from."""
    for key, name in named:
        check_file_name(name, f"{where}: {key}", fix)


def config_file_names(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key, name) for every name in a run config (a plain dict, as saved) that becomes part of a
    file name: data.extra_validation.<name> (eval writes val_<name>_predictions.json) and a
    multi-task run's tasks.<name> (export writes a folder per task), each task's own too."""
    if not isinstance(config, dict):
        return
    data = config.get("data")
    extra = data.get("extra_validation") if isinstance(data, dict) else None
    for name in extra if isinstance(extra, dict) else ():
        yield f"{prefix}data.extra_validation", name
    tasks = config.get("tasks")
    for name, section in (tasks.items() if isinstance(tasks, dict) else ()):
        yield f"{prefix}tasks", name
        yield from config_file_names(section, f"{prefix}tasks.{name}.")


# ---- resolved configs, kept literal ------------------------------------------------------------
# A config is saved resolved (config.yaml, a checkpoint's run information, an export's
# gpt2tasks.json): its strings are final values, and some are data (label names, column names,
# paths) that may hold "${": read back with a plain OmegaConf.create, "${x}" would be resolved as
# an interpolation (an error, or another key's value). `literal_config` escapes them so every
# string reads back exactly as saved; `literal_yaml` writes a config so that OmegaConf reads it back so.
_INTERPOLATION = re.compile(r"(\\*)\$\{")


def _escaped(value: Any) -> Any:
    if isinstance(value, str):  # backslashes before "${" doubled, then "${" escaped: OmegaConf's grammar
        return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def literal_config(values: dict) -> DictConfig:
    """An OmegaConf config of resolved `values` (plain data) whose strings are literal text."""
    return OmegaConf.create(_escaped(values))


def literal_yaml(cfg: DictConfig) -> str:
    """`cfg` resolved, as YAML that OmegaConf.load reads back to the same values."""
    return OmegaConf.to_yaml(literal_config(OmegaConf.to_container(cfg, resolve=True)))
