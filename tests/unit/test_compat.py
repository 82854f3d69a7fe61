"""gpt2tasks.compat: each private library name it relies on, exercised on the real library objects
(a tiny GPT-2, a tiny Trainer run, a real dataset). When an upgrade removes or changes one, the
failure names the library, its version and the name, instead of breaking a training run."""

from __future__ import annotations

import csv
import signal
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Model
from transformers.models.gpt2 import modeling_gpt2

from gpt2tasks import compat
from gpt2tasks.callbacks import LearningRateLogger
from gpt2tasks.resume import BestCheckpoint
from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.seq_cls import SeqClsModule
from tests.conftest import write_jsonl


@contextmanager
def relies_on(library: str, name: str):
    """A failure inside becomes one line: the library, its installed version, the private name."""
    try:
        yield
    except Exception as exc:
        pytest.fail(f"{library} {version(library)} changed `{name}`, which gpt2tasks.compat relies on "
                    f"({type(exc).__name__}: {exc}). Fix gpt2tasks/compat.py for this version (each function's "
                    "docstring says what it needs), or pin the library below it in pyproject.toml.", pytrace=False)


def tiny_config(**extra) -> GPT2Config:
    cfg = GPT2Config(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 100, "pad_token_id": 0,
                        "eos_token_id": 0, "bos_token_id": 0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                        **extra})
    compat.set_attn_implementation(cfg, "sdpa")
    return cfg


# ---- transformers -------------------------------------------------------------------------------

def test_attn_implementation_is_read_and_set_where_transformers_keeps_it():
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10)
    with relies_on("transformers", "PreTrainedConfig._attn_implementation"):
        compat.set_attn_implementation(cfg, "eager")
        model = GPT2Model(cfg)
        assert compat.attn_implementation(model.config) == "eager"
        model.set_attn_implementation("sdpa")  # the public setter, for a built model
        assert compat.attn_implementation(model.config) == "sdpa"


def test_init_new_module_initialises_a_head_as_its_model_class_does():
    torch.manual_seed(0)
    cfg = tiny_config(num_labels=8, n_embd=256)
    with torch.device("meta"):
        model = GPT2ForSequenceClassification(cfg)
    model.score.to_empty(device="cpu")
    torch.nn.init.constant_(model.score.weight, float("nan"))
    with relies_on("transformers", "PreTrainedModel._init_weights"):
        compat.init_new_module(model, model.score)
        weight = model.score.weight  # (8, 256): normal(0, initializer_range)
        assert torch.isfinite(weight).all()
        assert abs(weight.std().item() - cfg.initializer_range) < 0.002 and abs(weight.mean().item()) < 0.002


def test_the_causal_fast_path_serves_gpt2tasks_models_and_leaves_every_other_gpt2_unpatched(monkeypatch):
    torch.manual_seed(0)
    own = SeqClsModule(GPT2ForSequenceClassification(tiny_config(num_labels=2)), OptimSpec(), EvalSpec()).eval()
    plain = GPT2LMHeadModel(tiny_config()).eval()  # built after a gpt2tasks model, in the same process
    original = compat.original_create_causal_mask()
    with relies_on("transformers", "modeling_gpt2.create_causal_mask"):
        assert modeling_gpt2.create_causal_mask is compat._create_causal_mask  # what GPT2Model.forward calls
    calls = []  # the attention masks transformers' own function was asked for

    def counted(*args, **kwargs):
        with relies_on("transformers", "modeling_gpt2.create_causal_mask's keywords"):
            assert not args and {"config", "attention_mask", "position_ids"} <= set(kwargs)
            assert {"cache", "past_key_values"} & set(kwargs)
        calls.append(kwargs["attention_mask"])
        return original(*args, **kwargs)

    monkeypatch.setattr(compat, "_original_create_causal_mask", counted)
    ids = torch.randint(1, 100, (2, 12))
    with torch.no_grad():
        # gpt2tasks' model, no mask and no cache (as in training): SDPA's is_causal without asking
        # transformers; the same outputs as with an explicit all-ones mask (which transformers builds)
        fast = own.backbone(inputs_embeds=own.backbone.wte(ids), use_cache=False).last_hidden_state
        assert calls == []
        masked = own.backbone(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).last_hidden_state
        assert len(calls) == 1
        torch.testing.assert_close(fast, masked)
        # a plain GPT-2: every call goes to transformers, with outputs equal to unpatched transformers'
        calls.clear()
        padded = torch.ones_like(ids)
        padded[1, 7:] = 0
        wrapped = [plain(input_ids=ids, use_cache=False).logits,
                   plain(input_ids=ids, attention_mask=padded, use_cache=False).logits]
        assert len(calls) == 2 and calls[0] is None
        monkeypatch.setattr(modeling_gpt2, "create_causal_mask", original)
        unpatched = [plain(input_ids=ids, use_cache=False).logits,
                     plain(input_ids=ids, attention_mask=padded, use_cache=False).logits]
    assert all(torch.equal(a, b) for a, b in zip(wrapped, unpatched))
    # a forward that raises leaves no gpt2tasks forward counted (else the next plain GPT-2 would be served)
    with pytest.raises(IndexError):
        own.backbone(input_ids=torch.tensor([[1000]]))
    assert compat._own_forwards == 0


def test_the_kinds_that_print_a_pipeline_are_transformers_pipeline_tasks():
    """A model card prints `pipeline(tag)` only for a task transformers' pipeline() knows
    (transformers 5 has no question-answering pipeline): the registry's flags, checked."""
    from transformers.pipelines import get_supported_tasks

    from gpt2tasks.tasks import KINDS

    with relies_on("transformers", "pipeline tasks (transformers.pipelines.get_supported_tasks)"):
        supported = set(get_supported_tasks())
        assert [name for name, kind in KINDS.items() if kind.pipeline and kind.pipeline_tag not in supported] == []


# ---- torch --------------------------------------------------------------------------------------

def test_tensor_version_counts_in_place_updates_but_not_through_data():
    p = torch.nn.Parameter(torch.zeros(3))
    with relies_on("torch", "Tensor._version"):
        before = compat.tensor_version(p)
        with torch.no_grad():
            p.add_(1)
        assert compat.tensor_version(p) > before
        after = compat.tensor_version(p)
        p.data.add_(1)  # how weight-averaging callbacks swap weights (resume.BestCheckpoint says no then)
        assert compat.tensor_version(p) == after


def test_is_compiled_tells_a_module_compiled_in_place():
    module = torch.nn.Linear(2, 2)
    with relies_on("torch", "Module._compiled_call_impl"):
        assert not compat.is_compiled(module)
        module.compile()  # lazy: nothing is traced until a call
        assert compat.is_compiled(module)


def test_unscales_in_step_is_true_for_the_fused_adamw_only():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with relies_on("torch", "Optimizer._step_supports_amp_scaling"):
        assert compat.unscales_in_step(torch.optim.AdamW(params, fused=True))
        assert not compat.unscales_in_step(torch.optim.AdamW(params))


# ---- datasets -----------------------------------------------------------------------------------

def test_dataset_fingerprint_is_the_content_identity_of_a_loaded_split(tmp_path):
    from datasets import load_dataset

    files = [write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}]),
             write_jsonl(tmp_path / "a_again.jsonl", [{"text": "one"}]),
             write_jsonl(tmp_path / "b.jsonl", [{"text": "two"}])]
    with relies_on("datasets", "Dataset._fingerprint"):
        a, a_reloaded, b = (compat.dataset_fingerprint(load_dataset("json", data_files=files[i], split="train",
                                                                    cache_dir=str(tmp_path / "cache")))
                            for i in (0, 0, 2))
        assert isinstance(a, str) and a == a_reloaded and a != b


# ---- Lightning ----------------------------------------------------------------------------------

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(torch.randn(4, 2), batch_size=1)

    def val_dataloader(self):
        return DataLoader(torch.randn(2, 2), batch_size=1)


class Probe(L.Callback):
    """What compat answers in a real fit, beside what Lightning then does."""

    def __init__(self):
        self.asked: list[tuple[int, bool, bool]] = []  # (step, validates after this batch, can stop early)
        self.validated_at: list[int] = []
        self.at_start: dict = {}

    def on_train_start(self, trainer, pl_module):
        environment = compat.cluster_environment(trainer)
        handler = signal.getsignal(signal.SIGUSR1)
        self.at_start = {"environment": environment, "hpc": compat.hpc_save_path(trainer),
                         "requeue_handler": compat.is_lightning_requeue_handler(trainer, handler)}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.asked.append((trainer.global_step, compat.validates_after_this_batch(trainer),
                           compat.can_stop_early(trainer)))

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated_at.append(trainer.global_step)


def fit(tmp_path: Path, *callbacks, **trainer_args) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=4, num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                        callbacks=list(callbacks), **trainer_args)
    trainer.fit(Tiny())
    return trainer


def test_lightning_loop_decisions_checkpoint_internals_and_lr_hook_in_a_real_fit(tmp_path, monkeypatch):
    for var in [v for v in __import__("os").environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)
    probe = Probe()
    best = BestCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="best", monitor="val_loss", mode="min")
    fit(tmp_path, probe, best, LearningRateLogger(), min_epochs=0, min_steps=3, val_check_interval=2, log_every_n_steps=1,
        logger=CSVLogger(str(tmp_path), name="logs"))
    with relies_on("lightning", "fit_loop.epoch_loop._should_check_val_fx / fit_loop._can_stop_early"):
        # validation after batches 2 and 4 (val_check_interval=2), and stopping allowed from step 3 (min_steps)
        assert probe.asked == [(1, False, False), (2, True, False), (3, False, True), (4, True, True)]
        assert probe.validated_at == [2, 4]
    with relies_on("lightning", "trainer._accelerator_connector.cluster_environment"):
        assert isinstance(probe.at_start["environment"], LightningEnvironment)
        assert probe.at_start["requeue_handler"] is False  # not on SLURM: Lightning registered none
    with relies_on("lightning", "ModelCheckpoint._save_checkpoint / _last_global_step_saved / _last_checkpoint_saved"):
        assert {"_last_global_step_saved", "_last_checkpoint_saved"} <= set(vars(ModelCheckpoint()))
        assert Path(best.best_model_path).is_file() and best.best_model_path in best._written  # our hook ran
        assert best._last_checkpoint_saved == best.best_model_path  # what Lightning tracks, as after its own save
    with relies_on("lightning", "LearningRateMonitor._extract_stats"):
        rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))
        logged = [float(r["train/lr"]) for r in rows if r.get("train/lr")]  # renamed by LearningRateLogger
        assert len(logged) >= 4 and set(logged) == {0.1} and "lr-SGD" not in rows[0]


def test_lightning_slurm_requeue_handler_and_hpc_path_on_slurm(tmp_path, monkeypatch):
    for var, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "compat", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(var, value)
    probe = Probe()
    fit(tmp_path, probe, plugins=[SLURMEnvironment(auto_requeue=True)], logger=False, enable_checkpointing=False)
    with relies_on("lightning", "trainer._accelerator_connector.cluster_environment"):
        assert isinstance(probe.at_start["environment"], SLURMEnvironment)
    with relies_on("lightning", "trainer._signal_connector._slurm_sigusr_handler_fn"):
        assert probe.at_start["requeue_handler"] is True
    with relies_on("lightning", "trainer._checkpoint_connector.hpc_save_path"):
        assert probe.at_start["hpc"] == tmp_path / "hpc_ckpt_1.ckpt"


def test_rich_available_is_whether_lightnings_rich_bar_can_be_made():
    with relies_on("lightning", "callbacks.progress.rich_progress._RICH_AVAILABLE"):
        if compat.rich_available():
            RichProgressBar()
        else:
            with pytest.raises(ModuleNotFoundError):
                RichProgressBar()


# ---- Hydra --------------------------------------------------------------------------------------

def test_hydra_job_return_holds_the_jobs_exception_without_raising_it():
    from hydra.core.utils import JobStatus

    error = ValueError("boom")
    with relies_on("hydra-core", "JobReturn._return_value"):
        ended = compat.job_return(["seed=1"], JobStatus.FAILED, error)
        assert compat.job_return_value(ended) is error and ended.overrides == ["seed=1"]
    with pytest.raises(ValueError, match="boom"):  # why: the public `.return_value` re-raises it
        ended.return_value
