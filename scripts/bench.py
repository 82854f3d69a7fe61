"""Speed benchmark: gpt2tasks vs a plain Hugging Face `Trainer` script, back to back in one invocation.

    python scripts/bench.py --tasks sst2 --models tiny --steps 20                       # CPU, minutes
    python scripts/bench.py --tasks sst2 --models gpt2 --steps 20 --batch-size 32       # the CPU target
    python scripts/bench.py --models gpt2 --precision bf16-mixed --compile --steps 100   # GPU

Per (task, model), each system trains the same model architecture from the same seeded random init
(checked: the parameter checksum at the first step is printed), on the same data, batch, steps,
learning rate, precision and seed, then scores a small held-out slice. Systems:
- `gpt2tasks`: `python -m gpt2tasks train` as a user runs it (`model=gpt2 model.pretrained=false`,
  the real GPT-2 tokenizer), with a fresh tokenization cache; then `gpt2tasks (cached)`, a second
  run of one step that finds that cache, for the cached time to first step.
- `Trainer static` / `Trainer dynamic`: the plain `Trainer` pipelines of scripts/compare_hf_trainer.py
  (written as HF's run_glue / run_ner / run_qa / run_clm examples), padding every batch to
  max_length, or per batch with `train_sampling_strategy="group_by_length"` (`--hf-padding`).
  WikiText-2 blocks are full, so LM has one Trainer row.
Every system runs in its own process (peak memory is then its own; nothing is warm from another).

Measured: time to first step (from entering the run, imports excluded, to the end of the first
optimizer step: start-up, reading, tokenizing, model build), samples/s and real (non-pad) tokens/s
over the steps after `--warmup-steps` (wall time between step ends, data loading included; CUDA
synchronised at the window's ends), the padding fraction of those batches, peak memory (CUDA
max allocated; on CPU the process's peak RSS growth over its post-import baseline), and MFU with
FLOPs per real token = 6 N + 12 L C T as gpt2tasks.throughput defines them, against a measured fp32 GEMM
rate on CPU or the datasheet dense bf16 peak on GPU. Writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]
SHARED = Path(os.environ.get("GPT2TASKS_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

# Per task: the compare_hf_trainer kind (its recipe: lr, warmup, weight decay), and the defaults of
# this benchmark (docs/design.md, "Performance baseline": SST-2 batch 32; LM block 1024 batch 16).
TASKS = {
    "sst2": dict(kind="seq_cls", batch_size=32, max_length=128),
    "conll2003": dict(kind="token_cls", batch_size=32, max_length=128),
    "squad": dict(kind="qa", batch_size=32, max_length=384),
    "wikitext2": dict(kind="lm", batch_size=16, max_length=1024),
}
MODELS = ("tiny", "distilgpt2", "gpt2", "gpt2-medium")


# ---- data: the shared files, held-out slices written to a temporary folder ----------------------
def prepare_data(task: str, tmp: Path, eval_samples: int, train_samples: int | None) -> tuple[str, str, dict]:
    """(train file, validation file, extra args) for a task. Formats both systems read as they are."""
    from gpt2tasks.datamodules.files import read_conll
    from gpt2tasks.datamodules.qa import flatten_squad

    def jsonl(name: str, rows: list[dict]) -> str:
        path = tmp / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    def head(src: Path, name: str, n: int | None, header: bool) -> str:
        if n is None:
            return str(src)  # the shared file itself
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
        (tmp / name).write_text("".join(lines[:n + header]), encoding="utf-8")
        return str(tmp / name)

    if task == "sst2":
        return (head(SHARED / "sst2/train.tsv", "train.tsv", train_samples, True),
                head(SHARED / "sst2/dev.tsv", "dev.tsv", eval_samples, True),
                dict(text_column="sentence", label_column="label"))
    if task == "conll2003":
        train, _ = read_conll(SHARED / "conll2003/eng.train", "train", "tokens", "ner_tags")
        dev, _ = read_conll(SHARED / "conll2003/eng.testa", "validation", "tokens", "ner_tags")
        return jsonl("train.jsonl", train[:train_samples]), jsonl("dev.jsonl", dev[:eval_samples]), {}
    if task == "squad":
        # Only the v1.1 dev file is shared: its first 40 articles train, questions of the rest score.
        articles = json.loads((SHARED / "squad_v1.1/dev-v1.1.json").read_text(encoding="utf-8"))["data"]
        train = flatten_squad(articles[:40], "dev-v1.1.json", "train")[:train_samples]
        dev = flatten_squad(articles[40:], "dev-v1.1.json", "validation")[:eval_samples]
        return jsonl("train.jsonl", train), jsonl("dev.jsonl", dev), dict(doc_stride=128, max_question_length=64)
    if task == "wikitext2":
        # Only valid/test are shared: train on valid.txt, score the first lines of test.txt.
        return (head(SHARED / "wikitext-2/valid.txt", "train.txt", train_samples, False),
                head(SHARED / "wikitext-2/test.txt", "test.txt", eval_samples, False), {})
    raise ValueError(task)


# ---- measuring a run, the same way for both systems -------------------------------------------
class Meter:
    """Step-end times and per-batch counts; the batch statistics come from the collated tensors."""

    def __init__(self, warmup: int, steps: int, cuda: bool, uses_lm_head: bool):
        self.warmup, self.steps, self.cuda, self.uses_lm_head = warmup, steps, cuda, uses_lm_head
        self.start = time.perf_counter()
        self.ends: list[float] = []
        self.batches: list[tuple] = []  # (samples, padded tokens, row lengths: a tensor, maybe on the GPU)
        self.counter = None
        self.checksum = None

    def model_ready(self, model) -> None:
        import torch

        from gpt2tasks.throughput import FlopCounter

        self.counter = FlopCounter(model, self.uses_lm_head)
        with torch.no_grad():  # same init on both sides => same checksum
            self.checksum = float(sum(p.double().sum() for p in model.parameters()))

    @staticmethod
    def count(batch) -> tuple:
        """(samples, padded tokens, real length of every row). The lengths stay a tensor where the
        batch is (read at the end: reading a GPU tensor every step would sync and stall the GPU)."""
        from gpt2tasks.throughput import row_lengths

        ids, mask = batch["input_ids"], batch.get("attention_mask")
        rows = ids.numel() // ids.shape[-1]
        lengths = row_lengths(mask) if mask is not None else ids.new_full((rows,), ids.shape[-1])
        samples = len(batch["idx"]) if "pack_index" in batch else ids.shape[0]  # packed: examples, not rows
        return samples, ids.numel(), lengths

    def step_end(self, counts) -> None:
        step = len(self.ends) + 1
        if self.cuda and step in (1, self.warmup, self.steps):
            import torch

            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.batches.append(counts)

    def result(self, peak_flops: float | None) -> dict:
        from gpt2tasks.throughput import batch_flops

        first = {"time_to_first_step_s": self.ends[0] - self.start, "init_checksum": self.checksum}
        w = self.warmup
        if w < 1 or len(self.ends) <= w:  # a start-up-only run (one step): no rates
            return first
        seconds = self.ends[-1] - self.ends[w - 1]
        timed = self.batches[w:len(self.ends)]
        samples, padded = sum(b[0] for b in timed), sum(b[1] for b in timed)
        lengths = [b[2].cpu() for b in timed]
        tokens = int(sum(x.sum() for x in lengths))
        c = self.counter
        flops = sum(batch_flops(c.n_params, c.n_layer, c.n_embd, x) for x in lengths)
        return {**first, "timed_steps": len(timed),
                "samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds,
                "padding_fraction": 1 - tokens / padded, "flops_per_token": flops / tokens,
                "n_params_matmul": c.n_params, "mfu": flops / seconds / peak_flops if peak_flops else None}


def gpt2tasks_callback(meter: Meter):
    import lightning as L

    class MeterCallback(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            meter.model_ready(pl_module.model)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            meter.step_end(meter.count(batch))

    return MeterCallback()


def hf_callback(meter: Meter):
    """(TrainerCallback, collator wrapper). Counts come from the collator through a FIFO: the
    dataloader may collate a batch ahead of the step that uses it."""
    from collections import deque

    from transformers import TrainerCallback

    pending: deque = deque()
    training = [False]  # predict() after training reuses the collator: not counted

    class MeterCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            meter.model_ready(model)
            training[0] = True

        def on_step_end(self, args, state, control, **kwargs):
            meter.step_end(pending.popleft())

        def on_train_end(self, args, state, control, **kwargs):
            training[0] = False

    def wrap(collator):
        def collate(features):
            batch = collator(features)
            if training[0]:
                pending.append(Meter.count(batch))
            return batch
        return collate

    return MeterCallback(), wrap


# ---- one system, in its own process ------------------------------------------------------------
def worker(spec: dict) -> dict:
    import torch

    # Both systems' heavy imports happen here, before any clock starts (each would otherwise import
    # them lazily inside its timed start-up).
    import compare_hf_trainer as compare
    import datasets  # noqa: F401
    import lightning  # noqa: F401
    from transformers import Trainer  # noqa: F401

    from gpt2tasks.cli import quiet_known_noise

    quiet_known_noise()
    cuda = spec["device"] == "cuda"
    task = TASKS[spec["task"]]
    kind = compare.KINDS[task["kind"]]
    baseline_rss = _peak_rss_mb()
    steps = spec["steps"]
    args = Namespace(kind=task["kind"], train_file=spec["train_file"], validation_file=spec["validation_file"],
                     steps=steps, batch_size=spec["batch_size"], max_length=spec["max_length"],
                     lr=spec["lr"] or kind["lr"], warmup_ratio=kind["warmup_ratio"],
                     weight_decay=kind["weight_decay"], text_column="text", label_column="label",
                     tokens_column="tokens", tags_column="ner_tags", doc_stride=32, max_question_length=32,
                     n_best=20, max_answer_length=30, seed=spec["seed"], no_dropout=False, override=[])
    for key, value in spec["extra"].items():
        setattr(args, key, value)
    meter = Meter(min(spec["warmup_steps"], steps - 1), steps, cuda, uses_lm_head=task["kind"] == "lm")
    out = Path(spec["out_dir"])
    bf16 = spec["precision"] == "bf16-mixed"
    if spec["system"].startswith("gpt2tasks"):
        args.model_overrides = gpt2tasks_model_overrides(spec["model"])
        args.callbacks = [gpt2tasks_callback(meter)]
        args.override = [f"data.cache_dir={spec['cache_dir']}", f"precision={spec['precision']}",
                         f"model.compile={str(spec['compile']).lower()}", "checkpoint.save_last=false",
                         f"trainer.accelerator={'gpu' if cuda else 'cpu'}", "trainer.log_every_n_steps=50",
                         *spec.get("gpt2tasks_override", [])]
        meter.start = time.perf_counter()
        score, _ = compare.run_gpt2tasks(args, None, out)
    else:
        args.init_from_config = True
        args.use_cpu = not cuda
        args.static_padding = spec["system"] == "Trainer static"
        args.training_args = {"bf16": bf16, "torch_compile": spec["compile"] and not spec["compile_ours_only"],
                              "train_sampling_strategy": "group_by_length" if spec["system"] == "Trainer dynamic"
                              else "random"}
        callback, args.wrap_collator = hf_callback(meter)
        args.hf_callbacks = [callback]
        meter.start = time.perf_counter()
        score, _ = compare.HF_RUNS[task["kind"]](args, Path(spec["model_dir"]), out)
    result = meter.result(spec["peak_flops"])
    if cuda:
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_memory_mb"] = _peak_rss_mb() - baseline_rss
    result["metric"] = score
    return result


def gpt2tasks_model_overrides(model: str) -> list[str]:
    """How a user picks the model: `tiny` as it is; the others as random init of the size preset
    with the real GPT-2 tokenizer."""
    if model == "tiny":
        return ["model=tiny"]
    return [f"model={model}", "model.pretrained=false", f"model.tokenizer_name_or_path={SHARED / 'gpt2_tokenizer'}"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_model_dir(model: str, path: Path) -> None:
    """The architecture gpt2tasks builds for `model=<model> model.pretrained=false`, as a config.json
    + tokenizer folder: the Trainer side builds its model from it, seeded, as gpt2tasks does."""
    from hydra import compose, initialize_config_dir

    from gpt2tasks.backbone import ModelSpec, load_model_config, load_tokenizer
    from gpt2tasks.build import model_spec
    from gpt2tasks.resources import CONF_DIR, register_resolvers

    register_resolvers()
    overrides = gpt2tasks_model_overrides(model)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        spec: ModelSpec = model_spec(compose(config_name="config", overrides=overrides))
    tokenizer = load_tokenizer(spec)
    load_model_config(spec, tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)


# ---- the driver ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["tiny"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the rates (first-step costs)")
    parser.add_argument("--batch-size", type=int, help="default: per task (sst2/conll2003/squad 32, wikitext2 16)")
    parser.add_argument("--max-length", type=int, help="default: per task (128, 128, 384; LM block 1024)")
    parser.add_argument("--lr", type=float, help="default: compare_hf_trainer's recipe for the head kind")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument("--compile", action="store_true", help="gpt2tasks model.compile=true; Trainer torch_compile")
    parser.add_argument("--compile-ours-only", action="store_true",
                        help="with --compile: the Trainer runs eager (the plain-Trainer baseline), only gpt2tasks compiles")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="CPU threads (OMP_NUM_THREADS) for every run; default: torch's")
    parser.add_argument("--hf-padding", nargs="*", choices=("static", "dynamic"), default=["static", "dynamic"],
                        help="Trainer rows: pad to max_length, and/or per batch + group_by_length")
    parser.add_argument("--systems", nargs="+", choices=("gpt2tasks", "trainer"), default=["gpt2tasks", "trainer"],
                        help="which, in this order")
    parser.add_argument("--gpt2tasks-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra gpt2tasks overrides, e.g. data.pack_examples=true")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the systems' sequence N times (A B A B: load drift hits both)")
    parser.add_argument("--no-cached-run", action="store_true", help="skip gpt2tasks' second (cached) start-up")
    parser.add_argument("--eval-samples", type=int, default=200, help="held-out examples (LM: lines) scored")
    parser.add_argument("--train-samples", type=int, help="first N training examples only (default: the whole file)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=Path("bench.json"))
    parser.add_argument("--markdown", type=Path, default=Path("bench.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:  # before torch starts its thread pool; the workers inherit it
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        Path(spec["result"]).write_text(json.dumps(worker(spec)))
        return

    import torch

    from gpt2tasks.throughput import gpu_peak_flops, measure_cpu_peak

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda":
        where = torch.cuda.get_device_name()
        peak, peak_note = gpu_peak_flops(where), "datasheet dense bf16"
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        peak, peak_note = measure_cpu_peak(), "measured fp32 GEMM (2048^3)"
    print(f"device: {where}; peak {peak / 1e12 if peak else float('nan'):.3f} TFLOP/s ({peak_note})", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp_root:
        tmp = Path(tmp_root)
        for model in args.models:
            model_dir = tmp / f"model_{model}"
            make_model_dir(model, model_dir)
            for task in args.tasks:
                data_dir = tmp / f"data_{task}"
                data_dir.mkdir()
                train_file, validation_file, extra = prepare_data(task, data_dir, args.eval_samples, args.train_samples)
                systems = []  # in --systems order (run the Trainer first to counterbalance drifting load)
                for system in args.systems:
                    if system == "gpt2tasks":
                        systems += ["gpt2tasks"] + ([] if args.no_cached_run else ["gpt2tasks (cached)"])
                    else:
                        systems += (["Trainer"] if TASKS[task]["kind"] == "lm"
                                    else [f"Trainer {p}" for p in args.hf_padding])
                for system in systems * args.repeat:
                    spec = dict(task=task, model=model, system=system if system != "Trainer" else "Trainer dynamic",
                                device=device, steps=1 if system == "gpt2tasks (cached)" else args.steps,
                                warmup_steps=args.warmup_steps, seed=args.seed, precision=args.precision,
                                compile=args.compile, compile_ours_only=args.compile_ours_only, lr=args.lr,
                                peak_flops=peak, gpt2tasks_override=args.gpt2tasks_override,
                                batch_size=args.batch_size or TASKS[task]["batch_size"],
                                max_length=args.max_length or TASKS[task]["max_length"],
                                train_file=train_file, validation_file=validation_file, extra=extra,
                                model_dir=str(model_dir), cache_dir=str(tmp / f"cache_{model}_{task}"),
                                out_dir=str(tmp / f"run_{model}_{task}_{len(rows)}"),
                                result=str(tmp / f"result_{len(rows)}.json"))
                    spec_path = tmp / f"spec_{len(rows)}.json"
                    spec_path.write_text(json.dumps(spec))
                    print(f"== {task} / {model} / {system}", flush=True)
                    start = time.perf_counter()
                    log_path = tmp / f"log_{len(rows)}.txt"
                    with open(log_path, "w") as log:  # the runs' own output, shown when one fails
                        done = subprocess.run([sys.executable, __file__, "--worker", str(spec_path)],
                                              stdout=log, stderr=subprocess.STDOUT)
                    if done.returncode:
                        sys.exit(f"{system} failed:\n{log_path.read_text()[-5000:]}")
                    result = json.loads(Path(spec["result"]).read_text())
                    rows.append(dict(task=task, model=model, system=system, wall_s=time.perf_counter() - start,
                                     **result))
                    print(json.dumps(rows[-1]), flush=True)
    report = {"device": where, "peak_flops": peak, "peak_note": peak_note, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"}, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    args.markdown.write_text(table)
    print("\n" + table)


def markdown(report: dict) -> str:
    a = report["args"]
    compiled = (", compile (gpt2tasks only)" if a.get("compile_ours_only") else ", compile") if a["compile"] else ""
    lines = [f"{report['device']}; precision {a['precision']}{compiled}; {a['steps']} steps "
             f"(rates over steps {a['warmup_steps'] + 1}-{a['steps']}); MFU against "
             f"{(report['peak_flops'] or float('nan')) / 1e12:.3g} TFLOP/s ({report['peak_note']}); seed {a['seed']}",
             "",
             "| task | model | system | samples/s | real tokens/s | padding | first step cold / cached (s) "
             "| peak mem (MiB) | MFU | held-out metric | gpt2tasks speed-up (samples/s, tokens/s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = report["rows"]
    for r in rows:
        if r["system"] == "gpt2tasks (cached)":
            continue
        cached = next((c for c in rows if c["system"] == "gpt2tasks (cached)" and c["task"] == r["task"]
                       and c["model"] == r["model"]), None) if r["system"] == "gpt2tasks" else None
        first = f"{r['time_to_first_step_s']:.1f} / " + (f"{cached['time_to_first_step_s']:.1f}" if cached else "—")
        ours = next((o for o in rows if o["system"] == "gpt2tasks" and o["task"] == r["task"]
                     and o["model"] == r["model"]), None)
        speedup = (f"{ours['samples_per_s'] / r['samples_per_s']:.2f}x, {ours['tokens_per_s'] / r['tokens_per_s']:.2f}x"
                   if ours and ours is not r else "")
        mfu = f"{100 * r['mfu']:.2f}%" if r["mfu"] is not None else "—"
        lines.append(f"| {r['task']} | {r['model']} | {r['system']} | {r['samples_per_s']:.2f} | "
                     f"{r['tokens_per_s']:,.0f} | {100 * r['padding_fraction']:.1f}% | {first} | "
                     f"{r['peak_memory_mb']:,.0f} | {mfu} | {r['metric']:.4f} | {speedup} |")
    checks = {(r["task"], r["model"]): set() for r in rows}
    for r in rows:
        checks[(r["task"], r["model"])].add(round(r["init_checksum"], 3))
    same = all(len(v) == 1 for v in checks.values())
    lines += ["", f"speed-up: gpt2tasks' rate over the row's. Same initial weights in every system of a "
                  f"(task, model): {'yes' if same else 'NO'} (parameter checksum). Metric: accuracy (sst2), entity "
                  "F1 (conll2003), SQuAD F1 as a fraction (squad), perplexity (wikitext2)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
