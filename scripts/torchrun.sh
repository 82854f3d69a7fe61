#!/usr/bin/env bash
# Train with torchrun starting the ranks (instead of Lightning's own launcher).
#
#   scripts/torchrun.sh <processes per machine> [train overrides ...]
#   scripts/torchrun.sh 4 task=sst2 model=gpt2 precision=bf16-mixed             # one machine, 4 GPUs
#   scripts/torchrun.sh 2 trainer.accelerator=cpu                                # 2 CPU processes (gloo)
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 RUN_ID=exp1 scripts/torchrun.sh 8 ...   # on node0, then
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 RUN_ID=exp1 scripts/torchrun.sh 8 ...   # on node1
#
# Every rank composes the config itself, so they are all given the same run folder:
# outputs/<task>/<RUN_ID> (RUN_ID defaults to the start time; on several machines set the same RUN_ID
# on each, on a shared filesystem). An output_dir=... among the overrides wins. Only rank 0 writes there.
# PYTHON picks the interpreter (default: python), e.g. PYTHON=.venv/bin/python.
set -euo pipefail
NPROC=${1:?usage: scripts/torchrun.sh <processes per machine> [train overrides ...]}
shift
NNODES=${NNODES:-1}
RUN_ID=${RUN_ID:-$(date +%Y-%m-%d_%H-%M-%S)}
if [ "$NNODES" -eq 1 ]; then
  RDZV=(--standalone)
else
  RDZV=(--nnodes="$NNODES" --node_rank="${NODE_RANK:?set NODE_RANK}" --master_addr="${MASTER_ADDR:?set MASTER_ADDR}"
        --master_port="${MASTER_PORT:-29500}")
fi
# trainer.devices x trainer.num_nodes must equal the number of ranks torchrun starts.
exec "${PYTHON:-python}" -m torch.distributed.run "${RDZV[@]}" --nproc_per_node="$NPROC" \
  -m gpt2tasks train trainer=ddp trainer.devices="$NPROC" trainer.num_nodes="$NNODES" \
  'output_dir=outputs/${task.name}/'"$RUN_ID" "$@"
