"""Peak memory and step time of full fine-tuning vs LoRA vs gradient checkpointing.

    python scripts/bench_memory.py                       # gpt2 (random init), CPU: fp32; CUDA: bf16 autocast
    python scripts/bench_memory.py --model gpt2-medium --batch-size 16 --seq-len 512 --steps 20

The same training step gpt2tasks runs (HF head forward + loss, backward, clipping, AdamW; fused on
CUDA) on a fixed random batch, with the model built exactly as gpt2tasks builds it: the size
preset's architecture, `gpt2tasks.lora.apply_lora` for LoRA, non-reentrant checkpointing.
Peak memory is `torch.cuda.max_memory_allocated` on CUDA and the process's peak RSS growth on CPU
(weights + gradients + optimizer state + activations). Writes a Markdown table (and --json).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpt2tasks.lora import LoraSpec, apply_lora  # noqa: E402

SIZES = {  # the architectures of conf/model/*.yaml
    "tiny": dict(n_layer=2, n_head=4, n_embd=128),
    "distilgpt2": dict(n_layer=6, n_head=12, n_embd=768),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
}
MODES = {"full": (False, False), "full + checkpointing": (False, True), "lora": (True, False),
         "lora + checkpointing": (True, True)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(args, use_lora: bool, checkpointing: bool, device: torch.device) -> dict:
    rss_start = peak_rss_mb()
    torch.manual_seed(0)
    config = GPT2Config(**SIZES[args.model], n_positions=1024, vocab_size=50257, num_labels=2, pad_token_id=50256)
    head = GPT2LMHeadModel if args.head == "lm" else GPT2ForSequenceClassification
    config._attn_implementation = "sdpa"
    model = head(config).to(device)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if use_lora:
        model = apply_lora(model, LoraSpec(method="lora", r=args.lora_r), () if args.head == "lm" else ("score",))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    ids = torch.randint(0, 50257, (args.batch_size, args.seq_len), device=device)
    labels = ids if args.head == "lm" else torch.randint(0, 2, (args.batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() + base) / 2**20
    else:
        peak = peak_rss_mb() - rss_start  # this process runs one mode only (see main)
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    result = {"peak_mb": round(peak), "step_s": statistics.median(times[args.warmup:]),
              "trainable": trainable, "total": total, "loss": float(loss)}
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SIZES), default="gpt2")
    parser.add_argument("--head", choices=("seq_cls", "lm"), default="seq_cls")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    if len(args.modes) == 1:
        rows = {args.modes[0]: run(args, *MODES[args.modes[0]], device)}
    else:
        # One fresh process per mode: peak memory (RSS on CPU) then belongs to that mode alone.
        rows = {}
        for mode in args.modes:
            with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
                argv = [a for a in sys.argv[1:]]
                subprocess.run([sys.executable, __file__, *argv, "--modes", mode, "--json", tmp.name], check=True,
                               stdout=subprocess.DEVNULL)
                rows[mode] = json.loads(Path(tmp.name).read_text())["rows"][mode]
            print(f"{mode}: {rows[mode]}", flush=True)
    print(f"\n`{args.model}` ({args.head}, random init), batch {args.batch_size} x {args.seq_len} tokens, "
          f"{precision}, {where}, median of {args.steps} steps\n")
    print("| mode | trainable params | peak memory (MiB) | step time (s) |\n|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f}%) | {r['peak_mb']:,} | "
              f"{r['step_s']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"device": where, "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
