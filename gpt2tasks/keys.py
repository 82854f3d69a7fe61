"""Which keys a config may hold: every key a user sets must be one that something reads.

Hydra refuses an unknown key with the advice to add `+`, and with `+` the key is then silently
ignored; so the command line is checked before Hydra composes it (`check_overrides`), and the
composed config again (`key_problems`, and `own_key_problems` for each task of a multi-task run,
both gathered by config.validate_config), against the keys of the shipped config files
(conf/**.yaml: a key added to a file is known at once) plus lightning.Trainer's keywords under
`trainer.` and each task kind's options under `task.`; an unknown key names the closest one.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections import defaultdict
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from gpt2tasks.errors import UserError
from gpt2tasks.resources import CONF_DIR

# `train --help` imports this module: Lightning and the kind registry are imported where needed.

# Blocks whose keys are the user's own (task names, GPT2Config fields, strategy keywords): not checked.
FREE_FORM = ("hydra", "tasks", "data.extra_validation", "model.config_overrides", "trainer.ddp", "trainer.fsdp",
             "trainer.deepspeed", "multitask.loss_weights", "multitask.monitor_weights")


def _free(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in FREE_FORM)


@functools.cache
def known_keys() -> dict[str, frozenset[str]]:
    """Config path ("" for the top level, "data", "model.arch", ...) -> the keys the shipped config
    files give it (conf/config.yaml, and every option of every group under its group's name, or
    at the top level for `@package _global_` files such as the task presets)."""
    known: dict[str, set[str]] = defaultdict(set)

    def walk(node: dict, path: str) -> None:
        for key, value in node.items():
            known[path].add(str(key))
            full = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict) and not _free(full):
                walk(value, full)

    def load(file) -> dict:
        data = yaml.safe_load(file.read_text()) or {}
        data.pop("defaults", None)
        return data

    walk(load(CONF_DIR / "config.yaml"), "")
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        known[""].add(group.name)
        for file in sorted(group.glob("*.yaml")):
            data = load(file)
            walk(data, "" if "@package _global_" in file.read_text() else group.name)
    return {path: frozenset(keys) for path, keys in known.items()}


@functools.cache
def _group_defaults() -> dict[str, str | None]:
    """conf/config.yaml's config groups -> the option its defaults list picks (None: off unless
    chosen, e.g. hparams_search)."""
    entries = yaml.safe_load((CONF_DIR / "config.yaml").read_text()).get("defaults", [])
    return {group: option for entry in entries if isinstance(entry, dict)
            for group, option in entry.items() if not group.startswith(("override ", "hydra/"))}


def _null_group_problem(group: str) -> str:
    options = f"conf/{group}/: {', '.join(sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml')))}"
    if _group_defaults()[group] is None:
        return f"{group}=null: no {group} is the default ({options}). Fix: leave {group}=null out."
    return f"{group}=null: {group}/ always takes one of its options ({options}). Fix: e.g. {group}={_group_defaults()[group]}."


@functools.cache
def trainer_keywords() -> dict[str, Any]:
    """lightning.Trainer's keyword arguments -> their type hints."""
    import lightning as L

    hints = typing.get_type_hints(L.Trainer.__init__)
    return {name: hints.get(name, Any) for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"}


def _keys_at(path: str, kind: str | None = None) -> set[str]:
    """The keys a config node may hold: the files' keys, lightning.Trainer's under trainer, and under
    task the common keys plus those of `kind` (every kind's when unknown)."""
    known = set(known_keys().get(path, ()))
    if path == "trainer":
        known |= set(trainer_keywords())
    if path == "task":
        from gpt2tasks.tasks import KINDS

        root = _root_task_keys()
        options = [k.module.eval_options for name, k in KINDS.items() if kind in (None, name)]
        known = (known if kind is None else root) | {o for opts in options for o in opts}
    return known


@functools.cache
def default_config() -> dict:
    """conf/config.yaml as written."""
    return yaml.safe_load((CONF_DIR / "config.yaml").read_text())


def _root_task_keys() -> frozenset[str]:
    return frozenset(default_config()["task"]) | {"name", "kind"}


def unknown_key(path: str, kind: str | None = None) -> tuple[str, str | None] | None:
    """None when `path` (a dotted config key) may be set; else (why not, the key probably meant)."""
    parts = path.split(".")
    for depth, key in enumerate(parts):
        parent = ".".join(parts[:depth])
        if _free(".".join(parts[:depth + 1])):
            return None
        if depth == 1 and parent in _group_defaults() and parent not in known_keys():
            # recipe.lr: a group whose options set keys elsewhere (@package _global_) has no keys of its own
            meant = _in_another_block(key, parent)
            meant = ".".join([meant, *parts[2:]]) if meant else None
            return (f"{path}: {parent} is a config group, chosen with {parent}=<option> (conf/{parent}/), with no keys "
                    f"of its own{f' (did you mean {meant}?)' if meant else ''}", meant)
        if parent and parent not in known_keys() and parent not in ("trainer", "task"):
            return None  # below a value the files give no keys for (e.g. trainer.max_time): not checked
        if key in known_keys().get(parent, ()) and (parent != "task" or kind is None):
            continue  # the files' keys (known without importing Lightning or the task kinds)
        valid = _keys_at(parent, kind) if parent else set(known_keys()[""])
        if key in valid:
            continue
        close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        if close:
            meant = f"{parent}.{close[0]}" if parent else close[0]
        else:
            meant = _in_another_block(key, parent)
        if meant:
            meant = ".".join([meant, *parts[depth + 1:]])
            return f"{path}: no such key (did you mean {meant}?)", meant
        listed = ", ".join(sorted(valid)[:40])
        block = f"a {kind} task" if parent == "task" and kind else parent
        return f"{path}: no such key{f' in {block}' if block else ''} (its keys: {listed})", None
    return None


def own_key_problems(view: DictConfig, name: str) -> list[str]:
    """Keys task `name` of a multi-task run sets in its own data:/task: blocks that nothing reads:
    data.* as the data: block has them, task.* the common keys plus its kind's options."""
    problems = []
    for key in view.data:
        problem = unknown_key(f"data.{key}")
        if problem:
            why, meant = problem
            problems.append(f"tasks.{name}.{why}. Fix: {f'tasks.{name}.{meant}=...' if meant else 'remove it'}.")
    kind = str(view.task.kind)
    valid = _keys_at("task", kind) | _root_task_keys()
    for key in sorted(set(view.task) - valid):
        problem = unknown_key(f"task.{key}", kind)
        meant = f" (did you mean tasks.{name}.{problem[1]}?)" if problem and problem[1] else ""
        problems.append(f"tasks.{name}.task.{key}: not a key of a {kind} task{meant} (valid: {', '.join(sorted(valid))}). "
                        "Fix: check the spelling.")
    return problems


def key_problems(cfg: DictConfig) -> list[str]:
    """Keys of the composed config that nothing reads (e.g. added with Hydra's `+`). task.* are the
    keys of the run's task kind; tasks.<name>.* are checked per task (own_key_problems)."""
    problems: list[str] = []
    kind = str(cfg.task.kind) if "task" in cfg and "kind" in cfg.task else None

    def walk(node: dict, path: str) -> None:
        for key, value in node.items():
            full = f"{path}.{key}" if path else str(key)
            problem = unknown_key(full, kind)
            if problem:
                why, meant = problem
                problems.append(f"{why}. Fix: {f'use {meant}' if meant else 'remove it'}.")
            elif isinstance(value, dict) and not _free(full) and full in known_keys():
                walk(value, full)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    if "tasks" in cfg and kind != "multitask":
        problems.append("tasks.*: per-task keys of a multi-task run, but this run has one task, so they would be "
                        "ignored. Fix: set data.*/task.* directly, or use task=multitask multitask.tasks=[...].")
    return problems


def _in_another_block(key: str, parent: str) -> str | None:
    """The right name in the wrong block, e.g. optim.lr for trainer.lr: the first block but `parent`
    that has `key`."""
    return next((f"{p}.{key}" if p else key for p, keys in sorted(known_keys().items())
                 if key in keys and p != parent), None)


def check_overrides(argv: list[str]) -> list[str]:
    """The command line of `train`, checked before Hydra composes it: a `key=value` (with or without
    Hydra's `+`/`++`) for a key nothing reads is refused naming the closest key, and keys that are
    not in the config files but may be set (lightning.Trainer keywords such as trainer.fast_dev_run,
    and the user's own keys of free-form blocks such as model.config_overrides.<field>) get Hydra's
    `++` so that they are taken without it. Group choices (task=sst2) and hydra.* are Hydra's."""
    out, problems = [], []
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):  # not Hydra's flags (--cfg job, -m)
            problem = _syntax_problem(arg)
            if problem:
                problems.append(problem)
                continue
        key, eq, value = arg.partition("=")
        name = key.lstrip("+")
        plus = len(key) - len(name)
        if not eq or arg.startswith(("-", "~")) or plus > 2 or not name or "/" in name or "@" in name \
                or name.split(".")[0] == "hydra":
            out.append(arg)
            continue
        if "." not in name and not plus and name in known_keys()[""]:
            if value == "null" and name in _group_defaults():  # Hydra's answer: a ValueError traceback
                problems.append(_null_group_problem(name))
                continue
            out.append(arg)  # a top-level key or a group choice: Hydra checks the option exists
            continue
        problem = unknown_key(name)
        if problem:
            why, meant = problem
            added = (" (Hydra's `+` does not help: gpt2tasks reads only the keys it knows, so a new key "
                     "would be silently ignored.)" if plus else "")
            problems.append(f"{why}.{added} Fix: {f'{meant}={value}' if meant else 'remove it'}.")
            continue
        parent, _, leaf = name.rpartition(".")
        opened = _free(parent) or (parent == "trainer" and leaf not in known_keys()["trainer"])
        out.append(f"++{name}={value}" if opened and not plus else arg)
    if problems:
        listing = "`python -m gpt2tasks train --cfg job` prints every key of a run."
        if len(problems) == 1:
            raise UserError(f"{problems[0]} ({listing})")
        raise UserError(f"{len(problems)} unknown keys:\n" + "\n".join(f"  - {p}" for p in problems) + f"\n{listing}")
    return out


@functools.cache
def _override_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _syntax_problem(arg: str) -> str | None:
    """Hydra's grammar check of one override, as our message (cli.run_and_report hides secrets in it;
    Hydra's own error would print the override as typed)."""
    from hydra.errors import OverrideParseException

    try:
        _override_parser().parse_overrides([arg])
    except OverrideParseException as exc:
        detail = str(exc).splitlines()
        why = next((line for line in detail if line.strip() and not line.startswith(("Error parsing", "See "))
                    and arg not in line and line.strip() != "^"), "")
        return (f"{arg!r} is not a valid override{f' ({why.strip()})' if why else ''}. Fix: key=value; quote a "
                "value holding special characters, e.g. key='a,b' (see Hydra's override grammar).")
    return None
