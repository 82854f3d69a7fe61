"""Several processes, one run: who is rank 0 before Lightning knows, and what re-launched ranks run.

Launchers:
- `python -m gpt2tasks train trainer.devices=N`: this process is rank 0 and composes the config;
  inside `fit`, Lightning re-launches the command line once per other local rank. Those ranks run
  the config rank 0 runs -- handed over in an environment variable -- not a fresh Hydra
  composition: a fresh one would resolve its own `${now:...}` output folder (and re-run a whole
  `-m` sweep). So there is one run folder, whatever the time stamps.
- `torchrun` / `srun`: every rank composes the config itself; the launcher scripts in `scripts/`
  pass the same `output_dir=` to all of them (ranks > 0 write nothing there anyway).
Only rank 0 clears the folder and writes config.yaml, metrics.json and predictions; checkpoints
are written by Lightning on rank 0 (FSDP gathers a full state dict to it first).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from gpt2tasks.literal import literal_yaml

if TYPE_CHECKING:
    from lightning.fabric.plugins.environments import ClusterEnvironment

#: the resolved config (YAML) that a rank Lightning re-launched must run
RANK_CONFIG_ENV = "GPT2TASKS_RANK_CONFIG"


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, from its launcher's environment (valid before the
    Trainer and the process group exist): torchrun sets RANK; srun SLURM_PROCID; Lightning's own
    launcher NODE_RANK (per machine, set by the user) and LOCAL_RANK (per re-launched process)."""
    if spawned_rank_config() is not None:
        return False
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var]) == 0
    return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def spawned_rank_config() -> DictConfig | None:
    """The config of the run this process joins, when Lightning re-launched it as another rank."""
    text = os.environ.get(RANK_CONFIG_ENV)
    if not text or os.environ.get("LOCAL_RANK", "0") == "0":
        return None
    return OmegaConf.create(text)


#: what Lightning's launcher leaves in the launching process's environment, besides our config
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", RANK_CONFIG_ENV)


@contextlib.contextmanager
def ranks_run(cfg: DictConfig) -> Iterator[None]:
    """Around fit + final evaluation: hand the ranks Lightning launches this exact config. Then undo
    what launching left in this process -- the process group and the launcher's variables (with
    LOCAL_RANK still set, Lightning would think the next run's ranks are started externally) -- so
    a next run in this process, e.g. the next job of a `-m` sweep, launches its own ranks."""
    import torch.distributed as dist

    before = {name: os.environ.get(name) for name in _LAUNCH_ENV}
    os.environ[RANK_CONFIG_ENV] = literal_yaml(cfg)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def launched_by_srun() -> bool:
    """Whether SLURM's srun started this process: Lightning's rule (SLURM_NTASKS is set, and the job
    is not an interactive allocation, whose job name SLURM sets to bash or interactive)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def cluster_environment(num_nodes: int) -> ClusterEnvironment | None:
    """The cluster environment of a run on one node that srun did not start, chosen here; None
    (Lightning detects it) under srun, and for several nodes.

    Lightning looks for SLURM itself and, wherever an `srun` command is installed but did not start
    this process (a SLURM login node, an interactive shell, a machine with SLURM's client tools),
    warns "The `srun` command is available on your system but is not used" -- for every run, though
    on one node nothing needs srun. So on one node the environment is chosen in Lightning's order
    without SLURM (torchrun's, LSF's, MPI's when they started the process, else Lightning's own).
    Lightning asks SLURM again at each fit/validate/test/predict started without a checkpoint path
    (whether SLURM's requeue left an hpc checkpoint to load), which repeats the hint: that exact
    warning is silenced here, and only here -- where it says nothing about the run. Several nodes
    without srun keep Lightning's detection and its hint: their processes are started by a launcher,
    and a forgotten srun is then the likely mistake."""
    from lightning.fabric.plugins.environments import (LightningEnvironment, LSFEnvironment, MPIEnvironment,
                                                       TorchElasticEnvironment)
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    one_node = not launched_by_srun() and num_nodes == 1
    # the latest run of this process decides (a later run on several nodes gets the hint back)
    warnings.filterwarnings("ignore" if one_node else "default", category=PossibleUserWarning,
                            message="The `srun` command is available on your system but is not used")
    if not one_node:
        return None
    for environment in (TorchElasticEnvironment, LSFEnvironment, MPIEnvironment):
        if environment.detect():
            return environment()
    return LightningEnvironment()
