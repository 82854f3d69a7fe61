"""Every private name of the libraries under gpt2tasks, in one place.

gpt2tasks relies on a few names that Lightning, transformers, torch, datasets and Hydra do not
promise to keep (a leading underscore, or an internal object reached through one). Each is used
through one small function here, whose docstring says what it relies on and why no public API
does the job; the rest of the package never touches a private name of a library. When an upgrade
removes or changes one, tests/unit/test_compat.py fails on it by name, with the library's
version, exercising the real library objects -- not somewhere deep in a training run.

Overridden private hooks (a subclass method Lightning calls by its private name) stay in their
subclasses, which call the parent through the function here; the test checks Lightning still
calls them: ModelCheckpoint._save_checkpoint (resume.BestCheckpoint) and
LearningRateMonitor._extract_stats (callbacks.LearningRateLogger).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type hints only: `--help` and the Hydra callbacks import this module without torch
    import torch

# ---- transformers -------------------------------------------------------------------------------


def attn_implementation(config: Any) -> str | None:
    """The attention kernel ("sdpa", "eager", ...) a GPT-2 built from `config` runs.

    transformers keeps it in `config._attn_implementation`; the public `attn_implementation=` of
    `from_pretrained` and `model.set_attn_implementation` set it, but nothing public reads it."""
    return getattr(config, "_attn_implementation", None)


def set_attn_implementation(config: Any, name: str | None) -> None:
    """Choose the attention kernel of a model about to be built as `head_cls(config)` (random
    weights). `from_pretrained(attn_implementation=)` does this for a loaded model, and
    `model.set_attn_implementation` for a built one; for a config before the model exists, only
    the private `config._attn_implementation` does (what `from_pretrained` sets)."""
    config._attn_implementation = name


def init_new_module(model: torch.nn.Module, module: torch.nn.Module) -> None:
    """Initialise `module` (a head made on the meta device, then materialised) as `model`'s class
    initialises its own layers: `PreTrainedModel._init_weights`, applied to it. The public
    `model.init_weights()` re-initialises the whole model, the shared backbone included."""
    module.apply(model._init_weights)


# The causal fast path. transformers 5 builds GPT-2's attention mask with
# `modeling_gpt2.create_causal_mask`, which, given no mask, inspects the position ids for packed
# sequences: eagerly that reads a device tensor (a host sync every forward); under torch.compile it
# cannot, and builds a full (B, 1, T, T) mask, which rules out the flash kernel. GPT-2 made those
# position ids itself (arange, batch dim 1) whenever the caller passed none, so for gpt2tasks'
# unpadded batches (packed LM blocks) there is nothing packed to find: plain causal attention is
# exact. No public hook skips that inspection (a registered mask function runs after it), so the
# module's name is wrapped -- and the wrapper answers only while a gpt2tasks backbone is running
# (the hooks of `use_causal_fast_path` count them): every other GPT-2 in the process, and every
# other call (a mask, a cache, generation), gets transformers' own function, unchanged.
_own_forwards = 0  # gpt2tasks backbones in their forward now (one process runs one at a time)
_original_create_causal_mask = None
_fast_path_backbones: weakref.WeakSet = weakref.WeakSet()  # those with the hooks


def _enter_own_forward(module, args) -> None:
    global _own_forwards
    _own_forwards += 1


def _leave_own_forward(module, args, output) -> None:
    global _own_forwards
    _own_forwards -= 1


def _create_causal_mask(*args, **kwargs):
    # GPT-2 passes keywords, whose names moved across transformers 5 releases (input_embeds ->
    # inputs_embeds, past_key_values -> cache): read the few this needs, hand the call on untouched.
    position_ids = kwargs.get("position_ids")
    if (_own_forwards > 0 and not args and kwargs.get("attention_mask") is None and kwargs.get("cache") is None
            and kwargs.get("past_key_values") is None and (position_ids is None or position_ids.shape[0] == 1)
            and attn_implementation(kwargs.get("config")) == "sdpa"):
        return None  # SDPA then runs with is_causal=True
    return _original_create_causal_mask(*args, **kwargs)


def use_causal_fast_path(backbone: torch.nn.Module) -> None:
    """Give this GPT-2 backbone (a `GPT2Model`, gpt2tasks' own) the causal fast path: forwards with
    no attention mask run SDPA's `is_causal` kernel, with no mask tensor and no host sync.

    Relies on GPT-2's forward calling the module-level name `modeling_gpt2.create_causal_mask`
    with keywords (config, attention_mask, position_ids, and its cache as `cache` or
    `past_key_values`), and on `None` meaning "causal, no mask" to SDPA (see the comment above).
    Idempotent."""
    global _original_create_causal_mask
    from transformers.models.gpt2 import modeling_gpt2

    if modeling_gpt2.create_causal_mask is not _create_causal_mask:
        _original_create_causal_mask = modeling_gpt2.create_causal_mask
        modeling_gpt2.create_causal_mask = _create_causal_mask
    if backbone not in _fast_path_backbones:
        _fast_path_backbones.add(backbone)
        backbone.register_forward_pre_hook(_enter_own_forward)
        backbone.register_forward_hook(_leave_own_forward, always_call=True)  # also when the forward raises


def original_create_causal_mask():
    """transformers' own `create_causal_mask` of GPT-2 (what the wrapper hands other calls to)."""
    from transformers.models.gpt2 import modeling_gpt2

    return _original_create_causal_mask or modeling_gpt2.create_causal_mask


# ---- torch --------------------------------------------------------------------------------------


def tensor_version(tensor: torch.Tensor) -> int:
    """The tensor's in-place version counter (`Tensor._version`, bumped by every in-place op):
    whether weights changed since a checkpoint was written, without comparing them. torch has no
    public name for it."""
    return tensor._version


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether `module.compile()` compiled this module in place: it stores the compiled forward in
    `Module._compiled_call_impl`, and torch offers no public query."""
    return getattr(module, "_compiled_call_impl", None) is not None


def unscales_in_step(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's own step unscales a GradScaler's gradients (fused AdamW): the flag
    `_step_supports_amp_scaling` that GradScaler and Lightning read; there is no public one."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


# ---- datasets -----------------------------------------------------------------------------------


def dataset_fingerprint(dataset: Any) -> str:
    """A Hub split's content identity (`Dataset._fingerprint`, what datasets' own cache keys on),
    for gpt2tasks' tokenization cache key. datasets has no public accessor; hashing the rows would
    read the whole split again."""
    return dataset._fingerprint


# ---- Lightning ----------------------------------------------------------------------------------


def rich_available() -> bool:
    """Whether Lightning's RichProgressBar can be used (rich installed at the version Lightning
    needs): the flag Lightning itself checks, `rich_progress._RICH_AVAILABLE`, so gpt2tasks picks
    the bar Lightning would."""
    from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE

    return bool(_RICH_AVAILABLE)


def cluster_environment(trainer: Any) -> Any:
    """The cluster environment (SLURMEnvironment, ...) the Trainer chose, as its signal connector
    sees it: `trainer._accelerator_connector.cluster_environment`. The public
    `trainer.strategy.cluster_environment` is absent for single-device strategies."""
    return trainer._accelerator_connector.cluster_environment


def is_lightning_requeue_handler(trainer: Any, handler: Any) -> bool:
    """Whether `handler` (what `signal.getsignal` returns) is Lightning's SLURM requeue handler: its
    `_HandlersCompose` holding `trainer._signal_connector._slurm_sigusr_handler_fn`. Lightning does
    not say publicly whether it registered it (it does not when another handler was there first)."""
    return trainer._signal_connector._slurm_sigusr_handler_fn in getattr(handler, "signal_handlers", ())


def hpc_save_path(trainer: Any) -> Path:
    """Where Lightning's requeue handler saves its checkpoint (`hpc_ckpt_<n>.ckpt`):
    `trainer._checkpoint_connector.hpc_save_path`, the path it computes itself."""
    return Path(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))


def can_stop_early(trainer: Any) -> bool:
    """Whether the fit loop honours `should_stop` now (min_epochs/min_steps reached):
    `trainer.fit_loop._can_stop_early`, Lightning's own test; no public equivalent."""
    return bool(trainer.fit_loop._can_stop_early)


def validates_after_this_batch(trainer: Any) -> bool:
    """Lightning's decision, at on_train_batch_end, to validate after this batch:
    `epoch_loop._should_check_val_fx(fit_loop._data_fetcher)` (val_check_interval, the epoch's last
    batch, should_stop). Asked again, identically, right after the hook; never exposed publicly."""
    loop = trainer.fit_loop
    return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))


def note_checkpoint_saved(callback: Any, trainer: Any, filepath: str) -> None:
    """What ModelCheckpoint's own `_save_checkpoint` records after writing (the step and the file),
    for a subclass that writes the file itself (atomically): `_last_global_step_saved` keeps it
    from saving twice at one step, `_last_checkpoint_saved` is what `on_exception`/removal read."""
    callback._last_global_step_saved = trainer.global_step
    callback._last_checkpoint_saved = filepath


def lr_monitor_stats(monitor: Any, trainer: Any, interval: str) -> dict[str, float]:
    """LearningRateMonitor's learning rates to log (`_extract_stats(trainer, interval)`), for a
    subclass that renames them; the monitor has no public way to choose the names."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    return LearningRateMonitor._extract_stats(monitor, trainer, interval)


# ---- Hydra --------------------------------------------------------------------------------------


def job_return_value(job_return: Any) -> Any:
    """What a Hydra job returned, or the exception it raised: `JobReturn._return_value` (the public
    `.return_value` re-raises the exception instead of returning it)."""
    return job_return._return_value


def job_return(overrides: list[str], status: Any, value: Any) -> Any:
    """A Hydra JobReturn holding `value` (a launcher's own result for a job): the dataclass field
    is private (`_return_value`), so it is set through the constructor by that name."""
    from hydra.core.utils import JobReturn

    return JobReturn(overrides=overrides, status=status, _return_value=value)
