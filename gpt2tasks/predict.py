"""`python -m gpt2tasks predict ckpt=<.ckpt or exported folder> input=<file> output=<file.jsonl>`.

Reads the input with the task's own readers and tokenization (labels not needed), runs the model
in length-sorted, dynamically padded batches (Lightning's `trainer.predict`, with its progress bar
and the run's precision), puts the outputs back in input order by row index, and writes one JSON
line per input row. What a line holds per kind is each TaskModule's `predict_rows`.
The output is written atomically once everything is predicted: a failure leaves no partial file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gpt2tasks.errors import UserError
from gpt2tasks.outputs import check_writable, write_atomic

log = logging.getLogger("gpt2tasks")

USAGE = """usage: python -m gpt2tasks predict ckpt=<path.ckpt | exported folder> input=<file> output=<file.jsonl>
                               [task=<name>] [batch_size=N] [overwrite=true] [trust_checkpoint=false]
                               [key=value ...]

Predicts every row of input= (the task's training formats: CSV/TSV/JSON/JSONL, TXT for LM, CoNLL
for token tasks, SQuAD JSON/JSONL for QA; labels are not needed) and writes one JSON line per row,
in input order: {"index": row number from 0, "id": the row's data.id_column value if it has one, ...}
  seq_cls    "label" + "scores" (softmax per class); multi-label "labels" (sigmoid > 0.5) + "scores";
             regression "value"
  token_cls  "tags" (one per input word) + "entities" [{"type", "start", "end" (word index,
             exclusive), "text"}]
  qa         "answer" + "score" (start + end logit) + "start"/"end" (character offsets in the
             context; null for SQuAD v2's no answer, whose text is "")
  mc         "choice" (index of the chosen ending) + "scores" (softmax over the endings)
  lm         "continuation" of the text as a prompt, up to the first eos; options
             max_new_tokens=32 do_sample=false top_p=1.0 temperature=1.0 (seed=<int> for sampling)
task=<name> picks the head of a multi-task .ckpt (its data.* overrides apply to that task).
batch_size= sets the batch (default: the run's data.eval_batch_size, else 2 x data.batch_size).
An existing output is refused unless overwrite=true; the output's folder is checked before any work.
A .ckpt is loaded as plain data; trust_checkpoint=true loads one holding other Python objects (which
can run code) if you trust where it comes from. key=value overrides apply to the run's saved
config, e.g. data.text_column=sentence data.max_length=256 precision=bf16-mixed trainer.accelerator=cpu."""

OPTIONS = ("ckpt", "input", "output", "batch_size", "overwrite", "task", "trust_checkpoint")


def predict(ckpt: str, input: str, output: str, overrides: Sequence[str] = (), batch_size: int | None = None,
            overwrite: bool = False, options: dict[str, Any] | None = None, task: str | None = None,
            trust_checkpoint: bool = False) -> list[dict[str, Any]]:
    """Predict every row of `input` with `ckpt`, write `output` (JSON lines); returns the lines.
    `options`: the kind's predict options (e.g. LM max_new_tokens); `task`: the head of a multi-task .ckpt;
    `trust_checkpoint`: load a .ckpt that holds more than plain data (see evaluation.load_checkpoint)."""
    output_path = check_paths(input, output, overwrite)  # before any work
    import lightning as L  # heavy imports only once the arguments are known to be usable

    from gpt2tasks.datamodules.base import PREDICT
    from gpt2tasks.evaluation import inference_trainer
    from gpt2tasks.inference import load_for_inference

    if batch_size is not None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise UserError(f"batch_size={batch_size!r} must be a positive integer. Fix: e.g. batch_size=64.")
        overrides = [*overrides, f"data.eval_batch_size={batch_size}"]
    cfg, datamodule, module = load_for_inference(ckpt, overrides, "predict", USAGE, task=task,
                                                 trust_checkpoint=trust_checkpoint)
    module.predict_options = check_options(type(module), cfg.task.kind, options or {})
    datamodule.setup_predict(input)
    log.info("predict: %d rows of %s with %s (%s)", len(datamodule.examples[PREDICT]), input, ckpt, cfg.task.kind)

    trainer = inference_trainer(cfg)
    L.seed_everything(int(cfg.seed), verbose=False)  # sampled LM continuations are repeatable
    # dataloaders=, not datamodule=: Lightning would call setup() and load the run's eval sets.
    trainer.predict(module, dataloaders=datamodule.predict_dataloader(), return_predictions=False)

    rows = module.predict_rows(module.predicted, datamodule)
    lines = [{**row_identity(example, i, datamodule.spec.id_column), **prediction}
             for i, (example, prediction) in enumerate(zip(datamodule.examples[PREDICT], rows, strict=True))]
    write_atomic(output_path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    log.info("predict: wrote %d lines to %s", len(lines), output_path)
    return lines


def row_identity(example: dict, index: int, id_column: str) -> dict[str, Any]:
    """What ties an output line to its input row: its index, and its id when the row has one."""
    return {"index": index, **({"id": example[id_column]} if example.get(id_column) is not None else {})}


def check_paths(input: str, output: str, overwrite: bool) -> Path:
    """The output path, once input= is a file and output= may be written."""
    for key, value in (("input", input), ("output", output)):
        if not str(value).strip():
            raise UserError(f"{key}= is empty. Fix: e.g. input=data/test.csv output=predictions.jsonl.")
    if not Path(input).expanduser().is_file():
        raise UserError(f"input={input}: {'a folder' if Path(input).expanduser().is_dir() else 'file not found'} "
                        f"(cwd is {Path.cwd()}). Fix: pass the file to predict, e.g. input=data/test.csv.")
    path = Path(output).expanduser()
    if path.is_dir():
        raise UserError(f"output={output} is a folder. Fix: give a file path, e.g. output=predictions.jsonl.")
    if path.exists() and not overwrite:
        raise UserError(f"output={output} already exists. Fix: choose another output file, or add "
                        "overwrite=true to replace it.")
    check_writable(path, "output")
    return path


def check_options(module_cls, kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The kind's predict options, defaults filled in; unknown or invalid ones are a UserError."""
    defaults = module_cls.predict_option_defaults
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        one = len(unknown) == 1
        raise UserError(f"predict: {', '.join(unknown)} {'is not an option' if one else 'are not options'} of {kind} "
                        f"predictions (its options: {', '.join(defaults) or 'none'}). Fix: drop {'it' if one else 'them'}.")
    filled = {**defaults, **options}
    problems = module_cls.check_predict_options(filled)
    if problems:
        raise UserError("predict: " + " ".join(problems) + " Fix: see `python -m gpt2tasks predict --help` for "
                        "the defaults.")
    return filled


def kind_option_names() -> set[str]:
    from gpt2tasks.tasks import KINDS

    return {name for kind in KINDS.values() for name in kind.module.predict_option_defaults}


def main(argv: list[str]) -> None:
    from gpt2tasks.cli import parse_bool, run_command

    def job() -> None:
        options, rest = parse_args(argv, OPTIONS)
        missing = [key for key in ("ckpt", "input", "output") if key not in options]
        if missing:
            raise UserError(f"predict needs {', '.join(f'{k}=' for k in missing)}. Fix: e.g. python -m gpt2tasks "
                            "predict ckpt=<run>/checkpoints/best.ckpt input=data.csv output=predictions.jsonl.\n"
                            + USAGE)
        overwrite = parse_bool("overwrite", options.pop("overwrite", False))
        trust = parse_bool("trust_checkpoint", options.pop("trust_checkpoint", False))
        check_paths(options["input"], options["output"], overwrite)  # fail fast, before the heavy imports
        kind_options, overrides = parse_args(rest, kind_option_names())
        options.update(kind_options)
        task = options.pop("task", None)
        predict(str(options.pop("ckpt")), str(options.pop("input")), str(options.pop("output")), overrides,
                batch_size=options.pop("batch_size", None), overwrite=overwrite,
                task=None if task is None else str(task), options=options, trust_checkpoint=trust)

    run_command(argv, USAGE, job)


def parse_args(argv: Sequence[str], names: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """(the options in `names`, with YAML-typed values; the other arguments) from key=value arguments."""
    options, overrides = {}, []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in names:
            overrides.append(arg)  # config overrides are checked against the run's config by apply_overrides
            continue
        if key in ("ckpt", "input", "output", "task"):
            options[key] = value  # paths stay strings
            continue
        try:
            options[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            options[key] = value
    return options, overrides
