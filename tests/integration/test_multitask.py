"""task=multitask: one backbone object under every head, a step that updates it once, a two-task
run whose tasks both learn, eval/predict task=<name>, and per-task exports that plain
`transformers` (and PEFT) load with the multi-task model's outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gpt2tasks import lora, multitask, plots
from gpt2tasks.build import build_for_training, restore
from gpt2tasks.datamodules.base import VAL
from gpt2tasks.errors import UserError
from gpt2tasks.evaluation import evaluate, evaluate_checkpoint
from gpt2tasks.runfile import load_checkpoint
from gpt2tasks.export import ExportOptions, export
from gpt2tasks.predict import predict
from gpt2tasks.train import train
from tests.conftest import compose, run_cli
from tests.integration.test_export import run_without_gpt2tasks

TASKS = "multitask.tasks=[sample_sentiment,sample_ner]"
SMALL = ["data.max_train_samples=256", "data.max_eval_samples=64", "data.batch_size=16", "optim.lr=3e-3",
         "optim.weight_decay=0.01", "data.max_length=32"]


def mt_cfg(out: Path, *extra: str):
    cfg = compose("task=multitask", TASKS, f"output_dir={out}", "logger=none", "trainer.enable_progress_bar=false",
                  *SMALL, *extra)
    multitask.expand(cfg)
    return cfg


def first_batch(datamodule, name: str) -> dict:
    dm = datamodule.tasks[name]
    return {**next(iter(dm._loader("train", train=True))), "task": name}


def test_config_expands_presets_shared_and_own_keys(tmp_path):
    cfg = mt_cfg(tmp_path, "data.eval_batch_size=8", "++tasks.sample_ner.data.max_length=24")
    ner, sentiment = cfg.tasks.sample_ner, cfg.tasks.sample_sentiment
    assert ner.task.kind == "token_cls" and ner.task.tag_scheme == "IOB2"  # the preset's own keys
    assert ner.data.train_file.endswith("sample_ner/train.jsonl")
    assert ner.data.max_length == 24 and sentiment.data.max_length == 32  # tasks.<name>.data.* beats data.*
    assert ner.data.eval_batch_size == 8 == sentiment.data.eval_batch_size  # data.* for every task
    assert ner.data.batch_size == 16  # data.* set for the run beats the preset's own batch size
    assert (cfg.task.monitor, cfg.task.mode) == ("val/mean", "max")
    before = OmegaConf.to_container(cfg)
    multitask.expand(cfg)  # what another rank or a resumed run does again
    assert OmegaConf.to_container(cfg) == before
    view = multitask.task_view(cfg, "sample_ner")
    assert view.task.kind == "token_cls" and "tasks" not in view and view.optim.lr == 3e-3


@pytest.mark.parametrize("length", [128, 200, 384])
def test_a_run_wide_data_key_counts_because_it_was_written_whatever_its_value(length):
    # 128 is config.yaml's own data.max_length and 384 squad's: each is the user's choice all the same
    overrides = ["task=multitask", "multitask.tasks=[squad,sst2]", f"data.max_length={length}"]
    cfg = compose(*overrides)
    assert cfg.tasks.squad.data.max_length == length == cfg.tasks.sst2.data.max_length
    assert cfg.tasks.squad.data.doc_stride == 128  # the preset's other keys stay
    unset = compose(*overrides[:2])
    assert (unset.tasks.squad.data.max_length, unset.tasks.sst2.data.max_length) == (384, 128)  # the presets'
    # expanding again (another rank, a resumed run) knows no command line and changes nothing
    before = OmegaConf.to_container(cfg)
    multitask.expand(cfg)
    assert OmegaConf.to_container(cfg) == before


@pytest.mark.parametrize("extra, message", [
    (["tasks.sample_ner.optim.lr=1"], "tasks.sample_ner.optim: a task sets only its own task and data keys"),
    (["tasks.sample_ner.data.trian_file=x"], "tasks.sample_ner.data.trian_file: no such key (did you mean "
                                             "data.train_file?). Fix: tasks.sample_ner.data.train_file=..."),
    (["tasks.sample_ner.task.tag_schema=IOB1"], "tasks.sample_ner.task.tag_schema: not a key of a token_cls task "
                                                "(did you mean tasks.sample_ner.task.tag_scheme?)"),
    (["tasks.other.data.max_length=8"], "tasks.other: not one of multitask.tasks"),
    (["multitask.tasks=[sample_ner,nope]"], "'nope' is not a task preset"),
    (["multitask.tasks=[sample_ner,sample_ner]"], "lists 'sample_ner' twice"),
    (["multitask.sampling=random"], "multitask.sampling='random' is not one of"),
    (["multitask.adapters=per_task"], "multitask.adapters=per_task needs adapters: peft=lora"),
    (["multitask.loss_weights.sample_nr=2"], "multitask.loss_weights.sample_nr: not one of multitask.tasks"),
    (["multitask.monitor=sample_ner/f1"], "multitask.monitor='sample_ner/f1' must be 'mean' or '<task>/val/<metric>'"),
    (["multitask.tasks=[sample_ner,sample_lm]"], "do not agree on a direction"),
    (["tasks.sample_ner.data.batch_size=0"], "tasks.sample_ner: data.batch_size=0 must be a positive integer"),
    (["data.train_file=x.csv"], "data.train_file=x.csv would give every task of a multi-task run the same data"),
])
def test_bad_multitask_config_is_one_clear_error_before_anything_is_written(extra, message, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=None) as err:
        cfg = compose("task=multitask", TASKS, f"output_dir={out}", "logger=none", *multitask.cli_overrides(extra))
        train(cfg)
    assert message in str(err.value), str(err.value)
    assert not out.exists()


def test_multitask_without_tasks_says_what_to_add(tmp_path):
    with pytest.raises(UserError, match=r"task=multitask needs multitask.tasks. Fix: e.g. multitask.tasks=\["):
        train(compose("task=multitask", f"output_dir={tmp_path / 'run'}", "logger=none"))
    assert not (tmp_path / "run").exists()


def test_heads_share_the_backbone_and_one_step_updates_it_once(tmp_path):
    cfg = mt_cfg(tmp_path)
    datamodule, module, _ = build_for_training(cfg)
    heads = {name: m.model for name, m in module.tasks.items()}
    backbone = heads["sample_sentiment"].transformer
    assert heads["sample_ner"].transformer is backbone  # one object, no copies
    n_backbone = sum(p.numel() for p in backbone.parameters())
    n_heads = {name: sum(p.numel() for n, p in h.named_parameters() if not n.startswith("transformer."))
               for name, h in heads.items()}
    assert sum(p.numel() for p in module.parameters()) == n_backbone + sum(n_heads.values())

    # The same step on a single-task copy of the sentiment model gives the same backbone: the shared
    # parameters are in the optimizer once and receive exactly one update.
    alone = copy.deepcopy(module.tasks["sample_sentiment"])  # deep: its own copy of the backbone
    single = alone.model
    ner_head = copy.deepcopy(heads["sample_ner"].classifier.state_dict())
    batch = first_batch(datamodule, "sample_sentiment")
    for step, params in ((module.tasks["sample_sentiment"].step, list(module.parameters())),
                         (alone.step, list(alone.parameters()))):
        optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
        torch.manual_seed(0)  # the same dropout masks
        step(batch)[0].backward()
        optimizer.step()
    for (name, a), b in zip(backbone.named_parameters(), single.transformer.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    torch.testing.assert_close(heads["sample_sentiment"].score.weight, single.score.weight)
    for key, value in heads["sample_ner"].classifier.state_dict().items():  # no gradient: not touched
        assert torch.equal(value, ner_head[key]), key


def test_the_training_step_returns_its_task_and_own_loss_beside_the_weighted_one(tmp_path):
    # what the run's MetricHistory records for each task's own loss curve
    cfg = mt_cfg(tmp_path, "++multitask.loss_weights.sample_ner=0.25")
    datamodule, module, _ = build_for_training(cfg)
    out = module.training_step(first_batch(datamodule, "sample_ner"), 0)
    assert out["task"] == "sample_ner" and not out["task_loss"].requires_grad
    assert out["loss"].item() == pytest.approx(0.25 * out["task_loss"].item())


def keyword_reviews(folder: Path) -> list[str]:
    """A generic text_classification task a tiny random model learns in a few dozen steps: the
    label is which of two keywords the sentence holds (the bundled sentiment sample needs ~15 epochs)."""
    import random

    rng = random.Random(0)
    words = "the a movie plot film actor scene story was is very quite".split()
    for split, n in (("train", 320), ("validation", 64)):
        rows = []
        for _ in range(n):
            label = rng.choice(["positive", "negative"])
            sentence = rng.choices(words, k=6)
            sentence.insert(rng.randrange(7), "great" if label == "positive" else "awful")
            rows.append({"text": " ".join(sentence), "label": label})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"++tasks.reviews.data.train_file={folder / 'train.jsonl'}",
            f"++tasks.reviews.data.validation_file={folder / 'validation.jsonl'}"]


@pytest.fixture(scope="module")
def two_task_run(tmp_path_factory):
    """(run folder, validation metrics of the untrained model) of a short two-task run: a generic
    file task under its own name beside a preset."""
    out = tmp_path_factory.mktemp("multitask") / "run"
    cfg = mt_cfg(out, "multitask.tasks=[reviews:text_classification,sample_ner]", "trainer.max_epochs=3",
                 "optim.warmup_ratio=0.1", *keyword_reviews(out.parent))
    datamodule, module, _ = build_for_training(cfg)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer.validate(module, datamodule=datamodule, verbose=False)
    before = dict(module.latest_metrics)
    train(cfg)
    return out, before


def test_two_task_run_improves_every_task_and_eval_task_reproduces_it(two_task_run):
    run, before = two_task_run
    metrics = json.loads((run / "metrics.json").read_text())
    for name, metric in (("reviews", "accuracy"), ("sample_ner", "f1")):
        assert metrics[f"{name}/val/loss"] < before[f"{name}/val/loss"] - 0.05, name
        assert metrics[f"{name}/val/{metric}"] > before[f"{name}/val/{metric}"] + 0.05, name
    assert metrics["val/mean"] == pytest.approx((metrics["reviews/val/accuracy"] + metrics["sample_ner/val/f1"]) / 2)
    ckpt = str(run / "checkpoints" / "best.ckpt")
    # eval of the whole checkpoint, and of one head as a task alone, reproduce the run's numbers
    assert evaluate_checkpoint(ckpt) == metrics
    alone = evaluate_checkpoint(ckpt, task="sample_ner")
    assert alone == {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("sample_ner/")}
    with pytest.raises(UserError, match="task=nope: not a task of this multi-task checkpoint"):
        evaluate_checkpoint(ckpt, task="nope")
    # A file named for one task is scored whole (128 rows, the run cut its sets to 64); the other
    # task keeps the run's cut, named by its own key.
    twice = run.parent / "reviews_twice.jsonl"
    twice.write_text((run.parent / "validation.jsonl").read_text() * 2)
    metrics, rows = evaluate(ckpt, [f"tasks.reviews.data.validation_file={twice}"])
    assert rows["reviews/val"] == (128, 128, None)
    assert rows["sample_ner/val"][0] == 64 and rows["sample_ner/val"][2] == "tasks.sample_ner.data.max_eval_samples=64"
    assert evaluate(ckpt, [f"data.validation_file={twice}"], task="reviews")[1] == {"val": (128, 128, None)}


def test_a_multitask_run_draws_each_task_pictures_and_its_own_loss_curves(two_task_run):
    run, _ = two_task_run
    folder = run / "plots"
    data = json.loads((folder / "plots.json").read_text())
    pictures = {"curves", "reviews/curves", "reviews/confusion_matrix", "reviews/class_report",
                "sample_ner/curves", "sample_ner/confusion_matrix", "sample_ner/entity_report"}
    assert set(data) == pictures  # plots.json's keys are the pictures' paths under plots/
    for name in pictures:
        assert (folder / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((run / "metrics.json").read_text())
    saved = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True, mmap=True)
    curves = data["curves"]
    best = curves["best"]
    assert best == {"checkpoint": "best.ckpt", "step": saved["global_step"], "monitor": "val/mean",
                    "value": pytest.approx(metrics["val/mean"])}
    assert curves["monitor_value"][curves["monitor_step"].index(best["step"])] == pytest.approx(metrics["val/mean"])
    # every training batch is one task's: the tasks' own loss curves share out the run's steps
    assert sorted(step for name in ("reviews", "sample_ner") for step in data[f"{name}/curves"]["step"]) == curves["step"]
    for name, metric in (("reviews", "accuracy"), ("sample_ner", "f1")):
        own = data[f"{name}/curves"]
        assert own["monitor"] == f"{name}/val/{metric}" and own["best"] == best and "lr" not in own
        assert own["val_loss_step"] == own["monitor_step"] == curves["monitor_step"]  # at every validation
        at_best = own["val_loss_step"].index(best["step"])
        assert own["val_loss"][at_best] == pytest.approx(metrics[f"{name}/val/loss"])
        assert own["monitor_value"][at_best] == pytest.approx(metrics[f"{name}/val/{metric}"])
        assert len(own["train_loss"]) == len(own["step"]) > 0
        assert curves["tasks"][name] == {key: own[key] for key in plots.TASK_LOSS_KEYS}
    counts = np.array(data["reviews/confusion_matrix"]["counts"])
    assert counts.sum() == 64 and np.trace(counts) / counts.sum() == pytest.approx(metrics["reviews/val/accuracy"])
    assert data["sample_ner/entity_report"]["PER"]["support"] == int(metrics["sample_ner/val/PER_number"])


def test_per_task_exports_load_in_plain_transformers_with_the_multitask_outputs(two_task_run, tmp_path):
    run, _ = two_task_run
    ckpt = str(run / "checkpoints" / "best.ckpt")
    out = tmp_path / "export"
    export(ExportOptions(ckpt=ckpt, out=str(out)))
    assert {p.name for p in out.iterdir()} == {".gpt2tasks-export", "README.md", "reviews", "sample_ner"}
    checkpoint = load_checkpoint(ckpt)
    cfg = OmegaConf.create(checkpoint["gpt2tasks"]["config"])
    _, datamodule, module = restore(checkpoint, cfg)
    module.eval()
    for name, cls in (("reviews", "AutoModelForSequenceClassification"),
                      ("sample_ner", "AutoModelForTokenClassification")):
        batch = next(iter(datamodule.tasks[name]._loader(VAL, train=False)))
        with torch.no_grad():
            ours = module.tasks[name].model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        request = tmp_path / f"{name}.json"
        request.write_text(json.dumps({"input_ids": batch["input_ids"].tolist(),
                                       "attention_mask": batch["attention_mask"].tolist()}))
        theirs = run_without_gpt2tasks(LOAD, str(out / name), cls, str(request), cwd=tmp_path)
        assert not theirs["imported_gpt2tasks"]
        torch.testing.assert_close(torch.tensor(theirs["logits"]), ours, atol=1e-4, rtol=1e-4)
        info = json.loads((out / name / "gpt2tasks.json").read_text())
        assert info["kind"] == cfg.tasks[name].task.kind and info["config"]["task"]["name"] == name
        # each task folder carries the run's pictures of that task, shown in its model card
        card = (out / name / "README.md").read_text()
        for picture in ("curves", "confusion_matrix", "class_report" if name == "reviews" else "entity_report"):
            assert (out / name / "plots" / f"{picture}.png").read_bytes() == \
                (run / "plots" / name / f"{picture}.png").read_bytes()
            assert f"![{picture}](plots/{picture}.png)" in card

    # predict: the exported folder and the checkpoint's head give the same lines
    rows = [json.loads(line) for line in (Path(cfg.tasks.sample_ner.data.test_file).read_text().splitlines()[:20])]
    source = tmp_path / "ner.jsonl"
    source.write_text("".join(json.dumps({"tokens": r["tokens"]}) + "\n" for r in rows))
    assert predict(ckpt, str(source), str(tmp_path / "a.jsonl"), task="sample_ner") == 20  # lines written
    assert predict(str(out / "sample_ner"), str(source), str(tmp_path / "b.jsonl")) == 20
    from_ckpt, from_export = ([json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
                              for name in ("a.jsonl", "b.jsonl"))
    assert from_ckpt == from_export
    assert all(len(line["tags"]) == len(r["tokens"]) for line, r in zip(from_ckpt, rows))
    with pytest.raises(UserError, match="pick the head with task=<name>"):
        predict(ckpt, str(source), str(tmp_path / "c.jsonl"))


# Loads one exported folder (argv: folder, AutoModel class, request JSON) -- or, with a fourth
# argument, a PEFT adapter folder over that base folder -- in a process without gpt2tasks.
LOAD = r"""
import json, sys
import torch, transformers
folder, cls, request = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
if len(sys.argv) > 4:
    from peft import PeftModel
    config = transformers.AutoConfig.from_pretrained(sys.argv[4])
    model = PeftModel.from_pretrained(getattr(transformers, cls).from_pretrained(folder, config=config), sys.argv[4])
else:
    model = getattr(transformers, cls).from_pretrained(folder)
with torch.no_grad():
    logits = model.eval()(**{k: torch.tensor(v) for k, v in request.items()}).logits
print(json.dumps({"logits": logits.tolist(), "imported_gpt2tasks": any(m.startswith("gpt2tasks") for m in sys.modules)}))
"""


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_per_task_lora_adapters_train_apart_and_export_as_base_plus_adapters(tiny_gpt2_dir, tmp_path):
    lora = ["peft=lora", "multitask.adapters=per_task", f"model.name_or_path={tiny_gpt2_dir}", "peft.r=4"]
    cfg = mt_cfg(tmp_path / "run", *lora, "trainer.max_epochs=1", "trainer.limit_train_batches=6")
    datamodule, module, _ = build_for_training(cfg)
    trainable = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    assert any(".lora_A.sample_ner." in n for n in trainable) and any(".lora_A.sample_sentiment." in n for n in trainable)

    # a step of the sentiment task moves its adapters and head only
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    module.training_step(first_batch(datamodule, "sample_sentiment"), 0)["loss"].backward()
    optimizer.step()
    params = dict(module.named_parameters())
    changed = {n for n, before in trainable.items() if not torch.equal(params[n], before)}
    assert changed and all(".sample_sentiment." in n or ".score." in n for n in changed), sorted(changed)[:5]
    assert all(torch.equal(params[n], before) for n, before in frozen.items())
    assert all(p.requires_grad for n, p in params.items() if n in trainable)  # still trainable (and saved)

    train(cfg)
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    out = tmp_path / "adapters"
    export(ExportOptions(ckpt=ckpt, out=str(out), merge_lora=False))
    assert {p.name for p in out.iterdir()} == {".gpt2tasks-export", "README.md", "base", "sample_sentiment",
                                               "sample_ner"}
    assert (out / "sample_ner" / "adapter_config.json").is_file()
    merged = tmp_path / "merged"
    export(ExportOptions(ckpt=ckpt, out=str(merged), task="sample_ner"))
    assert {p.name for p in merged.iterdir()} == {".gpt2tasks-export", "README.md", "sample_ner"}

    checkpoint = load_checkpoint(ckpt)
    _, datamodule, module = restore(checkpoint, OmegaConf.create(checkpoint["gpt2tasks"]["config"]))
    module.eval()
    for name, cls in (("sample_sentiment", "AutoModelForSequenceClassification"),
                      ("sample_ner", "AutoModelForTokenClassification")):
        batch = next(iter(datamodule.tasks[name]._loader(VAL, train=False)))
        model = module.task_module(name).model
        with torch.no_grad():
            ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        request = tmp_path / f"{name}.json"
        request.write_text(json.dumps({"input_ids": batch["input_ids"].tolist(),
                                       "attention_mask": batch["attention_mask"].tolist()}))
        theirs = run_without_gpt2tasks(LOAD, str(out / "base"), cls, str(request), str(out / name), cwd=tmp_path)
        torch.testing.assert_close(torch.tensor(theirs["logits"]), ours, atol=1e-4, rtol=1e-4)
        if name == "sample_ner":
            plain = run_without_gpt2tasks(LOAD, str(merged / name), cls, str(request), cwd=tmp_path)
            torch.testing.assert_close(torch.tensor(plain["logits"]), ours, atol=1e-4, rtol=1e-4)


def test_shared_lora_adapters_train_for_every_task_and_merge_per_head(tiny_gpt2_dir, tmp_path):
    cfg = mt_cfg(tmp_path / "run", "peft=lora", f"model.name_or_path={tiny_gpt2_dir}", "peft.r=4")
    datamodule, module, _ = build_for_training(cfg)
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert {n.split(".lora_A.")[1].split(".")[0] for n in trainable if ".lora_A." in n} == {"default"}
    assert any(".score." in n for n in trainable) and any(".classifier." in n for n in trainable)  # heads in full
    before = {n: p.detach().clone() for n, p in module.named_parameters() if ".lora_B." in n}
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    module.training_step(first_batch(datamodule, "sample_ner"), 0)["loss"].backward()
    optimizer.step()
    assert any(not torch.equal(p, before[n]) for n, p in module.named_parameters() if n in before)
    module.eval()
    batch = first_batch(datamodule, "sample_ner")
    model = module.tasks["sample_ner"].model
    with torch.no_grad():
        adapted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lora.merge_task_backbone(model, "default")  # what export does for this head
        assert not hasattr(model.transformer, "peft_config")
        merged = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    assert hasattr(module.tasks["sample_sentiment"].model.transformer, "peft_config")  # the others keep LoRA


def test_cli_takes_task_keys_without_plus_and_eval_picks_a_head(tmp_path, cli):
    done = cli("train", "task=multitask", TASKS, f"output_dir={tmp_path / 'run'}", "logger=none",
                   "trainer.enable_progress_bar=false", "trainer.max_epochs=1", "data.max_train_samples=32",
                   "data.max_eval_samples=16", "tasks.sample_ner.data.max_length=24", "multitask.sampling=uniform",
                   "data.max_length=128")  # config.yaml's own value, over sample_sentiment's 64
    assert done.returncode == 0, done.stderr[-3000:]
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.tasks.sample_ner.data.max_length == 24 and saved.multitask.sampling == "uniform"
    # the command line's run-wide data.* keys reach every task (Hydra's record of the command line)
    assert saved.tasks.sample_ner.data.max_train_samples == 32 == saved.tasks.sample_sentiment.data.max_train_samples
    assert saved.tasks.sample_sentiment.data.max_length == 128  # written, so it counts, though it is the default
    assert "one backbone of" in done.stdout + done.stderr and "shared by 2 heads" in done.stdout + done.stderr
    bad = cli("eval", f"ckpt={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}", "task=sample_lm")
    assert bad.returncode == 2 and "task=sample_lm: not a task of this multi-task checkpoint" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_adapters_trained_one_task_at_a_time_combine_into_one_checkpoint(tiny_gpt2_dir, tmp_path):
    from gpt2tasks.combine import combine

    lora = ["peft=lora", "multitask.adapters=per_task", f"model.name_or_path={tiny_gpt2_dir}", "peft.r=4",
            "trainer.max_epochs=1", "trainer.limit_train_batches=4"]
    runs = {}
    for name, extra in (("reviews", ["multitask.tasks=[reviews:text_classification]", *keyword_reviews(tmp_path)]),
                        ("sample_ner", ["multitask.tasks=[sample_ner]"])):
        train(mt_cfg(tmp_path / name, *lora, *extra))
        runs[name] = str(tmp_path / name / "checkpoints" / "last.ckpt")
    combined = combine(list(runs.values()), str(tmp_path / "combined.ckpt"))
    # each head of the combined checkpoint gives exactly its own run's numbers
    for name, ckpt in runs.items():
        assert evaluate_checkpoint(str(combined), task=name) == evaluate_checkpoint(ckpt, task=name)
    both = evaluate_checkpoint(str(combined))
    assert {"reviews/val/accuracy", "sample_ner/val/f1", "val/mean"} <= set(both)
    out = tmp_path / "export"
    export(ExportOptions(ckpt=str(combined), out=str(out), merge_lora=False))
    assert {p.name for p in out.iterdir()} == {".gpt2tasks-export", "README.md", "base", "reviews", "sample_ner"}

    with pytest.raises(UserError, match="task 'reviews' is in more than one checkpoint"):
        combine([runs["reviews"], runs["reviews"]], str(tmp_path / "twice.ckpt"))
    shared = torch.load(runs["sample_ner"], map_location="cpu", weights_only=False)
    shared["gpt2tasks"]["config"]["multitask"]["adapters"] = "shared"  # one adapter set trains the backbone for all
    torch.save(shared, tmp_path / "shared.ckpt")
    with pytest.raises(UserError, match="only multi-task runs with per-task LoRA adapters"):
        combine([runs["reviews"], str(tmp_path / "shared.ckpt")], str(tmp_path / "x.ckpt"))
    assert not (tmp_path / "twice.ckpt").exists() and not (tmp_path / "x.ckpt").exists()


def test_all_five_heads_on_one_backbone_train_export_and_reload(tmp_path):
    kinds = {"sample_sentiment": "GPT2ForSequenceClassification", "sample_ner": "GPT2ForTokenClassification",
             "sample_qa": "GPT2ForQuestionAnswering", "sample_mc": "GPT2DoubleHeadsModel", "sample_lm": "GPT2LMHeadModel"}
    run = tmp_path / "run"
    cfg = compose("task=multitask", f"multitask.tasks=[{','.join(kinds)}]", "multitask.monitor=sample_ner/val/f1",
                  f"output_dir={run}", "logger=none", "trainer.enable_progress_bar=false", "trainer.max_epochs=1",
                  "data.max_train_samples=24", "data.max_eval_samples=8", "data.batch_size=8", "data.max_length=48",
                  "++tasks.sample_qa.data.doc_stride=16", "++tasks.sample_qa.data.max_question_length=16")
    metrics = train(cfg)
    assert "val/mean" not in metrics  # accuracy and perplexity: no meaningful mean
    assert {f"{name}/val/loss" for name in kinds} <= set(metrics)
    _, _, module = restore(load_checkpoint(str(run / "checkpoints" / "best.ckpt")), OmegaConf.load(run / "config.yaml"),
                           load_eval_sets=False)
    assert len({id(m.backbone) for m in module.tasks.values()}) == 1
    lm_head = module.tasks["sample_lm"].model.lm_head.weight
    assert lm_head is module.backbone.wte.weight is module.tasks["sample_mc"].model.lm_head.weight  # tied, once
    out = tmp_path / "export"
    export(ExportOptions(ckpt=str(run / "checkpoints" / "best.ckpt"), out=str(out)))
    for name, cls in kinds.items():
        assert json.loads((out / name / "config.json").read_text())["architectures"] == [cls]
    assert (out / "sample_lm" / "generation_config.json").is_file()
    qa = evaluate_checkpoint(str(run / "checkpoints" / "best.ckpt"), task="sample_qa")
    assert qa["val/f1"] == pytest.approx(metrics["sample_qa/val/f1"])


@pytest.mark.slow
def test_two_process_ddp_run_matches_single_process_eval(tmp_path):
    """Every rank draws the same task each step (else the heads' gradients would be averaged across
    different tasks, or a collective would wait forever); the 2-process validation equals a
    1-process eval of the best checkpoint."""
    run = tmp_path / "run"
    done = run_cli("train", "task=multitask", TASKS, f"output_dir={run}", "trainer=ddp", "trainer.accelerator=cpu",
                   "trainer.devices=2", "trainer.enable_progress_bar=false", "logger=none", "trainer.max_epochs=1",
                   "data.max_train_samples=64", "data.batch_size=8", "data.max_eval_samples=37",
                   "data.eval_batch_size=8", "multitask.sampling=temperature")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    again = run_cli("eval", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", "trainer.enable_progress_bar=false")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout[again.stdout.index("{"):]) == metrics
    # 64 rows of each task, 8 per rank and step: 4 steps per task (NER: 5, a long sentence is two windows)
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 9
