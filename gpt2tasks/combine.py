"""`python -m gpt2tasks combine ckpt=<a.ckpt> ckpt=<b.ckpt> ... out=<combined.ckpt>`.

Per-task LoRA adapters (`task=multitask multitask.adapters=per_task peft=lora`) never touch the
frozen backbone, so adapters trained in separate runs -- one task at a time, or a few at a time --
over the same base can be put together afterwards: the combined checkpoint holds every run's
adapters and heads over that one base, and `eval`, `predict` and `export` take it like any
multi-task checkpoint (task=<name> picks a head). Nothing is retrained; each task's outputs are
exactly those of the run that trained it.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt2tasks import multitask
from gpt2tasks.cli import Command, Option, done_lines, run_command
from gpt2tasks.errors import UserError
from gpt2tasks.literal import literal_config
from gpt2tasks.outputs import check_output_file, save_atomic
from gpt2tasks.runfile import TRUST_KEY, load_checkpoint

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

COMBINE = Command(
    "combine",
    (Option("ckpt", "list", metavar="<path.ckpt>", help="a multi-task run's checkpoint (two or more)"),
     Option("out", metavar="<combined.ckpt>", help="the checkpoint to write"),
     Option("overwrite", "bool", False, "replace an existing out="),
     Option(TRUST_KEY, "bool", False, "load checkpoints holding more than plain data (see below)")),
    about="""Puts per-task LoRA adapters trained in separate multi-task runs (peft=lora multitask.adapters=per_task,
over the same base checkpoint) into one multi-task checkpoint, for eval / predict / export task=<name>.
Checkpoints are loaded as plain data; trust_checkpoint=true loads ones holding other Python objects
(which can run code) if you trust where they come from. The combined checkpoint is plain data.""",
    example="ckpt=a/best.ckpt ckpt=b/best.ckpt out=combined.ckpt", required=("ckpt", "out"))
USAGE = COMBINE.usage()

# What the runs must share for their adapters to sit on one backbone.
SHARED_KEYS = ("frozen_base_from", "tokenizer_files", "new_token_ids")
SHARED_CONFIG = ("model", "peft")


def combine(ckpts: list[str], out: str, overwrite: bool = False, trust_checkpoint: bool = False) -> Path:
    import torch  # here, not at module scope: `combine --help` answers without it

    from gpt2tasks.build import build_from_checkpoint

    if len(ckpts) < 2 or not out:
        raise UserError(f"combine needs two or more ckpt= and an out=. Fix: e.g. combine ckpt=a/best.ckpt "
                        f"ckpt=b/best.ckpt out=combined.ckpt.\n{USAGE}")
    target = check_output_file(Path(out), "out", overwrite, shown=out)
    checkpoints = [(path, load_checkpoint(path, trust_checkpoint)) for path in ckpts]
    for path, checkpoint in checkpoints:
        _check_combinable(path, checkpoint["gpt2tasks"])
    info = _combined_info([c["gpt2tasks"] for _, c in checkpoints], ckpts)

    cfg = literal_config(info["config"])
    _, module = build_from_checkpoint(cfg, info, load_eval_sets=False)  # the base, every adapter set, every head
    state = module.state_dict()
    given: dict[str, torch.Tensor] = {}
    for _, checkpoint in checkpoints:
        given.update(checkpoint["state_dict"])  # keys model.<task>.*: each run's own tasks
    unexpected = [k for k in given if k not in state]
    if unexpected:
        raise UserError(f"combine: the checkpoints' weights do not fit one model ({unexpected[0]}). Fix: combine runs "
                        "of the same gpt2tasks version, base and peft settings.")
    module.load_state_dict(given, strict=False)
    # Every trained tensor must now come from some run: a key not given is the frozen base (reloaded
    # from frozen_base_from) or another name of a given tensor (the backbone sits under every head).
    loaded = {state[k].data_ptr() for k in given}
    trained = {p.data_ptr() for p in module.parameters() if p.requires_grad}
    missing = [k for k, v in state.items() if k not in given and v.data_ptr() in trained - loaded]
    if missing:
        raise UserError(f"combine: no checkpoint holds {missing[0]}. Fix: pass every run whose tasks you combine.")
    lean = {k: v for k, v in module.state_dict().items() if v.data_ptr() in trained}
    save_atomic(target, lambda f: torch.save({"gpt2tasks": info, "state_dict": lean}, f))
    log.info("combine: tasks %s from %d checkpoints", ", ".join(info["tasks"]), len(ckpts))
    return target


def _check_combinable(path: str, info: dict) -> None:
    config = info.get("config", {})
    ok = (config.get("task", {}).get("kind") == multitask.MULTITASK and config.get("peft", {}).get("method") == "lora"
          and config.get("multitask", {}).get("adapters") == "per_task" and info.get("frozen_base_from"))
    if not ok:
        raise UserError(f"ckpt={path}: only multi-task runs with per-task LoRA adapters over a base checkpoint can be "
                        "combined (their adapters never change the shared weights). Fix: train with task=multitask "
                        "peft=lora multitask.adapters=per_task model.name_or_path=<base>.")


def _combined_info(infos: list[dict], ckpts: list[str]) -> dict[str, Any]:
    first = infos[0]
    for info, path in zip(infos[1:], ckpts[1:]):
        differs = [k for k in SHARED_KEYS if info.get(k) != first.get(k)]
        differs += [k for k in SHARED_CONFIG if info["config"][k] != first["config"][k]]
        if differs:
            raise UserError(f"ckpt={path}: its {differs[0]} differs from that of ckpt={ckpts[0]}, so their adapters "
                            "do not sit on the same backbone. Fix: combine runs trained over the same base with the "
                            "same model.* and peft.* settings.")
        clash = sorted(set(info["tasks"]) & set(first["tasks"]))
        if clash:
            raise UserError(f"ckpt={path}: task {clash[0]!r} is in more than one checkpoint. Fix: name tasks "
                            "apart when training, e.g. multitask.tasks=[reviews2:text_classification].")
    config = copy.deepcopy(first["config"])
    entries, tasks, sections = [], {}, {}
    for info in infos:
        presets = multitask.parse_tasks(info["config"]["multitask"]["tasks"])
        for name in info["tasks"]:
            entries.append(f"{name}:{presets[name]}")
            tasks[name] = info["tasks"][name]
            sections[name] = info["config"]["tasks"][name]
        for key in ("loss_weights", "monitor_weights"):
            config["multitask"][key] = {**config["multitask"][key], **info["config"]["multitask"][key]}
    config["multitask"].update(tasks=entries, monitor="mean")
    config["tasks"] = sections
    cfg = literal_config(config)
    try:
        config["task"]["monitor"], config["task"]["mode"] = multitask.checkpoint_monitor(cfg, list(sections))
    except UserError:  # the tasks' metrics go different ways: monitor the first task's own
        name = next(iter(sections))
        config["multitask"]["monitor"] = f"{name}/{sections[name]['task']['monitor']}"
        config["task"]["monitor"], config["task"]["mode"] = config["multitask"]["monitor"], sections[name]["task"]["mode"]
    commands = [info.get("command") for info in infos if info.get("command")]
    shared = {**{k: first.get(k) for k in SHARED_KEYS}, "command": "; ".join(commands) if commands else None,
              "combined_from": [str(Path(c).absolute()) for c in ckpts]}
    return multitask.run_info(literal_config(config), tasks, shared)


def main(argv: list[str]) -> None:
    def job(options: dict[str, Any], _: list[str]) -> None:
        target = combine(options["ckpt"], options["out"], options["overwrite"], options[TRUST_KEY])
        print(done_lines(f"combined {len(options['ckpt'])} checkpoints into one multi-task checkpoint",
                         [("checkpoint", target)]))

    run_command(argv, COMBINE, job)
