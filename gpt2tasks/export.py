"""`python -m gpt2tasks export ckpt=<path> out=<dir>`: a Hugging Face folder anyone can load.

The folder needs no gpt2tasks to use: `config.json` (task fields, id2label, pad_token_id),
`model.safetensors`, the tokenizer (pad token, right padding, and the input layout our datamodule
used, so `pipeline(...)` feeds the model what it was trained on), `generation_config.json` for
heads that generate, and a model card. `gpt2tasks.json` beside them lets `gpt2tasks predict` and
`eval` rebuild the exact preprocessing.

LoRA runs export merged (a plain model) by default, or as a PEFT adapter folder.
Everything is written to `<out>.partial-export` beside `out` and moved into place at the end, so a
failure never leaves a half-written export, and a failed push leaves the local export intact. A
staging folder left by a killed export is removed by the next export to the same `out`. Every export
carries `.gpt2tasks-export` (outputs.EXPORT_MARKER): overwrite=true replaces only a folder that
carries it (or an export of a version before it), and staging folders are removed only with it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

# torch, peft, gpt2tasks.build and the kind registry (gpt2tasks.tasks) are imported where used:
# `export --help` answers without them.
from gpt2tasks import multitask, runfile
from gpt2tasks.cli import Command, Option, done_lines, run_command
from gpt2tasks.errors import UserError
from gpt2tasks.literal import literal_config
from gpt2tasks.outputs import (EXPORT_MARKER, MULTITASK_EXPORT_TITLE, check_writable, current_umask, is_export,
                               protected_reason, remove_marked, replace_problem)
from gpt2tasks.plots import PLOTS_DIR, run_name

log = logging.getLogger(__name__)


@dataclass
class ExportOptions:
    """export's options (`python -m gpt2tasks export key=value ...`: EXPORT parses them into these)."""

    ckpt: str | None = field(default=None, metadata={"metavar": "<path.ckpt>", "help": "a checkpoint of a `train` run"})
    out: str | None = field(default=None, metadata={"metavar": "<dir>", "help": "the folder to write"})
    task: str | None = field(default=None, metadata={
        "metavar": "<name>", "help": "one task of a multi-task checkpoint (default: every task, one folder each)"})
    merge_lora: bool = field(default=True, metadata={
        "help": "LoRA runs: plain weights with LoRA merged in, or a PEFT adapter folder (false)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty out="})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the folder to hub.repo_id"})
    hub_repo_id: str | None = field(default=None, metadata={"metavar": "<user/name>", "help": "the Hub repository"})
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repository private"})
    hub_commit_message: str = field(default="Upload model exported by gpt2tasks",
                                    metadata={"metavar": "<text>", "help": "the Hub commit's message"})
    # GPT-2's own license; set it to your data's terms where those differ
    license: str = field(default="mit", metadata={"metavar": "<id>", "help": "the model card's license"})
    trust_checkpoint: bool = field(default=False,
                                   metadata={"help": "load a .ckpt holding more than plain data (see below)"})


EXPORT = Command(
    "export",
    tuple(Option(f.name.replace("hub_", "hub."), "bool" if f.type == "bool" else "str", f.default, **f.metadata)
          for f in fields(ExportOptions)),
    about="""Writes a Hugging Face folder (config, safetensors weights, tokenizer, model card) that plain
`transformers` loads. LoRA runs are merged into plain weights (merge_lora=true, default) or saved as
a PEFT adapter (merge_lora=false). push_to_hub=true uploads the folder to hub.repo_id with the token
from HF_TOKEN or `hf auth login`. An existing non-empty out= is replaced only with overwrite=true.
The model card reports the exported checkpoint's own step, epoch and metrics (the run's metrics.json
only when it scored these weights; a checkpoint saved between validations is evaluated on the run's
eval files if they are here, else the card says it has no metrics and why).
A multi-task checkpoint exports one folder per task, out/<task>/ (task=<name>: that one only), each
loadable with its task's AutoModelFor... class; with merge_lora=false, out/base/ (the frozen backbone)
plus one PEFT adapter folder per task. The .ckpt is loaded as plain data; trust_checkpoint=true loads
one holding other Python objects (which can run code) if you trust where it comes from.""",
    example="ckpt=outputs/<task>/<time>/checkpoints/best.ckpt out=exported/", required=("ckpt", "out"))
USAGE = EXPORT.usage()


def parse_options(argv: list[str]) -> ExportOptions:
    return ExportOptions(**EXPORT.parse(argv)[0])


def export(options: ExportOptions) -> Path:
    """Write the export folder (and push it when asked); returns its path."""
    if not options.ckpt or not options.out:
        raise UserError(f"export needs ckpt=<path> and out=<dir>. Fix: e.g. ckpt=outputs/<task>/<time>/"
                        f"checkpoints/best.ckpt out=exported/my-model.\n{USAGE}")
    out = Path(options.out).expanduser().absolute()
    if options.push_to_hub:  # before any work: a push that cannot happen is refused up front
        check_repo_id(options.hub_repo_id)
        token = hub_token()
    clean_stale_staging(out)
    check_out_dir(out, options.overwrite)
    checkpoint = runfile.load_checkpoint(options.ckpt, options.trust_checkpoint)
    info = checkpoint["gpt2tasks"]
    task = runfile.select_task(info, options.task, "export", required=False)
    cfg = literal_config(info["config"])
    cfg.model.compile = False  # an export is eager weights; compiling would only cost time
    cfg.model.gradient_checkpointing = False
    module, scores = restore_scored(checkpoint, cfg, Path(options.ckpt))  # the run's model with its weights
    module.eval()
    with staging_dir(out, options.overwrite) as tmp:
        export_tasks(module, cfg, info, task, Path(options.ckpt), options, tmp, scores)
    if options.push_to_hub:
        push(out, options.hub_repo_id, options.hub_private, options.hub_commit_message, token)
    return out


def export_tasks(module, cfg, info: dict, task: str | None, ckpt: Path, options: ExportOptions, folder: Path,
                 scores: Scores) -> None:
    """Every task of the run (or `task`) as a standard HF folder: a single-task run's is `folder`
    itself (with the run's pictures); a multi-task run's are `<folder>/<task>/` (its metrics the
    run's `<task>/...` ones, its pictures the run's plots/<task>/) plus a README listing them,
    and with merge_lora=false `<folder>/base/` (the frozen backbone), each task folder a PEFT
    adapter (adapters + head) over it."""
    from gpt2tasks import lora, runspec
    from gpt2tasks.build import tokenizer_from_files
    from gpt2tasks.tasks import KINDS

    run = runspec.parse(cfg)
    adapter = run.peft.enabled and not options.merge_lora
    if adapter:
        check_adapter_export(info)
    views, infos = multitask.task_views(cfg), multitask.task_infos(info)
    metrics = scores.metrics
    names = [task] if task else list(views)
    for (name, view), view_info in zip(views.items(), infos.values(), strict=True):
        if name not in names:
            continue
        adapter_name = name if run.per_task_adapters else "default"
        model = lora.standalone(module.task_module(name).model, adapter_name, not adapter, run.peft,
                                KINDS[view.task.kind].module.head_modules)
        tokenizer = tokenizer_from_files(info["tokenizer_files"])
        if not module.several:
            write_folder(folder, model, tokenizer, view, view_info, scores, adapter, options, run_name(view),
                         run_plots(ckpt, scores.of_run))
        else:
            own = {k[len(name) + 1:]: v for k, v in metrics.items() if k.startswith(f"{name}/")}
            write_folder(folder / name, model, tokenizer, view, view_info, replace(scores, metrics=own), adapter,
                         options, run_name(view), run_plots(ckpt, scores.of_run, task=name))
    if module.several:
        if adapter:
            lora.plain_backbone(module.backbone).save_pretrained(folder / "base")
            tokenizer_from_files(info["tokenizer_files"]).save_pretrained(folder / "base")
        (folder / "README.md").write_text(multitask_card(names, adapter, cfg))


def write_folder(folder: Path, model, tokenizer, cfg, info: dict, scores: Scores, adapter: bool,
                 options: ExportOptions, title: str, pictures: list[Path] = ()) -> None:
    """One task's export: weights (or adapter), tokenizer, gpt2tasks.json, model card (+ the run's
    pictures under plots/, shown in the card)."""
    folder.mkdir(parents=True, exist_ok=True)
    for picture in pictures:
        (folder / PLOTS_DIR).mkdir(exist_ok=True)
        shutil.copyfile(picture, folder / PLOTS_DIR / picture.name)
    if adapter:
        save_adapter(model, cfg, info, folder)
    else:
        save_model(model, cfg, folder)
    save_tokenizer(tokenizer, cfg, folder)
    runfile.write_export_info(folder, cfg, info, adapter)
    (folder / "README.md").write_text(model_card(cfg, info, scores, adapter, options, title,
                                                 [p.name for p in pictures]))


def multitask_card(names: list[str], adapter: bool, cfg) -> str:
    from gpt2tasks.tasks import KINDS

    rows = "\n".join(f"| [`{n}/`]({n}/) | {cfg.tasks[n].task.kind} | {KINDS[cfg.tasks[n].task.kind].auto_class} |"
                     for n in names)
    layout = ("`base/` is the frozen GPT-2 backbone; each task folder is a PEFT adapter (LoRA + the task's head) "
              "over it, loadable as its README shows." if adapter else
              "Each task folder is a complete Hugging Face model: the shared backbone and that task's head.")
    return f"""{MULTITASK_EXPORT_TITLE}

One GPT-2 backbone was trained with one head per task. {layout}

| folder | kind | loads with |
|---|---|---|
{rows}
"""


# ---- loading ----------------------------------------------------------------------------------
# The run's pictures of its history (every validation, the train loss): true of any of its
# checkpoints. The others (confusion matrix, per-class reports) show metrics.json's evaluation.
HISTORY_PICTURES = ("curves.png", "perplexity.png")


def run_plots(ckpt: Path, of_run: bool = True, task: str | None = None) -> list[Path]:
    """The run's pictures (plots/*.png beside checkpoints/; a task of a multi-task run: its own,
    plots/<task>/*.png), or [] when there are none; those of the run's final evaluation only when
    the exported weights are the ones it scored (`of_run`)."""
    plots = ckpt.expanduser().absolute().parent.parent / PLOTS_DIR
    folder = plots / task if task else plots
    if plots.is_symlink() or folder.is_symlink():
        return []  # not the run's own pictures: a link could point anywhere (and an export may be pushed)
    # regular files only, never through a link: the export copies their bytes, and may push them
    pictures = sorted(p for p in folder.glob("*.png") if p.is_file() and not p.is_symlink())
    return [p for p in pictures if of_run or p.name in HISTORY_PICTURES]


@dataclass
class Scores:
    """What the model card reports of the exported weights: their metrics, one sentence saying which
    weights (checkpoint, step, epoch) and where the numbers come from or why there are none, and
    whether they are the run's metrics.json (so its evaluation pictures show these weights too)."""

    metrics: dict[str, float]
    note: str
    trained: str  # how far training had gone at these weights, e.g. "step 12, after 2 epochs"
    weights: dict[str, Any]  # {"checkpoint": its file name, "step": global_step, "epoch": Lightning's epoch}
    of_run: bool = False


def trained_for(checkpoint: dict) -> str:
    """How far training had gone when a checkpoint was saved, from its own counters (Lightning's
    fit-loop progress, pinned lightning 2.6): "step 12, after 2 epochs" or "step 3, 3 batches into
    epoch 1"; never the config's limits, which a stopped run did not reach."""
    if "global_step" not in checkpoint:  # `combine` joins the heads of several runs: no one training step
        return "training step not recorded (a combined checkpoint)"
    step = int(checkpoint["global_step"])
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = loop.get("epoch_progress", {}).get("current", {})
    batches = loop.get("epoch_loop.batch_progress", {}).get("current", {}).get("processed")
    if not epochs:  # not a training checkpoint of Lightning's format: its epoch counter alone
        return f"step {step}, epoch {int(checkpoint.get('epoch', 0))}"
    done = int(epochs.get("completed", 0))
    if int(epochs.get("ready", 0)) > done and batches:  # saved inside an epoch
        return f"step {step}, {int(batches)} batches into epoch {done + 1}"
    return f"step {step}, after {done} epoch{'' if done == 1 else 's'}"


def restore_scored(checkpoint: dict, cfg, ckpt: Path):
    """(the checkpoint's module with its weights, the Scores of those weights). Only numbers of
    exactly these weights are reported: the run's metrics.json where it scored them (best.ckpt),
    else the validation stored in the checkpoint when it was saved right after one, else a new
    evaluation on the run's eval data when it is here; otherwise none, and the card says why."""
    from gpt2tasks.build import restore
    from gpt2tasks.evaluation import score

    trained = trained_for(checkpoint)
    weights = {"checkpoint": ckpt.name, "step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch")}

    def scores(metrics: dict[str, float], source: str, of_run: bool = False) -> Scores:
        return Scores(metrics, f"Metrics of these weights ({ckpt.name}, {trained}): {source}", trained, weights, of_run)

    saved = checkpoint["gpt2tasks"].get("validation") or {}
    if saved.get("metrics") and saved.get("step") == checkpoint.get("global_step"):
        module = restore(checkpoint, cfg, load_eval_sets=False)[2]
        run = run_metrics(ckpt)
        if run and all(run.get(k) == v for k, v in saved["metrics"].items()):  # it scored these weights
            return module, scores(run, "the run's final evaluation (its metrics.json).", of_run=True)
        return module, scores(dict(sorted(saved["metrics"].items())),
                              "the validation of training that scored them, stored in the checkpoint.")
    problems = missing_eval_files(cfg)
    if not problems:
        log.info("export: no evaluation of %s (%s) is stored in it: evaluating it on the run's eval data",
                 ckpt.name, trained)
        try:
            _, datamodule, module = restore(checkpoint, cfg)
            metrics = score(cfg, module, datamodule)
        except UserError as exc:  # data unreadable here, the run's accelerator absent, ...
            problems = [str(exc).split(" Fix:")[0].rstrip(".")]
        else:
            return module, scores(metrics, f"evaluated when exporting, on the run's eval data ({eval_data(cfg)}).")
    module = restore(checkpoint, cfg, load_eval_sets=False)[2]
    why = (f"No metrics: no evaluation of these weights ({ckpt.name}, {trained}) is stored in the checkpoint "
           "(it was saved between validations, or by an older gpt2tasks), and they could not be evaluated here "
           f"({'; '.join(problems)}). To score them: `python -m gpt2tasks eval ckpt={ckpt}` where the run's data "
           "is, or add data.validation_file=<file>.")
    log.warning("export: %s", why)
    return module, Scores({}, why, trained, weights)


def eval_files(cfg) -> list[tuple[str, str]]:
    """The run's eval files as (config key, path), every task's in a multi-task run. A set read
    from the Hub (data.hub_path) has no file: it is loaded as in training."""
    found = []
    for name, view in multitask.task_views(cfg).items():
        prefix = f"tasks.{name}.data." if multitask.is_multitask(cfg) else "data."
        data = view.data
        keys = [("validation_file", data.get("validation_file")), ("test_file", data.get("test_file")),
                *((f"extra_validation.{n}.file", e.get("file")) for n, e in (data.get("extra_validation") or {}).items())]
        found += [(prefix + key, str(file)) for key, file in keys if file]
    return found


def eval_data(cfg) -> str:
    """The run's eval data in words, for the model card."""
    files = eval_files(cfg)
    return ", ".join(f"{key}={path}" for key, path in files) if files else f"the Hub dataset {cfg.data.get('hub_path')}"


def missing_eval_files(cfg) -> list[str]:
    """The run's eval files that are not here (e.g. the run came from another machine)."""
    return [f"{key}={path} does not exist" for key, path in eval_files(cfg)
            if not os.path.isfile(os.path.expanduser(path))]


def run_metrics(ckpt: Path) -> dict[str, float]:
    """The run's metrics.json (checkpoints/ sits beside it), or {} when it is not there or holds
    no table (the card lists only its numbers: card_metrics)."""
    path = ckpt.expanduser().absolute().parent.parent / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


# ---- writing ----------------------------------------------------------------------------------
def check_out_dir(out: Path, overwrite: bool) -> None:
    """An existing `out` is replaced as a whole (renamed aside, then removed): it must be a real folder,
    never the working directory, home or a root (even empty), and, when not empty, an export
    (outputs.replace_problem) replaced only with overwrite=true."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        what = f"a symbolic link (to {os.readlink(out)})" if out.is_symlink() else "a file"
        raise UserError(f"out={out} is {what}. Fix: choose a new folder path for the export.")
    reason = protected_reason(out) if out.exists() else None
    if reason:
        raise UserError(f"out={out} is {reason}; an export replaces its out= folder as a whole. Fix: choose a folder "
                        f"of its own, e.g. out={out / 'my-model'}.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"out={out} is not empty. Fix: pick a new out= folder, or add overwrite=true to "
                            "replace its contents.")
        problem = replace_problem(out, "out", is_export, "export")
        if problem:
            raise UserError(problem)
    check_writable(out.parent / f"{out.name}{STAGING_SUFFIX}", "out", shown=out)  # staged beside out


# Beside `out`: the export being written, and the previous export while it is being replaced.
STAGING_SUFFIX, PREVIOUS_SUFFIX = ".partial-export", ".previous-export"


def clean_stale_staging(out: Path) -> None:
    """What a killed export left beside `out`: its staging folder (removed), and a previous export
    moved aside for replacement while `out` itself is missing (put back, as before that export)."""
    partial, previous = out.parent / f"{out.name}{STAGING_SUFFIX}", out.parent / f"{out.name}{PREVIOUS_SUFFIX}"
    if partial.exists() or partial.is_symlink():
        log.warning("removing %s, left by an export that did not finish", partial)
        remove_marked(partial, is_export, "export")  # only with the export marker staging_dir writes first
    if previous.exists() or previous.is_symlink():
        if out.exists() or out.is_symlink() or previous.is_symlink():
            remove_marked(previous, is_export, "export")  # the replacement had finished: this is the old export
        else:
            log.warning("restoring %s from %s (an export replacing it did not finish)", out, previous)
            previous.rename(out)


@contextmanager
def staging_dir(out: Path, overwrite: bool):
    """`<out>.partial-export` beside `out`, which replaces `out` only when the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{out.name}{STAGING_SUFFIX}"
    remove_marked(tmp, is_export, "export")  # left by a killed export (clean_stale_staging ran at the start)
    tmp.mkdir()
    try:
        (tmp / EXPORT_MARKER).write_text("written by gpt2tasks export\n")  # first: the staging folder is ours
        yield tmp
        # Some writers make owner-only files; an export is meant to be shared.
        umask = current_umask()
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        # Same filesystem, so the moves are renames: the old export is removed only once the new
        # one is complete, and `out` is never a mix of the two.
        old = out.parent / f"{out.name}{PREVIOUS_SUFFIX}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        remove_marked(old, is_export, "export")  # checked to be an export before it was moved aside
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        clean_stale_staging(out)  # puts the previous export back if it was moved aside
        raise


def save_model(model, cfg, folder: Path) -> None:
    config = model.config  # save_pretrained records the head class in config.architectures
    if model.can_generate():
        # Generation stops at eos and pads with the pad token, as gpt2tasks samples do.
        gen = model.generation_config
        gen.pad_token_id, gen.eos_token_id = config.pad_token_id, config.eos_token_id
        gen.bos_token_id = config.bos_token_id
        gen.max_new_tokens = int(cfg.task.get("sample_max_new_tokens", 50))
    model.save_pretrained(folder)  # safetensors (+ generation_config.json for generating heads)


def check_adapter_export(info: dict) -> None:
    if not info.get("frozen_base_from"):
        raise UserError("merge_lora=false: an adapter only makes sense over base weights others can load, and "
                        "this run's base is not a published or local checkpoint (random init, or token rows "
                        "added to it). Fix: export merged (merge_lora=true, the default).")


def save_adapter(model, cfg, info: dict, folder: Path) -> None:
    """A PEFT adapter folder: adapters + the trained head, over the base named in adapter_config.json.
    config.json (the task's: labels, pad token) rides along so the base can be loaded with the head."""
    model.peft_config["default"].base_model_name_or_path = info["frozen_base_from"]
    model.save_pretrained(folder)
    base = model.get_base_model()
    base.config.architectures = [type(base).__name__]
    base.config.save_pretrained(folder)


def save_tokenizer(tokenizer, cfg, folder: Path) -> None:
    """The run's tokenizer, set up so `pipeline` tokenizes exactly as the datamodule did."""
    from gpt2tasks.tasks import KINDS

    tokenizer.padding_side = "right"
    tokenizer.init_kwargs["padding_side"] = "right"
    layout = KINDS[cfg.task.kind].tokenizer_layout
    if layout == "words":
        # Words were tokenized with a leading space; raw text given to the pipeline must be too.
        from tokenizers import pre_tokenizers

        tokenizer.add_prefix_space = tokenizer.init_kwargs["add_prefix_space"] = True
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    elif layout == "question_context" or (layout == "pair" and cfg.data.get("text_pair_column")):
        # A pair as our datamodules build it: first + separator + second (+ the summary eos, QA's
        # no-answer position).
        sep_ids = tokenizer(cfg.data.pair_separator, add_special_tokens=False)["input_ids"]
        specials = [{"id": "SEP", "ids": sep_ids, "tokens": tokenizer.convert_ids_to_tokens(sep_ids)}]
        pair = "$A:0 SEP:0 $B:1"
        if layout == "question_context":
            specials.append({"id": "SUMMARY", "ids": [tokenizer.eos_token_id], "tokens": [tokenizer.eos_token]})
            pair += " SUMMARY:1"
        add_template(tokenizer, "$A:0", pair, specials)
    elif layout == "bos":
        # Training documents start right after an eos; with add_special_tokens=True a prompt does too.
        add_template(tokenizer, "BOS $A", "BOS $A $B:1", [("BOS", tokenizer.eos_token_id)])
    tokenizer.save_pretrained(folder)


def add_template(tokenizer, single: str, pair: str, special_tokens: list) -> None:
    """Special tokens added after the byte-level post-processing, so offsets stay those of the
    byte-level tokens (what QA answers are cut from)."""
    from tokenizers import processors

    backend = tokenizer.backend_tokenizer
    template = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special_tokens)
    backend.post_processor = processors.Sequence([backend.post_processor, template])


# ---- model card -------------------------------------------------------------------------------
def model_card(cfg, info: dict, scores: Scores, adapter: bool, options: ExportOptions, title: str,
               pictures: list[str] = ()) -> str:
    """`scores`: the exported weights' own metrics and where they come from (restore_scored)."""
    from gpt2tasks.tasks import KINDS

    metrics = scores.metrics
    kind = KINDS[cfg.task.kind]
    model = cfg.model
    base = str(model.name_or_path) if model.get("pretrained", True) and model.get("name_or_path") else None
    hub_base = base if base and not os.path.isdir(os.path.expanduser(base)) else None
    meta: dict[str, Any] = {"library_name": "peft" if adapter else "transformers", "license": options.license,
                            "pipeline_tag": kind.pipeline_tag, "tags": ["gpt2", "gpt2tasks", cfg.task.name]}
    if hub_base:
        meta["base_model"] = hub_base
    if cfg.data.get("hub_path"):
        meta["datasets"] = [str(cfg.data.hub_path)]
    metrics, more = card_metrics(metrics)
    if metrics:
        meta["model-index"] = [{"name": title, "results": [{
            "task": {"type": kind.pipeline_tag},
            "dataset": {"name": str(cfg.data.get("hub_path") or cfg.task.name), "type": str(cfg.task.name)},
            # args: which weights each number scores (the Hub's schema has no other place for it)
            "metrics": [{"type": name.split("/", 1)[1], "name": name, "value": float(value), "args": scores.weights}
                        for name, value in metrics.items() if "/" in name]}]}]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    hyper = {"task": cfg.task.name, "model": base or "random init (model.pretrained=false)",
             "learning rate": cfg.optim.lr, "batch size (per device)": cfg.data.batch_size,
             "trained (these weights)": scores.trained,
             "limits": f"trainer.max_epochs={cfg.trainer.max_epochs}, trainer.max_steps={cfg.trainer.max_steps}",
             "warmup ratio": cfg.optim.warmup_ratio, "weight decay": cfg.optim.weight_decay,
             "max length": cfg.data.max_length, "precision": cfg.precision, "seed": cfg.seed}
    if cfg.get("peft") is not None and cfg.peft.method == "lora":
        hyper["LoRA"] = f"r={cfg.peft.r}, alpha={cfg.peft.alpha}, dropout={cfg.peft.dropout}, targets={cfg.peft.targets}"
    rows = "\n".join(f"| {k} | {md_text(v)} |" for k, v in hyper.items())
    table = "\n".join(f"| {md_text(k)} | {v:.4f} |" for k, v in metrics.items())
    if more:
        table += f"\n| ({more} more in the run's metrics.json) | |"
    note = md_text(scores.note)  # it names the run's files: literal text
    evaluation = f"{note}\n\n| metric | value |\n|---|---|\n{table}\n" if metrics else f"{note}\n"
    command = info.get("command") or "(trained from Python; no command line recorded)"
    shown = "".join(f"\n![{Path(name).stem}]({PLOTS_DIR}/{name})\n" for name in pictures)
    figures = f"\n## Training curves and evaluation pictures\n{shown}" if pictures else ""
    return f"""---
{front}---

# {md_text(title)}

GPT-2 fine-tuned for {md_code(cfg.task.name)} ({kind.pipeline_tag}) with gpt2tasks.
{usage_snippet(kind, adapter, base)}
## Training

{fenced(command)}

| hyperparameter | value |
|---|---|
{rows}
{labels_section(info.get("label_space") or {})}
## Evaluation

{evaluation}{figures}"""


# The card's text comes from the run (task and model names, the command line, metric names with
# entity types from the user's tags): every piece is written as literal text, never as markup.
# Up to MAX_CARD_METRICS metrics are listed (a run with thousands of entity types reports four
# per type); metrics.json keeps them all.
MAX_CARD_METRICS = 50
PER_TYPE = ("_precision", "_recall", "_f1", "_number")  # token classification's metrics per entity type
_MARKUP = re.compile(r"([\\`*_\[\]<>|~&$#!])")  # what starts inline markup, HTML, tables or math


def md_text(value: Any) -> str:
    """`value` as literal markdown text on one line (also inside a table cell)."""
    return _MARKUP.sub(r"\\\1", " ".join(str(value).splitlines()))


def md_code(value: Any) -> str:
    """`value` as inline code, delimited by more backticks than it holds (one line)."""
    text = " ".join(str(value).splitlines())
    ticks = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}" if "`" in text else f"`{text}`"


def fenced(text: str, language: str = "") -> str:
    """`text` as a fenced code block whose fence is longer than any backtick run inside it."""
    fence = "`" * max(3, max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def labels_section(label_space: dict) -> str:
    """The classes (config.json's id2label), at most MAX_CARD_METRICS of them; "" for kinds without
    class names (regression, QA, LM; multiple choice's are the choice numbers)."""
    names = label_space.get("names") or []
    if not names or label_space.get("problem_type") == "multiple_choice":
        return ""
    rows = "\n".join(f"| {i} | {md_text(name)} |" for i, name in enumerate(names[:MAX_CARD_METRICS]))
    more = f"\n| | ({len(names) - MAX_CARD_METRICS} more in config.json's id2label) |" if len(names) > MAX_CARD_METRICS else ""
    return f"""
## Labels

| id | label |
|---|---|
{rows}{more}
"""


def card_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], int]:
    """The metrics the card lists (finite numbers only, at most MAX_CARD_METRICS: the run's overall
    ones before the per-entity-type ones such as `val/PER_f1`), and how many are left out."""
    numbers = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    order = sorted(numbers, key=lambda name: name.endswith(PER_TYPE))  # stable: overall metrics first
    kept = set(order[:MAX_CARD_METRICS])
    return {k: v for k, v in numbers.items() if k in kept}, len(numbers) - len(kept)


def usage_snippet(kind, adapter: bool, base: str | None) -> str:
    """How to load the export (`kind`: its registry entry, gpt2tasks.tasks.KINDS)."""
    cls = kind.auto_class
    if adapter:
        return f"""
A LoRA adapter (PEFT) over {md_code(base)}:

```python
from peft import PeftModel
from transformers import AutoConfig, AutoTokenizer, {cls}

config = AutoConfig.from_pretrained("<this folder>")  # the task head's labels and pad token
base = {cls}.from_pretrained({json.dumps(base)}, config=config)
model = PeftModel.from_pretrained(base, "<this folder>")
tokenizer = AutoTokenizer.from_pretrained("<this folder>")
```
"""
    if not kind.pipeline:
        load = (f"from transformers import AutoTokenizer, {cls}\n\nmodel = {cls}.from_pretrained(\"<this folder>\")\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"<this folder>\")")
    else:
        load = f"from transformers import pipeline\n\npipe = pipeline(\"{kind.pipeline_tag}\", model=\"<this folder>\")"
    return f"\n```python\n{load}\n```\n"


# ---- the Hub ----------------------------------------------------------------------------------
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def check_repo_id(repo_id: str | None) -> None:
    if not repo_id or not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise UserError(f"hub.repo_id={repo_id!r} is not a Hub repository id. Fix: hub.repo_id=<user or "
                        "org>/<name>, letters, digits, '-', '_' and '.' only, e.g. hub.repo_id=alice/gpt2-sst2.")


def hub_token() -> str:
    """HF_TOKEN, else the cached `hf auth login` token. Never printed, logged or written anywhere."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise UserError("push_to_hub=true needs a Hugging Face token and none was found. Fix: set HF_TOKEN "
                        "(a write token from https://huggingface.co/settings/tokens) or run `hf auth login`.")
    return token


def push(folder: Path, repo_id: str, private: bool, message: str, token: str) -> str:
    from huggingface_hub import HfApi

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise UserError(f"push_to_hub=true but HF_HUB_OFFLINE is set, so nothing can be uploaded. The export in "
                        f"{folder} is complete. Fix: unset HF_HUB_OFFLINE and run the export again with "
                        "overwrite=true, or upload it with `hf upload`.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message,
                                   ignore_patterns=[EXPORT_MARKER])  # the local folder's mark, not the model's
    except Exception as exc:  # network, auth, permissions: all leave the local export as it is
        detail = str(exc).replace(token, "***").splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"push_to_hub: uploading {folder} to {repo_id} failed ({detail}). The local export is "
                        "complete. Fix: check the token has write access and the network, then retry, or upload "
                        f"it with `hf upload {repo_id} {folder}`.") from None
    url = getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"
    log.info("pushed %s to %s", folder, url)
    return url


def main(argv: list[str]) -> None:
    def job(options: dict[str, Any], _: list[str]) -> None:
        out = export(ExportOptions(**options))
        print(done_lines(f"exported {Path(options['ckpt']).expanduser().absolute()} as a Hugging Face folder",
                         [("folder", out), ("pushed", options["hub_repo_id"] if options["push_to_hub"] else None)]))

    run_command(argv, EXPORT, job)
