"""Which process is rank 0 before Lightning knows, per launcher environment."""

import pytest

from gpt2tasks import distributed

LAUNCH_VARS = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK", distributed.RANK_CONFIG_ENV)


@pytest.mark.parametrize("env, zero", [
    ({}, True),                                            # one process
    ({"RANK": "0", "LOCAL_RANK": "0"}, True),              # torchrun, first rank
    ({"RANK": "3", "LOCAL_RANK": "1"}, False),             # torchrun
    ({"SLURM_PROCID": "0"}, True),                         # srun
    ({"SLURM_PROCID": "5"}, False),
    ({"NODE_RANK": "1"}, False),                           # Lightning's launcher on the second machine
    ({"NODE_RANK": "0", "LOCAL_RANK": "1"}, False),        # a rank Lightning launched
    # a rank Lightning launched inside an interactive srun shell: SLURM_PROCID=0 is inherited
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "1", distributed.RANK_CONFIG_ENV: "seed: 1\n"}, False),
])
def test_rank_zero_from_the_launchers_environment(env, zero, monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.is_rank_zero() is zero


def test_launched_ranks_get_the_config_and_the_environment_is_restored(monkeypatch):
    from omegaconf import OmegaConf

    for name in LAUNCH_VARS + ("MASTER_PORT",):
        monkeypatch.delenv(name, raising=False)
    cfg = OmegaConf.create({"seed": 7, "output_dir": "outputs/x/${seed}"})
    with distributed.ranks_run(cfg):
        assert distributed.spawned_rank_config() is None  # the launching process itself
        monkeypatch.setenv("LOCAL_RANK", "1")  # as in the environment Lightning gives a launched rank
        monkeypatch.setenv("MASTER_PORT", "12345")
        assert distributed.spawned_rank_config() == {"seed": 7, "output_dir": "outputs/x/7"}  # resolved
    import os

    assert not {"LOCAL_RANK", "MASTER_PORT", distributed.RANK_CONFIG_ENV} & set(os.environ)
