#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian's slurm-wlm + munge, run as root): for the
# `slurm`-marked tests and for trying scripts/slurm.sbatch before a real cluster.
#
#   apt-get install -y slurm-wlm munge                # once
#   export SLURM_LOCAL_DIR=/tmp/slurm-local           # where its conf, state, spool and logs go
#   scripts/slurm_local.sh start                      # munged + slurmctld + slurmd; waits for the node
#   export SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf     # what sbatch/squeue/scancel/sinfo read
#   sbatch --ntasks-per-node=2 --gres=none ... scripts/slurm.sbatch trainer.accelerator=cpu ...
#   scripts/slurm_local.sh status | stop              # stop: kills the daemons, removes SLURM_LOCAL_DIR
#
# The node is this machine's hostname with SLURM_LOCAL_CPUS CPUs (default 2; slurmd refuses more
# than the machine has) and no GPUs; processes are tracked without cgroups (proctrack/linuxproc,
# task/none), so it also runs in containers. Ports: SLURM_LOCAL_PORT (slurmctld) and the next one
# (slurmd), default 6817.
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CPUS=${SLURM_LOCAL_CPUS:-2}
PORT=${SLURM_LOCAL_PORT:-6817}
HOST=$(hostname -s)
export SLURM_CONF=$DIR/slurm.conf

write_conf() {
  mkdir -p "$DIR"/{state,spool,munge,log}
  # RealMemory: what this machine has, less 1 GiB for everything else
  local mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  cat > "$DIR/slurm.conf" <<EOF
ClusterName=gpt2tasks-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Jobs may be requeued (Lightning's auto-requeue); a cancelled one is killed 2 s after its
# SIGTERM (30 s is the default: time for a large model's checkpoint, not needed here).
JobRequeue=1
KillWait=2
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" > /dev/null || { echo "$tool not found: apt-get install -y slurm-wlm munge" >&2; exit 2; }
  done
  local began=$SECONDS
  write_conf
  # munge: a fresh key and its own socket, so a system munged (if any) is left alone
  [ -f "$DIR/munge/munge.key" ] || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 700 "$DIR/munge" && chmod 400 "$DIR/munge/munge.key"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
  slurmctld -c -f "$SLURM_CONF"   # -c: a clean start, no state from a previous cluster
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 1 120); do
    if [ "$(sinfo -h -n "$HOST" -o %t 2>/dev/null)" = idle ]; then
      echo "local SLURM cluster up in $((SECONDS - began)) s: node $HOST, $CPUS CPUs; export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.5
  done
  echo "the node did not become idle within 60 s; logs in $DIR/log:" >&2
  tail -n 20 "$DIR"/log/*.log >&2
  stop
  exit 1
}

stop() {
  # Jobs first, while the daemons run: a job step whose slurmd is gone never completes (its srun and
  # slurmstepd would be left behind). Running jobs are cancelled; ending ones get up to 30 s.
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2> /dev/null; then
    scancel --partition=local 2> /dev/null || true
    for _ in $(seq 1 60); do
      [ -z "$(squeue -h 2> /dev/null)" ] && break
      sleep 0.5
    done
  fi
  # the daemons this script started, by the pid files it gave them
  for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2> /dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2> /dev/null || true
    fi
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) echo "usage: scripts/slurm_local.sh start|stop|status  (SLURM_LOCAL_DIR=$DIR)" >&2; exit 2 ;;
esac
