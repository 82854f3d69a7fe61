"""`hydra/launcher=submitit_local|submitit_slurm`: hydra-submitit-launcher's launchers, except that a
job whose process died is recorded as failed and the sweep goes on.

The plugin's `launch` collects the jobs' results in order and raises at the first job that has
none (a killed process, a SLURM job cancelled or out of memory): the sweep then ends with a
traceback, without its summary, while later jobs may still be running. Here every job is waited
for; one without a result returns `sweep.JobFailed` with submitit's error, which its record in
the sweep folder keeps (sweep.py). Jobs that fail inside train() return JobFailed themselves.

Hydra runs plugins only from the `hydra_plugins` namespace, and imports every module there when it
starts: without hydra-submitit-launcher (an optional extra) this module defines nothing.
gpt2tasks.plugins.prepare registers these launchers under the plugin's option names.
"""

# no `from __future__ import annotations`: Hydra's plugin scan executes this module before it is in
# sys.modules, where dataclasses look string annotations up.
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from gpt2tasks import compat, sweep
from gpt2tasks.outputs import write_atomic

try:
    from hydra_plugins.hydra_submitit_launcher import config as plugin_config
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
except ImportError:  # the plugin is not installed: no launchers to extend
    plugin = None

log = logging.getLogger("gpt2tasks")


class _SweepGoesOn:
    """launch() of the plugin's launchers (same executor, parameters and job function), without
    raising for a job that returned nothing."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        executor_name = self.cluster
        # as the plugin builds its executor: submitit_folder and max_num_timeout when it is created,
        # the queue's keys (BaseQueueConf) as they are, the others prefixed with the executor's name
        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{executor_name}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=executor_name, **init)
        base = set(OmegaConf.structured(plugin.BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{executor_name}_{k}": v for k, v in params.items()})

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{executor_name}' sweep output dir : {sweep_dir}")
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        for num, overrides in zip(numbers, job_overrides):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
        state = Singleton.get_state()
        jobs = executor.map_array(self, [list(o) for o in job_overrides], ["hydra.sweep.dir"] * len(numbers),
                                  numbers, [f"job_id_for_{n}" for n in numbers], [state] * len(numbers))
        returns = []
        for num, overrides, job in zip(numbers, job_overrides, jobs):
            error = job.exception()  # waits for the job; its exception, not raised
            if error is None:
                returns.append(job.results()[0])
                continue
            message = f"{type(error).__name__} (submitit job {job.job_id}): {str(error).strip()[-2000:]}"
            _record_death(sweep_dir, num, list(overrides), message)
            returns.append(compat.job_return(list(overrides), JobStatus.COMPLETED, sweep.JobFailed(message)))
        return returns


def _record_death(sweep_dir: Path, num: int, overrides: list[str], message: str) -> None:
    """The job's record (sweep.py) says FAILED with submitit's error; its folder is the one its
    start recorded (the default hydra.sweep.subdir, the job number, if it never started)."""
    path = sweep.record_path(sweep_dir, num)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {"job": num, "overrides": overrides, "output_dir": str((sweep_dir / str(num)).absolute())}
    record.update(status=sweep.FAILED, error=message)
    write_atomic(path, json.dumps(record, indent=2) + "\n")


if plugin is not None:  # the classes over the plugin's own
    # `cluster`: submitit's name for where the jobs run (the plugin keeps its own in a private attribute)
    class LocalLauncher(_SweepGoesOn, plugin.LocalLauncher):
        cluster = "local"

    class SlurmLauncher(_SweepGoesOn, plugin.SlurmLauncher):
        cluster = "slurm"

    @dataclass
    class LocalQueueConf(plugin_config.LocalQueueConf):
        _target_: str = "hydra_plugins.gpt2tasks_plugins.submitit_launchers.LocalLauncher"

    @dataclass
    class SlurmQueueConf(plugin_config.SlurmQueueConf):
        _target_: str = "hydra_plugins.gpt2tasks_plugins.submitit_launchers.SlurmLauncher"


def register() -> None:
    """hydra/launcher=submitit_local|submitit_slurm: these launchers, with the plugin's options
    (call it only when the plugin is installed)."""
    from hydra.core.plugins import Plugins

    # Hydra's plugin discovery executes the plugins' modules again, and with them their own
    # registration of these names: it runs first (once per process), then these replace them.
    Plugins.instance()
    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="submitit_local", node=LocalQueueConf, provider="gpt2tasks")
    store.store(group="hydra/launcher", name="submitit_slurm", node=SlurmQueueConf, provider="gpt2tasks")
