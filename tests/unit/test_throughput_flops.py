"""The FLOP counter behind MFU (gpt2tasks.throughput), checked against a hand calculation for `tiny`."""

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from gpt2tasks.throughput import FlopCounter, batch_flops, flops_per_token, gpu_peak_flops, matmul_parameters

L, C, V, P = 2, 128, 1000, 1024  # tiny: 2 layers, 128 wide; a 1000-token vocabulary


def _config(**extra):
    return GPT2Config(n_layer=L, n_head=4, n_embd=C, vocab_size=V, n_positions=P, **extra)


# One block by hand: ln_1 (2C) + c_attn (C x 3C + 3C) + attn c_proj (C x C + C) + ln_2 (2C)
# + c_fc (C x 4C + 4C) + mlp c_proj (4C x C + C) = 12 C^2 + 13 C; plus ln_f (2C).
BODY = L * (12 * C * C + 13 * C) + 2 * C


def test_matmul_parameters_by_hand():
    # LM: the tied token embedding is the output projection (counted once); position embeddings never.
    assert matmul_parameters(GPT2LMHeadModel(_config()), uses_lm_head=True) == BODY + V * C
    # Classification: wte is only looked up; the score layer (C x labels, no bias) multiplies every token.
    assert matmul_parameters(GPT2ForSequenceClassification(_config(num_labels=2)), uses_lm_head=False) == BODY + 2 * C


def test_flops_per_token_and_per_batch_by_hand():
    n = BODY + 2 * C
    assert flops_per_token(n, L, C, 100) == 6 * n + 12 * L * C * 100
    # Rows of real length 3 and 5 in a batch padded to 8: padding earns nothing.
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]])
    counter = FlopCounter(GPT2ForSequenceClassification(_config(num_labels=2)), uses_lm_head=False)
    expected = 6 * n * 8 + 12 * L * C * (3 ** 2 + 5 ** 2)
    assert counter.batch(mask) == expected == batch_flops(n, L, C, torch.tensor([3, 5]))
    assert counter.per_token(5) == flops_per_token(n, L, C, 5)
    # Multiple choice (batch, choices, T): every choice is a sequence.
    assert counter.batch(mask.reshape(1, 2, 8)) == expected


def test_gpt2_lm_matches_design_doc_convention():
    # docs/design.md (Performance baseline): gpt2 LM at block 1024, 120.7K tok/s = 10.4% of 989 TFLOP/s with 6N + 12LCT.
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768))
    per_token = FlopCounter(model, uses_lm_head=True).per_token(1024)
    assert round(100 * 120.7e3 * per_token / gpu_peak_flops("NVIDIA H100 80GB HBM3"), 1) == 10.4
    assert gpu_peak_flops("NVIDIA H100 PCIe") == 756e12 and gpu_peak_flops("some CPU") is None
