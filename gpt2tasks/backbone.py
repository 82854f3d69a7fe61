"""The GPT-2 backbone: tokenizer with a pad token, model config, and the HF head for a task kind;
whether the Hugging Face Hub answers (asked once, quickly, so that offline runs fail at once).

Everything here takes plain arguments (a `ModelSpec`, not a Hydra config) so tests and other
entry points can build models directly. The two GPT-2 facts handled here:
- GPT-2 has no pad token: we set one on the tokenizer *and* on `config.pad_token_id`
  (default: reuse eos; or add a dedicated token and resize the embeddings).
- Padding is always on the right (absolute position embeddings).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, GPT2Config, PreTrainedModel, PreTrainedTokenizerBase

from gpt2tasks import compat
from gpt2tasks.errors import UserError
from gpt2tasks.resources import BUNDLED_TOKENIZER

log = logging.getLogger(__name__)

ADDED_PAD_TOKEN = "<|pad|>"
PAD_TOKEN_CHOICES = ("eos", "add")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class ModelSpec:
    """What `model.*` in the config says about the backbone."""

    name_or_path: str | None = None  # Hub id or local dir; None = no checkpoint (random init of `arch`)
    tokenizer_name_or_path: str | None = None  # default: name_or_path, else the bundled tokenizer
    pretrained: bool = True  # False: same architecture, random weights
    arch: dict[str, Any] = field(default_factory=dict)  # GPT2Config fields known without download
    pad_token: str = "eos"  # "eos" (reuse eos as pad) or "add" (new <|pad|> token, resized embeddings)
    attn_implementation: str = "sdpa"
    config_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {resid_pdrop: 0.0}
    gradient_checkpointing: bool = False  # recompute block activations in backward: less memory, ~30% slower
    compile: bool = False  # torch.compile the backbone (in place: checkpoint keys do not change)

    @property
    def tokenizer_source(self) -> str:
        return str(self.tokenizer_name_or_path or self.name_or_path or BUNDLED_TOKENIZER)


# ---- the Hub: is it there? ---------------------------------------------------------------------------
# Offline, huggingface_hub retries every file with back-off for about a minute before giving up
# (unless HF_HUB_OFFLINE=1 is set). One short probe per process answers the question instead: when
# the Hub does not answer, the process goes on as with HF_HUB_OFFLINE=1 (models, tokenizers and
# datasets come from the local cache, or are refused at once). Hub datasets ask it too (datamodules).
HUB_PROBE_TIMEOUT_S = 3.0
_hub_answers: dict[str, bool] = {}  # endpoint -> reachable, probed once per process


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether the Hugging Face Hub answers at all, asked once with a short timeout. Offline,
    huggingface_hub retries each file with back-off for about a minute before giving up; with
    this answer a Hub id is looked up in the local cache only, and fails at once when absent.
    Any HTTP answer counts (proxies from the environment are used, as huggingface_hub does)."""
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    timeout = HUB_PROBE_TIMEOUT_S if timeout is None else timeout
    endpoint = constants.ENDPOINT
    if endpoint not in _hub_answers:
        answered: list[bool] = []

        def probe() -> None:
            try:
                urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
                answered.append(True)
            except urllib.error.HTTPError:
                answered.append(True)  # an HTTP error status is still an answer
            except (OSError, ValueError):  # no route, refused, DNS, timeout, bad endpoint URL
                answered.append(False)

        # A thread bounds the wait: the DNS lookup inside urlopen has no timeout of its own.
        thread = threading.Thread(target=probe, daemon=True, name="gpt2tasks-hub-probe")
        thread.start()
        thread.join(timeout + 1.0)
        _hub_answers[endpoint] = bool(answered and answered[0])
        if not _hub_answers[endpoint]:
            log.warning("The Hugging Face Hub (%s) could not be reached (asked with a %.0f s timeout): working "
                        "offline, from the local cache (set HF_HUB_OFFLINE=1 to skip this check).", endpoint, timeout)
            _go_offline()
    return _hub_answers[endpoint]


def _go_offline() -> None:
    """The rest of the process as with HF_HUB_OFFLINE=1: huggingface_hub (and transformers through it)
    and datasets, which keeps its own copy of the switch, stop asking the network."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def download_command(name: str) -> str:
    """The download command of the installed huggingface_hub: `hf` (1.0 on), `huggingface-cli` before."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        scripts = {ep.name for ep in distribution("huggingface_hub").entry_points if ep.group == "console_scripts"}
    except PackageNotFoundError:
        scripts = set()
    cli = "huggingface-cli" if "huggingface-cli" in scripts and "hf" not in scripts else "hf"
    return f"{cli} download {name} --local-dir <dir>"


# ---- tokenizer, model config, model ------------------------------------------------------------------
def _is_local(name: str) -> bool:
    return os.path.isdir(os.path.expanduser(name))


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.path.exists(name)


def _cache_only(name: str) -> bool:
    """local_files_only for from_pretrained: a Hub id while the Hub does not answer."""
    return not _is_local(name) and not _looks_like_path(name) and not hub_reachable()


def _unavailable(key: str, name: str, what: str, exc: Exception) -> UserError:
    """The one message for 'this model/tokenizer cannot be loaded', offline or not."""
    if _is_local(name):
        return UserError(
            f"{key}={name}: the local directory has no loadable {what} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Fix: point {key} at a folder written by "
            "`save_pretrained` (config.json + weights, or vocab.json + merges.txt for a tokenizer)."
        )
    if _looks_like_path(name):
        return UserError(
            f"{key}={name}: no such directory. Fix: check the path (relative paths are resolved "
            f"from {os.getcwd()})."
        )
    why = ("the Hub cannot be reached from here (offline, or HF_HUB_OFFLINE=1)" if not hub_reachable()
           else "the id is wrong, private or gated")
    return UserError(
        f"{key}={name}: the {what} is not a local directory, not in the local Hugging Face cache, and "
        f"could not be downloaded: {why}. Fix: on a machine with internet run `{download_command(name)}`, "
        f"copy the folder here and pass {key}=<dir>; or use model=tiny "
        "(bundled, offline); for random weights of a size preset set model.pretrained=false and "
        "model.tokenizer_name_or_path=<local tokenizer dir>."
    )


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """Fast GPT-2 tokenizer, right padding, with a pad token (see module docstring)."""
    source = spec.tokenizer_source
    key = "model.tokenizer_name_or_path" if spec.tokenizer_name_or_path else "model.name_or_path"
    if spec.pad_token not in PAD_TOKEN_CHOICES:
        raise UserError(f"model.pad_token={spec.pad_token!r} is not one of {PAD_TOKEN_CHOICES}. "
                        "Fix: model.pad_token=eos (default) or model.pad_token=add.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, local_files_only=_cache_only(source))
    except (OSError, ValueError) as exc:
        raise _unavailable(key, source, "tokenizer", exc) from None
    setup_pad_token(tokenizer, spec.pad_token)
    return tokenizer


def setup_pad_token(tokenizer: PreTrainedTokenizerBase, pad_token: str = "eos") -> None:
    tokenizer.padding_side = "right"
    if tokenizer.eos_token is None:
        raise UserError("model.tokenizer_name_or_path: the tokenizer has no eos token, so it is not a "
                        "GPT-2 tokenizer. Fix: point it at a GPT-2 (byte-level BPE) tokenizer folder.")
    if tokenizer.pad_token is None or (pad_token == "add" and tokenizer.pad_token == tokenizer.eos_token):
        if pad_token == "eos":
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})


def load_model_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> GPT2Config:
    """The architecture: from the checkpoint when there is one, else from `spec.arch` (no download)."""
    config = None
    if spec.name_or_path:
        try:
            # Random init (pretrained=false) still prefers the checkpoint's own config when it is
            # local or cached, and falls back to the preset's known architecture otherwise.
            config = AutoConfig.from_pretrained(spec.name_or_path, local_files_only=not spec.pretrained
                                                or _cache_only(spec.name_or_path))
        except (OSError, ValueError) as exc:
            if spec.pretrained or not spec.arch:
                raise _unavailable("model.name_or_path", spec.name_or_path, "model", exc) from None
    if config is None:
        arch = {k: v for k, v in spec.arch.items() if v is not None}
        arch.setdefault("vocab_size", len(tokenizer))
        # GPT2Config defaults these to 50256, which is outside a smaller tokenizer's vocabulary.
        arch.setdefault("eos_token_id", tokenizer.eos_token_id)
        arch.setdefault("bos_token_id", tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                        else tokenizer.eos_token_id)
        config = GPT2Config(**arch)
    if config.model_type != "gpt2":
        raise UserError(f"model.name_or_path={spec.name_or_path}: model_type is {config.model_type!r}, "
                        "not 'gpt2'. Fix: use a GPT-2 checkpoint (distilgpt2, gpt2, gpt2-medium, ...).")
    for key, value in spec.config_overrides.items():
        if not hasattr(config, key):
            raise UserError(f"model.config_overrides.{key}: GPT2Config has no field {key!r}. "
                            "Fix: use a GPT2Config field such as resid_pdrop, embd_pdrop, attn_pdrop.")
        setattr(config, key, value)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if spec.attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise UserError(f"model.attn_implementation={spec.attn_implementation!r} is not one of "
                        f"{ATTN_IMPLEMENTATIONS}. Fix: model.attn_implementation=sdpa.")
    if spec.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise UserError("model.attn_implementation=flash_attention_2 needs the flash-attn package (CUDA only), "
                        "which is not installed. Fix: `pip install flash-attn --no-build-isolation` on a GPU "
                        "machine, or model.attn_implementation=sdpa (PyTorch's fused attention, the default).")
    return config


def build_model(head_cls: type[PreTrainedModel], spec: ModelSpec, config: GPT2Config,
                tokenizer: PreTrainedTokenizerBase, from_checkpoint: bool | None = None) -> PreTrainedModel:
    """The HF head over a GPT-2 backbone, with embeddings sized for the tokenizer.

    `config` already carries the task fields (num_labels, id2label, problem_type, pad_token_id).
    Call after the datamodule's setup, when those are known.
    """
    load = spec.pretrained and spec.name_or_path is not None if from_checkpoint is None else from_checkpoint
    if load:
        try:
            model = head_cls.from_pretrained(spec.name_or_path, config=config, attn_implementation=spec.attn_implementation,
                                             local_files_only=_cache_only(spec.name_or_path))
        except (OSError, ValueError) as exc:
            raise _unavailable("model.name_or_path", spec.name_or_path, "model", exc) from None
    else:
        compat.set_attn_implementation(config, spec.attn_implementation)
        model = head_cls(config)
    model.train()  # from_pretrained returns eval mode, and Lightning keeps the mode it is given
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # A dedicated pad token was added: grow wte (and the tied lm_head) by the new rows.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    fuse_gelu(model)
    if spec.gradient_checkpointing:
        # Non-reentrant checkpointing: correct when the embeddings are frozen (LoRA), where the
        # reentrant variant would see no input that requires grad and drop the adapters' gradients.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def fuse_gelu(model: torch.nn.Module) -> None:
    """GPT-2's activation (`gelu_new`, GELU's tanh approximation) as torch's one fused kernel.

    transformers' NewGELUActivation writes that formula as six elementwise tensor ops, each a pass
    over the (tokens, 4 x n_embd) activations, and autograd keeps their intermediates for backward;
    `F.gelu(approximate="tanh")` computes the same function in one pass each way (GELUTanh, what
    `activation_function: gelu_pytorch_tanh` picks). Measured on 2 CPU cores, `gpt2`, a (4, 100)
    batch: forward + backward 1.62 s instead of 1.93 s; logits within 1e-6. Only the modules are
    swapped: the config (and so every checkpoint and export) keeps `gelu_new`, and the weights are
    untouched. Other activations (a config override) are left as they are."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())


def n_positions(config: GPT2Config) -> int:
    return int(getattr(config, "n_positions", 1024))


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total), counting tied weights (wte / lm_head) once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():  # parameters() already de-duplicates tied tensors
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def attach_head(head_cls: type[PreTrainedModel], config: GPT2Config, backbone: torch.nn.Module) -> PreTrainedModel:
    """An HF head model around an existing `GPT2Model`: the head's own layers are new (initialised
    as HF initialises them), `transformer` is `backbone` itself. Built on the meta device first,
    so no second backbone is ever allocated."""
    config.vocab_size = backbone.get_input_embeddings().num_embeddings  # the backbone's, resized or not
    with torch.device("meta"):
        model = head_cls(config)
    model.transformer = backbone
    device = backbone.get_input_embeddings().weight.device
    for name, module in model.named_children():
        if name != "transformer":
            module.to_empty(device=device)
            compat.init_new_module(model, module)
    if getattr(model, "lm_head", None) is not None:
        model.lm_head.weight = backbone.get_input_embeddings().weight  # tied, as in every GPT-2 LM head
    model.train()
    return model
