"""LoRA on GPT-2 through `peft`: the only module that imports it.

GPT-2 facts handled here:
- Its projections are `Conv1D` (weights stored in x out), so adapters need `fan_in_fan_out=True`.
- `c_proj` names two different layers (attention output and MLP output), so targets are matched by
  their parent too: `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` (a bare `c_proj` means both).
- `wte` (token embeddings) can carry an adapter too: a small or weakly pretrained base may not
  separate the words a task hinges on (in LM pretraining "good" and "bad" share their contexts).
  Not for heads whose output layer is tied to `wte` (LM, double heads): merging the adapter into
  `wte` would change that output layer too, so merged and unmerged outputs would differ.
- The task head (`score`, `classifier`, `qa_outputs`, `multiple_choice_head`) is new: it stays
  fully trainable and is saved (`modules_to_save`). Token rows added to the vocabulary (a dedicated
  pad or summary token) are new too: only those rows of `wte` train (`trainable_token_indices`),
  not the whole embedding matrix.
The wrapped model is a `peft.PeftModel`; it forwards attribute access to the HF model, so task
modules keep using `model.transformer`, `model.score`, `model.config` unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from gpt2tasks.errors import UserError

log = logging.getLogger(__name__)

METHODS = ("none", "lora")
# Target presets by GPT-2 module name (matched as a suffix of the full module path).
TARGET_PRESETS = {
    "attention": ["attn.c_attn", "attn.c_proj"],
    "attention_mlp": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
    "attention_embeddings": ["attn.c_attn", "attn.c_proj", "wte"],
}
# Every name a target may use: the four projections, alone or with their parent module, and wte.
VALID_TARGETS = ("c_attn", "c_proj", "c_fc", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "wte")
BIAS_CHOICES = ("none", "all", "lora_only")


@dataclass(frozen=True)
class LoraSpec:
    """What `peft.*` in the config says."""

    method: str = "none"  # none | lora
    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    targets: str | list[str] = "attention_mlp"  # a preset name or a list of module names
    bias: str = "none"  # none | all | lora_only (which biases train besides the head)
    extra_trainable: list[str] = field(default_factory=list)  # more modules trained in full (e.g. ln_f)

    @property
    def enabled(self) -> bool:
        return self.method == "lora"

    @property
    def target_modules(self) -> list[str]:
        if isinstance(self.targets, str):
            return list(TARGET_PRESETS.get(self.targets, [self.targets]))
        return [str(t) for t in self.targets]


def check_spec(spec: LoraSpec) -> list[str]:
    """Problems with `peft.*`, one message each naming the key and the fix (for validate_config)."""
    problems = []
    if spec.method not in METHODS:
        problems.append(f"peft.method={spec.method!r} is not one of {', '.join(METHODS)}. Fix: peft=lora or peft=none.")
    if not spec.enabled:
        return problems
    if not isinstance(spec.r, int) or isinstance(spec.r, bool) or spec.r <= 0:
        problems.append(f"peft.r={spec.r!r} must be a positive integer (the adapter rank). Fix: e.g. peft.r=8.")
    if not isinstance(spec.alpha, (int, float)) or spec.alpha <= 0:
        problems.append(f"peft.alpha={spec.alpha!r} must be a positive number (adapters scale by alpha / r). "
                        "Fix: e.g. peft.alpha=16.")
    if not isinstance(spec.dropout, (int, float)) or not 0 <= spec.dropout < 1:
        problems.append(f"peft.dropout={spec.dropout!r} must be in [0, 1). Fix: e.g. peft.dropout=0.05.")
    if spec.bias not in BIAS_CHOICES:
        problems.append(f"peft.bias={spec.bias!r} is not one of {', '.join(BIAS_CHOICES)}. Fix: peft.bias=none.")
    targets = spec.target_modules
    unknown = [t for t in targets if t not in VALID_TARGETS]
    if not targets or unknown:
        problems.append(
            f"peft.targets={spec.targets!r}: {unknown or 'no modules'} {'is' if len(unknown) == 1 else 'are'} not "
            f"GPT-2 projection(s) or wte. Fix: a preset ({', '.join(TARGET_PRESETS)}) or a list of "
            f"{', '.join(VALID_TARGETS)} (c_proj alone means both the attention and the MLP output).")
    return problems


def apply_lora(model: nn.Module, spec: LoraSpec, head_modules: Sequence[str], new_token_ids: Sequence[int] = ()):
    """Wrap the HF model with LoRA adapters: adapters + head (+ new token rows) train, the rest is frozen."""
    from peft import get_peft_model

    tied = model.get_output_embeddings() is not None and model.config.tie_word_embeddings
    _check_model(model, spec, new_token_ids, tied_output=tied)
    wrapped = get_peft_model(model, _config(spec, [*head_modules, *spec.extra_trainable], new_token_ids))
    wrapped.train()
    return wrapped


def apply_lora_to_backbone(backbone: nn.Module, spec: LoraSpec, adapter_names: Sequence[str],
                           new_token_ids: Sequence[int] = (), tied_output: bool = False):
    """LoRA on a `GPT2Model` shared by several heads (multi-task): one adapter set per name in
    `adapter_names` (one name: shared by every task). The heads live outside the wrapper, so they
    stay fully trainable; every adapter set is trainable (`activate` picks the one a step uses)."""
    from peft import get_peft_model

    _check_model(backbone, spec, new_token_ids, tied_output=tied_output)
    config = _config(spec, spec.extra_trainable, new_token_ids)
    wrapped = get_peft_model(backbone, config, adapter_name=adapter_names[0])
    # peft makes only the active set trainable: collect each set's trainable parameters in turn
    trainable = {id(p): p for p in wrapped.parameters() if p.requires_grad}
    for name in adapter_names[1:]:
        wrapped.add_adapter(name, config)
        wrapped.set_adapter(name)
        trainable.update({id(p): p for p in wrapped.parameters() if p.requires_grad})
    wrapped.set_adapter(adapter_names[0])
    for param in trainable.values():
        param.requires_grad_(True)
    wrapped.train()
    return wrapped


def activate(model: nn.Module, adapter_name: str) -> None:
    """Route forward passes through one adapter set. Leaves requires_grad as it was: the other sets
    stay trainable (and in checkpoints), they only get no gradient while inactive."""
    if model.active_adapter == adapter_name:  # runs every step: switch only when the task changes
        return
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.set_adapter(adapter_name)
    for param in trainable:
        param.requires_grad_(True)


def _check_model(model: nn.Module, spec: LoraSpec, new_token_ids: Sequence[int], tied_output: bool) -> None:
    problems = check_spec(spec)
    if problems:
        raise UserError(" ".join(problems))
    # Only module names the model really has, so a typo in extra_trainable is caught here.
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in spec.extra_trainable if m not in names]
    if missing:
        raise UserError(f"peft.extra_trainable={missing}: this model has no such module. Fix: use module names "
                        "of GPT-2, e.g. ln_f, wpe, or leave it empty.")
    if "wte" in spec.target_modules:
        if tied_output:
            raise UserError(f"peft.targets={spec.targets!r}: wte (token embeddings) is tied to this head's output "
                            "layer (lm_head), so merging its adapter would change the outputs. Fix: drop wte from "
                            "peft.targets for language modelling and multiple choice (e.g. peft.targets=attention_mlp).")
        if new_token_ids:
            raise UserError(f"peft.targets={spec.targets!r}: wte cannot carry an adapter while token rows added to "
                            "it (model.pad_token=add) train in full. Fix: model.pad_token=eos, or drop wte from "
                            "peft.targets.")


def _config(spec: LoraSpec, modules_to_save: Sequence[str], new_token_ids: Sequence[int]):
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=spec.target_modules,
        fan_in_fan_out=True,  # GPT-2's Conv1D stores weights in x out
        bias=spec.bias, modules_to_save=list(modules_to_save) or None,
        trainable_token_indices={"wte": list(new_token_ids)} if new_token_ids else None,
    )


def targeted_modules(model: nn.Module) -> list[str]:
    """Full names of the modules carrying LoRA adapters (empty for a plain model)."""
    # Linear/Conv1D adapters live in lora_A; embedding adapters in lora_embedding_A.
    return [name for name, module in model.named_modules()
            if len(getattr(module, "lora_A", ())) or len(getattr(module, "lora_embedding_A", ()))]


def describe(model: nn.Module) -> str:
    """One line for the start-up log: which modules are adapted, and which train in full."""
    targets = targeted_modules(model)
    if not targets:
        return "no LoRA (full fine-tuning)"
    kinds = sorted({".".join(n.split(".")[-2:]) for n in targets})
    layers = len({n.split(".h.")[1].split(".")[0] for n in targets if ".h." in n})
    # ...score.modules_to_save.default.weight -> score
    full = sorted({n.split(".modules_to_save.")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters()
                   if p.requires_grad and ".modules_to_save." in n})
    tokens = any("trainable_tokens" in n for n, p in model.named_parameters() if p.requires_grad)
    return (f"LoRA on {len(targets)} modules ({', '.join(kinds)} in {layers} layers); trained in full: "
            f"{', '.join(full) or 'nothing'}{'; new token rows of wte' if tokens else ''}")


def merge(model: nn.Module) -> nn.Module:
    """The plain HF model with the adapters folded into its weights (outputs unchanged)."""
    # A plain model (no LoRA, or merged already) is returned as it is: merging twice changes nothing.
    return model.merge_and_unload() if is_lora(model) else model


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


# ---- one task's model on its own (export) -------------------------------------------------------
def standalone(model: nn.Module, adapter_name: str, merged: bool, spec: LoraSpec, head_modules: Sequence[str]
               ) -> nn.Module:
    """A task's HF head model as a model of its own: LoRA folded into plain weights (`merged`), or a
    single-task PEFT model (adapters + head). Either way a run was built: PEFT around the whole head
    model (a single-task run), or LoRA on the backbone the heads of a multi-task run share
    (`adapter_name`: the task's adapter set). A model without LoRA is returned as it is."""
    if is_lora(model):
        return merge(model) if merged else model
    if not is_lora(model.transformer):
        return model
    if merged:
        merge_task_backbone(model, adapter_name)
        return model
    return task_adapter_model(model, adapter_name, spec, head_modules)


def _retie(model: nn.Module) -> None:
    if getattr(model, "lm_head", None) is not None:
        model.lm_head.weight = model.transformer.get_input_embeddings().weight


def merge_task_backbone(model: nn.Module, adapter_name: str) -> None:
    """Give one task's HF head model its own backbone with that task's adapters folded in (a plain
    GPT2Model); the other heads keep the LoRA backbone. No LoRA: nothing to do."""
    if not is_lora(model.transformer):
        return
    backbone = copy.deepcopy(model.transformer)
    activate(backbone, adapter_name)
    model.transformer = backbone.merge_and_unload(adapter_names=[adapter_name])
    _retie(model)


def plain_backbone(backbone: nn.Module) -> nn.Module:
    """The frozen base GPT2Model under a LoRA backbone (a copy, without any adapter)."""
    return copy.deepcopy(backbone).unload() if is_lora(backbone) else backbone


def task_adapter_model(model: nn.Module, adapter_name: str, peft_spec, head_modules) -> nn.Module:
    """One task as a single-task PEFT model: its HF head over the plain base, wrapped the way a
    single-task LoRA run wraps it (`apply_lora`), with the task's adapter weights copied in."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    backbone = model.transformer
    state = get_peft_model_state_dict(backbone, adapter_name=adapter_name)  # keys without the adapter name
    prefix = "base_model.model."  # PeftModel(GPT2Model) -> PeftModel(head): the backbone sits under transformer.
    state = {f"{prefix}transformer.{k[len(prefix):]}": v for k, v in state.items()}
    # the trained head, which the single-task adapter carries as modules_to_save
    state.update({f"{prefix}{k}": v for k, v in model.state_dict().items() if k.split(".")[0] in head_modules})
    model.transformer = plain_backbone(backbone)
    _retie(model)
    wrapped = apply_lora(model, peft_spec, head_modules)
    result = set_peft_model_state_dict(wrapped, state, adapter_name="default")
    missing = [k for k in result.unexpected_keys if "lora_" in k]
    if missing:
        raise RuntimeError(f"adapter weights did not fit the task's model: {missing[:3]}")
    wrapped.eval()
    return wrapped
