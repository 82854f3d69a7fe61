"""From a config to objects: where config stops and typed arguments begin.

`train` and `eval` both build through here, so a checkpoint is re-evaluated with exactly the
preprocessing, head and metrics it was trained with. The config is parsed once, at the top
(`build_for_training`, `build_from_checkpoint`): into a frozen gpt2tasks.runspec.RunSpec, which is
all that the steps below read. A run is N >= 1 named tasks over one backbone; one task or several go
through the same steps: one tokenizer and model config, per task its datamodule and head config,
the heads over one `GPT2Model` (`build_heads`), then per task its module, and the run's one module
over them (`assemble`, tasks/multitask.py): one module class and one checkpoint layout for every run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig
from transformers import AutoTokenizer, GPT2Config, PreTrainedTokenizerBase

from gpt2tasks import lora, multitask, runspec
from gpt2tasks.backbone import ModelSpec, attach_head, build_model, load_model_config, load_tokenizer, n_positions
from gpt2tasks.callbacks import progress_bar as bar
from gpt2tasks.config import block, normalize_precision, plain as _plain
from gpt2tasks.datamodules.base import DataSpec, TaskDataModule
from gpt2tasks.datamodules.labels import LabelSpace
from gpt2tasks.datamodules.multitask import MultiTaskDataModule
from gpt2tasks.errors import UserError
from gpt2tasks.literal import check_file_name
from gpt2tasks.runspec import RunSpec, TaskSpec
from gpt2tasks.strategies import build_strategy
from gpt2tasks.tasks import KINDS
from gpt2tasks.tasks.base import EvalSpec, TaskModule
from gpt2tasks.tasks.multitask import MultiTaskModule

log = logging.getLogger(__name__)


def model_spec(cfg: DictConfig) -> ModelSpec:
    """`model.*` alone (what the tokenizer and the backbone are), for callers without a whole run."""
    return block(ModelSpec, cfg.model, "model")


def data_spec(task: TaskSpec, precision: str, max_length: int) -> DataSpec:
    """The task's data options with what the model and precision decide: the (clamped) max_length,
    and padding to a multiple of 8 under 16-bit precision unless data.pad_to_multiple_of says."""
    pad = task.data.pad_to_multiple_of
    if pad is None and normalize_precision(precision) != "32-true":
        pad = 8  # tensor-core friendly shapes under 16-bit precision
    return dataclasses.replace(task.data, max_length=max_length, pad_to_multiple_of=pad)


def clamp_max_length(requested: int, config: GPT2Config) -> int:
    limit = n_positions(config)
    if requested > limit:
        log.warning("data.max_length=%d is above the model's n_positions=%d (GPT-2 has absolute position "
                    "embeddings): clamping to %d.", requested, limit, limit)
        return limit
    return requested


def build_datamodule(run: RunSpec, task: TaskSpec, tokenizer: PreTrainedTokenizerBase, config: GPT2Config,
                     label_space: LabelSpace | None = None, whole_eval_sets: Sequence[str] = ()) -> TaskDataModule:
    """`whole_eval_sets`: eval sets read whole, whatever data.max_eval_samples says (DataSpec)."""
    kind = KINDS[task.kind]
    spec = dataclasses.replace(data_spec(task, run.precision, clamp_max_length(int(task.data.max_length), config)),
                               whole_eval_sets=tuple(whole_eval_sets))
    datamodule = kind.datamodule(spec, tokenizer, seed=run.seed, label_space=label_space,
                                 label_names=None if task.label_names is None else list(task.label_names),
                                 problem_type=task.problem_type)
    datamodule.check_model_limits(n_positions(config))
    datamodule.n_positions = n_positions(config)  # the longest packed row (data.pack_examples)
    datamodule.static_shapes = run.model.compile  # packed batches: one shape, no recompiles
    return datamodule


def build_module(run: RunSpec, task: TaskSpec, model, datamodule: TaskDataModule, run_info: dict | None = None,
                 check_monitor: bool = True) -> TaskModule:
    """`check_monitor=False` for `predict`, which loads no eval sets."""
    kind = KINDS[task.kind]
    metrics = list(task.metrics)
    kind.module.check_metrics(metrics, datamodule.label_space, key="task.metrics")
    monitor_set = task.monitor.split("/", 1)[0]
    if check_monitor and monitor_set not in datamodule.eval_sets:
        raise UserError(f"task.monitor={task.monitor}: there is no eval set {monitor_set!r} "
                        f"(this run has {datamodule.eval_sets}). Fix: task.monitor=val/<metric>.")
    evaluation = EvalSpec(metrics=metrics, eval_sets=list(datamodule.eval_sets), options=dict(task.options),
                          monitor=task.monitor)
    return kind.module(model, run.optim, evaluation, run_info)


def build_for_training(cfg: DictConfig) -> tuple[MultiTaskDataModule, MultiTaskModule,
                                                  PreTrainedTokenizerBase]:
    """Tokenizer -> model config -> per task: data (labels known), its head's config -> the heads
    over one backbone -> modules."""
    run = runspec.parse(cfg)
    tokenizer = load_tokenizer(run.model)
    config = load_model_config(run.model, tokenizer)
    loaded = config.to_dict()
    datamodules, configs = {}, {}
    for name, task in run.tasks.items():
        datamodules[name] = build_datamodule(run, task, tokenizer, config)
        datamodules[name].setup("fit")
        # Each head its own config (labels, ...); the first task's is the loaded one.
        configs[name] = GPT2Config.from_dict(loaded) if configs else config
        KINDS[task.kind].module.configure_head(configs[name], datamodules[name].label_space)
    L.seed_everything(run.seed, workers=True, verbose=False)  # same init for the same seed
    # Token rows the tokenizer adds beyond the checkpoint's vocabulary (e.g. model.pad_token=add):
    # new, so they train even under LoRA.
    new_token_ids = list(range(config.vocab_size, len(tokenizer)))
    models = build_heads(run, configs, tokenizer)
    shared = {"tokenizer_files": tokenizer_files(tokenizer), "new_token_ids": new_token_ids,
              "frozen_base_from": lean_checkpoint_base(run, new_token_ids), "command": training_command()}
    tasks = {name: {"kind": task.kind, "config": dict(task.config), "hf_config": models[name].config.to_dict(),
                    "label_space": datamodules[name].label_space.to_dict()} for name, task in run.tasks.items()}
    info = multitask.run_info(cfg, tasks, shared)
    models = adapt_models(run, models, new_token_ids)
    return (*assemble(run, info, models, datamodules, check_monitor=dict.fromkeys(run.tasks, True)), tokenizer)


def build_heads(run: RunSpec, configs: dict[str, GPT2Config], tokenizer: PreTrainedTokenizerBase,
                from_checkpoint: bool | None = None, base: str | None = None) -> dict[str, Any]:
    """One HF head model per task: the first as a checkpoint (or random init) gives it, every other
    one around that same `GPT2Model` (backbone.attach_head), so the backbone exists once and every
    head's `transformer` *is* it. `base`: the checkpoint the frozen weights of a lean checkpoint
    come from."""
    spec = dataclasses.replace(run.model, name_or_path=base) if base else run.model
    (first, task), *rest = run.tasks.items()
    models = {first: build_model(KINDS[task.kind].head, spec, configs[first], tokenizer, from_checkpoint)}
    for name, task in rest:
        models[name] = attach_head(KINDS[task.kind].head, configs[name], models[first].transformer)
    return models


def adapt_models(run: RunSpec, models: dict[str, Any], new_token_ids: list[int]) -> dict[str, Any]:
    """The training-time wrappers around the HF head models: LoRA adapters, then torch.compile. One
    task: PEFT around its head model; several: LoRA on the backbone they share (one adapter set, or
    one per task with multitask.adapters=per_task), so each head keeps its own modules."""
    backbone = next(iter(models.values())).transformer
    if run.peft.enabled and not run.multitask:
        (name, model), = models.items()
        models = {name: lora.apply_lora(model, run.peft, KINDS[run.tasks[name].kind].module.head_modules, new_token_ids)}
    elif run.peft.enabled:
        adapters = list(models) if run.per_task_adapters else ["default"]
        tied = any(getattr(model, "lm_head", None) is not None for model in models.values())  # output layer = wte
        backbone = lora.apply_lora_to_backbone(backbone, run.peft, adapters, new_token_ids, tied_output=tied)
        for model in models.values():
            model.transformer = backbone
    if run.model.compile:
        # In place (nn.Module.compile): parameter names, and so checkpoints, stay those of the eager
        # model. Only the backbone: it is where the time goes, and heads differ per kind.
        backbone.compile()
    return models


def assemble(run: RunSpec, info: dict, models: dict[str, Any], datamodules: dict[str, TaskDataModule],
             check_monitor: dict[str, bool]) -> tuple[MultiTaskDataModule, MultiTaskModule]:
    """Per task its module, and the run's one module over them (tasks/multitask.py) and one
    datamodule that mixes the tasks' batches (datamodules/multitask.py; a single task: its own
    batches, the same as its datamodule alone gives). `run.multitask` (task=multitask, even of one
    task) names the tasks in metric names and config keys. `check_monitor`: per task, whether its
    eval sets are loaded, so task.monitor can be checked."""
    modules = {name: build_module(run, task, models[name], datamodules[name], task_info, check_monitor=check_monitor[name])
               for (name, task), task_info in zip(run.tasks.items(), multitask.task_infos(info).values(), strict=True)}
    for name, module in modules.items():
        module.task_datamodule = datamodules[name]
    mix = run.mixing
    module = MultiTaskModule(modules, run.optim, info, main_metrics={name: task.main_metric for name, task in run.tasks.items()},
                             loss_weights=dict(mix.loss_weights), monitor_weights=dict(mix.monitor_weights),
                             per_task_adapters=run.per_task_adapters,
                             report_mean=len({task.mode for task in run.tasks.values()}) == 1, several=run.multitask)
    return MultiTaskDataModule(datamodules, mix.sampling, mix.temperature, seed=run.seed, named_tasks=run.multitask), module


def training_command() -> str | None:
    """The command line of a run launched by `python -m gpt2tasks train` (for the export's model
    card); None when training is called from Python."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    from gpt2tasks.errors import redact_args

    # recorded in checkpoints and model cards: a secret given on the command line is not
    return " ".join(["python -m gpt2tasks train", *redact_args(HydraConfig.get().overrides.task)])


def lean_checkpoint_base(run: RunSpec, new_token_ids: list[int]) -> str | None:
    """The checkpoint the frozen base weights can be reloaded from, when checkpoints may leave them
    out: LoRA over pretrained weights. Not with added token rows (their base rows are random init)."""
    spec = run.model
    if run.peft.enabled and spec.pretrained and spec.name_or_path and not new_token_ids:
        path = os.path.expanduser(str(spec.name_or_path))
        # A local folder is kept absolute, so eval from another directory still finds it.
        return os.path.abspath(path) if os.path.isdir(path) else str(spec.name_or_path)
    return None


DATA_FILE_KEYS = ("train_file", "validation_file", "test_file")


def absolute_data_paths(cfg: DictConfig) -> None:
    """Make the run's data file paths absolute (in place; every task's in a multi-task run), before
    the config is saved: `eval ckpt=...` then finds them from any working directory."""
    for section in [cfg, *(cfg.tasks[name] for name in cfg.get("tasks") or {})]:
        data = section.data
        for key in DATA_FILE_KEYS:
            if data.get(key) and not os.path.isabs(str(data[key])):
                data[key] = os.path.abspath(os.path.expanduser(str(data[key])))
        for extra in (data.get("extra_validation") or {}).values():
            if extra.get("file") and not os.path.isabs(str(extra.file)):
                extra.file = os.path.abspath(os.path.expanduser(str(extra.file)))


def build_from_checkpoint(cfg: DictConfig, info: dict, load_eval_sets: bool = True, tasks: list[str] | None = None,
                          whole_eval_sets: dict[str, Sequence[str]] | None = None
                          ) -> tuple[MultiTaskDataModule, MultiTaskModule]:
    """The same objects from a checkpoint's saved run_info, with the weights of initialisation (load
    the checkpoint's state_dict next): no download, no training data needed. `load_eval_sets=False`
    (predict) reads no data: the caller gives its own input. `tasks`: of a multi-task run, whose
    eval sets to load (default: all). `whole_eval_sets`: per task, the eval sets read whole
    (`eval` with a file named on its command line: runfile.named_eval_sets)."""
    run, saved = runspec.parse(cfg), multitask.task_infos(info)
    tokenizer = tokenizer_from_files(info["tokenizer_files"])
    configs = {name: GPT2Config.from_dict(task["hf_config"]) for name, task in zip(run.tasks, saved.values(), strict=True)}
    # A lean LoRA checkpoint holds no frozen base weights: load them from the base checkpoint again.
    base = info.get("frozen_base_from")
    models = build_heads(run, configs, tokenizer, from_checkpoint=bool(base), base=base)
    models = adapt_models(run, models, info.get("new_token_ids", []))
    datamodules, loaded = {}, {}
    for (name, task), task_info in zip(run.tasks.items(), saved.values()):
        label_space = LabelSpace(**task_info["label_space"])
        datamodules[name] = build_datamodule(run, task, tokenizer, configs[name], label_space=label_space,
                                             whole_eval_sets=(whole_eval_sets or {}).get(name, ()))
        loaded[name] = load_eval_sets and (tasks is None or name in tasks)
        if loaded[name]:
            datamodules[name].setup("validate")
    return assemble(run, info, models, datamodules, check_monitor=loaded)


def restore(checkpoint: dict, cfg: DictConfig, task: str | None = None, load_eval_sets: bool = True,
            whole_eval_sets: dict[str, Sequence[str]] | None = None) -> tuple[DictConfig, TaskDataModule, TaskModule]:
    """(config, datamodule, module) of a checkpoint, with its weights (lean checkpoints completed).
    `task`: one task of the run, as that task alone (its view, datamodule, module); None: the run.
    `whole_eval_sets`: see build_from_checkpoint."""
    datamodule, module = build_from_checkpoint(cfg, checkpoint["gpt2tasks"], load_eval_sets,
                                               tasks=[task] if task else None, whole_eval_sets=whole_eval_sets)
    module.complete_state_dict(checkpoint)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        raise UserError(f"ckpt=: the checkpoint's weights do not fit the model its run describes ({' '.join(str(exc).split())[:300]}). "
                        "Fix: pass an unmodified checkpoint written by `gpt2tasks train`.") from None
    if task is None:
        return cfg, datamodule, module
    part = module.tasks[task].task_datamodule  # (task_module lets it go)
    return multitask.task_views(cfg)[task], part, module.task_module(task)


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def tokenizer_from_files(files: dict[str, bytes]) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a checkpoint's run information ({file name: content}). The names are
    checked again here, where they become paths (runfile.load_checkpoint checked them on loading)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            check_file_name(name, "the checkpoint's tokenizer_files", "use an unmodified checkpoint of a "
                            "`gpt2tasks train` run.")
            Path(tmp, name).write_bytes(content)
        try:  # no trust_remote_code: a tokenizer_config.json asking for code of its own is refused here
            tokenizer = AutoTokenizer.from_pretrained(tmp, use_fast=True)
        except Exception as exc:  # noqa: BLE001 -- whatever the edited files hold, they are not a tokenizer
            raise UserError(f"the checkpoint's tokenizer_files do not make a tokenizer ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Fix: use an unmodified "
                            "checkpoint of a `gpt2tasks train` run.") from None
    tokenizer.padding_side = "right"
    return tokenizer


def build_logger(cfg: DictConfig, output_dir: Path):
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        # logs/version_N/metrics.csv: a resumed run starts a new version instead of deleting the old log
        return CSVLogger(save_dir=str(output_dir), name="logs")
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(output_dir), name="tensorboard")
    from lightning.pytorch.loggers import WandbLogger

    opts = _plain(cfg.logger)
    mode = opts.get("mode", "auto")
    if mode == "auto":
        mode = "online" if _wandb_logged_in() else "offline"
        if mode == "offline":
            log.warning("W&B: not logged in, logging offline to %s/wandb. Sync later with "
                        "`wandb sync %s/wandb/offline-run-*` (or run `wandb login` first).", output_dir, output_dir)
    return WandbLogger(project=opts.get("project"), entity=opts.get("entity"), name=opts.get("name"),
                       tags=opts.get("tags") or None, save_dir=str(output_dir), mode=mode)


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def trainer_kwargs(cfg: DictConfig, single_device: bool = False) -> dict[str, Any]:
    """lightning.Trainer keywords from `trainer.*`; `single_device` (eval) runs on one device whatever
    the run trained on: exact evaluation gives the same numbers on any number of devices."""
    kwargs = _plain(cfg.trainer)
    if single_device:
        kwargs.update(devices=1, num_nodes=1, strategy="auto")
    ddp = kwargs.get("ddp") or {}
    if ddp.get("find_unused_parameters", False) is None:
        # A step of a run of several tasks runs one task's head: DDP must not wait for the others' gradients.
        ddp["find_unused_parameters"] = cfg.task.kind == multitask.MULTITASK
    kwargs["strategy"] = build_strategy(kwargs, cfg.optim.max_grad_norm)
    kwargs["precision"] = normalize_precision(cfg.precision)
    # Our samplers shard by rank themselves (length-grouped, exact eval): no DistributedSampler.
    kwargs["use_distributed_sampler"] = False
    _choose_cluster_environment(kwargs)
    return kwargs


def _choose_cluster_environment(kwargs: dict[str, Any]) -> None:
    """Add distributed.cluster_environment's choice to the Trainer's plugins (unless trainer.plugins
    names a cluster environment already)."""
    from lightning.fabric.plugins.environments import ClusterEnvironment

    from gpt2tasks.distributed import cluster_environment

    given = kwargs.get("plugins")
    plugins = list(given) if isinstance(given, (list, tuple)) else [given] if given is not None else []
    num_nodes = kwargs.get("num_nodes", 1)
    if any(isinstance(p, ClusterEnvironment) for p in plugins) or not isinstance(num_nodes, int):
        return
    environment = cluster_environment(num_nodes)
    if environment is not None:
        kwargs["plugins"] = [*plugins, environment]


def build_trainer(cfg: DictConfig, single_device: bool = False, **extra: Any) -> L.Trainer:
    """lightning.Trainer from `trainer.*` (+ `extra` keywords); its refusals (no such device, a
    strategy that does not fit the accelerator, ...) become a UserError naming the trainer keys."""
    return trainer_with_progress(cfg, {**trainer_kwargs(cfg, single_device), **extra})


def trainer_with_progress(cfg: DictConfig, kwargs: dict[str, Any]) -> L.Trainer:
    """trainer_from_kwargs with the progress display of every command (`progress_bar`)."""
    bar = progress_bar(kwargs, str(cfg.task.monitor), str(cfg.task.mode))
    if bar is not None:
        kwargs = {**kwargs, "callbacks": [*kwargs.get("callbacks", []), bar]}
    return trainer_from_kwargs(kwargs)


def trainer_from_kwargs(kwargs: dict[str, Any]) -> L.Trainer:
    """lightning.Trainer(**kwargs), its refusals a UserError naming the trainer keys (see build_trainer)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError, ImportError) as exc:  # ImportError: e.g. tpu without torch_xla
        strategy = kwargs["strategy"]
        shown = {**{k: kwargs.get(k) for k in ("accelerator", "devices", "num_nodes")},
                 "strategy": strategy if isinstance(strategy, str) else type(strategy).__name__}
        raise UserError(f"lightning.Trainer refused the trainer settings {shown}: {str(exc).splitlines()[0]} Fix: change trainer.accelerator / trainer.devices / "
                        "trainer.strategy (trainer=ddp|fsdp|deepspeed), e.g. trainer.accelerator=cpu trainer.devices=2.") from None


def runs_on_cuda(trainer: dict[str, Any]) -> bool:
    accelerator = str(trainer.get("accelerator", "auto"))
    import torch

    return accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())


def progress_bar(trainer: dict[str, Any], monitor: str, mode: str):
    """The progress bar (None when disabled or the caller brought one): without Lightning's `v_num`,
    and on CUDA one that redraws every `log_every_n_steps` steps. Every redraw reads the logged
    tensors (loss, samples/s) on the host, which waits for the GPU to finish its queue: Lightning's
    default bars redraw every step (the Rich one whatever its refresh rate), so the host could
    never run ahead of the GPU. When stdout is not a terminal (nohup, SLURM, CI), plain lines
    every `log_every_n_steps` steps and per validation instead (callbacks.ProgressLines)."""
    import sys

    from lightning.pytorch.callbacks import ProgressBar

    from gpt2tasks.callbacks import ProgressLines

    if not trainer.get("enable_progress_bar", True) or any(isinstance(c, ProgressBar) for c in trainer.get("callbacks", [])):
        return None
    every = max(1, int(trainer.get("log_every_n_steps") or 50))  # Lightning's default: 50
    if not sys.stdout.isatty():
        return ProgressLines(every, monitor, mode)
    if not runs_on_cuda(trainer):
        return bar()
    return bar(refresh_rate=every)
