"""Peak memory and time of one LM training step (forward + backward): the plain loss over full logits
against the fused, chunked LM head + cross-entropy (gpt2tasks.lm_loss), on the CPU or a GPU.

    python scripts/bench_fused_loss.py                       # CPU: 2 layers, width 64, 4 x 512 tokens
    python scripts/bench_fused_loss.py --device cuda --n-embd 768 --batch 16 --length 1024 --bf16

Peak memory: on CPU the peak of the bytes torch allocated during the step (the profiler's allocation
events), on CUDA max_memory_allocated over the step; both above what was allocated before it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from gpt2tasks.tasks.base import EvalSpec, OptimSpec  # noqa: E402
from gpt2tasks.tasks.lm import LanguageModelingModule  # noqa: E402
from gpt2tasks.throughput import peak_cpu_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 4096, 1024, 256], help="0: the plain loss")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    config = GPT2Config(n_layer=args.n_layer, n_head=max(1, args.n_embd // 64), n_embd=args.n_embd,
                        n_positions=max(1024, args.length), vocab_size=args.vocab, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).to(args.device)
    ids = torch.randint(0, args.vocab, (args.batch, args.length), device=args.device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    logits_mib = args.batch * (args.length - 1) * args.vocab * 4 / 2**20
    print(f"{args.device}; {args.n_layer} layers, width {args.n_embd}, vocab {args.vocab}, {args.batch} x {args.length} "
          f"tokens{', bf16 autocast' if args.bf16 else ', fp32'}; the fp32 logits alone: {logits_mib:,.0f} MiB\n")
    print("| loss | peak memory (MiB) | step time (s) | loss value |\n|---|---|---|---|")
    for chunk in args.chunks:
        module = LanguageModelingModule(model, OptimSpec(), EvalSpec(options={"loss_chunk_tokens": chunk})).train()

        def step():
            with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
                loss, _ = module.step(module.on_before_batch_transfer(dict(batch), 0))
            loss.backward()
            return loss

        model.zero_grad(set_to_none=True)
        step()  # warm-up
        times = []
        for _ in range(args.repeats):
            model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = peak_cpu_bytes(step)
        name = "plain (full logits)" if not chunk else f"fused, {chunk}-token chunks"
        print(f"| {name} | {peak / 2**20:,.0f} | {sorted(times)[len(times) // 2]:.3f} | {float(loss.detach()):.6f} |")


if __name__ == "__main__":
    main()
