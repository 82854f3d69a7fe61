"""A checkpoint and an export info file written by an older gpt2tasks (tests/data/run_ba90ff0, see
its README) still load for eval, predict and export, and give the numbers they gave then."""

from __future__ import annotations

import json
import shutil

import pytest

from gpt2tasks.evaluation import evaluate_checkpoint
from gpt2tasks.export import ExportOptions, export
from gpt2tasks.predict import predict
from gpt2tasks.resources import DATA_DIR
from tests.conftest import REPO

OLD = REPO / "tests" / "data" / "run_ba90ff0"
VALIDATION = DATA_DIR / "sample_sentiment" / "validation.csv"


@pytest.fixture
def rows(tmp_path):
    """The 16 validation rows the old predictions were made on."""
    path = tmp_path / "input.csv"
    path.write_text("".join(VALIDATION.read_text().splitlines(keepends=True)[:17]))  # header + 16 rows
    return path


def expected_lines() -> list[dict]:
    return [json.loads(line) for line in (OLD / "predictions.jsonl").read_text().splitlines()]


def test_old_checkpoint_evaluates_to_its_metrics():
    # its saved data paths are gone: the eval set is given again, as a user on another machine would;
    # a file named on the command line is scored whole unless the run's limit is given too (16 rows)
    metrics = evaluate_checkpoint(str(OLD / "best.ckpt"), [f"data.validation_file={VALIDATION}",
                                                           "data.max_eval_samples=16"])
    assert metrics == pytest.approx(json.loads((OLD / "metrics.json").read_text()), abs=1e-6)


def test_old_checkpoint_predicts_what_it_predicted(rows, tmp_path):
    predict(str(OLD / "best.ckpt"), str(rows), str(tmp_path / "p.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    for line, old in zip(lines, expected_lines(), strict=True):
        assert line["index"] == old["index"] and line["label"] == old["label"]
        assert line["scores"] == pytest.approx(old["scores"], abs=1e-6)


def test_old_checkpoint_exports_and_an_old_export_info_predicts(rows, tmp_path):
    folder = export(ExportOptions(ckpt=str(OLD / "best.ckpt"), out=str(tmp_path / "export")))
    assert (folder / "model.safetensors").is_file()
    new_info = json.loads((folder / "gpt2tasks.json").read_text())
    old_info = json.loads((OLD / "export_gpt2tasks.json").read_text())
    assert new_info["kind"] == old_info["kind"] == "seq_cls" and new_info["label_space"] == old_info["label_space"]
    shutil.copyfile(OLD / "export_gpt2tasks.json", folder / "gpt2tasks.json")  # the info file as it was written then
    predict(str(folder), str(rows), str(tmp_path / "p.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    for line, old in zip(lines, expected_lines(), strict=True):
        assert line["label"] == old["label"] and line["scores"] == pytest.approx(old["scores"], abs=1e-6)


# ---- checkpoints of the layout before every run had one module class (tests/data/run_5f6ae72) ----
MAIN = REPO / "tests" / "data" / "run_5f6ae72"
# each old run: its checkpoint, and the paths of the machine that wrote it (-> this machine's)
OLD_RUNS = {"single": (MAIN / "single" / "last.ckpt", {"/tmp/h29main/data": str(DATA_DIR)}),
            "multi": (MAIN / "multi" / "last.ckpt", {"/tmp/h29main/data": str(DATA_DIR)}),
            "ba90ff0": (OLD / "best.ckpt", {"/work/h22a/data": str(DATA_DIR)})}
BASE_MADE_AT = "/tmp/h29make/tiny_gpt2"


def _relocated(value, paths: dict[str, str]):
    """`value` (a checkpoint's plain data) with the paths of the machine that wrote it replaced."""
    if isinstance(value, dict):
        return {k: _relocated(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, paths) for v in value]
    if isinstance(value, str):
        for old, new in paths.items():
            value = value.replace(old, new)
    if isinstance(value, bytes):  # tokenizer_files: tokenizer_config.json names the folder it came from
        for old, new in paths.items():
            value = value.replace(old.encode(), new.encode())
    return value


def old_run(name: str, tmp_path, base=None):
    """A copy of an old run (OLD_RUNS) as a run folder (config.yaml, checkpoints/last.ckpt), its
    paths made this machine's (the data; `base`: the tiny base its LoRA run was trained over,
    conftest's tiny_gpt2_dir, made the same way). The checkpoint keeps its layout: only paths
    change. run_ba90ff0 kept no config.yaml: it is written from the checkpoint's config."""
    import torch

    from gpt2tasks.literal import literal_config, literal_yaml

    source, paths = OLD_RUNS[name]
    paths = {**paths, BASE_MADE_AT: str(base or "/nonexistent")}
    run = tmp_path / f"old_{name}"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    ckpt["gpt2tasks"] = _relocated(ckpt["gpt2tasks"], paths)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    config = source.parent / "config.yaml"
    (run / "config.yaml").write_text(_relocated(config.read_text(), paths) if config.is_file()
                                     else literal_yaml(literal_config(ckpt["gpt2tasks"]["config"])))
    return run


def saved_metrics(name: str) -> dict[str, float]:
    """What `eval` printed for the checkpoint when it was written (its rows counts left out)."""
    return {k: v for k, v in json.loads((MAIN / name / "eval.json").read_text()).items() if not k.endswith("rows")
            and not k.endswith("rows_in_file")}


def test_old_single_task_checkpoint_is_converted_on_load_and_scores_as_a_new_one(tmp_path):
    import torch

    from gpt2tasks.multitask import RUN_INFO_LAYOUT, current_layout
    from gpt2tasks.runfile import load_checkpoint

    run = old_run("single", tmp_path)
    raw = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert raw["gpt2tasks"]["kind"] == "seq_cls" and "layout" not in raw["gpt2tasks"]  # as main wrote it
    converted = load_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    info = converted["gpt2tasks"]
    assert info["layout"] == RUN_INFO_LAYOUT and "kind" not in info and "hf_config" not in info
    (name, task), = info["tasks"].items()
    assert name == "sample_sentiment" and task["kind"] == "seq_cls" and task["config"] == info["config"]
    assert task["label_space"] == raw["gpt2tasks"]["label_space"] and task["hf_config"] == raw["gpt2tasks"]["hf_config"]
    assert sorted(converted["state_dict"]) == sorted(f"model.sample_sentiment.{k}" for k in raw["state_dict"])
    assert current_layout(converted) is converted and converted["gpt2tasks"] == info  # converting again: nothing
    # optimizer states are by parameter order, which the module keeps: untouched
    assert converted["optimizer_states"][0]["param_groups"] == raw["optimizer_states"][0]["param_groups"]
    torch.save(converted, tmp_path / "new.ckpt")  # the same weights in today's layout

    old = evaluate_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    assert old == pytest.approx(saved_metrics("single"), abs=1e-6)
    assert evaluate_checkpoint(str(tmp_path / "new.ckpt")) == old  # identical, not close


def test_old_single_task_checkpoint_predicts_and_exports(rows, tmp_path):
    run = old_run("single", tmp_path)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert predict(ckpt, str(rows), str(tmp_path / "p.jsonl")) == 16
    folder = export(ExportOptions(ckpt=ckpt, out=str(tmp_path / "export")))
    assert (folder / "model.safetensors").is_file() and not (folder / "sample_sentiment").exists()  # one folder
    assert json.loads((folder / "gpt2tasks.json").read_text())["kind"] == "seq_cls"
    predict(str(folder), str(rows), str(tmp_path / "q.jsonl"))  # the export predicts what the checkpoint does
    assert (tmp_path / "q.jsonl").read_text() == (tmp_path / "p.jsonl").read_text()


@pytest.mark.parametrize("name", ["single", "multi", "ba90ff0"])
def test_old_checkpoint_resumes_and_finishes(name, tiny_gpt2_dir, tmp_path, cli):
    import torch

    run = old_run(name, tmp_path, base=tiny_gpt2_dir)
    done = cli("train", "resume=true", f"output_dir={run}", "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 8 and resumed["gpt2tasks"]["layout"] == 2  # 4 more steps, today's layout
    metrics = json.loads((run / "metrics.json").read_text())
    assert ("val/accuracy" in metrics) == (name != "multi") and ("val/mean" in metrics) == (name == "multi")


def test_old_multitask_checkpoint_evaluates_exports_and_combines_with_a_new_run(tiny_gpt2_dir, tmp_path):
    from gpt2tasks.combine import combine
    from gpt2tasks.train import train
    from tests.conftest import compose

    from gpt2tasks import multitask

    run = old_run("multi", tmp_path, base=tiny_gpt2_dir)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert evaluate_checkpoint(ckpt) == pytest.approx(saved_metrics("multi"), abs=1e-6)
    out = export(ExportOptions(ckpt=ckpt, out=str(tmp_path / "export"), merge_lora=False))
    assert {"README.md", "base", "sample_ner", "sample_sentiment"} <= {p.name for p in out.iterdir()}
    assert (out / "sample_ner" / "adapter_config.json").is_file()  # per task: a PEFT adapter over base/

    # a run of today over the same base, with a task of its own name: its adapters join the old run's
    cfg = compose("task=multitask", "multitask.tasks=[reviews:sample_sentiment]", f"output_dir={tmp_path / 'new'}",
                  "logger=none", "trainer.enable_progress_bar=false", "peft=lora", "multitask.adapters=per_task",
                  f"model.name_or_path={tiny_gpt2_dir}", "peft.r=4", "seed=7", "data.max_length=32",
                  "trainer.max_epochs=1", "trainer.limit_train_batches=4", "data.max_train_samples=64",
                  "data.max_eval_samples=16", "data.batch_size=8", "data.test_file=null")
    multitask.expand(cfg)
    train(cfg)
    new = str(tmp_path / "new" / "checkpoints" / "last.ckpt")
    combined = str(combine([ckpt, new], str(tmp_path / "combined.ckpt")))
    for name, source in (("sample_ner", ckpt), ("sample_sentiment", ckpt), ("reviews", new)):
        assert evaluate_checkpoint(combined, task=name) == evaluate_checkpoint(source, task=name)


@pytest.mark.parametrize("name", ["sst2.v1", "keys"])
def test_a_task_name_torch_cannot_use_as_a_module_name_still_loads_and_scores_the_same(name, tmp_path):
    """A run of one task may be named anything (task.name labels it): a "." or a ModuleDict
    attribute cannot name a module, so its weights sit under multitask.module_key, on conversion of
    an old checkpoint as in a new run."""
    import torch

    from gpt2tasks.multitask import module_key

    checkpoint = torch.load(OLD / "best.ckpt", weights_only=True, map_location="cpu")
    checkpoint["gpt2tasks"]["config"]["task"]["name"] = name
    renamed = tmp_path / "renamed.ckpt"
    torch.save(checkpoint, renamed)
    overrides = [f"data.validation_file={VALIDATION}", "data.max_eval_samples=16"]
    assert module_key(name) == f"task_{name.replace('.', '_')}"
    assert evaluate_checkpoint(str(renamed), overrides) == evaluate_checkpoint(str(OLD / "best.ckpt"), overrides)
