#!/usr/bin/env bash
# The GPU check of issue 20, in one call of under 8 minutes on an H200 (docs/benchmarks.md, "How to run
# the GPU check"). From the project root, on this machine first:
#     bash ../shared/device/stage.sh gpt2_tokenizer sst2 wikitext-2
# then the device call, with carry [".device"]:
#     source .device/enter.sh && bash scripts/gpu_check.sh
# CPU dry run of every part with tiny sizes (catches typos before device time is spent):
#     bash scripts/gpu_check.sh --cpu-smoke
#
# Parts (each with its own time limit inside one overall deadline; a part that fails or runs out of
# time is reported and the next one runs):
#   A. in parallel: `pytest -m gpu` (tests/integration/test_gpu.py) and one short `python -m gpt2tasks
#      train` run per preset never run on a GPU: trainer=fsdp (1 device; SST-2 and WikiText-2 LM),
#      precision=bf16-true, precision=16-mixed, peft=lora (SST-2; distilgpt2 architecture, random init);
#   B. scripts/bench.py, gpt2tasks against a plain HF Trainer in one invocation each, bf16-mixed,
#      gpt2tasks compiled (the Trainer eager: the plain-Trainer baseline of docs/design.md):
#      LM gpt2 block 1024 batch 16; SST-2 gpt2 batch 32; LM gpt2-medium block 1024 batch 16.
# Writes to $OUT (at most 8 files): gpu_check.log (every part's output, then the summary table),
# summary.json, bench_{lm_gpt2,sst2,lm_medium}.{json,md}.
set -uo pipefail

SMOKE=0 SLOW=1
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1 SLOW=5
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
PY=${PYTHON:-python3}
SHARED=${GPT2TASKS_SHARED_DATASETS:-$ROOT/../shared/datasets}
export GPT2TASKS_SHARED_DATASETS=$SHARED
OUT=${OUT:-/tmp/gpu_check_out}   # the device machine sets OUT
mkdir -p "$OUT"
WORK=$(mktemp -d)
export GPT2TASKS_CACHE=$WORK/cache
LOG=$OUT/gpu_check.log
: > "$LOG"
START=$SECONDS
DEADLINE=${GPU_CHECK_SECONDS:-$(( 465 * SLOW ))}   # the whole script: under 8 minutes with enter.sh's install

say() { echo "$*" | tee -a "$LOG"; }
left() { echo $(( DEADLINE - (SECONDS - START) )); }
budget() {  # seconds for a part: its own limit (x SLOW on the CPU), or what is left of the deadline
  local want=$(( $1 * SLOW )) l; l=$(left); [ "$l" -lt "$want" ] && echo "$l" || echo "$want"
}
RESULTS=$WORK/results.jsonl   # one line per part: name, rc, seconds, file
: > "$RESULTS"
record() { echo "{\"part\": \"$1\", \"rc\": $2, \"seconds\": $3, \"log\": \"$4\"}" >> "$RESULTS"; }

# run NAME LIMIT CMD...: in the foreground, its output to its own log (copied into gpu_check.log after)
run() {
  local name=$1 limit; limit=$(budget "$2"); shift 2
  if [ "$limit" -lt 20 ]; then say "== $name: skipped (deadline)"; record "$name" -1 0 ""; return; fi
  say "== $name (limit ${limit}s): $*"
  local t=$SECONDS
  timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  record "$name" "$rc" $(( SECONDS - t )) "$WORK/$name.log"
  say "-- $name: exit $rc after $(( SECONDS - t ))s"
}

if [ "$SMOKE" = 1 ]; then
  ACC=cpu; MODEL=(model=tiny "model.tokenizer_name_or_path=$SHARED/gpt2_tokenizer")
  CLI_STEPS=3; TEST_ENV=(GPT2TASKS_TEST_DEVICE=cpu); TEST_FILTER=(-k "not compiled")
  BENCH=(--device cpu --steps 4 --warmup-steps 2 --train-samples 64 --eval-samples 8 --no-cached-run)
  LM_MODELS=(tiny); MEDIUM=(tiny); BENCH_LEN=(--max-length 128)
else
  ACC=gpu; MODEL=(model=distilgpt2 model.pretrained=false "model.tokenizer_name_or_path=$SHARED/gpt2_tokenizer")
  CLI_STEPS=30; TEST_ENV=(); TEST_FILTER=()
  # Warm-up 15 steps: compilation, and the recompile for the short last batch of WikiText-2's first
  # epoch (212 blocks of 1024 = 13 full batches of 16 + one of 4) stay out of the timed steps.
  BENCH=(--device cuda --precision bf16-mixed --compile --compile-ours-only --warmup-steps 15 --no-cached-run)
  LM_MODELS=(gpt2); MEDIUM=(gpt2-medium); BENCH_LEN=()
fi

say "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) smoke=$SMOKE out=$OUT"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$LOG"
"$PY" -c "import torch, transformers, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

# ---- A. gpu tests and the presets' CLI runs, side by side (correctness, not timing) --------------
SST2="task=sst2 data.train_file=$SHARED/sst2/train.tsv data.validation_file=$SHARED/sst2/dev.tsv"
SST2+=" data.max_train_samples=2000 data.max_eval_samples=256"
LM="task=wikitext2 data.train_file=$SHARED/wikitext-2/valid.txt data.validation_file=$SHARED/wikitext-2/test.txt"
LM+=" data.block_size=512 data.batch_size=8 data.max_eval_samples=64 task.sample_prompts=[]"
cli_command() {  # cli_command NAME OVERRIDES...: CMD = python -m gpt2tasks train with a step cap
  local name=$1; shift
  CMD=("$PY" -m gpt2tasks train "${MODEL[@]}" "trainer.accelerator=$ACC" "trainer.max_steps=$CLI_STEPS"
       trainer.log_every_n_steps=5 trainer.enable_progress_bar=false logger=csv "output_dir=$WORK/cli_$name" "$@")
}
# name:overrides (word-split). The LM FSDP run covers the fused LM loss with sharded weights.
PRESETS=("fsdp:$SST2 trainer=fsdp trainer.devices=1 precision=bf16-mixed"
         "fsdp_lm:$LM trainer=fsdp trainer.devices=1 precision=bf16-mixed"
         "bf16_true:$SST2 precision=bf16-true" "fp16_mixed:$SST2 precision=16-mixed"
         "lora:$SST2 peft=lora precision=bf16-mixed")
limit=$(budget 170)
say "== A: pytest -m gpu and ${#PRESETS[@]} CLI runs in parallel (limit ${limit}s)"
t=$SECONDS
pids=()
start() {  # start NAME CMD...: in the background on the GPU; one at a time on the CPU (two cores)
  local name=$1; shift
  timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  if [ "$SMOKE" = 1 ]; then
    wait "$pid"; local rc=$?
    record "$name" "$rc" $(( SECONDS - t )) "$WORK/$name.log"; say "-- $name: exit $rc"
  else
    pids+=("$pid:$name")
  fi
}
start gpu_tests env "${TEST_ENV[@]}" "$PY" -m pytest -m gpu -q -x -p no:cacheprovider tests/integration/test_gpu.py \
  "${TEST_FILTER[@]}"
for entry in "${PRESETS[@]}"; do
  name=${entry%%:*}; read -r -a overrides <<< "${entry#*:}"
  cli_command "$name" "${overrides[@]}"
  say "   cli_$name: ${CMD[*]}"
  start "cli_$name" "${CMD[@]}"
done
for entry in "${pids[@]}"; do
  pid=${entry%%:*}; name=${entry#*:}
  wait "$pid"; rc=$?
  record "$name" "$rc" $(( SECONDS - t )) "$WORK/$name.log"
  say "-- $name: exit $rc after $(( SECONDS - t ))s"
done

# ---- B. benchmarks, one at a time (timing) --------------------------------------------------------
bench_command() {  # bench_command NAME BENCH-ARGS...: CMD = scripts/bench.py writing $OUT/bench_NAME.{json,md}
  local name=$1; shift
  # the part's own arguments first: the smoke run's sizes (in BENCH) win over them
  CMD=("$PY" scripts/bench.py "$@" "${BENCH[@]}" --json "$OUT/bench_$name.json" --markdown "$OUT/bench_$name.md")
}
bench_command lm_gpt2 --tasks wikitext2 --models "${LM_MODELS[@]}" --steps "${LM_STEPS:-45}" --eval-samples 50 "${BENCH_LEN[@]}"
run lm_gpt2 200 "${CMD[@]}"
bench_command sst2 --tasks sst2 --models "${LM_MODELS[@]}" --steps "${SST2_STEPS:-80}" --train-samples 6000 --eval-samples 200
run sst2 130 "${CMD[@]}"
bench_command lm_medium --tasks wikitext2 --models "${MEDIUM[@]}" --steps "${LM_STEPS:-45}" --eval-samples 50 "${BENCH_LEN[@]}"
run lm_medium 200 "${CMD[@]}"

# ---- summary ----------------------------------------------------------------------------------------
"$PY" - "$RESULTS" "$OUT" "$WORK" "$SMOKE" <<'PY' 2>&1 | tee -a "$LOG"
import csv, glob, json, sys
from pathlib import Path

results, out, work, smoke = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
parts = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
for part in parts:  # each part's log into gpu_check.log, before the summary
    if part["log"] and Path(part["log"]).exists():
        text = Path(part["log"]).read_text(errors="replace")
        part["tail"] = text[-1500:]
        with open(out / "gpu_check.log", "a") as log:
            log.write(f"\n===== {part['part']} (exit {part['rc']}, {part['seconds']}s) =====\n{text[-60000:]}\n")
    run = work / part["part"]
    if part["part"].startswith("cli_"):
        metrics = run / "metrics.json"
        part["metrics"] = json.loads(metrics.read_text()) if metrics.exists() else None
        losses = [float(r["train/loss"]) for f in sorted(glob.glob(str(run / "logs/version_*/metrics.csv")))
                  for r in csv.DictReader(open(f)) if r.get("train/loss")]
        part["train_loss_first_last"] = [losses[0], losses[-1]] if losses else None
benches = {p.stem[len("bench_"):]: json.loads(p.read_text()) for p in sorted(out.glob("bench_*.json"))}
(out / "summary.json").write_text(json.dumps({"parts": parts, "bench": benches}, indent=2))

print("\n## gpu_check summary" + (" (CPU smoke run)" if smoke else ""))
print("\n| part | exit | seconds | result |\n|---|---|---|---|")
for p in parts:
    if p.get("metrics") is not None:
        result = ", ".join(f"{k}={v:.4g}" for k, v in p["metrics"].items() if k.startswith("val/"))
        if p.get("train_loss_first_last"):
            result += " ; train/loss %.3f -> %.3f" % tuple(p["train_loss_first_last"])
    else:
        result = (p.get("tail") or "").strip().splitlines()[-1][:160] if p.get("tail") else ""
    print(f"| {p['part']} | {p['rc']} | {p['seconds']} | {result} |")
for name, report in benches.items():
    print(f"\n### bench {name}\n")
    print((out / f"bench_{name}.md").read_text())
PY
say "gpu_check: done in $(( SECONDS - START ))s"
rm -rf "$WORK"
