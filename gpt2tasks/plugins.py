"""The Hydra plugins a sweep may use, checked before Hydra composes the command line.

`hydra/launcher=submitit_local|submitit_slurm` (hydra-submitit-launcher: a sweep's jobs side by side,
as local processes or SLURM jobs) and `hparams_search=<name>` (conf/hparams_search/, which selects
`hydra/sweeper=optuna`: hydra-optuna-sweeper) are optional: the `cluster` extra installs them. Hydra
answers a missing plugin with "Could not find 'hydra/launcher/submitit_local'"; `prepare` says which
`pip install` fixes it instead, and puts gpt2tasks's launchers (hydra_plugins/gpt2tasks_plugins/: a killed
job is recorded as failed, the sweep goes on) in place of the plugin's.
"""

from __future__ import annotations

import importlib.util

from gpt2tasks.errors import UserError

SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
OPTUNA = ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper")
#: a command-line choice -> (the plugin's module, its pip package); "*": any option of the group
NEEDS = {
    ("hydra/launcher", "submitit_local"): SUBMITIT,
    ("hydra/launcher", "submitit_slurm"): SUBMITIT,
    ("hydra/sweeper", "optuna"): OPTUNA,
    ("hparams_search", "*"): OPTUNA,
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing
        return False


def check(argv: list[str]) -> None:
    """Refuse, naming the pip install, a plugin choice on the command line whose plugin is missing."""
    for arg in argv:
        group, eq, option = arg.lstrip("+").partition("=")
        need = NEEDS.get((group, option)) or NEEDS.get((group, "*"))
        if eq and need and not installed(need[0]):
            raise UserError(f"{arg} needs the Hydra plugin {need[1]}, which is not installed. Fix: pip install "
                            f"{need[1]} (or, in a checkout of gpt2tasks, pip install -e '.[cluster]').")


def prepare(argv: list[str]) -> None:
    """check(argv); then, when hydra-submitit-launcher is installed, register gpt2tasks's launchers
    under its option names."""
    check(argv)
    if installed(SUBMITIT[0]):
        from hydra_plugins.gpt2tasks_plugins import submitit_launchers

        submitit_launchers.register()
