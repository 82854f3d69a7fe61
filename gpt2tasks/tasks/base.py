"""The LightningModule every task kind shares: steps, exact evaluation, optimizer, checkpoints.

A task kind implements `step` (loss + per-example eval outputs) and `compute_metrics`. The HF head
model is `self.model`; its GPT-2 backbone (`self.backbone`, a `GPT2Model`) is a separate,
swappable part so several heads share one backbone. A run trains its tasks' modules through one
module over them (tasks/multitask.py, a subclass of this one: every run's LightningModule).

Evaluation is exact: every eval step stores per-example outputs with the example's `idx`; at the
end of the epoch they are gathered from all ranks, de-duplicated by idx and sorted, and the metrics
are computed once over the whole split -- never averaged over batches.

Prediction (`predict`) runs the same way: `predict_outputs` (the label-free part of `step`) per
batch, gathered by idx, then `predict_rows` turns them into one dict per input example, in input
order whatever the batching.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from transformers import get_scheduler

from gpt2tasks import compat, lora, multitask
from gpt2tasks.backbone import count_parameters
from gpt2tasks.datamodules import packing
from gpt2tasks.datamodules.labels import LabelSpace
from gpt2tasks.errors import UserError
from gpt2tasks.strategies import clip_gradients

log = logging.getLogger("gpt2tasks")

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass(frozen=True)
class OptimSpec:
    """What `optim.*` in the config says."""

    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    scheduler: str = "linear"
    max_grad_norm: float | None = 1.0
    fused: bool | None = None  # None: fused AdamW on CUDA and CPU (one kernel over all tensors)


@dataclass
class EvalSpec:
    """Which metrics to compute and under what names."""

    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    eval_sets: list[str] = field(default_factory=lambda: ["val"])  # one per val dataloader, in order
    options: dict[str, Any] = field(default_factory=dict)  # the kind's `eval_options`, from task.*
    # task.monitor ("val/accuracy"): the one eval metric the progress bar shows (None: none)
    monitor: str | None = None


class TaskModule(L.LightningModule):
    def __init__(self, model: nn.Module, optim: OptimSpec, evaluation: EvalSpec, run_info: dict | None = None):
        super().__init__()
        self.model = model
        if hasattr(model, "transformer"):  # (a multi-task module's task modules did it for their backbone)
            compat.use_causal_fast_path(model.transformer)  # unmasked forwards: SDPA is_causal (backbone_inputs)
        self.optim = optim
        self.evaluation = evaluation
        # Saved in every checkpoint so `eval` needs nothing else: config, tokenizer, HF config, labels.
        self.run_info = run_info or {}
        self._outputs: dict[int, list[dict[str, torch.Tensor]]] = {}
        self.latest_metrics: dict[str, float] = {}  # "<eval set>/<metric>" of the last evaluation
        # The optimizer step and epoch of the weights the last validation of training scored (None:
        # that validation was a sanity check or not part of training); see `on_save_checkpoint`.
        self.validated_at: tuple[int, int] | None = None
        self.latest_diagnostics: dict[str, dict] = {}  # per eval set, what the run's pictures show (plots.py)
        self.predict_options: dict[str, Any] = {}  # `predict` options this kind reads (predict_option_defaults)
        self.predicted: dict[str, np.ndarray] = {}  # the last predict run's outputs, sorted by idx
        # The datamodule whose raw examples this task's metrics read: the Trainer's, unless this
        # module is one head of a multi-task module (whose Trainer holds the multi-task datamodule).
        self.task_datamodule = None

    @property
    def backbone(self) -> nn.Module:
        return self.model.transformer

    @property
    def datamodule(self):
        return self.task_datamodule if self.task_datamodule is not None else self.trainer.datamodule

    # ---- what a task kind implements ----------------------------------------------------------
    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mean loss, per-example outputs to keep for metrics: first dim = batch, incl. 'loss')."""
        raise NotImplementedError

    #: the HF head's own new layers (trained in full and saved under LoRA), e.g. ("score",)
    head_modules: tuple[str, ...] = ()

    #: whether training computes logits over the whole vocabulary (the LM head's matmul, for FLOPs)
    computes_vocab_logits: bool = False

    #: what a perfect score is for this kind's metrics (SQuAD EM/F1 are 0-100): a multi-task run's
    #: mean puts every task's metric on a 0-1 scale
    metric_scale: float = 1.0

    #: task.* keys this kind reads, with their defaults (e.g. the NER tag scheme, loss weights)
    eval_options: dict[str, Any] = {}

    #: pad value per output field (eval or predict) whose per-example length varies: batches
    #: are padded to a common length before they are joined. Fields not listed are fixed-size.
    eval_pad_values: dict[str, float] = {}

    def compute_metrics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, float]:
        """Metrics of one whole eval set from its gathered outputs (sorted by idx). `eval_set` names
        the split ("val", "val_<name>", "test") for kinds that need its raw examples."""
        raise NotImplementedError

    def diagnostics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, Any]:
        """Numbers behind the run's pictures, from the same gathered outputs as the metrics, e.g.
        plots.confusion's {"confusion": counts, "labels": class names, ...} (bounded whatever the
        number of classes); {} for kinds without any."""
        return {}

    def pictures(self, prefix: str, curves: dict[str, Any], evals, metrics: dict[str, float]) -> dict[str, Any]:
        """The kind's own pictures beside the curves and the confusion matrix (plots.task_pictures):
        {picture name: its numbers}, from the run's final `metrics`, the validations' `evals`
        ([(step, metrics)]), the curves' numbers and `self.latest_diagnostics`. `prefix` starts
        this task's metric names ("" alone, "<task>/" in a multi-task run). None by default."""
        return {}

    #: the kind's main metrics (names within an eval set), in the order the final lines of `train`
    #: and `eval` show them, after the monitored one and before the task's other task.metrics
    #: (empty: task.metrics alone, as for classification). Every other metric (NER's per-type
    #: <TYPE>_f1, QA's HasAns_/NoAns_ splits, losses) is in metrics.json and the eval JSON.
    headline_metrics: tuple[str, ...] = ()

    #: kinds with a fixed metric set: the names task.metrics may list, and what else is reported
    metric_names: tuple[str, ...] = ()
    metric_note: str = ""

    @classmethod
    def check_metrics(cls, names: list[str], label_space: LabelSpace, key: str = "task.metrics") -> None:
        """Raise a UserError for metric names this kind cannot compute."""
        unknown = [n for n in names if n not in cls.metric_names]
        if unknown:
            raise UserError(f"{key}: {unknown} are not metrics of this task kind (valid: "
                            f"{', '.join(cls.metric_names)}; {cls.metric_note}).")

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[str]:
        """Problems with the kind's eval options (one message each, naming the task.* key)."""
        return []

    #: below this many tokens data.max_length cuts an input to a word or two (None: the kind does
    #: not read data.max_length, or checks its own bound, as QA's windows and LM's block_size do)
    min_max_length: int | None = None

    @classmethod
    def check_config(cls, task, data) -> list[str]:
        """The kind's own checks of a task's task:/data: blocks, before any data or model is loaded."""
        length, least = data.max_length, cls.min_max_length
        if least is None or not isinstance(length, int) or isinstance(length, bool) or not 1 <= length < least:
            return []
        return [f"data.max_length={length} would cut every input to a few tokens (a {task.kind} input needs at "
                f"least {least}). Fix: e.g. data.max_length=128 (the longest inputs in tokens, up to the model's 1024)."]

    @staticmethod
    def configure_head(config, label_space: LabelSpace) -> None:
        """Write the task's fields (num_labels, id2label, ...) into the HF config before the model
        is built: they travel with every checkpoint and export."""
        raise NotImplementedError

    # ---- what a task kind implements for `predict` ----------------------------------------------
    #: options of `predict` this kind reads (e.g. LM generation settings), with their defaults
    predict_option_defaults: dict[str, Any] = {}

    def predict_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example outputs of an unlabelled batch (first dim = batch): the part of `step` that
        needs no labels."""
        raise NotImplementedError

    def predict_rows(self, outputs: dict[str, np.ndarray], datamodule) -> list[dict[str, Any]]:
        """One JSON-ready dict of prediction fields per input example, in example order, from the
        gathered `predict_outputs` (sorted by idx) and the datamodule's predict split
        (`datamodule.examples["predict"]`, `datamodule.datasets["predict"]`)."""
        raise NotImplementedError

    @classmethod
    def check_predict_options(cls, options: dict[str, Any]) -> list[str]:
        """Problems with `predict` options (all of predict_option_defaults' keys, filled in)."""
        return []

    def option(self, name: str) -> Any:
        return self.predict_options.get(name, self.predict_option_defaults[name])

    def raw_examples(self, eval_set: str) -> list[dict]:
        return self.datamodule.examples[eval_set]

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["idx"]))  # examples (packed: not rows)
        return loss

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Read on the host, before the batch moves to the GPU: whether any position is padding. The
        # backbone then gets no mask for an unpadded batch (packed LM blocks): SDPA's causal fast
        # path (flash attention), which transformers otherwise finds only by reading the mask on the
        # device (a host sync every step), and never under torch.compile.
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        if isinstance(mask, torch.Tensor) and "unpadded" not in batch:
            batch["unpadded"] = bool(mask.all())
        return batch

    def backbone_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The backbone's (or HF head's) token inputs for a (B, T) batch, chosen so that transformers
        never reads a device tensor on the host (a sync per forward, which keeps the CPU from queueing
        the next GPU work):
        - unpadded (see on_before_batch_transfer): no mask, and the token embeddings instead of the
          ids (ids without a mask are scanned for pad tokens to warn about); attention is then SDPA's
          causal fast path (compat.use_causal_fast_path);
        - padded, under SDPA: the (B, 1, T, T) boolean mask (causal and not padding) that transformers
          would build, built here, so it need not inspect the 2-D mask first;
        - otherwise (eager attention): ids and the 2-D mask, as given.
        A packed batch (data.pack_examples) goes first: its rows, position ids restarting at 0 for
        each example and, under SDPA, the block-diagonal causal mask (packing.backbone_inputs)."""
        sdpa = compat.attn_implementation(self.backbone.config) == "sdpa"
        if packing.is_packed(batch):
            return packing.backbone_inputs(batch, sdpa)
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        if batch.get("unpadded"):
            return {"inputs_embeds": self.backbone.wte(input_ids)}
        if sdpa:
            length = mask.shape[-1]
            causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()  # (T, T)
            return {"input_ids": input_ids, "attention_mask": causal & mask.bool()[:, None, None, :]}  # (B, 1, T, T)
        return {"input_ids": input_ids, "attention_mask": mask}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # We clip here rather than with Trainer(gradient_clip_val): Lightning refuses that with a
        # fused AdamW under its AMP plugins. Under DDP gradients are averaged over ranks here; FSDP
        # and DeepSpeed clip where they keep them.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # 16-mixed: a GradScaler
        if scaler is not None and compat.unscales_in_step(optimizer):
            # Lightning leaves unscaling to a fused optimizer's own step, so the gradients here are
            # still multiplied by the loss scale (2**16): clipping them would shrink every update by
            # that factor. Unscale first; the scaler's step then skips its own unscaling (no host sync).
            scaler.unscale_(optimizer)
        if self.optim.max_grad_norm:
            norm = clip_gradients(self.trainer.strategy, self.parameters(), self.optim.max_grad_norm)
            if norm is not None:
                self.log("train/grad_norm", norm)

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay, seen = [], [], set()
        for module in self.model.modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:  # tied weights (wte/lm_head) once
                    continue
                seen.add(id(param))
                # No weight decay on biases and LayerNorm (GPT-2 calls them ln_1/ln_2/ln_f, so
                # match the module type, not a name).
                (no_decay if name == "bias" or isinstance(module, nn.LayerNorm) else decay).append(param)
        # Fused on CPU too: torch's for-loop AdamW makes ~10 passes over every tensor, the fused kernel
        # one; for gpt2 on 2 CPU cores that is seconds per step (scripts/bench.py, docs/benchmark-history.md).
        fused = self.optim.fused if self.optim.fused is not None else self.device.type in ("cuda", "cpu")
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.optim.lr, betas=tuple(self.optim.betas), eps=self.optim.eps, fused=fused,
        )
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_scheduler(self.optim.scheduler, optimizer,
                                  num_warmup_steps=int(self.optim.warmup_ratio * total),
                                  num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- exact evaluation ---------------------------------------------------------------------
    def _collect(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        self._keep(self.step(batch)[1], batch, dataloader_idx)

    def _keep(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        out = {k: v.detach().float().cpu() for k, v in out.items()}
        out["idx"] = batch["idx"].cpu()
        self._outputs.setdefault(dataloader_idx, []).append(out)

    def eval_metrics(self, parts: list[dict[str, torch.Tensor]], eval_set: str) -> dict[str, float]:
        """The metrics of one whole eval set from its per-batch outputs on this rank ({} when the set
        was not run). Collective under several ranks: every rank calls it, in the same order."""
        outputs = gather_by_idx(parts, self.eval_pad_values)
        if not len(outputs.get("idx", [])):
            return {}
        self.latest_diagnostics[eval_set] = self.diagnostics(outputs, eval_set)
        # loss: the mean of per-example losses, unless compute_metrics returns its own (LM: per token)
        return {"loss": float(outputs["loss"].mean()), **self.compute_metrics(outputs, eval_set)}

    def publish(self, metrics: dict[str, float], shown: str | None = None) -> None:
        """Log `metrics` (identical on every rank: no sync); the one named `shown` also on the progress
        bar. One metric at most: a bar's metrics share its line, and a NER run's 20-odd per-type
        metrics there wrapped the bar to dozens of lines."""
        self.latest_metrics.update(metrics)  # full precision, for metrics.json
        self.log_dict({k: v for k, v in metrics.items() if k != shown}, sync_dist=False)
        if shown in metrics:
            self.log(shown, metrics[shown], prog_bar=True, sync_dist=False)

    def _finish(self, prefix_of: list[str]) -> None:
        for i, prefix in enumerate(prefix_of):
            metrics = self.eval_metrics(self._outputs.get(i, []), prefix)
            self.publish({f"{prefix}/{k}": v for k, v in metrics.items()}, shown=self.evaluation.monitor)
        self._outputs = {}

    def on_validation_epoch_start(self) -> None:
        self._outputs = {}
        self.latest_metrics = {}  # this validation's alone (a run's final numbers may be read from it)
        trainer = self._trainer  # the weights do not change during a validation: they are this step's
        training = trainer is not None and trainer.state.fn == "fit" and not trainer.sanity_checking
        self.validated_at = (trainer.global_step, trainer.current_epoch) if training else None

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._finish(self.evaluation.eval_sets)
        self.after_validation()

    def after_validation(self) -> None:
        """What a kind does once a validation's metrics are published (LM: log sample continuations);
        called by the run's module (tasks/multitask.py) for each of its tasks. Nothing by default."""

    def on_test_epoch_start(self) -> None:
        self._outputs = {}

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._finish(["test"])

    def on_predict_epoch_start(self) -> None:
        self._outputs = {}

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._keep(self.predict_outputs(batch), batch, dataloader_idx)

    def on_predict_epoch_end(self) -> None:
        self.predicted = gather_by_idx(self._outputs.get(0, []), self.eval_pad_values)
        self._outputs = {}

    # ---- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # RNG states make a resumed run continue exactly like an uninterrupted one (dropout, the
        # dataloader's base seed); run_info makes the checkpoint self-contained for `eval`. Every
        # rank's states, gathered into the file rank 0 writes (Lightning builds the checkpoint on all
        # ranks): their dropout draws differ with their batches' shapes. "rng" is rank 0's, what a
        # resume on another number of processes (or an older checkpoint) gives every rank.
        states = _all_ranks(_rng_state())
        checkpoint["gpt2tasks"] = {**self.run_info, "rng": states[0],
                                   **({"rng_by_rank": states} if len(states) > 1 else {}),
                                   **self._validation_of_saved_weights()}
        if self.run_info.get("frozen_base_from"):
            # LoRA over a base loaded from a checkpoint: the frozen weights can be reloaded from
            # there, so they are not stored again (a gpt2-xl LoRA checkpoint: MBs, not 6 GB).
            frozen = {p.data_ptr() for p in self.parameters() if not p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                        if v.data_ptr() not in frozen}

    def _validation_of_saved_weights(self) -> dict[str, Any]:
        """{"validation": {step, epoch, metrics}} when the last validation scored exactly the weights
        being saved (no optimizer step since): `export` reports these numbers for these weights
        (best.ckpt's are always its own). {} otherwise (e.g. last.ckpt written between validations):
        no other weights' numbers are ever attached to a checkpoint. Weight-averaging callbacks
        score and save other weights than the trained ones: nothing is attached under them."""
        from lightning.pytorch.callbacks import StochasticWeightAveraging, WeightAveraging

        trainer = self._trainer
        if (self.validated_at is None or trainer is None or self.validated_at[0] != trainer.global_step
                or not self.latest_metrics
                or any(isinstance(c, (WeightAveraging, StochasticWeightAveraging)) for c in trainer.callbacks)):
            return {}
        step, epoch = self.validated_at
        return {"validation": {"step": step, "epoch": epoch, "metrics": dict(self.latest_metrics)}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # (the RNG states are put back by gpt2tasks.resume.ResumeExactly when training continues)
        # Lightning's own loading (a resume, test(ckpt_path=)) reads the file itself: an older
        # checkpoint is converted here, before its weights are loaded, as runfile does for the rest.
        multitask.current_layout(checkpoint)
        self.complete_state_dict(checkpoint)
        drop_absent_callback_states(self._trainer, checkpoint)

    def complete_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Put back the frozen base weights a lean checkpoint left out: this module was built from
        the same base checkpoint (`run_info["frozen_base_from"]`), so its own values are those."""
        if checkpoint.get("gpt2tasks", {}).get("frozen_base_from"):
            for key, value in self.state_dict().items():
                checkpoint["state_dict"].setdefault(key, value)

    # ---- what the run's module (tasks/multitask.py) shows of a task that runs alone ----------------
    def headline(self, metrics: dict[str, float], monitor: str) -> dict[str, float]:
        """The metrics the final lines of `train` and `eval` show, in order: per eval set (the
        monitored one, the other validation sets, then test) the monitored metric, the kind's
        `headline_metrics`, then the task's other task.metrics."""
        names = dict.fromkeys([monitor.rsplit("/", 1)[-1], *self.headline_metrics, *self.evaluation.metrics])
        order = dict.fromkeys([monitor.rsplit("/", 1)[0], *self.evaluation.eval_sets, "test"])
        order.update(dict.fromkeys(sorted({key.rsplit("/", 1)[0] for key in metrics})))  # any other set last
        return {f"{s}/{n}": metrics[f"{s}/{n}"] for s in order for n in names if f"{s}/{n}" in metrics}

    def parameter_summary(self) -> str:
        trainable, total = count_parameters(self.model)
        return f"{trainable:,} trainable / {total:,} parameters ({100 * trainable / max(total, 1):.2f}%); {lora.describe(self.model)}"


def drop_absent_callback_states(trainer: L.Trainer | None, checkpoint: dict[str, Any]) -> None:
    """Before Lightning restores callback states: a checkpoint's states of callbacks this run does
    not have are dropped, with one line saying so. Lightning would warn "Be aware that when using
    `ckpt_path`, callbacks used to create the checkpoint need to be provided during `Trainer`
    instantiation. Please add the following callbacks: [...]" -- wrong advice when the run left them
    out on purpose, e.g. `resume=true early_stopping.patience=null` (early stopping off from here
    on) or `ckpt_path=` into a new run with another task.monitor. Called from the module's
    on_load_checkpoint, which Lightning calls before it restores the callbacks."""
    states = checkpoint.get("callbacks")
    if trainer is None or not states:
        return
    present = {callback.state_key for callback in trainer.callbacks}
    absent = [key for key in states if key not in present]
    if absent:
        log.info("not restored from the checkpoint: the state of %s, which this run does not use (e.g. early "
                 "stopping with early_stopping.patience=null)", ", ".join(str(key) for key in absent))
        for key in absent:
            del states[key]


def gather_by_idx(parts: list[dict[str, torch.Tensor]], pad_values: dict[str, float] | None = None
                  ) -> dict[str, np.ndarray]:
    """Concatenate per-batch outputs from every rank; keep each example once, ordered by idx.

    Ranks may hold different numbers of examples (no sampler padding), so objects are gathered,
    not fixed-shape tensors. Fields in `pad_values` (per-token outputs, whose length is each
    batch's own) are right-padded to a common length first.
    """
    pad_values = pad_values or {}

    def join(name: str, arrays: list[np.ndarray]) -> np.ndarray:
        if name in pad_values:
            longest = max(a.shape[1] for a in arrays)
            arrays = [np.pad(a, [(0, 0), (0, longest - a.shape[1])], constant_values=pad_values[name])
                      for a in arrays]
        return np.concatenate(arrays)

    local = {k: join(k, [p[k].numpy() for p in parts]) for k in parts[0]} if parts else {}
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        everyone: list[dict[str, np.ndarray]] = [None] * dist.get_world_size()  # type: ignore[list-item]
        dist.all_gather_object(everyone, local)
        everyone = [d for d in everyone if d]
        local = {k: join(k, [d[k] for d in everyone]) for k in everyone[0]} if everyone else {}
    if not local:
        return {}
    _, first = np.unique(local["idx"], return_index=True)  # sorted by idx, duplicates dropped
    return {k: v[first] for k, v in local.items()}


def _all_ranks(local: Any) -> list[Any]:
    """`local` of every rank, in rank order (a collective under several processes)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, local)
        return everyone
    return [local]


def _rng_state() -> dict[str, Any]:
    # Only tensors and plain Python types, so checkpoints load with torch.load(weights_only=True).
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
