"""On a CUDA GPU (`pytest -m gpu`; scripts/gpu_check.sh runs these): the fused LM loss in bf16 and its
memory, a bf16 + compiled training run, and training steps that never wait for the GPU."""

import json
import os

import pytest
import torch

from gpt2tasks.train import train

pytestmark = pytest.mark.gpu

# GPT2TASKS_TEST_DEVICE=cpu dry-runs these on the CPU (scripts/gpu_check.sh --cpu-smoke): the same
# code paths, without the CUDA-only measurements (peak memory, sync debug mode).
DEVICE = os.environ.get("GPT2TASKS_TEST_DEVICE", "cuda")
CUDA = DEVICE == "cuda"
ACCELERATOR = "trainer.accelerator=" + ("gpu" if CUDA else "cpu")
if CUDA and not torch.cuda.is_available():  # only ever selected with -m gpu
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


def test_fused_lm_loss_in_bf16_matches_the_plain_loss_and_saves_memory(capsys):
    """gpt2's vocabulary, batch 8 x 1024 under bf16 autocast: the fused loss equals the plain one
    (bf16 tolerance) and its peak memory is lower by about the logits it never holds."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2tasks.tasks.base import EvalSpec, OptimSpec
    from gpt2tasks.tasks.lm import LanguageModelingModule

    config = GPT2Config(n_layer=2, n_head=12, n_embd=768, vocab_size=50257, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    ids = torch.randint(0, 50257, (8, 1024) if CUDA else (1, 256), device=DEVICE)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    results = {}
    for chunk in (0, 4096):
        torch.manual_seed(0)
        module = LanguageModelingModule(GPT2LMHeadModel(config).to(DEVICE), OptimSpec(),
                                        EvalSpec(options={"loss_chunk_tokens": chunk})).train()
        if CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if CUDA else 0
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss, _ = module.step(module.on_before_batch_transfer(dict(batch), 0))
        loss.backward()
        peak = torch.cuda.max_memory_allocated() - base if CUDA else 0
        results[chunk] = (float(loss), module.model.transformer.wte.weight.grad.float(), peak)
    (plain, g_plain, m_plain), (fused, g_fused, m_fused) = results[0], results[4096]
    with capsys.disabled():
        print(f"\nfused LM loss, 8 x 1024 tokens, vocab 50257, bf16: peak {m_fused / 2**20:,.0f} MiB "
              f"(plain {m_plain / 2**20:,.0f} MiB); loss {fused:.5f} vs {plain:.5f}")
    assert fused == pytest.approx(plain, rel=1e-2)
    assert float((g_fused - g_plain).norm() / g_plain.norm()) < 3e-2
    if CUDA:
        assert m_fused < m_plain - 8 * 1024 * 50257 * 2  # at least one bf16 copy of the logits less


def test_bf16_compiled_lm_run_learns_and_eval_reproduces_it(cfg_factory, tmp_path):
    from gpt2tasks.evaluation import evaluate_checkpoint

    out = tmp_path / "run"
    metrics = train(cfg_factory("task=sample_lm", "precision=bf16-mixed", "model.compile=true", ACCELERATOR,
                                "trainer.max_epochs=1", "data.max_train_samples=400", output_dir=out))
    # uniform over the tiny tokenizer's 946 tokens: 946; 121 after these 25 steps in the CPU dry run
    assert metrics["val/perplexity"] < 300
    again = evaluate_checkpoint(str(out / "checkpoints" / "best.ckpt"), ["model.compile=false"])
    assert again["val/perplexity"] == pytest.approx(metrics["val/perplexity"], rel=1e-2)
    assert json.loads((out / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize("task", ["sample_lm", "sample_sentiment"])
def test_training_steps_make_no_cuda_sync(task, cfg_factory):
    """torch's sync debug mode, on between the start and the end of steps 2..6: the step, loss,
    clipping, fused AdamW, throughput callback and progress bar never wait for the GPU."""
    import warnings

    import lightning as L

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if 2 <= batch_idx <= 6 and CUDA:
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if CUDA:
                torch.cuda.set_sync_debug_mode("default")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg_factory(f"task={task}", ACCELERATOR, "precision=bf16-mixed", "trainer.max_steps=8",
                          "data.batch_size=8", "data.max_train_samples=128", "data.max_eval_samples=16",
                          "trainer.log_every_n_steps=50", "trainer.enable_progress_bar=true"), callbacks=[Window()])
    if CUDA:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert syncs == []
