"""Several tasks on one GPT-2 backbone (`task=multitask`): config, checks, building, task views.

Config: `multitask.tasks` lists task presets (conf/task/<preset>.yaml) or `<name>:<preset>`. Each
task's full single-task `task:`/`data:` blocks are put together here (`expand`) and stored under
`tasks.<name>`, in this order: the defaults of conf/config.yaml, the preset, the `data.*` keys the
run sets for every task, then the task's own `tasks.<name>.*` keys. Everything else (model, peft,
optim, trainer, precision, seed) is one setting for the whole run.

A task's *view* (`task_view`) is that task as a single-task run's config: the multi-task checkpoint
is rebuilt from the views with the ordinary single-task machinery (datamodules, task modules, HF
heads), and `eval`/`predict`/`export` pick one head with `task=<name>` (runfile.select_task).

Building: the first task's HF head is built as a single-task run builds it (from the checkpoint, or
random init); every other head is created around that same `GPT2Model` instance (`attach_head`), so
the backbone exists once and every head's `transformer` *is* it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from gpt2tasks.errors import UserError

if TYPE_CHECKING:  # torch, transformers and peft load only when a model is built (not for `train --help`)
    import torch
    from transformers import GPT2Config, PreTrainedModel

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


def cli_overrides(argv: list[str]) -> list[str]:
    """`tasks.<name>.<key>=value` or `multitask.loss_weights.<name>=w` on the command line add keys
    Hydra's config does not have yet: let users write them without Hydra's `++` prefix."""
    return [f"++{a}" if a.startswith(OPEN_KEYS) and "=" in a else a for a in argv]


def expand(cfg: DictConfig) -> None:
    """Fill `cfg.tasks.<name>` with each task's full task/data blocks (in place). Idempotent: the
    task's own section comes last, so expanding an expanded config changes nothing."""
    from gpt2tasks.resources import CONF_DIR

    tasks = parse_tasks(_listed(cfg))
    given = OmegaConf.to_container(cfg.get("tasks") or OmegaConf.create({}), resolve=False)
    unknown = [name for name in given if name not in tasks]
    if unknown:
        raise UserError(f"tasks.{unknown[0]}: not one of multitask.tasks ({', '.join(tasks)}). "
                        f"Fix: add it to multitask.tasks, or set keys of a listed task (tasks.<name>.data.*).")
    defaults = OmegaConf.load(CONF_DIR / "config.yaml")
    shared_data = _changed(cfg.data, defaults.data)  # data.* the run sets for every task
    files = [key for key in ("train_file", "validation_file", "test_file", "hub_path") if key in shared_data]
    if files:
        raise UserError(f"data.{files[0]}={shared_data[files[0]]} would give every task of a multi-task run the same "
                        f"data. Fix: set it for one task, tasks.<name>.data.{files[0]}=... (<name> one of "
                        f"{', '.join(tasks)}).")
    expanded = {}
    for name, preset in tasks.items():
        path = CONF_DIR / "task" / f"{preset}.yaml"
        if not path.is_file() or preset == MULTITASK:
            choices = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml") if p.stem != MULTITASK)
            raise UserError(f"multitask.tasks: {preset!r} is not a task preset (one of {', '.join(choices)}). "
                            "Fix: list presets of conf/task/, e.g. multitask.tasks=[sst2,conll2003].")
        own = given.get(name) or {}
        extra = [key for key in own if key not in TASK_SECTIONS]
        if extra:
            raise UserError(f"tasks.{name}.{extra[0]}: a task sets only its own {' and '.join(TASK_SECTIONS)} "
                            f"keys; {extra[0]}.* is shared by every task of the run. Fix: set {extra[0]}.<key>=... "
                            f"for the whole run, or tasks.{name}.data.<key>=... for this task.")
        _check_data_keys(name, own.get("data") or {})
        preset_cfg = OmegaConf.load(path)
        merged = OmegaConf.create({section: defaults[section] for section in TASK_SECTIONS})
        OmegaConf.set_struct(merged.data, True)  # a misspelt data key is an error, not a new key
        try:
            merged = OmegaConf.merge(merged, {s: preset_cfg.get(s, {}) for s in TASK_SECTIONS},
                                     {"data": shared_data}, own)
        except Exception as exc:  # omegaconf's ConfigKeyError / ValidationError
            raise UserError(f"tasks.{name}: {str(exc).splitlines()[0]}. Fix: use keys of conf/config.yaml's "
                            "data: block, e.g. tasks.<name>.data.train_file=<file>.") from None
        _check_task_keys(name, merged.task, defaults.task)
        merged.task.name = name
        expanded[name] = OmegaConf.to_container(merged, resolve=False)
    with open_dict(cfg):  # tasks.<name> are keys the composed (struct) config does not have
        cfg.tasks = expanded
        cfg.task.monitor, cfg.task.mode = checkpoint_monitor(cfg, tasks)


def _check_data_keys(name: str, data: dict) -> None:
    """tasks.<name>.data.*: keys of the data: block (a misspelt one names the closest)."""
    from gpt2tasks.config import unknown_key

    for key in data:
        problem = unknown_key(f"data.{key}")
        if problem:
            why, meant = problem
            raise UserError(f"tasks.{name}.{why}. Fix: {f'tasks.{name}.{meant}=...' if meant else 'remove it'}.")


def _check_task_keys(name: str, task: DictConfig, defaults: DictConfig) -> None:
    """task.* of a task: the common keys plus its kind's own options (task.tag_scheme, ...)."""
    from gpt2tasks.config import unknown_key
    from gpt2tasks.tasks import KINDS

    kind = KINDS.get(str(task.kind))
    valid = {*defaults, *(kind.module.eval_options if kind else ())}
    unknown = sorted(set(task) - valid)
    if unknown:
        problem = unknown_key(f"task.{unknown[0]}", str(task.kind))
        meant = f" (did you mean tasks.{name}.{problem[1]}?)" if problem and problem[1] else ""
        raise UserError(f"tasks.{name}.task.{unknown[0]}: not a key of a {task.kind} task{meant} (valid: "
                        f"{', '.join(sorted(valid))}). Fix: check the spelling.")


def _changed(node: DictConfig, defaults: DictConfig) -> dict[str, Any]:
    now = OmegaConf.to_container(node, resolve=True)
    before = OmegaConf.to_container(defaults, resolve=True)
    return {k: v for k, v in now.items() if k not in before or before[k] != v}


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


def main_metrics(cfg: DictConfig) -> dict[str, str]:
    """Each task's own monitored metric name (task.monitor 'val/accuracy' -> 'accuracy')."""
    return {name: str(section.task.monitor).split("/", 1)[1] for name, section in cfg.tasks.items()}


def task_view(cfg: DictConfig, name: str) -> DictConfig:
    """Task `name` as a single-task run's config: the shared keys plus its own task/data blocks."""
    container = OmegaConf.to_container(cfg, resolve=True)
    section = container.pop("tasks")[name]
    container.pop("multitask")
    container.update(task=section["task"], data=section["data"])
    view = OmegaConf.create(container)
    OmegaConf.set_struct(view, True)
    return view


def check(cfg: DictConfig, task_problems) -> list[str]:
    """Problems with multitask.* and with every task's own blocks (`task_problems(view)`, named
    tasks.<name>.*)."""
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
        view = task_view(cfg, name)
        if view.task.kind == MULTITASK:
            problems.append(f"tasks.{name}: a multi-task run cannot nest another. Fix: list single tasks.")
            continue
        problems += [f"tasks.{name}: {p}" for p in task_problems(view)]
    return problems


# ---- building -----------------------------------------------------------------------------------
def attach_head(head_cls: type[PreTrainedModel], config: GPT2Config, backbone: torch.nn.Module) -> PreTrainedModel:
    """An HF head model around an existing `GPT2Model`: the head's own layers are new (initialised
    as HF initialises them), `transformer` is `backbone` itself. Built on the meta device first,
    so no second backbone is ever allocated."""
    import torch

    config.vocab_size = backbone.get_input_embeddings().num_embeddings  # the backbone's, resized or not
    with torch.device("meta"):
        model = head_cls(config)
    model.transformer = backbone
    device = backbone.get_input_embeddings().weight.device
    for name, module in model.named_children():
        if name != "transformer":
            module.to_empty(device=device)
            module.apply(model._init_weights)
    if getattr(model, "lm_head", None) is not None:
        model.lm_head.weight = backbone.get_input_embeddings().weight  # tied, as in every GPT-2 LM head
    model.train()
    return model


def build_heads(cfg: DictConfig, kinds: dict[str, str], configs: dict[str, GPT2Config], tokenizer,
                new_token_ids: list[int], from_checkpoint: bool | None = None, base: str | None = None
                ) -> dict[str, PreTrainedModel]:
    """One HF head model per task, all over the first one's backbone, then LoRA (on the shared
    backbone) and torch.compile as a single-task run applies them. `base`: the checkpoint the
    frozen weights of a lean checkpoint come from."""
    from gpt2tasks import lora
    from gpt2tasks.backbone import build_model
    from gpt2tasks.build import lora_spec, model_spec
    from gpt2tasks.tasks import KINDS

    spec = model_spec(cfg)
    if base:
        spec.name_or_path = base
    first, *rest = kinds
    models = {first: build_model(KINDS[kinds[first]].head, spec, configs[first], tokenizer, from_checkpoint)}
    backbone = models[first].transformer  # the one GPT2Model every head shares
    for name in rest:
        models[name] = attach_head(KINDS[kinds[name]].head, configs[name], backbone)

    peft = lora_spec(cfg)
    if peft.enabled:
        adapters = list(kinds) if cfg.multitask.adapters == "per_task" else ["default"]
        backbone = lora.apply_lora_to_backbone(backbone, peft, adapters, new_token_ids,
                                               tied_output=any(k in ("lm", "mc") for k in kinds.values()))
        for model in models.values():
            model.transformer = backbone
    if spec.compile:
        backbone.compile()  # in place: parameter names (checkpoints) stay those of the eager model
    return models


def view_info(info: dict, name: str) -> dict:
    """Task `name`'s run information as a single-task checkpoint would carry it."""
    shared = {key: info.get(key) for key in ("tokenizer_files", "new_token_ids", "frozen_base_from", "command")}
    return {**shared, **info["tasks"][name]}


def _module(cfg: DictConfig, info: dict, models: dict, datamodules: dict, check_monitor: bool):
    from gpt2tasks.build import _spec, build_module
    from gpt2tasks.datamodules.multitask import MultiTaskDataModule
    from gpt2tasks.tasks.base import OptimSpec
    from gpt2tasks.tasks.multitask import MultiTaskModule

    mt = spec(cfg)
    tasks = {}
    for name, model in models.items():
        tasks[name] = build_module(task_view(cfg, name), model, datamodules[name], view_info(info, name),
                                   check_monitor=check_monitor)
        tasks[name].task_datamodule = datamodules[name]
    module = MultiTaskModule(tasks, _spec(OptimSpec, cfg.optim), info, main_metrics=main_metrics(cfg),
                             loss_weights=mt.loss_weights, monitor_weights=mt.monitor_weights,
                             per_task_adapters=cfg.peft.method == "lora" and mt.adapters == "per_task",
                             report_mean=len({str(cfg.tasks[n].task.mode) for n in models}) == 1)
    return MultiTaskDataModule(datamodules, mt.sampling, mt.temperature, seed=int(cfg.seed)), module


def build_for_training(cfg: DictConfig):
    """(multi-task datamodule, module, tokenizer), as build.build_for_training for one task: one
    tokenizer and model config; per task its data (labels known), then its head's config."""
    import lightning as L
    from transformers import GPT2Config

    from gpt2tasks import build
    from gpt2tasks.backbone import load_model_config, load_tokenizer
    from gpt2tasks.tasks import KINDS

    names = spec(cfg).names
    model = build.model_spec(cfg)
    tokenizer = load_tokenizer(model)
    config = load_model_config(model, tokenizer)
    datamodules, configs, kinds = {}, {}, {}
    for name in names:
        view = task_view(cfg, name)
        datamodules[name] = build.build_datamodule(view, tokenizer, config)
        datamodules[name].setup("fit")
        kinds[name] = view.task.kind
        configs[name] = GPT2Config.from_dict(config.to_dict())
        KINDS[kinds[name]].module.configure_head(configs[name], datamodules[name].label_space)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    new_token_ids = list(range(config.vocab_size, len(tokenizer)))
    models = build_heads(cfg, kinds, configs, tokenizer, new_token_ids)
    info = {"kind": MULTITASK, "config": OmegaConf.to_container(cfg, resolve=True),
            "tokenizer_files": build.tokenizer_files(tokenizer), "new_token_ids": new_token_ids,
            "frozen_base_from": build.lean_checkpoint_base(cfg, new_token_ids), "command": build.training_command(),
            "tasks": {name: {"kind": kinds[name], "config": OmegaConf.to_container(task_view(cfg, name)),
                             "hf_config": models[name].config.to_dict(),
                             "label_space": datamodules[name].label_space.to_dict()} for name in names}}
    datamodule, module = _module(cfg, info, models, datamodules, check_monitor=True)
    return datamodule, module, tokenizer


def build_from_checkpoint(cfg: DictConfig, info: dict, load_eval_sets: bool = True, tasks: list[str] | None = None):
    """The multi-task datamodule and module from a checkpoint's run information (weights: load the
    checkpoint's state_dict next). `tasks`: whose eval sets to load (default: all)."""
    from transformers import GPT2Config

    from gpt2tasks import build
    from gpt2tasks.datamodules.labels import LabelSpace

    tokenizer = build.tokenizer_from_files(info["tokenizer_files"])
    saved = info["tasks"]
    configs = {name: GPT2Config.from_dict(task["hf_config"]) for name, task in saved.items()}
    kinds = {name: task["kind"] for name, task in saved.items()}
    base = info.get("frozen_base_from")
    models = build_heads(cfg, kinds, configs, tokenizer, info.get("new_token_ids", []),
                         from_checkpoint=bool(base), base=base)
    datamodules = {}
    for name in saved:
        datamodules[name] = build.build_datamodule(task_view(cfg, name), tokenizer, configs[name],
                                                   label_space=LabelSpace(**saved[name]["label_space"]))
        if load_eval_sets and (tasks is None or name in tasks):
            datamodules[name].setup("validate")
    return _module(cfg, info, models, datamodules, check_monitor=False)


# ---- export: one standard HF model (or PEFT adapter) per task -----------------------------------
def _retie(model: PreTrainedModel) -> None:
    if getattr(model, "lm_head", None) is not None:
        model.lm_head.weight = model.transformer.get_input_embeddings().weight


def merge_task_backbone(model: PreTrainedModel, adapter_name: str) -> None:
    """Give one task's HF head model its own backbone with that task's adapters folded in (a plain
    GPT2Model); the other heads keep the LoRA backbone. No LoRA: nothing to do."""
    import copy

    from gpt2tasks import lora

    if not lora.is_lora(model.transformer):
        return
    backbone = copy.deepcopy(model.transformer)
    lora.activate(backbone, adapter_name)
    model.transformer = backbone.merge_and_unload(adapter_names=[adapter_name])
    _retie(model)


def plain_backbone(backbone: torch.nn.Module) -> torch.nn.Module:
    """The frozen base GPT2Model under a LoRA backbone (a copy, without any adapter)."""
    import copy

    from gpt2tasks import lora

    return copy.deepcopy(backbone).unload() if lora.is_lora(backbone) else backbone


def task_adapter_model(model: PreTrainedModel, adapter_name: str, peft_spec, head_modules) -> torch.nn.Module:
    """One task as a single-task PEFT model: its HF head over the plain base, wrapped the way a
    single-task LoRA run wraps it (`lora.apply_lora`), with the task's adapter weights copied in."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from gpt2tasks import lora

    backbone = model.transformer
    state = get_peft_model_state_dict(backbone, adapter_name=adapter_name)  # keys without the adapter name
    prefix = "base_model.model."  # PeftModel(GPT2Model) -> PeftModel(head): the backbone sits under transformer.
    state = {f"{prefix}transformer.{k[len(prefix):]}": v for k, v in state.items()}
    # the trained head, which the single-task adapter carries as modules_to_save
    state.update({f"{prefix}{k}": v for k, v in model.state_dict().items() if k.split(".")[0] in head_modules})
    model.transformer = plain_backbone(backbone)
    _retie(model)
    wrapped = lora.apply_lora(model, peft_spec, head_modules)
    result = set_peft_model_state_dict(wrapped, state, adapter_name="default")
    missing = [k for k in result.unexpected_keys if "lora_" in k]
    if missing:
        raise RuntimeError(f"adapter weights did not fit the task's model: {missing[:3]}")
    wrapped.eval()
    return wrapped
