"""Every shipped config composes, validates and instantiates (house rule 2)."""

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2ForSequenceClassification

from gpt2tasks.backbone import load_model_config, load_tokenizer, n_positions
from gpt2tasks import runspec
from gpt2tasks.build import data_spec, model_spec, trainer_kwargs
from gpt2tasks.config import validate_config
from gpt2tasks.datamodules.labels import LabelSpace
from gpt2tasks.resources import CONF_DIR
from gpt2tasks.tasks import KINDS
from tests.conftest import compose

TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
LOGGERS = sorted(p.stem for p in (CONF_DIR / "logger").glob("*.yaml"))

# GPT-2 parameter counts (without the LM head) of the published checkpoints: a size preset's arch
# must give them. A new size needs only its YAML: its count is checked against its own arch.
PARAMS = {"distilgpt2": 81_912_576, "gpt2": 124_439_808, "gpt2-medium": 354_823_168,
          "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


def gpt2_parameters(n_layer: int, n_embd: int, n_positions: int, vocab_size: int, **_) -> int:
    """wte + wpe + per block (2 LayerNorms, attention 4 E^2 + 4 E, MLP 8 E^2 + 5 E) + ln_f."""
    return (vocab_size + n_positions) * n_embd + n_layer * (12 * n_embd ** 2 + 13 * n_embd) + 2 * n_embd

GLUE = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]


def test_contract_names_are_shipped():
    assert set(GLUE) <= set(TASKS) and {"text_classification", "sample_sentiment"} <= set(TASKS)
    assert {"wikitext2", "language_modeling", "sample_lm"} <= set(TASKS)
    assert {"swag", "multiple_choice", "sample_mc"} <= set(TASKS)
    assert {"tiny", "distilgpt2", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"} <= set(MODELS)


@pytest.mark.parametrize("task", [t for t in TASKS if t != "multitask"])  # multitask: test_multitask.py
def test_each_task_composes_and_instantiates_on_tiny(task, tmp_path, tiny_tokenizer):
    overrides = [f"task={task}", "model=tiny", f"output_dir={tmp_path}"]
    if task == "text_classification":  # needs files: give it the bundled sample
        sample = CONF_DIR.parent / "data" / "sample_sentiment"
        overrides += [f"data.train_file={sample / 'train.csv'}", f"data.validation_file={sample / 'validation.csv'}"]
    cfg = compose(*overrides)
    validate_config(cfg)
    kind = KINDS[cfg.task.kind]
    run = runspec.parse(cfg)
    (task_spec,) = run.tasks.values()
    spec = data_spec(task_spec, run.precision, task_spec.data.max_length)
    datamodule = kind.datamodule(spec, tiny_tokenizer, label_names=cfg.task.label_names)
    assert datamodule.spec.text_column
    config = load_model_config(model_spec(cfg), tiny_tokenizer)
    datamodule.check_model_limits(n_positions(config))  # e.g. the LM block size fits the model
    names = list(cfg.task.label_names or ["a", "b"])
    problem = "regression" if cfg.task.problem_type == "regression" else "single_label_classification"
    kind.module.configure_head(config, LabelSpace(problem, [] if problem == "regression" else names))
    module = kind.module(kind.head(config), run.optim, None)
    # GPT2DoubleHeadsModel scores each choice with one number, whatever the number of choices
    expected = 1 if problem == "regression" or cfg.task.kind == "mc" else len(names)
    assert module.model.config.num_labels == expected
    assert trainer_kwargs(cfg)["precision"] == "32-true"


@pytest.mark.parametrize("model", [m for m in MODELS if m != "tiny"])
def test_size_presets_build_their_architecture_on_the_meta_device(model, tmp_path):
    cfg = compose(f"model={model}", "model.pretrained=false",
                  f"model.tokenizer_name_or_path={CONF_DIR.parent / 'data' / 'tokenizer'}", f"output_dir={tmp_path}")
    spec = model_spec(cfg)
    config = load_model_config(spec, load_tokenizer(spec))  # offline: the preset's own arch, no download
    config.vocab_size = 50257
    with torch.device("meta"):  # no memory used, even for gpt2-xl
        model_obj = GPT2ForSequenceClassification(config)
    backbone = sum(p.numel() for p in model_obj.transformer.parameters())
    arch = {**cfg.model.arch, "vocab_size": 50257}
    assert backbone == gpt2_parameters(**arch) == PARAMS.get(model, backbone)


@pytest.mark.parametrize("logger", LOGGERS)
def test_logger_presets_instantiate(logger, tmp_path, monkeypatch):
    from gpt2tasks.build import build_logger
    from gpt2tasks.config import LOGGER_EXTRAS

    if logger in LOGGER_EXTRAS:  # an optional extra (pyproject.toml); `.[dev]` installs them
        pytest.importorskip(LOGGER_EXTRAS[logger][0], reason=f"optional extra: pip install 'gpt2tasks[{logger}]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose(f"logger={logger}", f"output_dir={tmp_path}")
    built = build_logger(cfg, Path(tmp_path))
    assert (built is False) == (logger == "none")


@pytest.mark.parametrize("logger", ["wandb", "tensorboard"])
def test_a_logger_whose_extra_is_missing_is_refused_with_the_install_hint(logger, cli, tmp_path, monkeypatch):
    from gpt2tasks.config import LOGGER_EXTRAS

    for module in LOGGER_EXTRAS[logger]:  # as if not installed: `import` fails, find_spec finds nothing
        monkeypatch.setitem(sys.modules, module, None)
    done = cli("train", f"logger={logger}", f"output_dir={tmp_path / 'run'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (f"logger={logger} needs the `{LOGGER_EXTRAS[logger][0]}` package, which is not installed. Fix: pip install "
            f"'gpt2tasks[{logger}]'") in done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


TRAINERS = sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml"))


@pytest.mark.parametrize("preset", TRAINERS)
def test_trainer_presets_compose_and_build_their_strategy(preset, tmp_path):
    """Each trainer/ preset becomes a lightning.Trainer (2 CPU processes; nothing is launched)."""
    import importlib.util

    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

    from gpt2tasks.errors import UserError

    # Lightning's FSDP runs on CUDA only: the strategy is built for accelerator=gpu, the Trainer is not
    accelerator = "gpu" if preset == "fsdp" else "cpu"
    cfg = compose(f"trainer={preset}", f"trainer.accelerator={accelerator}", "trainer.devices=2", f"output_dir={tmp_path}")
    validate_config(cfg)
    own = OmegaConf.load(CONF_DIR / "recipe" / "sample_sentiment.yaml").trainer.max_epochs
    assert cfg.trainer.max_epochs == own != 3  # the task's recipe still wins over the trainer preset's
    if preset.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        # optional dependency: one paragraph naming the key and the install command
        with pytest.raises(UserError, match=r"trainer.strategy=deepspeed needs the optional `deepspeed`.*pip install deepspeed"):
            trainer_kwargs(cfg)
        return
    kwargs = trainer_kwargs(cfg)
    expected = {"default": DDPStrategy, "ddp": DDPStrategy, "fsdp": FSDPStrategy}.get(preset, DeepSpeedStrategy)
    assert type(kwargs["strategy"]) is expected  # default: DDP as soon as trainer.devices > 1
    if expected is DDPStrategy:  # with trainer.ddp.* from conf/trainer/default.yaml
        assert kwargs["strategy"]._ddp_kwargs == {"find_unused_parameters": False, "gradient_as_bucket_view": True,
                                                  "static_graph": False}
    if accelerator == "cpu":
        trainer = L.Trainer(**kwargs, logger=False, enable_checkpointing=False)
        assert trainer.world_size == 2 and trainer.strategy is kwargs["strategy"]
    if preset == "fsdp":
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        policy = kwargs["strategy"].kwargs["auto_wrap_policy"]
        assert isinstance(policy, ModuleWrapPolicy) and policy._module_classes == {GPT2Block}
        assert kwargs["strategy"]._state_dict_type == "full"
    if preset.startswith("deepspeed"):
        assert kwargs["strategy"].config["zero_optimization"]["stage"] == (3 if preset.endswith("3") else 2)


def test_one_device_keeps_lightnings_default_and_bad_strategy_options_are_refused(tmp_path):
    from gpt2tasks.errors import UserError

    assert trainer_kwargs(compose(f"output_dir={tmp_path}"))["strategy"] == "auto"
    with pytest.raises(UserError, match=r"trainer.ddp: unknown option\(s\) \['find_unused'\]"):
        trainer_kwargs(compose("trainer=ddp", "+trainer.ddp.find_unused=true", f"output_dir={tmp_path}"))
    fsdp = ("trainer=fsdp", "trainer.accelerator=gpu", f"output_dir={tmp_path}")
    with pytest.raises(UserError, match=r"trainer.fsdp.state_dict_type='sharded'.*Fix: trainer.fsdp.state_dict_type=full"):
        trainer_kwargs(compose(*fsdp, "trainer.fsdp.state_dict_type=sharded"))
    with pytest.raises(UserError, match=r"trainer.fsdp.auto_wrap_policy=\['Block'\]"):
        trainer_kwargs(compose(*fsdp, "trainer.fsdp.auto_wrap_policy=[Block]"))
    with pytest.raises(UserError, match=r"trainer.strategy=fsdp needs CUDA GPUs.*trainer=ddp on CPU"):
        trainer_kwargs(compose("trainer=fsdp", "trainer.accelerator=cpu", f"output_dir={tmp_path}"))


@pytest.mark.parametrize("arg, meant", [
    ("data.bach_size=8", "data.batch_size=8"), ("+optim.lrr=1", "optim.lr=1"), ("model.name_or_pth=x", "model.name_or_path=x"),
    ("model.arch.n_layr=4", "model.arch.n_layer=4"), ("task.monitr=val/f1", "task.monitor=val/f1"),
    ("checkpoint.save_topk=2", "checkpoint.save_top_k=2"), ("++throughput.peak_tflop=10", "throughput.peak_tflops=10"),
    ("peft.alpah=8", "peft.alpha=8"), ("logger.projet=x", "logger.project=x"), ("multitask.samplng=uniform", "multitask.sampling=uniform"),
    ("trainer.max_epoch=3", "trainer.max_epochs=3"), ("trainer.fast_dev_rn=1", "trainer.fast_dev_run=1"),
    ("+overwrit=true", "overwrite=true"), ("trainer.lr=1", "optim.lr=1"), ("dat.batch_size=2", "data.batch_size=2"),
])
def test_misspelt_keys_of_every_group_name_the_key_meant(arg, meant):
    from gpt2tasks.keys import check_overrides
    from gpt2tasks.errors import UserError

    with pytest.raises(UserError, match="no such key") as err:
        check_overrides([arg])
    assert f"Fix: {meant}." in str(err.value)


@pytest.mark.parametrize("group, why", [
    ("recipe", "recipe/ always takes one of its options ({}). Fix: e.g. recipe=default."),
    ("model", "model/ always takes one of its options ({}). Fix: e.g. model=tiny."),
    ("hparams_search", "no hparams_search is the default ({}). Fix: leave hparams_search=null out."),
])
def test_a_config_group_set_to_null_is_refused_naming_its_options(group, why):
    """Hydra 1.3 answers `<group>=null` on the command line with a ValueError traceback."""
    from gpt2tasks.errors import UserError
    from gpt2tasks.keys import check_overrides

    options = f"conf/{group}/: " + ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
    with pytest.raises(UserError) as err:
        check_overrides([f"{group}=null"])
    assert str(err.value).startswith(f"{group}=null: {why.format(options)}")


@pytest.mark.parametrize("arg, message", [
    ("recipe.lr=1", "recipe.lr: recipe is a config group, chosen with recipe=<option> (conf/recipe/), with no keys "
                    "of its own (did you mean optim.lr?). Fix: optim.lr=1."),
    ("hparams_search.n_trials=3", "hparams_search.n_trials: hparams_search is a config group, chosen with "
                                  "hparams_search=<option> (conf/hparams_search/), with no keys of its own. Fix: remove it."),
])
def test_a_key_under_a_group_without_keys_of_its_own_is_refused(arg, message):
    """Hydra's answer: "Could not override 'recipe.lr'. To append to your config use +recipe.lr=1"."""
    from gpt2tasks.errors import UserError
    from gpt2tasks.keys import check_overrides

    with pytest.raises(UserError) as err:
        check_overrides([arg])
    assert str(err.value).startswith(message), str(err.value)


def test_overrides_hydra_could_not_take_get_plus_plus_and_the_rest_stay_as_written():
    from gpt2tasks.keys import check_overrides

    argv = ["task=sst2", "model=gpt2", "data.batch_size=8", "-m", "optim.lr=1e-4,3e-4", "--cfg", "job",
            "hydra.sweep.dir=x", "hydra/job_logging=disabled", "~trainer.val_check_interval",
            "trainer.fast_dev_run=true", "+trainer.overfit_batches=2", "trainer.max_time=00:01:00:00",
            "model.config_overrides.resid_pdrop=0.0", "tasks.a.data.train_file=f", "trainer.ddp.bucket_cap_mb=5",
            "multitask.loss_weights.a=2", "task.tag_scheme=IOB1"]
    assert check_overrides(argv) == [
        "task=sst2", "model=gpt2", "data.batch_size=8", "-m", "optim.lr=1e-4,3e-4", "--cfg", "job",
        "hydra.sweep.dir=x", "hydra/job_logging=disabled", "~trainer.val_check_interval",
        "++trainer.fast_dev_run=true", "+trainer.overfit_batches=2", "++trainer.max_time=00:01:00:00",
        "++model.config_overrides.resid_pdrop=0.0", "++tasks.a.data.train_file=f", "++trainer.ddp.bucket_cap_mb=5",
        "++multitask.loss_weights.a=2", "task.tag_scheme=IOB1"]
    cfg = compose(*[a for a in check_overrides(["trainer.fast_dev_run=true", "trainer.max_time=00:01:00:00",
                                                "model.config_overrides.resid_pdrop=0.0"])])
    validate_config(cfg)
    assert cfg.trainer.fast_dev_run is True and cfg.model.config_overrides.resid_pdrop == 0.0


def test_a_key_of_another_task_kind_is_refused_after_composition():
    from gpt2tasks.errors import UserError

    with pytest.raises(UserError, match=r"task.tag_scheme: no such key in a seq_cls task \(its keys: kind, label_names"):
        validate_config(compose("task=sample_sentiment", "+task.tag_scheme=IOB1"))
    validate_config(compose("task=sample_ner", "task.tag_scheme=IOB1"))


@pytest.mark.parametrize("override, message", [
    ("data.group_by_length=maybe", "data.group_by_length='maybe' must be true/false"),
    ("data.max_train_samples=0", "data.max_train_samples=0 must be a positive integer or null"),
    ("data.max_eval_samples=abc", "data.max_eval_samples='abc' must be an integer or null"),
    ("data.sample_strategy=last", "data.sample_strategy='last' must be first (the first max_*_samples rows) or random"),
    ("data.sample_seed=abc", "data.sample_seed='abc' must be an integer"),
    ("data.column_names=abc", "data.column_names='abc' must be a list of strings or null"),
    ("data.pad_to_multiple_of=0", "data.pad_to_multiple_of=0 must be a positive integer or null"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] must be a list of 2 numbers"),
    ("optim.eps=-1", "optim.eps=-1 must be positive"),
    ("model.compile=maybe", "model.compile='maybe' must be true/false"),
    ("seed=abc", "seed='abc' must be an integer"),
    ("resume=maybe", "resume='maybe' must be true or false"),
    ("checkpoint.save_top_k=-2", "checkpoint.save_top_k=-2 must be an integer >= -1"),
    ("checkpoint.save_last=maybe", "checkpoint.save_last='maybe' must be true or false"),
    ("throughput.peak_tflops=abc", "throughput.peak_tflops='abc' must be a positive number"),
    ("task.label_names=abc", "task.label_names='abc' must be a list of class names or null"),
    ("data.label_column=text", "data.label_column='text' is also an input column"),
    ("data.max_length=4", "data.max_length=4 would cut every input to a few tokens"),
])
def test_values_of_the_wrong_type_or_range_are_refused_before_any_work(override, message):
    from gpt2tasks.errors import UserError

    with pytest.raises(UserError) as err:
        validate_config(compose(override))
    assert message in str(err.value)


def test_overwrite_never_empties_the_current_directory_or_home(tmp_path, monkeypatch):
    from gpt2tasks.errors import UserError

    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path.parent), "~"):
        with pytest.raises(UserError, match="overwrite=true would delete everything in it"):
            validate_config(compose(f"output_dir='{out}'", "overwrite=true"), training=True)
        validate_config(compose(f"output_dir='{out}'", "overwrite=true"))  # eval/predict: not their key
    validate_config(compose("output_dir=run", "overwrite=true"), training=True)
    with pytest.raises(UserError, match="output_dir is empty"):
        validate_config(compose("output_dir="), training=True)
