"""The run spec: the composed config parsed once into frozen, typed values; unknown keys refused."""

import dataclasses

import pytest
from omegaconf import open_dict

from gpt2tasks import runspec
from gpt2tasks.datamodules.base import DataSpec
from gpt2tasks.errors import UserError
from tests.conftest import compose


def test_a_single_task_run_is_one_named_task_with_typed_frozen_values():
    run = runspec.parse(compose("optim.lr=1e-3", "data.batch_size=4", "precision=16", "peft=lora"))
    assert list(run.tasks) == ["sample_sentiment"] and not run.multitask
    task = run.tasks["sample_sentiment"]
    assert (task.kind, task.metrics, task.monitor, task.main_metric) == ("seq_cls", ("accuracy", "f1"), "val/accuracy", "accuracy")
    assert isinstance(task.data, DataSpec) and task.data.batch_size == 4
    assert (run.optim.lr, run.precision, run.peft.enabled) == (1e-3, "16-mixed", True)
    assert task.config["data"]["batch_size"] == 4  # the task's view, as checkpoints save it
    # Nothing below build can change what the config said.
    for spec, key in ((run, "seed"), (task, "kind"), (task.data, "batch_size"), (run.model, "compile"),
                      (run.optim, "lr"), (run.peft, "r"), (run.mixing, "sampling")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(spec, key, None)
    with pytest.raises(TypeError):
        run.tasks["other"] = task  # a read-only mapping


def test_a_multi_task_run_lists_its_tasks_in_order_with_its_mixing():
    run = runspec.parse(compose("task=multitask", "multitask.tasks=[sample_ner,reviews:sample_sentiment]",
                                "multitask.sampling=uniform", "++multitask.loss_weights.reviews=0.5", "peft=lora",
                                "multitask.adapters=per_task"))
    assert list(run.tasks) == ["sample_ner", "reviews"] and run.multitask
    assert [t.kind for t in run.tasks.values()] == ["token_cls", "seq_cls"]
    assert run.tasks["reviews"].name == "reviews" and run.tasks["sample_ner"].options == {"tag_scheme": "IOB2"}
    assert (run.mixing.sampling, dict(run.mixing.loss_weights), run.per_task_adapters) == ("uniform", {"reviews": 0.5}, True)
    assert (run.monitor, run.mode) == ("val/mean", "max")


@pytest.mark.parametrize("block", ["data", "model", "optim", "peft"])
def test_a_key_a_spec_does_not_read_is_an_error_not_dropped(block):
    cfg = compose()
    with open_dict(cfg):
        cfg[block].learning_rat = 1e-3  # e.g. a hand-made config given to train(cfg)
    with pytest.raises(UserError, match=rf"^{block}\.learning_rat: not a key of {block}"):
        runspec.parse(cfg)


def test_unknown_task_keys_are_named_with_the_task_in_a_multi_task_run():
    cfg = compose("task=multitask", "multitask.tasks=[sample_ner,sample_sentiment]")
    with open_dict(cfg):
        cfg.tasks.sample_ner.task.tag_schema = "IOB2"
    with pytest.raises(UserError, match=r"^tasks\.sample_ner\.task\.tag_schema: not a key of a token_cls task"):
        runspec.parse(cfg)
    cfg = compose("task=multitask", "multitask.tasks=[sample_ner,sample_sentiment]")
    with open_dict(cfg):
        cfg.tasks.sample_sentiment.data.btach_size = 8
    with pytest.raises(UserError, match=r"^tasks\.sample_sentiment\.data\.btach_size: not a key of"):
        runspec.parse(cfg)


def test_a_run_of_one_task_named_with_a_dot_builds_its_module_under_a_module_safe_key(cfg_factory):
    from gpt2tasks.build import build_for_training

    _, module, _ = build_for_training(cfg_factory("task.name=sst2.v1", "data.max_train_samples=8",
                                                  "data.max_eval_samples=8"))
    assert list(module.tasks) == ["sst2.v1"] and list(module.model) == ["task_sst2_v1"]
    assert all(k.startswith("model.task_sst2_v1.model.") for k in module.state_dict())
