"""gpt2tasks.multitask's config side: task presets hold only a task's keys (the run's choices are a
recipe, conf/recipe/), and a multi-task run's task views come from the config alone, so the command
line, `hydra.compose` + `train(cfg)` in Python and a saved config.yaml give the same tasks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

import gpt2tasks.train
from gpt2tasks import multitask, runfile
from gpt2tasks.datamodules.base import RUN_DATA_KEYS, DataSpec
from gpt2tasks.keys import check_overrides
from gpt2tasks.literal import literal_yaml
from gpt2tasks.resources import CONF_DIR, register_resolvers
from tests.conftest import compose

PRESETS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))
CONFIG_DATA = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["data"]
# The task's own blocks, and the multitask preset's list of tasks
TASK_BLOCKS = ("defaults", "task", "data", "multitask")


def run_wide_keys(preset: dict) -> list[str]:
    """The keys a task preset (its YAML as data) sets that are the run's to choose."""
    keys = [f"{block}.*" for block in preset if block not in TASK_BLOCKS]
    return keys + [f"data.{key}" for key in preset.get("data") or {} if key in RUN_DATA_KEYS]


@pytest.mark.parametrize("preset", PRESETS)
def test_a_task_preset_sets_only_its_task_and_its_own_data_keys(preset):
    assert run_wide_keys(yaml.safe_load((CONF_DIR / "task" / f"{preset}.yaml").read_text())) == []


def test_the_preset_check_names_a_run_wide_key():
    before = {"task": {"name": "x"}, "data": {"max_length": 64, "batch_size": 32}, "optim": {"lr": 1e-3},
              "trainer": {"max_epochs": 24}}  # conf/task/sample_sentiment.yaml before recipes
    assert run_wide_keys(before) == ["optim.*", "trainer.*", "data.batch_size"]


def test_every_data_key_is_the_run_s_or_the_task_s_and_the_multitask_preset_leaves_the_task_s_unset():
    fields = {f.name for f in dataclasses.fields(DataSpec)}
    assert set(RUN_DATA_KEYS) <= set(CONFIG_DATA) <= fields
    own = {key for key in CONFIG_DATA if key not in RUN_DATA_KEYS}
    # null: "not set for every task" (extra_validation keeps config.yaml's {}: none)
    unset = yaml.safe_load((CONF_DIR / "task" / "multitask.yaml").read_text())["data"]
    assert unset == {key: None for key in own - {"extra_validation"}}
    assert CONFIG_DATA["extra_validation"] == {}


@pytest.mark.parametrize("overrides, expected", [
    (["task=sample_lm"], (2e-3, 16, 3, 0.1)),  # conf/recipe/sample_lm.yaml, over conf/recipe/sample.yaml
    (["task=sample_ner"], (1e-3, 32, 8, 0.1)),
    (["task=sample_sentiment"], (1e-3, 32, 24, 0.1)),
    (["task=wikitext2"], (5e-5, 8, 3, 0.0)),
    (["task=sst2"], (5e-5, 32, 3, 0.0)),  # recipe default: config.yaml's and trainer/default.yaml's
    (["task=sample_lm", "recipe=default"], (5e-5, 32, 3, 0.0)),  # the command line's recipe beats the preset's
    (["task=sst2", "recipe=sample_qa"], (1e-3, 32, 10, 0.1)),
    (["task=sample_lm", "recipe=sample", "optim.lr=0.1", "trainer.max_epochs=2"], (0.1, 32, 2, 0.1)),  # keys: last
    (["task=sample_sentiment", "trainer=ddp"], (1e-3, 32, 24, 0.1)),  # a recipe's epochs beat the trainer preset's
])
def test_a_preset_picks_its_recipe_and_the_command_line_overrides_both(overrides, expected):
    assert check_overrides(overrides) == overrides  # recipe= is a known group choice
    cfg = compose(*overrides)
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.trainer.max_epochs, cfg.optim.warmup_ratio) == expected


def test_every_recipe_sets_only_run_wide_keys():
    for recipe in RECIPES:
        values = yaml.safe_load((CONF_DIR / "recipe" / f"{recipe}.yaml").read_text()) or {}
        assert set(values) - {"defaults"} <= {"optim", "trainer", "data"}, recipe
        assert set(values.get("data") or {}) <= set(RUN_DATA_KEYS), recipe


# A run-level data key and a per-task key equal to the default (config.yaml's data.batch_size is
# 32, its data.max_length 128; both presets' max_length is 64): what the user wrote, each of them.
OVERRIDES = ["task=multitask", "multitask.tasks=[sample_sentiment,sample_ner]", "data.batch_size=16",
             "tasks.sample_ner.data.batch_size=32", "data.max_length=128", "data.num_workers=0",
             "logger=none"]


def views_of(cfg) -> dict:
    return {name: OmegaConf.to_container(view, resolve=True) for name, view in multitask.task_views(cfg).items()}


@pytest.fixture
def train_until_build(monkeypatch):
    """train(cfg) up to building the run (expansion, validation, absolute paths), recording the
    task views it would build; nothing is trained."""
    seen = []

    def record(cfg, *_):
        seen.append(views_of(cfg))
        return {}

    monkeypatch.setattr(gpt2tasks.train, "_train", record)
    return seen


def test_run_and_per_task_data_keys_survive_every_way_a_config_is_made(cli, train_until_build, tmp_path):
    out = tmp_path / "run"
    # (a) the command line
    done = cli("train", *OVERRIDES, f"output_dir={out}")
    assert done.returncode == 0, done.stderr
    # (b) hydra.compose in a notebook, then train(cfg)
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        composed = hydra_compose(config_name="config", overrides=[*multitask.cli_overrides(OVERRIDES),
                                                                  f"output_dir={out}"])
    gpt2tasks.train.train(composed)
    # (c) the config.yaml train writes, read back as resume reads it (nothing typed on top)
    (out / "config.yaml").write_text(literal_yaml(composed))
    saved = runfile.resume_base(multitask.compose([f"output_dir={out}", "resume=true"]), [], [])
    gpt2tasks.train.train(saved)

    command_line, notebook, resumed = train_until_build
    assert command_line == notebook == resumed, json.dumps([command_line, notebook], indent=1)
    sentiment, ner = command_line["sample_sentiment"]["data"], command_line["sample_ner"]["data"]
    assert (sentiment["batch_size"], ner["batch_size"]) == (16, 32)  # the run's, and the task's own
    assert sentiment["max_length"] == ner["max_length"] == 128  # set for every task, though the default
    assert ner["train_file"].endswith("sample_ner/train.jsonl") and command_line["sample_ner"]["task"]["kind"] == "token_cls"


def test_a_config_saved_before_run_level_keys_were_null_expands_to_itself():
    """A multi-task config.yaml of an earlier version holds config.yaml's data: values at the run
    level (max_length: 128, text_column: text, ...); its tasks.<name> blocks, complete, still win."""
    cfg = compose(*multitask.cli_overrides(OVERRIDES[:-2]), "output_dir=x")
    views = views_of(cfg)
    old = OmegaConf.create(OmegaConf.to_container(cfg))
    old.data = {**CONFIG_DATA, "batch_size": 16, "max_length": 128}
    multitask.expand(old)
    assert views_of(old) == views


def test_a_run_s_data_keys_go_to_every_task_whatever_its_preset_picked():
    # sample_lm's recipe says 16 per batch, wikitext2's 8: in one run, the run's batch size is each task's
    cfg = compose("task=multitask", "multitask.tasks=[sample_lm,wikitext2]", "data.eval_batch_size=4", "output_dir=x")
    assert [cfg.tasks[name].data.batch_size for name in ("sample_lm", "wikitext2")] == [32, 32]
    assert [cfg.tasks[name].data.eval_batch_size for name in ("sample_lm", "wikitext2")] == [4, 4]
    assert (cfg.tasks.wikitext2.data.block_size, cfg.tasks.sample_lm.data.block_size) == (1024, 128)  # the presets'
    assert cfg.trainer.ddp.find_unused_parameters is None  # null: the run decides (test below)


@pytest.mark.parametrize("overrides, unused", [
    (["task=multitask", "multitask.tasks=[sample_ner,sample_sentiment]"], True),
    (["task=multitask", "multitask.tasks=[sample_ner,sample_sentiment]", "recipe=sample"], True),  # whatever the recipe
    (["task=multitask", "multitask.tasks=[sample_ner,sample_sentiment]", "trainer.ddp.find_unused_parameters=false"], False),
    ([], False),
])
def test_ddp_looks_for_unused_parameters_when_a_step_runs_one_of_several_heads(overrides, unused):
    from gpt2tasks.build import trainer_kwargs

    cfg = compose(*overrides, "trainer.accelerator=cpu", "trainer.devices=2", "output_dir=x")
    assert trainer_kwargs(cfg)["strategy"]._ddp_kwargs["find_unused_parameters"] is unused
