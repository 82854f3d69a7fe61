"""What keeps a training step fast on a GPU, checked on the CPU: no graph breaks under torch.compile,
no host syncs, inputs that take SDPA's fast paths (with outputs unchanged), and 16-mixed clipping
of real (unscaled) gradients with the fused AdamW."""

from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from gpt2tasks.tasks.base import EvalSpec, OptimSpec
from gpt2tasks.tasks.lm import LanguageModelingModule
from gpt2tasks.tasks.seq_cls import SeqClsModule


def config(**extra) -> GPT2Config:
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=1000, pad_token_id=0,
                     eos_token_id=0, bos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **extra)
    cfg._attn_implementation = "sdpa"
    return cfg


def lm_module(**options):
    torch.manual_seed(0)
    return LanguageModelingModule(GPT2LMHeadModel(config()), OptimSpec(),
                                  EvalSpec(metrics=["perplexity"], options={"loss_chunk_tokens": 8, **options})).train()


def seq_cls_module():
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config(num_labels=2, problem_type="single_label_classification"))
    return SeqClsModule(model, OptimSpec(), EvalSpec()).train()


def batch(kind: str, padded: bool, module) -> dict:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 1000, (3, 16), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 10:] = 0
        mask[2, 4:] = 0
        ids[mask == 0] = 0
    out = {"input_ids": ids, "attention_mask": mask, "idx": torch.arange(3)}
    if kind == "seq_cls":
        out["labels"] = torch.tensor([0, 1, 1])
    return module.on_before_batch_transfer(out, 0)  # what Lightning hands the step


MODULES = {"lm": lm_module, "seq_cls": seq_cls_module}


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kind", list(MODULES))
def test_training_forward_and_loss_compile_without_graph_breaks(kind, padded):
    """The whole training step's forward + loss (backbone, head, fused LM loss) is one graph."""
    import torch._dynamo

    module = MODULES[kind]()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(module.step)(batch(kind, padded, module))
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


def plain_inputs(b):
    """What the HF model is called with by default: ids and the 2-D mask (transformers builds the rest)."""
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kind", list(MODULES))
def test_fast_path_inputs_give_the_same_loss_and_gradients(kind, padded):
    """The module's inputs (unpadded: no mask, SDPA is_causal; padded: a 4-D mask built here) change no
    number against the HF model called with ids and the 2-D mask."""
    fast, reference = MODULES[kind](), MODULES[kind]()
    reference.backbone_inputs = plain_inputs
    b = batch(kind, padded, fast)
    assert b["unpadded"] is (not padded)
    if padded:
        assert fast.backbone_inputs(b)["attention_mask"].shape == (3, 1, 16, 16)
    else:
        assert "attention_mask" not in fast.backbone_inputs(b)
    results = []
    for module in (fast, reference):
        loss, _ = module.step(b)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in module.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-6)
    for a, g in zip(grads_a, grads_b):
        torch.testing.assert_close(a, g, rtol=1e-5, atol=1e-6)


def test_fused_adamw_under_16_mixed_clips_unscaled_gradients():
    """Lightning leaves unscaling to a fused optimizer's step; the module unscales before clipping, so
    clipping sees the real gradient norm and the update equals an unscaled, clipped fp32 step."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    def run(scaled: bool):
        module = lm_module()
        module.optim = OptimSpec(max_grad_norm=0.5)
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2, fused=True)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16) if scaled else None
        logged = {}
        module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
        module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler),
                                          strategy=SingleDeviceStrategy(torch.device("cpu")))
        loss, _ = module.step(batch("lm", True, module))
        (scaler.scale(loss) if scaled else loss).backward()
        module.on_before_optimizer_step(optimizer)
        if scaled:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return logged["train/grad_norm"], [p.detach().clone() for p in module.parameters()]

    (norm_ref, params_ref), (norm, params) = run(False), run(True)
    assert norm_ref > 0.5  # clipping is active
    assert norm == pytest.approx(norm_ref, rel=1e-5)
    for a, b in zip(params, params_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_progress_bar_redraws_at_the_logging_interval_on_cuda(monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    import sys

    import gpt2tasks.build as build

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: a bar (else plain lines)
    watch = ("val/accuracy", "max")
    on_cpu = build.progress_bar({"accelerator": "cpu", "enable_progress_bar": True}, *watch)  # Lightning's pick, without v_num
    assert on_cpu is not None and not (isinstance(on_cpu, TQDMProgressBar) and on_cpu.refresh_rate != 1)
    assert build.progress_bar({"enable_progress_bar": True, "callbacks": [on_cpu]}, *watch) is None  # the caller's bar stays
    monkeypatch.setattr(build, "runs_on_cuda", lambda trainer: True)
    bar = build.progress_bar({"enable_progress_bar": True, "log_every_n_steps": 25}, *watch)
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 25
    assert build.progress_bar({"enable_progress_bar": False}, *watch) is None


def test_gpt2_gelu_runs_as_one_fused_kernel_with_the_same_outputs_gradients_and_config(tmp_path, cfg_factory):
    """backbone.fuse_gelu: gelu_new's six-op formula -> torch's fused tanh GELU, the same function
    (outputs and gradients within float rounding); the config, state dict and export keep gelu_new."""
    from transformers.activations import GELUTanh, NewGELUActivation

    from gpt2tasks.backbone import fuse_gelu

    torch.manual_seed(0)
    plain = GPT2ForSequenceClassification(config(num_labels=3))  # dropout off: the two forwards comparable
    fused = GPT2ForSequenceClassification(plain.config)
    fused.load_state_dict(plain.state_dict())
    fuse_gelu(fused)
    assert [type(b.mlp.act) for b in fused.transformer.h] == [GELUTanh] * 2
    assert all(type(b.mlp.act) is NewGELUActivation for b in plain.transformer.h)
    ids = torch.randint(1, 1000, (3, 20), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 1])
    losses = []
    for model in (plain, fused):
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        losses.append((out.logits, out.loss))
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-5)
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    fused.save_pretrained(tmp_path)
    assert GPT2ForSequenceClassification.from_pretrained(tmp_path).config.activation_function == "gelu_new"
    other = GPT2ForSequenceClassification(config(num_labels=3, activation_function="relu"))
    fuse_gelu(other)  # a user's own activation stays
    assert type(other.transformer.h[0].mlp.act) is torch.nn.ReLU

    from gpt2tasks.build import build_for_training  # what a run trains: fused

    _, module, _ = build_for_training(cfg_factory("data.max_train_samples=8", "data.max_eval_samples=8"))
    assert {type(m) for m in module.modules()} & {GELUTanh, NewGELUActivation} == {GELUTanh}
