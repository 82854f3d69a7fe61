"""export: train tiny -> export -> load with plain `transformers` in a process without gpt2tasks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from gpt2tasks.build import build_from_checkpoint
from gpt2tasks.errors import UserError
from gpt2tasks.runfile import load_checkpoint
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


# Runs in a fresh interpreter that must not import gpt2tasks: what a user without it has.
# argv: export folder, task kind, a JSON file {"inputs": model inputs, "rows": pipeline inputs,
# "snippet" (optional): the model card's code, run last as a user copying it would, in a namespace
# of its own}.
CHECK = r"""
import json, sys
import torch, transformers
from transformers import AutoTokenizer, pipeline

folder, kind, request = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
cls = {"seq_cls": "AutoModelForSequenceClassification", "token_cls": "AutoModelForTokenClassification",
       "qa": "AutoModelForQuestionAnswering", "lm": "AutoModelForCausalLM", "mc": "GPT2DoubleHeadsModel"}[kind]
model = getattr(transformers, cls).from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    result = model(**{k: torch.tensor(v) for k, v in request["inputs"].items()})
out = {name: getattr(result, name).tolist() for name in ("logits", "start_logits", "end_logits", "mc_logits")
       if getattr(result, name, None) is not None}
out["padding_side"], out["pad_token_id"] = tokenizer.padding_side, [tokenizer.pad_token_id, model.config.pad_token_id]
rows = request["rows"]
kind = kind if rows else "none"  # no rows: the outputs check only
if kind == "seq_cls":
    pipe = pipeline("text-classification", model=folder)
    # batched (padded) and one at a time must agree: padding invariance through the pipeline
    out["batched"] = [{d["label"]: d["score"] for d in r} for r in pipe(rows, batch_size=8, top_k=None)]
    out["single"] = [{d["label"]: d["score"] for d in pipe(r, top_k=None)} for r in rows]
elif kind == "token_cls":
    pipe = pipeline("token-classification", model=folder, ignore_labels=[])
    out["tags"] = [[t["entity"] for t in r] for r in pipe([" ".join(w) for w in rows], batch_size=4)]
    out["ids"] = [tokenizer(" ".join(w))["input_ids"] for w in rows]
elif kind == "qa":  # transformers 5 has no question-answering pipeline: the tokenizer's pair layout
    out["ids"] = [tokenizer(r["question"], r["context"])["input_ids"] for r in rows]
elif kind == "lm":
    pipe = pipeline("text-generation", model=folder)
    out["texts"] = [pipe(r, max_new_tokens=8, do_sample=False, return_full_text=False,
                         add_special_tokens=True)[0]["generated_text"] for r in rows]
if "snippet" in request:
    card = {}
    exec(request["snippet"], card)
    out["card_names"] = sorted(n for n in ("pipe", "model", "tokenizer") if n in card)
out["imported_gpt2tasks"] = any(m.startswith("gpt2tasks") for m in sys.modules)
print(json.dumps(out))
"""


def run_without_gpt2tasks(script: str, *args: str, cwd: Path) -> dict:
    """Run `script` in a new interpreter that never imports gpt2tasks. GPT2TASKS_CLEAN_PYTHON may name
    the python of an environment holding only torch, transformers and peft (the acceptance check)."""
    python = os.environ.get("GPT2TASKS_CLEAN_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def card_snippet(folder: Path) -> str:
    """The model card's python block as the card prints it, `<this folder>` being the export."""
    snippets = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
    assert len(snippets) == 1
    return snippets[0].replace("<this folder>", str(folder))


def gpt2tasks_side(ckpt: Path):
    """gpt2tasks' datamodule, model and first validation batch for a checkpoint."""
    from omegaconf import OmegaConf

    checkpoint = load_checkpoint(str(ckpt))
    info = checkpoint["gpt2tasks"]
    datamodule, module = build_from_checkpoint(OmegaConf.create(info["config"]), info)
    module.complete_state_dict(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    (task,) = module.tasks.values()  # a run of one task: its module and datamodule
    (data,) = datamodule.tasks.values()
    return data, task, next(iter(data.val_dataloader()[0]))


def real_ids(batch, i: int) -> list[int]:
    return batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()


def pipeline_rows(kind: str, datamodule, batch) -> tuple[list, list[int]]:
    """What a user hands `pipeline`/the tokenizer for the batch's examples, and which batch rows
    they are. NER/QA rows are windows: only examples that fit in one window are compared (the
    pipeline windows long inputs its own way)."""
    if kind == "lm":
        return ["the movie was", "a great"], []
    example = batch.get("example", batch["idx"]).tolist()
    windows = Counter(r.get("example", 0) for r in datamodule.datasets["val"].rows)
    keep = [i for i, e in enumerate(example) if "example" not in batch or windows[e] == 1]
    rows = [datamodule.examples["val"][example[i]] for i in keep]
    field = {"seq_cls": "text", "token_cls": "tokens"}.get(kind)
    return [r[field] for r in rows] if field else rows, keep


@pytest.mark.parametrize("task", list(TASKS))
def test_export_loads_in_plain_transformers_and_pipeline_agrees(task, trained, tmp_path):
    kind = TASKS[task]
    run = trained(task)
    ckpt = run / "checkpoints" / "best.ckpt"
    out = tmp_path / "export"
    export(ExportOptions(ckpt=str(ckpt), out=str(out)))
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "generation_config.json").is_file() == (kind in ("lm", "mc"))

    datamodule, module, batch = gpt2tasks_side(ckpt)
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    rows, keep = pipeline_rows(kind, datamodule, batch)
    with torch.no_grad():
        result = module.model(**inputs)
    request = {"inputs": {k: v.tolist() for k, v in inputs.items()}, "rows": rows, "snippet": card_snippet(out)}
    (tmp_path / "request.json").write_text(json.dumps(request))
    got = run_without_gpt2tasks(CHECK, str(out), kind, str(tmp_path / "request.json"), cwd=tmp_path)
    assert not got["imported_gpt2tasks"]

    # 1. The same inputs give the same outputs in plain transformers.
    for name in OUTPUTS[kind]:
        torch.testing.assert_close(torch.tensor(got[name]), getattr(result, name), atol=1e-4, rtol=1e-4)
    assert got["padding_side"] == "right" and got["pad_token_id"][0] == got["pad_token_id"][1] is not None
    # 2. What a user gets from raw text through the export's tokenizer / pipeline is what gpt2tasks computed.
    id2label = module.model.config.id2label
    if kind == "seq_cls":
        probs = result.logits.softmax(-1)
        for i, (batched, single) in enumerate(zip(got["batched"], got["single"])):
            assert batched == pytest.approx(single, abs=1e-5)  # padding invariance under pipeline batching
            assert batched == pytest.approx({id2label[j]: float(p) for j, p in enumerate(probs[keep[i]])}, abs=1e-5)
    elif kind == "token_cls":
        for i, (ids, tags) in enumerate(zip(got["ids"], got["tags"])):
            assert ids == real_ids(batch, keep[i])  # raw text gets the words' prefix-space tokens
            assert tags == [id2label[int(j)] for j in result.logits[keep[i], :len(ids)].argmax(-1)]
    elif kind == "qa":
        assert got["ids"] == [real_ids(batch, i) for i in keep]  # question + separator + context + summary
    elif kind == "lm":
        assert got["texts"] == [greedy for _, greedy, _ in module.sample(datamodule.tokenizer, rows, 8, 0.9)]
        # Trained with the fused loss over a vocabulary padded 946 -> 960: the export keeps the real one.
        assert module.evaluation.options["pad_vocab_multiple"] == 64 and len(datamodule.tokenizer) % 64
        assert json.loads((out / "config.json").read_text())["vocab_size"] == len(datamodule.tokenizer)

    # 3. The model card's metadata parses and carries the run's metrics.
    meta = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["license"] == "mit"
    assert meta["pipeline_tag"] == {"seq_cls": "text-classification", "token_cls": "token-classification",
                                    "qa": "question-answering", "lm": "text-generation", "mc": "multiple-choice"}[kind]
    reported = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert reported == pytest.approx(json.loads((run / "metrics.json").read_text()))
    if kind in ("seq_cls", "token_cls"):
        config = json.loads((out / "config.json").read_text())
        assert config["id2label"] and config["label2id"]

    # 4. The card's code runs as printed: a pipeline only where transformers has one (none for QA or MC).
    # (run last in the same clean process as the checks above)
    assert got["card_names"] == (["model", "tokenizer"] if kind in ("qa", "mc") else ["pipe"])


# ---- LoRA ---------------------------------------------------------------------------------------
ADAPTER_CHECK = r"""
import json, sys
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification

folder, base, request = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
config = AutoConfig.from_pretrained(folder)
model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, config=config), folder)
with torch.no_grad():
    logits = model.eval()(**{k: torch.tensor(v) for k, v in request["inputs"].items()}).logits
print(json.dumps({"logits": logits.tolist(), "imported_gpt2tasks": any(m.startswith("gpt2tasks") for m in sys.modules)}))
"""


def test_a_single_task_checkpoint_has_the_one_run_layout(trained):
    """A single-task run is the one-task case of every run: its checkpoint has the one run-information
    layout (multitask.run_info) and its weights sit under its task, as a multi-task run's do."""
    checkpoint = torch.load(trained("sample_sentiment") / "checkpoints" / "best.ckpt", weights_only=True)
    info = checkpoint["gpt2tasks"]
    assert list(info) == ["layout", "config", "tokenizer_files", "new_token_ids", "frozen_base_from", "command",
                          "tasks", "data_files", "rng", "validation"]  # rng, validation: added when saved
    assert set(info["validation"]) == {"step", "epoch", "metrics"}  # (tasks/base.py on_save_checkpoint)
    assert info["layout"] == 2 and not {"tasks", "multitask"} & set(info["config"])
    (name, task), = info["tasks"].items()
    assert name == "sample_sentiment" and list(task) == ["kind", "config", "hf_config", "label_space"]
    assert task["kind"] == "seq_cls" and task["config"] == info["config"]
    assert {".".join(k.split(".")[:4]) for k in checkpoint["state_dict"]} == {
        "model.sample_sentiment.model.transformer", "model.sample_sentiment.model.score"}


def test_the_export_copies_the_run_pictures_but_never_through_a_link(trained, tmp_path):
    """A picture that is a link (to any file) is not the run's: its bytes never reach the export."""
    run = trained("sample_sentiment")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a picture of this run")
    original = run / "plots" / "class_report.png"
    kept = original.read_bytes()
    original.unlink()
    original.symlink_to(secret)
    try:
        out = tmp_path / "export"
        export(ExportOptions(ckpt=str(run / "checkpoints" / "best.ckpt"), out=str(out)))
        copied = {p.name: p.read_bytes() for p in out.rglob("*.png")}
        assert "curves.png" in copied and "class_report.png" not in copied
        assert all(b"not a picture" not in data for data in copied.values())
    finally:
        original.unlink()
        original.write_bytes(kept)  # the module-scoped run stays as the other tests expect it


def test_lora_exports_merged_and_as_adapter_with_equal_outputs(trained, tiny_gpt2_dir, tmp_path):
    run = trained("sample_sentiment", "peft=lora", f"model.name_or_path={tiny_gpt2_dir}")
    ckpt = run / "checkpoints" / "best.ckpt"
    _, module, batch = gpt2tasks_side(ckpt)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = module.model(**inputs).logits  # the unmerged adapter model
    (tmp_path / "request.json").write_text(json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()},
                                                       "rows": []}))
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    export(ExportOptions(ckpt=str(ckpt), out=str(merged)))
    export(ExportOptions(ckpt=str(ckpt), out=str(adapter), merge_lora=False))
    assert not any("lora" in name for name in os.listdir(merged))
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= set(os.listdir(adapter))
    assert not (adapter / "model.safetensors").exists()  # an adapter folder: MBs, not the base again
    got = run_without_gpt2tasks(CHECK, str(merged), "seq_cls", str(tmp_path / "request.json"), cwd=tmp_path)
    torch.testing.assert_close(torch.tensor(got["logits"]), expected, atol=1e-4, rtol=1e-4)
    got = run_without_gpt2tasks(ADAPTER_CHECK, str(adapter), str(tiny_gpt2_dir), str(tmp_path / "request.json"),
                                cwd=tmp_path)
    assert not got["imported_gpt2tasks"]
    torch.testing.assert_close(torch.tensor(got["logits"]), expected, atol=1e-4, rtol=1e-4)
    meta = yaml.safe_load((adapter / "README.md").read_text().split("---\n")[1])
    assert meta["library_name"] == "peft"


def test_adapter_export_needs_a_loadable_base(trained, tmp_path):
    ckpt = trained("sample_sentiment", "peft=lora") / "checkpoints" / "best.ckpt"  # random-init base
    with pytest.raises(UserError, match="merge_lora=false"):
        export(ExportOptions(ckpt=str(ckpt), out=str(tmp_path / "adapter"), merge_lora=False))
    assert not (tmp_path / "adapter").exists()


def test_pair_and_prefix_space_tokenizer_layouts(tiny_tokenizer, tmp_path):
    """Sentence pairs are encoded as the datamodule joins them (a + separator + b)."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from gpt2tasks.export import save_tokenizer

    cfg = OmegaConf.create({"task": {"kind": "seq_cls"}, "data": {"text_pair_column": "b",
                                                                  "pair_separator": "<|endoftext|>"}})
    save_tokenizer(AutoTokenizer.from_pretrained(tiny_tokenizer.name_or_path), cfg, tmp_path)
    exported = AutoTokenizer.from_pretrained(tmp_path)
    a, b = tiny_tokenizer("the good one")["input_ids"], tiny_tokenizer("a bad one")["input_ids"]
    assert exported("the good one", "a bad one")["input_ids"] == a + [tiny_tokenizer.eos_token_id] + b
    assert exported("the good one")["input_ids"] == a
    assert exported.padding_side == "right"


# ---- the Hub (a local stand-in for its API) -----------------------------------------------------
class FakeHub:
    calls: list = []

    def __init__(self, token=None):
        FakeHub.calls.append(("init", token))

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeHub.calls.append(("create_repo", repo_id, private))

    def upload_folder(self, repo_id, folder_path, commit_message=None, ignore_patterns=()):
        FakeHub.calls.append(("upload_folder", repo_id, sorted(set(os.listdir(folder_path)) - set(ignore_patterns))))


class FailingHub(FakeHub):
    def upload_folder(self, repo_id, folder_path, commit_message=None, ignore_patterns=()):
        raise RuntimeError(f"401 Unauthorized for token {os.environ['HF_TOKEN']}")


SECRET = "hf_SECRETtoken1234567890"


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    FakeHub.calls = []
    return FakeHub


def test_push_uploads_the_export_and_never_leaks_the_token(trained, hub, tmp_path, capsys, caplog):
    ckpt = trained("sample_sentiment") / "checkpoints" / "best.ckpt"
    out = tmp_path / "pushed"
    with caplog.at_level("DEBUG"):
        export(parse_options([f"ckpt={ckpt}", f"out={out}", "push_to_hub=true", "hub.repo_id=alice/gpt2-sst2",
                              "hub.private=true"]))
    assert hub.calls[0] == ("init", SECRET)  # the token goes to the API client, and nowhere else
    assert hub.calls[1] == ("create_repo", "alice/gpt2-sst2", True)
    # everything but the local folder's mark (.gpt2tasks-export)
    assert hub.calls[2] == ("upload_folder", "alice/gpt2-sst2", sorted(set(os.listdir(out)) - {".gpt2tasks-export"}))
    assert (out / ".gpt2tasks-export").is_file()
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text
    assert not any(SECRET in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())


def test_push_failure_keeps_the_local_export_and_hides_the_token(trained, hub, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingHub)
    ckpt = trained("sample_sentiment") / "checkpoints" / "best.ckpt"
    out = tmp_path / "kept"
    with pytest.raises(UserError, match="local export is complete") as err:
        export(ExportOptions(ckpt=str(ckpt), out=str(out), push_to_hub=True, hub_repo_id="alice/m"))
    assert SECRET not in str(err.value)
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


@pytest.mark.parametrize("options, message", [
    ({"hub_repo_id": "not a repo"}, "hub.repo_id"),
    ({"hub_repo_id": None}, "hub.repo_id"),
    ({"hub_repo_id": "alice/m", "no_token": True}, "HF_TOKEN"),
])
def test_push_problems_are_refused_before_any_work(options, message, trained, hub, monkeypatch, tmp_path):
    if options.pop("no_token", False):
        import huggingface_hub

        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    ckpt = trained("sample_sentiment") / "checkpoints" / "best.ckpt"
    with pytest.raises(UserError, match=message):
        export(ExportOptions(ckpt=str(ckpt), out=str(tmp_path / "x"), push_to_hub=True, **options))
    assert not (tmp_path / "x").exists() and hub.calls == []


# ---- bad input ----------------------------------------------------------------------------------
def test_export_refuses_bad_input_and_never_half_writes(trained, tmp_path):
    ckpt = trained("sample_sentiment") / "checkpoints" / "best.ckpt"
    with pytest.raises(UserError, match="ckpt=.*no such file"):
        export(ExportOptions(ckpt=str(tmp_path / "missing.ckpt"), out=str(tmp_path / "a")))
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="not written by gpt2tasks"):
        export(ExportOptions(ckpt=str(tmp_path / "other.ckpt"), out=str(tmp_path / "a")))
    with pytest.raises(UserError, match="not one of its key=value options"):
        parse_options([f"ckpt={ckpt}", "output=x"])
    with pytest.raises(UserError, match="true or false"):
        parse_options([f"ckpt={ckpt}", "merge_lora=yes"])
    assert not (tmp_path / "a").exists()

    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="overwrite=true"):
        export(ExportOptions(ckpt=str(ckpt), out=str(out)))
    with pytest.raises(UserError, match="not written by gpt2tasks"):  # not an export: never replaced
        export(ExportOptions(ckpt=str(ckpt), out=str(out), overwrite=True))
    assert os.listdir(out) == ["keep.txt"]
    exported = tmp_path / "exported"
    export(ExportOptions(ckpt=str(ckpt), out=str(exported)))
    (exported / "stale.txt").write_text("from the export replaced")
    export(ExportOptions(ckpt=str(ckpt), out=str(exported), overwrite=True))
    assert "stale.txt" not in os.listdir(exported) and (exported / "model.safetensors").is_file()
    assert (exported / ".gpt2tasks-export").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith("-export")] == []  # no staging left behind


@pytest.mark.slow  # CI runs -m slow too (.ci/run); a lighter test covers this by default
def test_export_cli(trained, tmp_path):
    from tests.conftest import run_cli

    ckpt = trained("sample_sentiment") / "checkpoints" / "best.ckpt"
    done = run_cli("export", f"ckpt={ckpt}", f"out={tmp_path / 'cli'}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    done = run_cli("export", f"ckpt={tmp_path / 'nope.ckpt'}", f"out={tmp_path / 'cli2'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "ckpt=" in done.stderr
