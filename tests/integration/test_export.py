"""export: train tiny -> export -> load with plain `transformers` in a process without gpt2tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from gpt2tasks.build import build_from_checkpoint
from gpt2tasks.errors import UserError
from gpt2tasks.evaluation import load_checkpoint
from gpt2tasks.export import ExportOptions, export, parse_options
from gpt2tasks.train import train

TASKS = {"sample_sentiment": "seq_cls", "sample_ner": "token_cls", "sample_qa": "qa", "sample_lm": "lm",
         "sample_mc": "mc"}
MODEL_INPUTS = ("input_ids", "attention_mask", "mc_token_ids")
OUTPUTS = {"seq_cls": ["logits"], "token_cls": ["logits"], "qa": ["start_logits", "end_logits"],
           "lm": ["logits"], "mc": ["mc_logits"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """task -> a run folder trained for a few steps (weights need not be good, only not the init)."""
    from tests.conftest import compose

    runs = {}

    def get(task: str, *extra: str) -> Path:
        key = (task, *extra)
        if key not in runs:
            out = tmp_path_factory.mktemp(task)
            train(compose(f"task={task}", f"output_dir={out}", "logger=none", "trainer.enable_progress_bar=false",
                          "trainer.limit_train_batches=3", "trainer.max_epochs=1", "data.max_train_samples=48",
                          "data.max_eval_samples=12", "data.batch_size=8", "optim.lr=1e-2", *extra))
            runs[key] = out
        return runs[key]

    return get


def gpt2tasks_outputs(ckpt: Path) -> tuple[dict, dict]:
    """The first validation batch (model inputs) and what gpt2tasks' model gives for it."""
    checkpoint = load_checkpoint(str(ckpt))
    info = checkpoint["gpt2tasks"]
    from omegaconf import OmegaConf

    datamodule, module = build_from_checkpoint(OmegaConf.create(info["config"]), info)
    module.complete_state_dict(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    batch = next(iter(datamodule.val_dataloader()[0]))
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    with torch.no_grad():
        result = module.model(**inputs)
    kind = info["kind"]
    return ({k: v.tolist() for k, v in inputs.items()},
            {name: getattr(result, name).tolist() for name in OUTPUTS[kind]})


# Runs in a fresh interpreter that must not import gpt2tasks: what a user without it has.
LOADER = r"""
import json, sys
import torch, transformers
from transformers import AutoTokenizer

folder, kind, inputs_file = sys.argv[1:4]
cls = {"seq_cls": "AutoModelForSequenceClassification", "token_cls": "AutoModelForTokenClassification",
       "qa": "AutoModelForQuestionAnswering", "lm": "AutoModelForCausalLM", "mc": "GPT2DoubleHeadsModel"}[kind]
model = getattr(transformers, cls).from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
inputs = {k: torch.tensor(v) for k, v in json.load(open(inputs_file)).items()}
with torch.no_grad():
    result = model(**inputs)
names = {"seq_cls": ["logits"], "token_cls": ["logits"], "qa": ["start_logits", "end_logits"], "lm": ["logits"],
         "mc": ["mc_logits"]}[kind]
out = {name: getattr(result, name).tolist() for name in names}
out["padding_side"] = tokenizer.padding_side
out["pad_token_id"] = [tokenizer.pad_token_id, model.config.pad_token_id]
out["imported_gpt2tasks"] = any(m.startswith("gpt2tasks") for m in sys.modules)
print(json.dumps(out))
"""


def run_without_gpt2tasks(script: str, *args: str, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("task", list(TASKS))
def test_export_loads_in_plain_transformers_with_equal_outputs(task, trained, tmp_path):
    run = trained(task)
    ckpt = run / "checkpoints" / "best.ckpt"
    out = tmp_path / "export"
    export(ExportOptions(ckpt=str(ckpt), out=str(out)))
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "generation_config.json").is_file() == (TASKS[task] in ("lm", "mc"))
    inputs, expected = gpt2tasks_outputs(ckpt)
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    got = run_without_gpt2tasks(LOADER, str(out), TASKS[task], str(tmp_path / "inputs.json"), cwd=tmp_path)
    assert not got["imported_gpt2tasks"]
    for name, value in expected.items():
        torch.testing.assert_close(torch.tensor(got[name]), torch.tensor(value), atol=1e-4, rtol=1e-4)
    assert got["padding_side"] == "right" and got["pad_token_id"][0] == got["pad_token_id"][1] is not None

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert meta["library_name"] == "transformers" and meta["license"] == "mit"
    reported = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert reported == pytest.approx({k: v for k, v in metrics.items()})
    config = json.loads((out / "config.json").read_text())
    if TASKS[task] in ("seq_cls", "token_cls"):
        assert config["id2label"] and config["label2id"]


PIPELINES = r"""
import json, sys
from transformers import pipeline

folder, kind, rows_file = sys.argv[1:4]
rows = json.load(open(rows_file))
if kind == "seq_cls":
    pipe = pipeline("text-classification", model=folder)
    # batched (padded) and one at a time must agree: padding invariance through the pipeline
    batched = pipe(rows, batch_size=8, top_k=None)
    single = [pipe(r, top_k=None) for r in rows]
    out = {"batched": [{d["label"]: d["score"] for d in r} for r in batched],
           "single": [{d["label"]: d["score"] for d in r} for r in single]}
elif kind == "token_cls":
    pipe = pipeline("token-classification", model=folder, ignore_labels=[])
    out = {"tags": [[t["entity"] for t in r] for r in pipe([" ".join(w) for w in rows], batch_size=4)],
           "ids": [pipe.tokenizer(" ".join(w))["input_ids"] for w in rows]}
elif kind == "qa":  # transformers 5 has no question-answering pipeline: the tokenizer's pair layout
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = {"ids": [tokenizer(r["question"], r["context"])["input_ids"] for r in rows]}
elif kind == "lm":
    pipe = pipeline("text-generation", model=folder)
    out = {"texts": [pipe(r, max_new_tokens=8, do_sample=False, return_full_text=False,
                          add_special_tokens=True)[0]["generated_text"] for r in rows]}
out["imported_gpt2tasks"] = any(m.startswith("gpt2tasks") for m in sys.modules)
print(json.dumps(out))
"""


def first_val_examples(ckpt: Path):
    """gpt2tasks' datamodule and model for a checkpoint, and its first validation batch."""
    from omegaconf import OmegaConf

    checkpoint = load_checkpoint(str(ckpt))
    info = checkpoint["gpt2tasks"]
    datamodule, module = build_from_checkpoint(OmegaConf.create(info["config"]), info)
    module.complete_state_dict(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return datamodule, module, next(iter(datamodule.val_dataloader()[0]))


def real_ids(batch, i: int) -> list[int]:
    return batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()


@pytest.mark.parametrize("task", ["sample_sentiment", "sample_ner", "sample_qa", "sample_lm"])
def test_pipeline_gives_gpt2tasks_predictions(task, trained, tmp_path):
    """What a user of the export gets from `pipeline` (tokenizer included) is what gpt2tasks computed."""
    kind = TASKS[task]
    ckpt = trained(task) / "checkpoints" / "best.ckpt"
    out = tmp_path / "export"
    export(ExportOptions(ckpt=str(ckpt), out=str(out)))
    datamodule, module, batch = first_val_examples(ckpt)
    examples = datamodule.examples["val"]
    config = module.model.config
    with torch.no_grad():
        if kind == "lm":
            prompts = ["the movie was", "a great"]
            rows = prompts
            expected = [greedy for _, greedy, _ in module.sample(datamodule.tokenizer, prompts, 8, 0.9)]
        else:
            # NER/QA rows are windows of an example: keep examples that fit in one window (the others
            # the pipeline windows its own way)
            example = batch.get("example", batch["idx"]).tolist()
            windows = Counter(r.get("example", 0) for r in datamodule.datasets["val"].rows)
            keep = [i for i, e in enumerate(example) if "example" not in batch or windows[e] == 1]
            rows = [examples[example[i]] for i in keep]
            expected = [real_ids(batch, i) for i in keep]
            assert rows
            if kind != "qa":
                logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[keep]
    if kind == "seq_cls":
        rows = [r["text"] for r in rows]
    elif kind == "token_cls":
        rows = [r["tokens"] for r in rows]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    got = run_without_gpt2tasks(PIPELINES, str(out), kind, str(tmp_path / "rows.json"), cwd=tmp_path)
    assert not got["imported_gpt2tasks"]

    if kind == "seq_cls":
        probs = logits.softmax(-1)
        for i, (batched, single) in enumerate(zip(got["batched"], got["single"])):
            assert batched == pytest.approx(single, abs=1e-5)  # padding invariance under pipeline batching
            assert batched == pytest.approx({config.id2label[j]: float(p) for j, p in enumerate(probs[i])}, abs=1e-5)
    elif kind == "token_cls":
        for i, (ids, tags) in enumerate(zip(got["ids"], got["tags"])):
            assert ids == expected[i]  # raw text gets the words' prefix-space tokens
            assert tags == [config.id2label[int(j)] for j in logits[i, :len(ids)].argmax(-1)]
    elif kind == "qa":
        assert got["ids"] == expected  # question + separator + context + summary token
    else:
        assert got["texts"] == expected
