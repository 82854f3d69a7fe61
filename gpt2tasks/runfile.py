"""What a run leaves behind, read back: its checkpoint, the config saved in it with a command's
overrides on top, and the `gpt2tasks.json` of an exported folder.

Every reader of a checkpoint (eval, predict, export, combine, and train's resume) loads it here, as
plain data: torch's weights-only unpickler builds nothing but tensors and plain Python values, so a
file cannot run code. Everything gpt2tasks stores is such data; a file holding other objects is
refused unless the user opts in with trust_checkpoint=true.

A checkpoint's run information (`ckpt["gpt2tasks"]`, see build.build_for_training) has one layout
for every run (multitask.run_info): layout, config (the resolved run config), tokenizer_files,
new_token_ids, frozen_base_from, command, and tasks.<name> = {kind, config, hf_config, label_space}.
A checkpoint of an older layout is converted as it is read (multitask.current_layout).
An export's gpt2tasks.json = {"format": 1, "kind", "adapter", "config", "label_space",
"new_token_ids", "command"}: what predict needs to rebuild the export's preprocessing.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# torch is imported where a file is read: `eval --help` and `export --help` answer without it.
from gpt2tasks.errors import UserError
from gpt2tasks.literal import check_file_names, config_file_names, literal_config, literal_yaml
from gpt2tasks.multitask import DATA_FILES, MULTITASK, TASK_INFO_KEYS, current_layout

log = logging.getLogger(__name__)

# The opt-in key of eval / predict / export / combine for a checkpoint that needs a full unpickler.
TRUST_KEY = "trust_checkpoint"
# What every gpt2tasks checkpoint's run information holds (multitask.run_info), and each of its tasks.
RUN_INFO_KEYS = ("config", "tokenizer_files", "tasks")


# ---- checkpoints ------------------------------------------------------------------------------
def load_checkpoint(path: str, trust: bool = False) -> dict[str, Any]:
    """A gpt2tasks checkpoint (`ckpt=path`) as plain data, its run information checked. A file
    holding other objects is refused, unless `trust` (trust_checkpoint=true) allows the full unpickler."""
    if not str(path).strip():
        raise UserError("ckpt= is empty. Fix: pass a checkpoint written by `gpt2tasks train`, e.g. "
                        "ckpt=outputs/<task>/<time>/checkpoints/best.ckpt.")
    ckpt_path = Path(path).expanduser()
    if ckpt_path.is_dir() and (ckpt_path / "latest").is_file():  # DeepSpeed writes a folder
        return _consolidate_deepspeed(ckpt_path, path, trust)
    if ckpt_path.is_dir():
        raise UserError(f"ckpt={path} is a folder, not a checkpoint file. Fix: pass the .ckpt file inside it, "
                        "e.g. ckpt=<run>/checkpoints/best.ckpt.")
    if not ckpt_path.is_file():
        raise UserError(f"ckpt={path}: no such file. Fix: pass a checkpoint written by `gpt2tasks train`, "
                        "e.g. ckpt=outputs/<task>/<time>/checkpoints/best.ckpt.")
    try:
        ckpt = _torch_load(ckpt_path)
    except pickle.UnpicklingError as exc:
        if not str(exc).startswith("Weights only load failed"):
            raise _unreadable(path, exc) from None
        if not trust:
            raise UserError(_untrusted_message(path, exc)) from None
        log.warning("ckpt=%s: loading with the full unpickler (%s=true): it can run code stored in the file.",
                    path, TRUST_KEY)
        try:
            ckpt = _torch_load(ckpt_path, weights_only=False)
        except Exception as full_exc:  # noqa: BLE001 -- whatever the file holds, it is not a checkpoint
            raise _unreadable(path, full_exc) from None
    except PermissionError:
        raise UserError(f"ckpt={path}: permission denied. Fix: make the file readable (chmod u+r).") from None
    except Exception as exc:  # noqa: BLE001 -- truncated zip, empty file, text, ...: all unreadable
        raise _unreadable(path, exc) from None
    _check_run_info(path, current_layout(ckpt))
    return ckpt


def peek(path: Path, source: str) -> dict[str, Any]:
    """A training checkpoint to resume from (`source` names the key that pointed at it, e.g.
    "ckpt_path=..."), tensors memory-mapped rather than read. Lightning loads it again itself."""
    if path.is_dir():  # a DeepSpeed checkpoint folder: nothing cheap to read; Lightning checks it
        return {}
    try:
        ckpt = _torch_load(path, mmap=True)
    except Exception as exc:  # not a zip, truncated, an unsafe pickle, ...
        raise UserError(f"{source} cannot be read as a training checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''}). Fix: use a .ckpt file written "
                        "by `python -m gpt2tasks train` (checkpoints/last.ckpt or best.ckpt).") from None
    if not isinstance(ckpt, dict) or "gpt2tasks" not in ckpt or "loops" not in ckpt:
        raise UserError(f"{source} is not a gpt2tasks training checkpoint (no training state in it: an "
                        "exported model or a weights-only file cannot resume training). Fix: use "
                        "checkpoints/last.ckpt or best.ckpt of a `python -m gpt2tasks train` run.")
    return current_layout(ckpt)


def saved_step(path: str | Path) -> int | None:
    """The optimizer step a training checkpoint holds (its `global_step`), its tensors memory-mapped,
    not read; None for a DeepSpeed checkpoint folder or a file that cannot be read."""
    try:
        return int(_torch_load(Path(path), mmap=True)["global_step"])
    except Exception:
        return None


def _torch_load(path: Path, weights_only: bool = True, mmap: bool = False) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)


def _check_run_info(path: str, ckpt: Any) -> None:
    """A checkpoint of some other program, or one whose run information was edited, is refused
    here rather than failing half-way through building the model."""
    if not isinstance(ckpt, dict) or "gpt2tasks" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"ckpt={path}: this checkpoint was not written by gpt2tasks (no run information). "
                        "Fix: pass checkpoints/best.ckpt or last.ckpt from a `gpt2tasks train` run.")
    info = ckpt["gpt2tasks"]
    missing = [key for key in RUN_INFO_KEYS if not isinstance(info, dict) or key not in info]
    if not missing and (not isinstance(info["tasks"], dict) or not info["tasks"]):
        missing = ["tasks"]
    if missing or not isinstance(ckpt["state_dict"], dict):
        raise _incomplete(path, missing or ["state_dict"])
    files = info["tokenizer_files"]
    if not isinstance(files, dict) or not all(isinstance(content, bytes) for content in files.values()):
        raise UserError(f"ckpt={path}: its run information's tokenizer_files is not a table of file names and "
                        f"contents. Fix: {UNMODIFIED}")
    check_file_names(run_info_file_names(info), f"ckpt={path}: run information", UNMODIFIED)
    missing = [f"tasks.{name}.{key}" for name, task in info["tasks"].items() for key in TASK_INFO_KEYS
               if not isinstance(task, dict) or key not in task]
    if missing:
        raise _incomplete(path, missing)
    unknown = sorted({repr(kind) for kind in run_info_kinds(info)} - {repr(k) for k in known_kinds()})
    if unknown:  # a kind picks the classes that build the model: only gpt2tasks' own, never a name from a file
        raise UserError(f"ckpt={path}: its run information names the task kind {', '.join(unknown)}, which gpt2tasks "
                        f"does not have (kinds: {', '.join(known_kinds())}). Fix: {UNMODIFIED}")


def _incomplete(path: str, missing: list[str]) -> UserError:
    return UserError(f"ckpt={path}: its run information is incomplete (no {', '.join(missing)}), so the model cannot "
                     "be rebuilt. Fix: pass an unmodified checkpoints/best.ckpt or last.ckpt of a `gpt2tasks train` run.")


def known_kinds() -> list[str]:
    from gpt2tasks.tasks import KINDS

    return [*KINDS, MULTITASK]


def run_info_kinds(info: dict) -> Iterator[Any]:
    """Every task kind a checkpoint's run information names: its config's task.kind, and each
    task's (tasks.<name>.kind)."""
    config = info["config"] if isinstance(info["config"], dict) else {}
    task = config.get("task")
    if isinstance(task, dict) and "kind" in task:
        yield task["kind"]
    for entry in info["tasks"].values():
        yield entry["kind"]


UNMODIFIED = "pass an unmodified checkpoints/best.ckpt or last.ckpt of a `gpt2tasks train` run."


def run_info_file_names(info: dict) -> Iterator[tuple[str, Any]]:
    """(key, name) for every name of a checkpoint's run information that becomes part of a file or
    folder name: the tokenizer's files (written to a folder to be loaded), the tasks (an export
    folder each), and the names its configs give files (names.config_file_names)."""
    for name in info["tokenizer_files"]:
        yield "tokenizer_files", name
    yield from config_file_names(info["config"], "config.")
    tasks = info.get("tasks")
    for name, task in (tasks.items() if isinstance(tasks, dict) else ()):
        yield "tasks", name
        yield from config_file_names(task.get("config") if isinstance(task, dict) else None, f"tasks.{name}.config.")


def _unreadable(path: str, exc: Exception) -> UserError:
    return UserError(f"ckpt={path}: not a readable PyTorch checkpoint ({type(exc).__name__}; the file may be "
                     "truncated or not a checkpoint). Fix: pass a .ckpt file written by `gpt2tasks train` "
                     "(checkpoints/best.ckpt or last.ckpt), copied completely.")


def _untrusted_message(path: str, exc: Exception) -> str:
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
    what = f" (it names {found.group(1)})" if found else ""
    return (f"ckpt={path}: the file holds Python objects besides tensors and plain data{what}, which gpt2tasks "
            "checkpoints never do. Loading such objects can run code stored in the file, so it was not loaded. "
            f"Fix: use a checkpoint written by `gpt2tasks train`; if you trust where this file comes from (you "
            f"or someone you trust wrote it), add {TRUST_KEY}=true to load it with the full unpickler.")


def _consolidate_deepspeed(folder: Path, path: str, trust: bool) -> dict[str, Any]:
    """A DeepSpeed checkpoint is a folder of per-rank shards: Lightning's converter joins them into
    one fp32 state dict (keeping our run information), which needs the deepspeed package. The
    converter reads the shards with the full unpickler, so only a trusted folder is converted."""
    from gpt2tasks.strategies import require_deepspeed

    require_deepspeed(f"ckpt={path} (a DeepSpeed checkpoint folder)")
    if not trust:
        raise UserError(f"ckpt={path} is a DeepSpeed checkpoint folder: joining its shards loads them with the full "
                        "unpickler (DeepSpeed's format), which can run code stored in them. Fix: if you trust it "
                        f"(your own run), add {TRUST_KEY}=true.")
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        convert_zero_checkpoint_to_fp32_state_dict(str(folder), str(Path(tmp) / "consolidated.ckpt"))
        return load_checkpoint(str(Path(tmp) / "consolidated.ckpt"), trust)


# ---- the saved config, with a command's overrides ---------------------------------------------------
def select_task(info: dict, task: str | None, command: str, required: bool) -> str | None:
    """The `task=` of a command on a checkpoint, checked against what the checkpoint holds."""
    if (info["config"].get("task") or {}).get("kind") != MULTITASK:  # a run of one task is that task
        if task is not None:
            raise UserError(f"{command}: task={task} picks one head of a multi-task checkpoint, and this checkpoint "
                            "has one task. Fix: leave task= out.")
        return None
    names = list(info["tasks"])
    if task is None and required:
        raise UserError(f"{command}: this is a multi-task checkpoint ({', '.join(names)}): pick the head with "
                        f"task=<name>. Fix: e.g. task={names[0]}.")
    if task is not None and task not in names:
        raise UserError(f"task={task}: not a task of this multi-task checkpoint ({', '.join(names)}). "
                        f"Fix: e.g. task={names[0]}.")
    return task


def run_config(saved: dict, overrides: Sequence[str], command: str, usage: str, task: str | None = None,
               eval_sets: bool = True) -> DictConfig:
    """The run's saved config with the command's `key=value` overrides on top, validated.

    With task=<name> (one head of a multi-task run), data.* and task.* overrides are that task's.
    `eval_sets`: eval reads the eval sets only, so the training files are dropped after the
    overrides (even an overridden one is never read); otherwise (predict, which reads the caller's
    input) every data file is dropped first: another machine may not have them.
    data.cache_dir is this machine's (its default, or the command's data.cache_dir=), never the
    saved one: a folder named by a file is not where this command writes its cache."""
    from gpt2tasks.config import validate_config

    overrides = task_overrides(overrides, task, list(saved.get("tasks") or {}))
    dropped = {"cache_dir": None, **({} if eval_sets else DATA_FILES_DROPPED)}
    cfg = apply_overrides(_with_data(saved, dropped), overrides, command, usage)
    if eval_sets:
        for section in [cfg, *(cfg.tasks[name] for name in cfg.get("tasks") or {})]:
            section.data.train_file = None
    validate_config(cfg)
    return cfg


def task_overrides(overrides: Sequence[str], task: str | None, tasks: Sequence[str] = ()) -> list[str]:
    """The overrides as keys of the run's config. With task=<name> (one head of a multi-task run),
    its data.* and task.* overrides are that task's (tasks.<name>.data.*). On every task of a
    multi-task run (`tasks`, task= not given), a data.* key applies to each task, as in `train`
    (no task reads the run's own data: block): a data file there is refused, it would give every
    task the same file."""
    if task is not None:
        return [f"tasks.{task}.{o}" if o.startswith(("data.", "task.")) else o for o in overrides]
    if not tasks:
        return list(overrides)
    expanded = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if key.split(".")[:2] in [["data", k] for k in (*DATA_FILES, "extra_validation")]:
            raise UserError(f"{item}: this checkpoint has several tasks ({', '.join(tasks)}), and a data file is one "
                            f"task's. Fix: pick the task, task={tasks[0]} {item}, or write "
                            f"tasks.{tasks[0]}.{item}.")
        expanded += [f"tasks.{name}.{item}" for name in tasks] if key.startswith("data.") else [item]
    return expanded


# data.* keys that choose an eval set's rows -> the eval set they choose (extra_validation: per name)
EVAL_SET_KEYS = {"validation_file": "val", "validation_split": "val", "test_file": "test", "test_split": "test"}


def named_eval_sets(cfg: DictConfig, overrides: Sequence[str], task: str | None = None) -> dict[str, list[str]]:
    """Per task (its name, as multitask.task_views names it), the eval sets `eval`'s command line
    chose on purpose: their file (or Hub split) is given there. Such a set is scored whole, not cut
    to the run's data.max_eval_samples (meant for the run's own files, e.g. a quick run's 32 rows);
    the run's own sets keep that limit, so `eval ckpt=` reproduces the run's metrics. Where the same
    command line sets that task's data.max_eval_samples, it applies to every set (nothing here).
    `cfg`: the config with the overrides applied; `task`: eval's task= (see task_overrides)."""
    from gpt2tasks.multitask import is_multitask

    named: dict[str, set[str]] = {}
    limited: set[str] = set()
    for item in task_overrides(overrides, task, list(cfg.get("tasks") or {})):
        parts = item.split("=", 1)[0].lstrip("+").split(".")
        if parts[0] == "tasks" and len(parts) > 2:  # tasks.<name>.data.<key>
            name, parts = parts[1], parts[2:]
        else:
            name = str(cfg.task.name)
        if parts[0] != "data" or len(parts) < 2:
            continue
        key, sets = parts[1], named.setdefault(name, set())
        section = cfg.tasks[name] if is_multitask(cfg) and name in (cfg.get("tasks") or {}) else cfg
        extra = [f"val_{n}" for n in (section.data.get("extra_validation") or {})]
        if key == "max_eval_samples":
            limited.add(name)
        elif key in EVAL_SET_KEYS:
            sets.add(EVAL_SET_KEYS[key])
        elif key == "extra_validation" and len(parts) == 2:  # the whole block
            sets.update(extra)
        elif key == "extra_validation" and (len(parts) == 3 or parts[3] in ("file", "split")):
            sets.add(f"val_{parts[2]}")
        elif key in ("hub_path", "hub_name"):  # another dataset: every eval set is new
            sets.update(["val", "test", *extra])
    return {name: sorted(sets) for name, sets in named.items() if sets and name not in limited}


def apply_overrides(config: dict, overrides: Sequence[str], command: str, usage: str) -> DictConfig:
    """`config` with `key=value` overrides merged in; a key the config lacks is a UserError."""
    cfg = literal_config(config)  # saved values are final: a "${" in one is text
    OmegaConf.set_struct(cfg, True)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{command}: {item!r} is not key=value. Fix: e.g. data.max_length=256.\n{usage}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            key = item.split("=", 1)[0]
            raise UserError(f"{command}: cannot override {key!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
                            "Fix: use a key of the run's config.yaml, e.g. data.max_length=256.") from None
    return cfg


DATA_FILES_DROPPED = {"train_file": None, "validation_file": None, "test_file": None, "extra_validation": {}}


def _with_data(config: dict, values: dict) -> dict:
    """`config` with `values` set in its data block and in every task's."""
    config = {**config, "data": {**config["data"], **values}}
    if config.get("tasks"):
        config["tasks"] = {name: {**section, "data": {**section["data"], **values}}
                           for name, section in config["tasks"].items()}
    return config


# ---- an exported folder's gpt2tasks.json ------------------------------------------------------
EXPORT_FORMAT = 1
EXPORT_INFO = "gpt2tasks.json"


def write_export_info(folder: Path, cfg: DictConfig, info: dict, adapter: bool) -> None:
    """What predict needs to rebuild the preprocessing of the export in `folder` (a task's `cfg`
    and run information `info`)."""
    payload = {"format": EXPORT_FORMAT, "kind": cfg.task.kind, "adapter": adapter,
               "config": OmegaConf.to_container(cfg, resolve=True), "label_space": info["label_space"],
               "new_token_ids": info.get("new_token_ids", []), "command": info.get("command")}
    (folder / EXPORT_INFO).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def read_export_info(folder: Path, path: str) -> dict:
    """gpt2tasks.json of an exported folder (`ckpt=path`), checked; a UserError naming ckpt= otherwise."""
    from gpt2tasks.tasks import KINDS

    info_file = folder / EXPORT_INFO
    if not info_file.is_file():
        raise UserError(f"ckpt={path}: this folder has no {EXPORT_INFO}, so it was not written by `gpt2tasks "
                        "export` (that file says which head, labels and preprocessing the model needs). "
                        "Fix: export the run with `python -m gpt2tasks export ckpt=<best.ckpt> out=<dir>` and pass "
                        "that folder, or pass the run's .ckpt file.")
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"ckpt={path}: {info_file} is not valid JSON ({exc}). Fix: export the run again.") from None
    ok = (isinstance(info, dict) and info.get("format") == EXPORT_FORMAT and info.get("kind") in KINDS
          and isinstance(info.get("config"), dict) and isinstance(info.get("label_space"), dict))
    if not ok:
        raise UserError(f"ckpt={path}: {info_file} is not a format-{EXPORT_FORMAT} gpt2tasks export (it needs "
                        f"format, kind (one of {', '.join(KINDS)}), config and label_space). Fix: export the run "
                        "again with this version of gpt2tasks.")
    check_file_names(config_file_names(info["config"], "config."), f"ckpt={path}: {EXPORT_INFO}",
                     "export the run again with `python -m gpt2tasks export`.")
    if info.get("adapter"):
        raise UserError(f"ckpt={path}: this is a LoRA adapter export (merge_lora=false): it holds the adapters, "
                        "not a model. Fix: pass the run's .ckpt, or export it merged (the default) and pass that "
                        "folder.")
    return info


# ---- resume=true: the run's own config, changed only where that cannot change what it computes ----
# The keys `resume=true` may change, each with why it is safe: none changes the data, the batches,
# the model, the optimizer or the schedule of the steps trained, so the resumed run is the run that
# was started, continued (train.py refuses every other key that differs from the run's
# config.yaml, unknown ones included). A key ending in "." covers everything below it.
RESUME_MAY_CHANGE = {
    # what the command itself is and where the run lives
    "resume": "continuing is what the command does",
    "overwrite": "ignored with resume=true (nothing is replaced)",
    "ckpt_path": "which checkpoint of this run to continue from (e.g. back to its best.ckpt)",
    "output_dir": "the run's folder: the command names it",
    # how long: extending (or ending sooner) changes where training stops, not the steps before
    "trainer.max_epochs": "to train longer (the schedule stretches to the new end from here on)",
    "trainer.max_steps": "as trainer.max_epochs",
    "early_stopping.patience": "when to stop, not what a step computes",
    "early_stopping.min_delta": "as early_stopping.patience",
    # what is shown, logged and saved
    "logger.": "where metrics are logged",
    "trainer.enable_progress_bar": "display only",
    "trainer.enable_model_summary": "display only",
    "trainer.log_every_n_steps": "how often metrics are logged",
    "throughput.peak_tflops": "only the MFU shown",
    "checkpoint.every_n_train_steps": "how often last.ckpt is written; resume is exact from any of them",
    "checkpoint.every_n_minutes": "as checkpoint.every_n_train_steps",
    "data.cache_dir": "where tokenized rows are cached (keyed by content)",
    "data.num_workers": "how many processes load the same batches",
    # where it runs (README "Resume on another device count"): the start-up log says the new effective batch
    "trainer.devices": "where the run continues",
    "trainer.num_nodes": "as trainer.devices",
    "trainer.accelerator": "as trainer.devices",
}
#: keys whose change alone does not make config.yaml worth a new version (they name the command)
_COMMAND_KEYS = ("resume", "overwrite", "ckpt_path", "output_dir")


def may_change_on_resume(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in RESUME_MAY_CHANGE)


def saved_run_config(output_dir: Path) -> dict | None:
    """The run's config.yaml as plain data (None when the folder has none), read as YAML data only."""
    path = output_dir / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:  # OmegaConf's YAML reading, as it wrote the file (literal.literal_yaml): a "${" escaped there
        # is text, and resolving gives it back as written (the file holds no real interpolation)
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as exc:
        raise UserError(f"resume=true: {path} is not readable YAML ({type(exc).__name__}), so the run's settings are "
                        "unknown. Fix: restore the run's config.yaml, or start a new run (overwrite=true or a new "
                        "output_dir).") from None
    if not isinstance(saved, dict):
        raise UserError(f"resume=true: {path} holds no settings. Fix: restore the run's config.yaml, or start a new "
                        "run (overwrite=true or a new output_dir).")
    return saved


def resume_base(composed: DictConfig, typed: Sequence[str], groups: Sequence[str]) -> DictConfig:
    """`resume=true` from the command line: the run's config.yaml with only the keys the user typed on
    top (their values as Hydra composed them), so whatever the command line omits is the run's own
    setting, not a default. `groups`: the config groups (task, model, logger, ...); a typed group
    brings its whole block. train() then refuses the keys that would change what the run computes.
    Without a config.yaml in output_dir, Hydra's composition is returned (train says what is wrong)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = saved_run_config(Path(composed.output_dir).absolute())
    if saved is None:
        return composed
    # Keys the run's config.yaml lacks (added to gpt2tasks since the run started) keep their defaults.
    cfg = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(composed, resolve=False)), literal_config(saved))
    for override in OverridesParser.create().parse_overrides(list(typed)):
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
            continue
        # A key: its composed value. A group (task=, model=, trainer=ddp, logger=wandb, ...): the keys
        # that choosing it sets, each with its composed value.
        for changed in _group_keys(key, typed) if key in groups else [key]:
            OmegaConf.update(cfg, changed, OmegaConf.select(composed, changed), merge=False, force_add=True)
    cfg.output_dir = composed.output_dir
    OmegaConf.set_struct(cfg, True)
    return cfg


def _group_keys(group: str, typed: Sequence[str]) -> list[str]:
    """The keys whose (unresolved) value the typed choice of config group `group` changes: the
    config composed with only that choice against the one composed with no override at all.
    Hydra's compose API, inside the running `train` app (its config path is registered)."""
    from hydra import compose

    choice = [o for o in typed if o.lstrip("+").split("=", 1)[0] == group][-1:]
    with_choice, default = (_leaves(OmegaConf.to_container(compose("config", overrides=choice), resolve=False)),
                            _leaves(OmegaConf.to_container(compose("config", overrides=[]), resolve=False)))
    return sorted(k for k in with_choice if k != "hydra" and not k.startswith("hydra.")
                  and with_choice[k] != default.get(k, _ABSENT))


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a nested dict (lists are values)."""
    if isinstance(node, dict) and node:
        return {k: v for key, child in node.items() for k, v in _leaves(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


_ABSENT = "<absent>"


def resume_changes(saved: dict, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (the run's value, this command's)} for every key that differs; a UserError naming each
    one that `resume=true` may not change (see RESUME_MAY_CHANGE), with the fix."""
    old, new = _leaves(saved), _leaves(OmegaConf.to_container(cfg, resolve=True))
    # A key the run's config.yaml lacks was added to gpt2tasks since the run started: its default
    # stands for what the run did then, so it is not compared.
    changed = {key: (old[key], new.get(key, _ABSENT)) for key in sorted(old) if old[key] != new.get(key, _ABSENT)}
    refused = {key: values for key, values in changed.items() if not may_change_on_resume(key)}
    if refused:
        listed = "; ".join(f"{key}: the run has {old!r}, this command {new!r}" for key, (old, new) in refused.items())
        raise UserError(f"resume=true continues the run as it was started, and {'this key differs' if len(refused) == 1 else 'these keys differ'} "
                        f"from its config.yaml in a way that changes what it computes: {listed}. Fix: drop "
                        f"{', '.join(f'{key}=' for key in refused)} from the command to continue the run, or start a new "
                        "run with the new values (overwrite=true instead of resume=true, or a new output_dir). "
                        f"resume=true may change only: {', '.join(k.rstrip('.') + ('.*' if k.endswith('.') else '') for k in RESUME_MAY_CHANGE)}.")
    return changed


def record_resume(output_dir: Path, cfg: DictConfig, changed: dict[str, tuple[Any, Any]]) -> Path | None:
    """A resume that changed settings (beyond naming the command): the previous config.yaml is kept as
    config.<n>.yaml (n = 1, 2, ...: config.1.yaml holds the settings the run started with) and
    config.yaml gets the new ones. Returns the copy, or None when nothing was worth recording."""
    from gpt2tasks.outputs import write_atomic

    settings = {key: values for key, values in changed.items() if key not in _COMMAND_KEYS}
    if not settings:
        return None
    n = 1
    while (output_dir / f"config.{n}.yaml").exists():
        n += 1
    kept = output_dir / f"config.{n}.yaml"
    write_atomic(kept, (output_dir / "config.yaml").read_text(encoding="utf-8"))
    write_atomic(output_dir / "config.yaml", literal_yaml(cfg))
    for key, (old, new) in settings.items():
        log.info("resume: %s %r -> %r (the previous settings: %s)", key, old, new, kept.name)
    return kept


def check_same_data(saved_info: dict, digests: dict[str, tuple[str, str]], source: str) -> None:
    """The data files of a resumed run hold what they held when it started (content hashes of the
    checkpoint's run information, `data_files`; a checkpoint from before they were recorded has none)."""
    for key, recorded in (saved_info.get("data_files") or {}).items():
        now = digests.get(key)
        if isinstance(recorded, dict) and now is not None and recorded.get("blake2b") != now[1]:
            raise UserError(f"{key}={now[0]} changed since the run started (its content hash was "
                            f"{str(recorded.get('blake2b'))[:12]}..., it is {now[1][:12]}... now): resuming would "
                            f"continue {source} on other data. Fix: put the file back as it was, or train on the new "
                            "data in a new run (overwrite=true instead of resume=true, or a new output_dir).")


def data_files_info(digests: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """The run information's `data_files`: {config key: {path, blake2b}} (datamodules.files.content_digest)."""
    return {key: {"path": path, "blake2b": digest} for key, (path, digest) in digests.items()}
