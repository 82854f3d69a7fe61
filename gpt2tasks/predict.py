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

from gpt2tasks.cli import Command, Option, run_command
from gpt2tasks.errors import UserError
from gpt2tasks.outputs import check_output_file, write_atomic
from gpt2tasks.runfile import TRUST_KEY

log = logging.getLogger("gpt2tasks")

PREDICT = Command(
    "predict",
    (Option("ckpt", metavar="<path.ckpt | exported folder>",
            help="a checkpoint of a `train` run, or a folder written by `export`"),
     Option("input", metavar="<file>", help="the rows to predict"),
     Option("output", metavar="<file.jsonl>", help="where the JSON lines go"),
     Option("task", metavar="<name>", help="the head of a multi-task .ckpt (its data.* overrides apply to that task)"),
     Option("batch_size", "yaml", metavar="N",
            help="the batch (default: the run's data.eval_batch_size, else 2 x data.batch_size)"),
     Option("overwrite", "bool", False, "replace an existing output"),
     Option(TRUST_KEY, "bool", False, "load a .ckpt holding more than plain data (see below)")),
    about="""Predicts every row of input= (the task's training formats: CSV/TSV/JSON/JSONL, TXT for LM, CoNLL
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
An existing output is refused unless overwrite=true; the output's folder is checked before any work.
A .ckpt is loaded as plain data; trust_checkpoint=true loads one holding other Python objects (which
can run code) if you trust where it comes from. key=value overrides apply to the run's saved
config, e.g. data.text_column=sentence data.max_length=256 precision=bf16-mixed trainer.accelerator=cpu.""",
    example="ckpt=<run>/checkpoints/best.ckpt input=data.csv output=predictions.jsonl",
    required=("ckpt", "input", "output"), overrides=True)
USAGE = PREDICT.usage()


def predict(ckpt: str, input: str, output: str, overrides: Sequence[str] = (), batch_size: int | None = None,
            overwrite: bool = False, options: dict[str, Any] | None = None, task: str | None = None,
            trust_checkpoint: bool = False) -> list[dict[str, Any]]:
    """Predict every row of `input` with `ckpt`, write `output` (JSON lines); returns the lines.
    `options`: the kind's predict options (e.g. LM max_new_tokens); `task`: the head of a multi-task .ckpt;
    `trust_checkpoint`: load a .ckpt that holds more than plain data (see runfile.load_checkpoint)."""
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
    path = check_output_file(Path(output), "output", overwrite, shown=output)
    if path.exists() and path.samefile(Path(input).expanduser()):
        raise UserError(f"output={output} is the input file. Fix: write the predictions to another file.")
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


def kind_options() -> list[Option]:
    """Every kind's predict options (LM max_new_tokens, ...), YAML-typed; checked against the
    checkpoint's kind once it is loaded (check_options)."""
    from gpt2tasks.tasks import KINDS

    names = {name for kind in KINDS.values() for name in kind.module.predict_option_defaults}
    return [Option(name, "yaml") for name in sorted(names)]


def main(argv: list[str]) -> None:
    def job(options: dict[str, Any], _: list[str]) -> None:
        check_paths(options["input"], options["output"], options["overwrite"])  # fail fast, before the heavy imports
        given, overrides = PREDICT.parse(argv, more=kind_options())  # again, now with the kinds' options
        predict(options["ckpt"], options["input"], options["output"], overrides, batch_size=options["batch_size"],
                overwrite=options["overwrite"], task=options["task"], trust_checkpoint=options[TRUST_KEY],
                options={key: value for key, value in given.items() if key not in options})

    run_command(argv, PREDICT, job)
