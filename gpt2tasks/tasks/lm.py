"""Causal language modelling over GPT2LMHeadModel: per-token loss, exact corpus perplexity, samples.

Loss: position t predicts token t+1. Targets are masked by the attention mask, never by token id:
pad = eos, and a document's real eos must still be predicted. On an unpadded batch the loss equals
the HF head's `labels=input_ids` loss (the mean over every predicted token of the batch).
Evaluation keeps, per row, the summed NLL and the number of predicted tokens, so the split's
`loss` (mean NLL per token) and `perplexity` = exp(loss) are computed once over the whole split,
exactly -- never as a mean of per-batch values.
Training (a gradient is wanted) computes the same loss without ever holding the (tokens x vocab)
logits: the LM head's matmul and the cross-entropy run chunk by chunk (`task.loss_chunk_tokens`
tokens at a time) over a vocabulary padded to a multiple of `task.pad_vocab_multiple` for fast
matmuls, padded entries never predicted (gpt2tasks.lm_loss). Evaluation takes the plain path.
During training, each validation also logs a few continuations of `task.sample_prompts` (greedy and
top-p), on rank 0 only, with a fixed seed that leaves the training RNG untouched.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import logging as hf_logging

from gpt2tasks import compat
from gpt2tasks.lm_loss import IGNORE_INDEX, compiled_linear_cross_entropy, linear_cross_entropy
from gpt2tasks.plots import perplexity_picture
from gpt2tasks.strategies import shards_parameters
from gpt2tasks.tasks.base import TaskModule

log = logging.getLogger(__name__)


class LanguageModelingModule(TaskModule):
    metric_names = ("perplexity",)
    headline_metrics = ("perplexity",)
    metric_note = "loss is the mean NLL per predicted token, perplexity = exp(loss)"
    computes_vocab_logits = True
    eval_options = {"sample_prompts": [], "sample_max_new_tokens": 24, "sample_top_p": 0.9,
                    # training loss: tokens per chunk of the fused LM head + cross-entropy (0: the plain
                    # loss over full logits), and the vocabulary padding of its matmuls (1: none)
                    "loss_chunk_tokens": 4096, "pad_vocab_multiple": 64}
    predict_option_defaults = {"max_new_tokens": 32, "do_sample": False, "top_p": 1.0, "temperature": 1.0}
    eval_pad_values = {"new_tokens": -1}  # predict: continuations of a batch stop at its longest

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, T, V)

    def _option(self, name: str) -> Any:
        return self.evaluation.options.get(name, self.eval_options[name])

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)  # (B, T-1), padding ignored
        chunk = self._option("loss_chunk_tokens")
        if chunk and torch.is_grad_enabled():
            return self._chunked_loss(batch, targets, int(chunk))
        logits = self.model(**self.backbone_inputs(batch), use_cache=False).logits  # (B, T, V)
        logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts t+1
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T-1), 0 where ignored
        tokens = (targets != -100).sum(-1)  # (B,) predicted tokens per row
        nll_sum = nll.sum(-1)  # (B,)
        loss = nll_sum.sum() / tokens.sum().clamp(min=1)
        return loss, {"loss": nll_sum / tokens.clamp(min=1), "nll": nll_sum, "tokens": tokens}

    def _chunked_loss(self, batch: dict[str, torch.Tensor], targets: torch.Tensor, chunk: int
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of `step`, equal to it, with the LM head fused into the loss: the logits
        are never materialised. Only the mean loss comes back (training reads nothing else)."""
        hidden = self.backbone(**self.backbone_inputs(batch), use_cache=False).last_hidden_state  # (B, T, C), after ln_f
        hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (B*(T-1), C)
        # With model.compile the loss is compiled too: its per-chunk softmax, masking and scaling
        # then run as a few fused kernels instead of one pass over the chunk's logits each.
        compiled = compat.is_compiled(self.backbone)
        loss_fn = compiled_linear_cross_entropy() if compiled else linear_cross_entropy
        nll = loss_fn(hidden, self.model.lm_head.weight, targets.reshape(-1), chunk, self._option("pad_vocab_multiple"))
        loss = nll / (targets != IGNORE_INDEX).sum().clamp(min=1)
        return loss, {}

    def compute_metrics(self, outputs: dict[str, np.ndarray], eval_set: str) -> dict[str, float]:
        return corpus_metrics(outputs["nll"], outputs["tokens"])

    # ---- predict: a continuation of each input text -----------------------------------------
    @torch.no_grad()
    def predict_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Generated token ids (B, new) for right-padded prompts (B, T). generate() appends after the
        last column, so prompts are moved to the left padding it expects; it derives position ids
        from the attention mask, so each row continues exactly as it would alone."""
        new = int(self.option("max_new_tokens"))
        keep = max(self.model.config.n_positions - new, 1)  # prompt tokens that fit with the new ones
        lengths = batch["attention_mask"].sum(-1).clamp(max=keep)  # (B,) the last `keep` tokens of each
        width = int(lengths.max())
        pad_id = self.model.config.pad_token_id
        ids = torch.full((len(lengths), width), pad_id, dtype=torch.long, device=self.device)  # (B, W)
        mask = torch.zeros_like(ids)
        for row, (n, total) in enumerate(zip(lengths.tolist(), batch["attention_mask"].sum(-1).tolist())):
            ids[row, width - n:] = batch["input_ids"][row, total - n:total]
            mask[row, width - n:] = 1
        how = ({"do_sample": True, "top_p": float(self.option("top_p")), "top_k": 0,
                "temperature": float(self.option("temperature"))} if self.option("do_sample") else {"do_sample": False})
        with _quiet_generation():
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, pad_token_id=pad_id,
                                      num_beams=1, **how)  # (B, W + new'), new' <= new when all rows ended
        return {"new_tokens": out[:, width:]}

    def pictures(self, prefix: str, curves: dict[str, Any], evals, metrics: dict[str, float]) -> dict[str, Any]:
        """Validation perplexity at each validation beside exp of the smoothed training loss."""
        return {"perplexity": perplexity_picture(curves, evals, f"{prefix}val/perplexity")}

    def predict_rows(self, outputs: dict[str, np.ndarray], datamodule) -> list[dict[str, Any]]:
        """The continuation text of each prompt, up to (not including) the first eos: the document
        ends there, and generate() pads finished rows with pad = eos."""
        tokenizer, eos = datamodule.tokenizer, datamodule.tokenizer.eos_token_id
        rows = []
        for tokens in outputs["new_tokens"].astype(np.int64):
            tokens = [t for t in tokens.tolist() if t >= 0]
            rows.append({"continuation": tokenizer.decode(tokens[:tokens.index(eos)] if eos in tokens else tokens)})
        return rows

    @classmethod
    def check_predict_options(cls, options: dict[str, Any]) -> list[str]:
        problems = []
        n = options["max_new_tokens"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            problems.append(f"max_new_tokens={n!r} must be a positive integer.")
        if not isinstance(options["do_sample"], bool):
            problems.append(f"do_sample={options['do_sample']!r} must be true or false.")
        top_p, temperature = options["top_p"], options["temperature"]
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
            problems.append(f"top_p={top_p!r} must be in (0, 1].")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            problems.append(f"temperature={temperature!r} must be a positive number.")
        return problems

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[str]:
        problems = []
        prompts = options["sample_prompts"]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            problems.append(f"task.sample_prompts={prompts!r} must be a list of strings ([] turns samples off).")
        n = options["sample_max_new_tokens"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            problems.append(f"task.sample_max_new_tokens={n!r} must be a positive integer.")
        top_p = options["sample_top_p"]
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
            problems.append(f"task.sample_top_p={top_p!r} must be in (0, 1].")
        for key, off in (("loss_chunk_tokens", "0 (the plain loss over full logits)"), ("pad_vocab_multiple", "1 (no padding)")):
            value = options.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                problems.append(f"task.{key}={value!r} must be a whole number >= 0; {off} turns it off.")
        return problems

    @classmethod
    def check_config(cls, task, data) -> list[str]:
        # data.max_length is not read; the upper bound (the model's n_positions) is checked once
        # the model config is known
        problems = []
        size = data.block_size
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 2):
            problems.append(f"data.block_size={size!r} must be an integer >= 2 (tokens per row). Fix: e.g. "
                            "data.block_size=128.")
        budget = data.get("max_val_tokens")
        if budget is not None and not (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1):
            problems.append(f"data.max_val_tokens={budget!r} must be a positive number of tokens, or null to score "
                            "the whole validation set. Fix: e.g. data.max_val_tokens=65536.")
        return problems

    @staticmethod
    def configure_head(config, label_space) -> None:
        """The LM head is the tied `wte`: nothing to add."""

    # ---- samples ------------------------------------------------------------------------------
    def after_validation(self) -> None:
        trainer = self.trainer
        # Rank 0 alone generates; not when weights are sharded (FSDP, ZeRO-3): its forward would
        # wait for ranks that are not generating.
        if (trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.is_global_zero
                and not shards_parameters(trainer.strategy)):
            self.log_samples()

    def log_samples(self) -> list[tuple[str, str, str]]:
        """Log (prompt, greedy, top-p) continuations of task.sample_prompts to the console and, when
        the logger takes text (wandb, tensorboard), as text."""
        opts = self.evaluation.options
        rows = self.sample(self.datamodule.tokenizer, opts["sample_prompts"],
                           int(opts["sample_max_new_tokens"]), float(opts["sample_top_p"]))
        step = self.global_step
        for prompt, greedy, top_p in rows:
            log.info("sample at step %d: %r -> greedy %r | top-p %r", step, prompt, greedy, top_p)
        for logger in self.loggers if rows else []:
            if hasattr(logger, "log_text"):  # wandb
                logger.log_text(key="val/samples", columns=["prompt", "greedy", "top_p"], data=[list(r) for r in rows],
                                step=step)
            elif hasattr(getattr(logger, "experiment", None), "add_text"):  # tensorboard
                table = "\n".join(f"| {p!r} | {g!r} | {t!r} |" for p, g, t in rows)
                logger.experiment.add_text("val/samples", "| prompt | greedy | top-p |\n|---|---|---|\n" + table, step)
        return rows

    @torch.no_grad()
    def sample(self, tokenizer, prompts: list[str], max_new_tokens: int, top_p: float) -> list[tuple[str, str, str]]:
        """(prompt, greedy continuation, top-p continuation) per prompt, one prompt at a time (no padding)."""
        limit = self.model.config.n_positions - max_new_tokens
        rows = []
        # A fixed seed makes top-p samples comparable between validations; fork_rng keeps them from
        # shifting the training RNG (a resumed run must match an uninterrupted one).
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with _quiet_generation():
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(0)
                for prompt in prompts:
                    # eos first: in training, every document after the first starts right after an eos.
                    ids = [tokenizer.eos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
                    ids = torch.tensor([ids[-limit:]], device=self.device)  # (1, P)
                    texts = []
                    for how in ({"do_sample": False}, {"do_sample": True, "top_p": top_p, "top_k": 0}):
                        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                  max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                                  num_beams=1, **how)  # (1, P + new)
                        texts.append(tokenizer.decode(out[0, ids.shape[1]:].tolist()))
                    rows.append((prompt, *texts))
        return rows


@contextmanager
def _quiet_generation():
    """generate() drops an all-ones attention mask and GPT-2 then warns that pad (= eos) may mean
    padding; it also calls a prompt ending in a real eos "right-padded". Our prompts are either
    unpadded or left-padded with the right mask, so those warnings would only mislead."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def corpus_metrics(nll: np.ndarray, tokens: np.ndarray) -> dict[str, float]:
    """loss = total NLL / total predicted tokens over the split; perplexity = exp(loss)."""
    total, count = float(np.sum(nll, dtype=np.float64)), int(np.sum(tokens, dtype=np.int64))
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


def unigram_perplexity(train_tokens: Iterable[int], eval_tokens: Iterable[int], vocab_size: int) -> float:
    """Perplexity of eval_tokens under the training tokens' unigram distribution (add-one smoothed
    over the vocabulary): the baseline a language model must beat by using context."""
    counts = Counter(train_tokens)
    total = sum(counts.values()) + vocab_size
    eval_tokens = list(eval_tokens)
    nll = -sum(math.log((counts[t] + 1) / total) for t in eval_tokens)
    return math.exp(nll / len(eval_tokens))
