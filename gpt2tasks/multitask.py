"""A run's tasks: every run is a set of named tasks over one backbone (`task=multitask` lists several).

Config: `multitask.tasks` lists task presets (conf/task/<preset>.yaml) or `<name>:<preset>`. Each
task's full single-task `task:`/`data:` blocks are built by `expand` from the config alone: the
preset composed by Hydra, the run's data keys, the task's own data keys the run sets for every
task, then the task's own `tasks.<name>.*` keys, stored under `tasks.<name>`. Everything else
(model, peft, optim, trainer, precision, seed) is one setting for the whole run.

A task's *view* (`task_views`) is that task as a single-task run's config; a single-task run is the
one-task case, its view the config itself. Building (gpt2tasks/build.py), validation (config.py)
and export go over the views, so one code path serves one task or several (`eval`/`predict`/
`export` pick one head of a multi-task checkpoint with `task=<name>`: runfile.select_task). This module reads
configs and checkpoints' run information only: it imports nothing that builds models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from gpt2tasks.errors import UserError
from gpt2tasks.literal import literal_config
from gpt2tasks.resources import CONF_DIR

log = logging.getLogger(__name__)

MULTITASK = "multitask"
SAMPLING = ("proportional", "uniform", "temperature")
ADAPTERS = ("shared", "per_task")
TASK_SECTIONS = ("task", "data")  # what tasks.<name> may set; the rest is shared by all tasks
# Top-level keys a task name may not shadow in metric names and folders.
RESERVED_NAMES = ("val", "test", "train", "base", "mean")


@dataclass
class MultiTaskSpec:
    """What `multitask.*` says (task names resolved)."""

    tasks: dict[str, str]  # name -> preset
    sampling: str = "proportional"
    temperature: float = 2.0
    loss_weights: dict[str, float] = field(default_factory=dict)
    monitor: str = "mean"
    monitor_weights: dict[str, float] = field(default_factory=dict)
    adapters: str = "shared"

    @property
    def names(self) -> list[str]:
        return list(self.tasks)


def is_multitask(cfg: DictConfig) -> bool:
    return cfg.task.kind == MULTITASK


def parse_tasks(entries: Any) -> dict[str, str]:
    """multitask.tasks -> {name: preset}; entries are `preset` or `name:preset`."""
    if OmegaConf.is_config(entries):
        entries = OmegaConf.to_container(entries)
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise UserError(f"multitask.tasks={entries!r} must be a non-empty list of task presets. "
                        "Fix: e.g. multitask.tasks=[sst2,conll2003] (names of conf/task/*.yaml).")
    tasks: dict[str, str] = {}
    for entry in entries:
        name, _, preset = str(entry).partition(":")
        preset = preset or name
        if not name.isidentifier() or name in RESERVED_NAMES:
            raise UserError(f"multitask.tasks: {name!r} cannot name a task (letters, digits and _ only, not "
                            f"{', '.join(RESERVED_NAMES)}). Fix: name it, e.g. multitask.tasks=[reviews:{preset}].")
        if name in tasks:
            raise UserError(f"multitask.tasks lists {name!r} twice. Fix: give each use of a preset its own name, "
                            f"e.g. multitask.tasks=[a:{preset},b:{preset}].")
        tasks[name] = preset
    return tasks


def _listed(cfg: DictConfig):
    if OmegaConf.is_missing(cfg.multitask, "tasks") or cfg.multitask.get("tasks") is None:
        raise UserError("task=multitask needs multitask.tasks. Fix: e.g. multitask.tasks=[sst2,conll2003] "
                        "(task presets of conf/task/), with tasks.<name>.data.* for each task's files.")
    return cfg.multitask.tasks


def spec(cfg: DictConfig) -> MultiTaskSpec:
    tasks = parse_tasks(_listed(cfg))
    mt = OmegaConf.to_container(cfg.multitask, resolve=True)
    return MultiTaskSpec(tasks=tasks, sampling=mt["sampling"], temperature=mt["temperature"],
                         loss_weights=mt.get("loss_weights") or {}, monitor=mt["monitor"],
                         monitor_weights=mt.get("monitor_weights") or {}, adapters=mt["adapters"])


# ---- config ---------------------------------------------------------------------------------------
# Keys whose entries are named by the user's tasks, so Hydra's config cannot list them in advance.
OPEN_KEYS = ("tasks.", "multitask.loss_weights", "multitask.monitor_weights")
DATA_FILES = ("train_file", "validation_file", "test_file", "hub_path")


def cli_overrides(argv: list[str]) -> list[str]:
    """`tasks.<name>.<key>=value` or `multitask.loss_weights.<name>=w` on the command line add keys
    Hydra's config does not have yet: let users write them without Hydra's `++` prefix."""
    return [f"++{a}" if a.startswith(OPEN_KEYS) and "=" in a else a for a in argv]


def compose(overrides: list[str]) -> DictConfig:
    """The config `python -m gpt2tasks train <overrides>` runs, a multi-task run's tasks expanded: a
    convenience for Python callers; `hydra.compose(...)` and then `train(cfg)` runs the same."""
    cfg = _compose(overrides)
    expand(cfg)
    return cfg


def _compose(overrides: list[str]) -> DictConfig:
    """conf/config.yaml composed by Hydra with `overrides`."""
    if GlobalHydra.instance().is_initialized():  # inside `train` (or a caller's own Hydra context)
        return hydra_compose(config_name="config", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def expand(cfg: DictConfig) -> None:
    """Fill `cfg.tasks.<name>` with each task's full task/data blocks (in place); nothing to do for a
    single-task run. Reads `cfg` only, never the command line, so a config from the command line,
    from `hydra.compose` in Python or from a saved config.yaml expands alike. A task's blocks, each
    on top of the one before:
      1. its preset's task:/data: blocks, composed alone (conf/task/<preset>.yaml);
      2. the run's data keys (RUN_DATA_KEYS: data.batch_size, ...), whatever their value: presets
         never set them, so the run's value is the only one there is;
      3. the task's own data keys set for the whole run (e.g. data.max_length=64): the multitask
         preset leaves them null, so a value was set by the user, whatever it is;
      4. the task's own tasks.<name>.task.* / tasks.<name>.data.* keys.
    Idempotent: a saved config's tasks.<name> already hold the result, and come last."""
    if not is_multitask(cfg):
        return
    from gpt2tasks.datamodules.base import RUN_DATA_KEYS  # not at module scope: this module builds nothing

    tasks = parse_tasks(_listed(cfg))
    given = OmegaConf.to_container(cfg.get("tasks") or OmegaConf.create({}), resolve=False)
    unknown = [name for name in given if name not in tasks]
    if unknown:
        raise UserError(f"tasks.{unknown[0]}: not one of multitask.tasks ({', '.join(tasks)}). "
                        f"Fix: add it to multitask.tasks, or set keys of a listed task (tasks.<name>.data.*).")
    # A file for the whole run would feed every task the same data.
    files = [key for key in DATA_FILES if cfg.data.get(key)]
    if files:
        raise UserError(f"data.{files[0]}={cfg.data[files[0]]} would give every task of a multi-task run the same "
                        f"data. Fix: set it for one task, tasks.<name>.data.{files[0]}=... (<name> one of "
                        f"{', '.join(tasks)}).")
    run_data = OmegaConf.to_container(cfg.data, resolve=False)
    # {} is extra_validation's "none" (config.yaml's value), null every other key's (conf/task/multitask.yaml)
    shared = {key: value for key, value in run_data.items() if key in RUN_DATA_KEYS or value not in (None, {})}
    presets = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml") if p.stem != MULTITASK)
    expanded = {}
    for name, preset in tasks.items():
        if preset not in presets:
            raise UserError(f"multitask.tasks: {preset!r} is not a task preset (one of {', '.join(presets)}). "
                            "Fix: list presets of conf/task/, e.g. multitask.tasks=[sst2,conll2003].")
        own = given.get(name) or {}
        extra = [key for key in own if key not in TASK_SECTIONS]
        if extra:
            raise UserError(f"tasks.{name}.{extra[0]}: a task sets only its own {' and '.join(TASK_SECTIONS)} "
                            f"keys; {extra[0]}.* is shared by every task of the run. Fix: set {extra[0]}.<key>=... "
                            f"for the whole run, or tasks.{name}.data.<key>=... for this task.")
        composed = _compose([f"task={preset}"])
        preset_blocks = {section: OmegaConf.to_container(composed[section], resolve=False) for section in TASK_SECTIONS}
        # The task's own keys on top; a key nothing reads is named by validate_config (keys.own_key_problems).
        merged = OmegaConf.merge(preset_blocks, {"data": shared}, own)
        merged.task.name = name
        expanded[name] = OmegaConf.to_container(merged, resolve=False)
    with open_dict(cfg):  # tasks.<name> are keys the composed (struct) config does not have
        cfg.tasks = expanded
        cfg.task.monitor, cfg.task.mode = checkpoint_monitor(cfg, tasks)


def checkpoint_monitor(cfg: DictConfig, tasks: dict[str, str]) -> tuple[str, str]:
    """(task.monitor, task.mode) of the multi-task run from multitask.monitor."""
    monitor = str(cfg.multitask.monitor)
    if monitor != "mean":
        name = monitor.split("/", 1)[0]
        if name not in tasks or monitor.count("/") != 2:
            raise UserError(f"multitask.monitor={monitor!r} must be 'mean' or '<task>/val/<metric>' with a task of "
                            f"multitask.tasks ({', '.join(tasks)}). Fix: e.g. multitask.monitor={next(iter(tasks))}/val/loss.")
        return monitor, ("min" if monitor.endswith("/loss") else str(cfg.tasks[name].task.mode))
    modes = {name: str(cfg.tasks[name].task.mode) for name in tasks}
    if len(set(modes.values())) > 1:
        raise UserError(f"multitask.monitor=mean: the tasks' own monitors do not agree on a direction ({modes}), "
                        "so their mean means nothing. Fix: pick one, e.g. multitask.monitor="
                        f"{next(iter(tasks))}/val/{str(cfg.tasks[next(iter(tasks))].task.monitor).split('/', 1)[1]}.")
    return "val/mean", next(iter(modes.values()))


def task_view(cfg: DictConfig, name: str) -> DictConfig:
    """Task `name` as a single-task run's config: the shared keys plus its own task/data blocks."""
    container = OmegaConf.to_container(cfg, resolve=True)
    section = container.pop("tasks")[name]
    container.pop("multitask")
    container.update(task=section["task"], data=section["data"])
    view = literal_config(container)  # resolved: a "${" left in a value is text
    OmegaConf.set_struct(view, True)
    return view


def task_views(cfg: DictConfig) -> dict[str, DictConfig]:
    """The run's tasks, each as a single-task run's config: {name: view}. A single-task run is the
    one-task case: {task.name: cfg}, the config itself."""
    if not is_multitask(cfg):
        return {str(cfg.task.name): cfg}
    return {name: task_view(cfg, name) for name in parse_tasks(_listed(cfg))}


def mixing(cfg: DictConfig) -> MultiTaskSpec | None:
    """How a multi-task run mixes its tasks (multitask.*); None for a single-task config, whose one
    task needs no mixing (and whose LoRA adapters wrap its head model: build.adapt_models)."""
    return spec(cfg) if is_multitask(cfg) else None


def problems(cfg: DictConfig) -> list[str]:
    """Problems with multitask.* (none for a single-task run); each task's own blocks are checked
    as a single-task run's by config.validate_config, over `task_views`."""
    if not is_multitask(cfg):
        return []
    problems = []
    try:
        mt = spec(cfg)
    except UserError as exc:
        return [str(exc)]
    if mt.sampling not in SAMPLING:
        problems.append(f"multitask.sampling={mt.sampling!r} is not one of {', '.join(SAMPLING)}. "
                        "Fix: multitask.sampling=proportional.")
    if not isinstance(mt.temperature, (int, float)) or isinstance(mt.temperature, bool) or mt.temperature <= 0:
        problems.append(f"multitask.temperature={mt.temperature!r} must be a positive number. Fix: e.g. 2.0.")
    if mt.adapters not in ADAPTERS:
        problems.append(f"multitask.adapters={mt.adapters!r} is not one of {', '.join(ADAPTERS)}. "
                        "Fix: multitask.adapters=shared (or per_task, with peft=lora).")
    elif mt.adapters == "per_task" and cfg.peft.method != "lora":
        problems.append("multitask.adapters=per_task needs adapters: peft=lora. Fix: add peft=lora, or "
                        "multitask.adapters=shared.")
    for key in ("loss_weights", "monitor_weights"):
        weights = getattr(mt, key)
        for name, weight in weights.items():
            if name not in mt.tasks:
                problems.append(f"multitask.{key}.{name}: not one of multitask.tasks ({', '.join(mt.tasks)}).")
            elif not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                problems.append(f"multitask.{key}.{name}={weight!r} must be a number >= 0.")
    for name in mt.names:
        if cfg.tasks[name].task.kind == MULTITASK:
            problems.append(f"tasks.{name}: a multi-task run cannot nest another. Fix: list single tasks.")
    return problems


# ---- run information ----------------------------------------------------------------------
# Every checkpoint's run information (`ckpt["gpt2tasks"]`) has one layout, whatever the number of
# tasks: {"layout": RUN_INFO_LAYOUT, "config": the run's resolved config, the keys its tasks share
# (SHARED_INFO_KEYS, plus data_files, validation, rng... added later), "tasks": {name: {"kind",
# "config" (the task's view), "hf_config", "label_space"}}}, and its state_dict keys are those of
# tasks/multitask.py's module: model.<task>.model.<HF name> (<task>: `module_key` of its name).
# Checkpoints written before (layout 1, no "layout" key) are converted on loading, by
# `current_layout` alone.
RUN_INFO_LAYOUT = 2
SHARED_INFO_KEYS = ("tokenizer_files", "new_token_ids", "frozen_base_from", "command")
TASK_INFO_KEYS = ("kind", "config", "hf_config", "label_space")


def run_info(cfg: DictConfig, tasks: dict[str, dict], shared: dict) -> dict:
    """A checkpoint's run information from each task's {kind, config, hf_config, label_space} and
    what the tasks share (tokenizer files, ...); `task_infos` reads it back."""
    return {"layout": RUN_INFO_LAYOUT, "config": OmegaConf.to_container(cfg, resolve=True), **shared, "tasks": tasks}


def task_infos(info: dict) -> dict[str, dict]:
    """A checkpoint's run information per task (`view_info`), in the order of the run's tasks (that
    of `task_views` of its config)."""
    return {name: view_info(info, name) for name in info["tasks"]}


def view_info(info: dict, name: str) -> dict:
    """Task `name`'s run information: what the tasks share, and its own {kind, config, hf_config,
    label_space} (what an export of that task records: runfile.write_export_info)."""
    return {**{key: info.get(key) for key in SHARED_INFO_KEYS}, **info["tasks"][name]}


def module_key(name: str) -> str:
    """The key task `name`'s module has in the run's module (tasks/multitask.py's ModuleDict), and so
    in its weights' names: model.<key>.model.*. The name itself, unless torch cannot use it as a
    module name: a run of one task may be named anything (task.name=sst2.v1), but a module name
    holds no "." and must not be an attribute of the ModuleDict (keys, training, ...)."""
    import torch.nn

    if name and "." not in name and not hasattr(torch.nn.ModuleDict(), name):
        return name
    return "task_" + name.replace(".", "_")


def current_layout(checkpoint: dict) -> dict:
    """`checkpoint` (as torch.load gives it) in today's layout, converted in place: every reader of a
    checkpoint goes through here (runfile.load_checkpoint and runfile.peek; Lightning's own loading
    for a resume, through the module's on_load_checkpoint). Layout 1, written before every run had
    one module class: a single-task run's info flat ({kind, config, hf_config, label_space, shared
    keys}) and its weights under model.<HF name>, which move under its task (model.<task>.model.*,
    also in a weight-averaging callback's saved current weights); a multi-task run's info had
    kind "multitask" and the tasks layout already. Optimizer and scheduler states are by parameter
    order, which the module keeps, and callback states hold no parameter names: they stay as they
    are. Anything malformed is left for runfile's checks to name."""
    info = checkpoint.get("gpt2tasks") if isinstance(checkpoint, dict) else None
    if not isinstance(info, dict) or info.get("layout") is not None or not isinstance(info.get("config"), dict):
        return checkpoint
    if info.get("kind") == MULTITASK or "tasks" in info:
        info.pop("kind", None)
    else:
        task = info["config"].get("task")
        name = str(task.get("name")) if isinstance(task, dict) else None
        if name is None:
            return checkpoint
        info["tasks"] = {name: {"config": info["config"], **{key: info.pop(key) for key in TASK_INFO_KEYS
                                                              if key != "config" and key in info}}}
        for key in ("state_dict", "current_model_state"):  # the latter: Lightning's WeightAveraging
            if isinstance(checkpoint.get(key), dict):
                checkpoint[key] = {(f"model.{module_key(name)}.{k}" if k.startswith("model.") else k): v
                                   for k, v in checkpoint[key].items()}
    info["layout"] = RUN_INFO_LAYOUT
    return checkpoint
