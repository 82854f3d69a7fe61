"""`trainer.strategy` -> a Lightning strategy: DDP, FSDP or DeepSpeed, with the options of
conf/trainer/{ddp,fsdp,deepspeed}.yaml (`trainer.ddp.*`, `trainer.fsdp.*`, `trainer.deepspeed.*`).

Distribution is Lightning's own (DDPStrategy, FSDPStrategy, DeepSpeedStrategy); this module only
turns config values into their arguments, refuses what `eval`/resume could not read back, and
clips gradients where each strategy keeps them.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, Strategy

from gpt2tasks.errors import UserError

#: the option block of each strategy name, and the classes whose keywords it may hold
OPTION_KEYS = ("ddp", "fsdp", "deepspeed")
DEEPSPEED_INSTALL = "pip install deepspeed"


def build_strategy(trainer: dict[str, Any], max_grad_norm: float | None) -> Strategy | str:
    """The `strategy=` argument of lightning.Trainer. `trainer` is the plain `trainer:` block; its
    option blocks (ddp/fsdp/deepspeed) are popped from it."""
    options = {key: trainer.pop(key, None) or {} for key in OPTION_KEYS}
    name = str(trainer.get("strategy", "auto"))
    if name == "auto" and _several_devices(trainer.get("devices"), trainer.get("num_nodes")):
        name = "ddp"  # with trainer.ddp.* (conf/trainer/default.yaml), not Lightning's bare default
    if name == "ddp":
        return DDPStrategy(**_checked("ddp", options["ddp"], DDPStrategy, torch.nn.parallel.DistributedDataParallel))
    if name == "fsdp":
        _require_cuda("trainer.strategy=fsdp", trainer.get("accelerator"))
        return _fsdp(options["fsdp"])
    if name == "deepspeed":
        return _deepspeed(options["deepspeed"], max_grad_norm)
    return name  # "auto" on one device, or any other Lightning strategy name (ddp_spawn, ...)


def _several_devices(devices: Any, num_nodes: Any) -> bool:
    """True when the run certainly spans several processes; "auto"/-1 are left to Lightning (which
    also picks DDP for several devices, with its default options)."""
    if isinstance(num_nodes, int) and num_nodes > 1:
        return True
    if isinstance(devices, int):
        return devices > 1
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if isinstance(devices, str) and "," in devices:  # "0,1": device indices
        return len([d for d in devices.split(",") if d.strip()]) > 1
    return False


def _require_cuda(key: str, accelerator: Any) -> None:
    """Lightning runs FSDP on CUDA devices only: say so before anything starts."""
    if str(accelerator) in ("cuda", "gpu") or (str(accelerator) == "auto" and torch.cuda.is_available()):
        return
    raise UserError(f"{key} needs CUDA GPUs (Lightning's FSDP strategy does not run on "
                    f"trainer.accelerator={accelerator}). Fix: run on GPUs, or use trainer=ddp on CPU.")


def _checked(block: str, options: dict[str, Any], *classes: type) -> dict[str, Any]:
    """Refuse keys that none of `classes` takes, naming trainer.<block>.<key> (instead of a
    TypeError deep inside fit, after the processes started)."""
    known = {p for cls in classes for p in inspect.signature(cls.__init__).parameters} - {"self", "kwargs"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"trainer.{block}: unknown option(s) {unknown}. Fix: use keyword arguments of "
                        f"{' / '.join(c.__name__ for c in classes)}, e.g. {sorted(known)[:6]}.")
    return dict(options)


def _module_classes(key: str, names: Any) -> set[type] | None:
    """["GPT2Block"] -> {GPT2Block}: FSDP wraps (or checkpoints) each module of these classes."""
    if names in (None, [], ()):
        return None
    from transformers.models.gpt2 import modeling_gpt2

    names = [names] if isinstance(names, str) else list(names)
    missing = [n for n in names if not isinstance(getattr(modeling_gpt2, str(n), None), type)]
    if missing:
        raise UserError(f"trainer.fsdp.{key}={names}: {missing} are not module classes of GPT-2. "
                        "Fix: trainer.fsdp." + key + "=[GPT2Block] (one unit per transformer block).")
    return {getattr(modeling_gpt2, str(n)) for n in names}


def _fsdp(options: dict[str, Any]) -> FSDPStrategy:
    from torch.distributed.fsdp import FullyShardedDataParallel

    options = _checked("fsdp", options, FSDPStrategy, FullyShardedDataParallel)
    if options.get("state_dict_type", "full") != "full":
        raise UserError(f"trainer.fsdp.state_dict_type={options['state_dict_type']!r}: sharded checkpoints are "
                        "folders of per-rank shards that `eval` and resume on another device count cannot read. "
                        "Fix: trainer.fsdp.state_dict_type=full (rank 0 writes one consolidated file).")
    for key in ("auto_wrap_policy", "activation_checkpointing_policy"):
        if key in options:
            options[key] = _module_classes(key, options[key])
    # Mixed precision is left to Lightning: its FSDP precision plugin derives it from `precision`.
    return FSDPStrategy(**options)


def _deepspeed(options: dict[str, Any], max_grad_norm: float | None) -> DeepSpeedStrategy:
    require_deepspeed("trainer.strategy=deepspeed")
    options = _checked("deepspeed", options, DeepSpeedStrategy)
    if options.get("stage", 2) not in (1, 2, 3):
        raise UserError(f"trainer.deepspeed.stage={options['stage']!r} must be 1, 2 or 3 (ZeRO stage).")
    strategy = DeepSpeedStrategy(**options)
    # Gradients live inside the DeepSpeed engine (flattened, partitioned): it clips them itself.
    strategy.config.setdefault("gradient_clipping", float(max_grad_norm or 0.0))
    return strategy


def require_deepspeed(key: str) -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"{key} needs the optional `deepspeed` package, which is not installed. Fix: "
                        f"`{DEEPSPEED_INSTALL}` in this environment (it builds CUDA ops, so install it on the "
                        "GPU machine), or use trainer=fsdp, which shards the same states with PyTorch alone.")


def shards_parameters(strategy: Strategy) -> bool:
    """True when no rank holds all the weights outside a forward (FSDP, ZeRO-3): rank-0-only model
    calls (e.g. LM text samples) would then wait forever for the other ranks."""
    if isinstance(strategy, FSDPStrategy):
        return True
    return isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3


def clip_gradients(strategy: Strategy, parameters, max_norm: float) -> torch.Tensor | None:
    """Clip all gradients to one global norm; returns the norm before clipping (None when the
    strategy clips on its own)."""
    if isinstance(strategy, FSDPStrategy):
        # torch.nn.utils.clip_grad_norm_ would see only this rank's shards: the root FSDP module
        # computes the norm over all of them.
        return strategy.model.clip_grad_norm_(max_norm)
    if isinstance(strategy, DeepSpeedStrategy):
        return None  # the engine clips (config gradient_clipping, set in _deepspeed)
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
