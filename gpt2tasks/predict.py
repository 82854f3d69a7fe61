"""`python -m gpt2tasks predict ckpt=<.ckpt or exported folder> input=<file> output=<file.jsonl>`.

Reads the input with the task's own readers and tokenization (labels not needed), runs the model
in length-sorted, dynamically padded batches (Lightning's `trainer.predict`, with the run's
precision), puts the outputs back in input order by row index, and writes one JSON line per input
row. What a line holds per kind is each TaskModule's `predict_rows`.

Files of any length: the input is read, tokenized and predicted `chunk_rows` rows at a time
(`TaskDataModule.predict_chunks`; CSV/TSV/JSONL/TXT lines streamed from the file), and each
chunk's lines are written as soon as it is done, so memory does not grow with the file. With
`trainer.devices=N` every chunk's batches are dealt to N processes (DDP; gloo on CPU) and gathered
back by row index, so the output is the same lines in the same order. Progress (rows, rows/s, ETA)
is reported as chunks finish. The lines go to a temporary file beside the output, renamed onto it
only once every row is predicted: a failure or an interruption leaves no partial file.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from gpt2tasks.cli import Command, Option, done_lines, run_command
from gpt2tasks.errors import UserError
from gpt2tasks.outputs import check_output_file, save_atomic
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
     Option("chunk_rows", "yaml", 10_000, metavar="N",
            help="rows read, predicted and written at a time (memory grows with it, not with the file)"),
     Option("progress_every", "yaml", 30, metavar="SECONDS",
            help="a progress line this often when stderr is not a terminal (0: none)"),
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
Files of any length are streamed: read (CSV/TSV/JSONL/TXT line by line; a JSON document, a CoNLL
file and nested SQuAD JSON whole), predicted and written chunk_rows rows at a time, with progress
(rows done/total, rows/s, ETA). One device unless trainer.devices=N (with trainer.accelerator=cpu:
N processes, gloo), the lines still one per input row in input order.
An existing output is refused unless overwrite=true; the output's folder is checked before any work.
A .ckpt is loaded as plain data; trust_checkpoint=true loads one holding other Python objects (which
can run code) if you trust where it comes from. key=value overrides apply to the run's saved
config, e.g. data.text_column=sentence data.max_length=256 precision=bf16-mixed trainer.accelerator=cpu.""",
    example="ckpt=<run>/checkpoints/best.ckpt input=data.csv output=predictions.jsonl",
    required=("ckpt", "input", "output"), overrides=True)
USAGE = PREDICT.usage()


def predict(ckpt: str, input: str, output: str, overrides: Sequence[str] = (), batch_size: int | None = None,
            overwrite: bool = False, options: dict[str, Any] | None = None, task: str | None = None,
            trust_checkpoint: bool = False, chunk_rows: int = 10_000, progress_every: float = 30) -> int:
    """Predict every row of `input` with `ckpt`, write `output` (JSON lines); returns the number of lines.
    `options`: the kind's predict options (e.g. LM max_new_tokens); `task`: the head of a multi-task .ckpt;
    `trust_checkpoint`: load a .ckpt that holds more than plain data (see runfile.load_checkpoint);
    `chunk_rows`: rows read, predicted and written at a time; `progress_every`: seconds between
    progress lines when stderr is not a terminal (0: none). `trainer.devices=N` among `overrides`
    predicts on N devices; otherwise one, whatever the run trained on."""
    output_path = check_paths(input, output, overwrite)  # before any work
    for key, value in (("batch_size", batch_size), ("chunk_rows", chunk_rows)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(f"{key}={value!r} must be a positive integer. Fix: e.g. {key}=64.")
    if isinstance(progress_every, bool) or not isinstance(progress_every, (int, float)) or progress_every < 0:
        raise UserError(f"progress_every={progress_every!r} must be a number of seconds (0: no progress lines). "
                        "Fix: e.g. progress_every=30.")
    import lightning as L  # heavy imports only once the arguments are known to be usable

    from gpt2tasks.datamodules.base import PREDICT
    from gpt2tasks.distributed import is_rank_zero
    from gpt2tasks.evaluation import inference_trainer
    from gpt2tasks.inference import load_for_inference

    if batch_size is not None:
        overrides = [*overrides, f"data.eval_batch_size={batch_size}"]
    cfg, datamodule, module = load_for_inference(ckpt, overrides, "predict", USAGE, task=task,
                                                 trust_checkpoint=trust_checkpoint)
    module.predict_options = check_options(type(module), cfg.task.kind, options or {})
    total = datamodule.count_predict_rows(input)  # every reading error before any work
    log.info("predict: %d rows of %s with %s (%s), %d at a time", total, Path(input).expanduser().absolute(),
             Path(ckpt).expanduser().absolute(), cfg.task.kind, chunk_rows)

    # Lightning's bar would start over for every chunk: the progress of the whole file is ours.
    trainer = inference_trainer(cfg, single_device=not sets_devices(overrides), enable_progress_bar=False)
    L.seed_everything(int(cfg.seed), verbose=False)  # sampled LM continuations are repeatable
    rank_zero = is_rank_zero()  # valid before the other ranks exist; only rank 0 writes and reports
    progress = Progress(total, progress_every if rank_zero else 0)

    # The samplers deal each chunk's batches to this rank (the Trainer knows its rank and world size
    # from the launcher's environment before the other ranks start). dataloaders=, not datamodule=:
    # Lightning would rebuild a batch sampler made in its hook around a plain SequentialSampler.
    datamodule.trainer = trainer

    def predict_chunks(out: IO[bytes] | None) -> int:
        done = 0
        for first in datamodule.predict_chunks(input, chunk_rows):
            trainer.predict(module, dataloaders=Batches(datamodule.predict_dataloader()), return_predictions=False)
            rows = module.predict_rows(module.predicted, datamodule)
            if out is not None:
                examples = datamodule.examples[PREDICT]
                out.write("".join(json.dumps({**row_identity(example, first + i, datamodule.spec.id_column), **row},
                                             ensure_ascii=False) + "\n"
                                  for i, (example, row) in enumerate(zip(examples, rows, strict=True))).encode("utf-8"))
            done += len(rows)
            progress.update(done)
        return done

    if not rank_zero:  # the other ranks of trainer.devices=N predict their share and write nothing
        return predict_chunks(None)
    written: list[int] = []
    save_atomic(output_path, lambda out: written.append(predict_chunks(out)))
    return written[0]


class Batches:
    """A DataLoader's batches as a plain iterable, for `trainer.predict`. Lightning rebuilds every
    DataLoader it is given to predict, to record the rows of each batch for its prediction writers
    (lightning.pytorch.utilities.data._update_dataloader). It cannot rebuild ours -- a batch sampler
    that deals length-sorted batches to this rank (batching.RankBatchSampler) -- so it used it as
    it is and warned that it cannot make sure the sampler drops no row (`drop_last`). predict needs
    neither: RankBatchSampler never drops a row, and every output carries its row's index (`idx`).
    Lightning takes an iterable that is not a DataLoader as it is."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def sets_devices(overrides: Sequence[str]) -> bool:
    """Whether the command line sets trainer.devices or trainer.num_nodes: predict then runs on
    them; otherwise on one device, whatever the run trained on (its saved trainer.devices)."""
    return any(o.lstrip("+").partition("=")[0] in ("trainer.devices", "trainer.num_nodes") for o in overrides)


class Progress:
    """Rows done of a total, rows/s and the time left, as predict's chunks finish: redrawn in place
    when stderr is a terminal; otherwise a plain log line every `every` seconds and at the end
    (a job's log file, e.g. under SLURM). `every=0`: silent."""

    def __init__(self, total: int, every: float, stream: IO[str] | None = None):
        self.total, self.every = total, every
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        if not self.every:
            return
        now = time.monotonic()
        if self.stream.isatty():
            self.stream.write(f"\r{self.line(done, now)}" + ("\n" if done >= self.total else ""))
            self.stream.flush()
        elif done >= self.total or now - self.last >= self.every:
            log.info(self.line(done, now))
            self.last = now

    def line(self, done: int, now: float) -> str:
        rate = done / max(now - self.start, 1e-9)
        left = (self.total - done) / rate if rate else float("inf")
        return (f"predict: {done:,}/{self.total:,} rows ({100 * done / max(self.total, 1):.0f}%), "
                f"{rate:,.0f} rows/s, ETA {duration(left)}")


def duration(seconds: float) -> str:
    """3s, 4m05s, 2h07m."""
    if seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


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
    from gpt2tasks.distributed import is_rank_zero

    def job(options: dict[str, Any], _: list[str]) -> None:
        check_paths(options["input"], options["output"], options["overwrite"])  # fail fast, before the heavy imports
        given, overrides = PREDICT.parse(argv, more=kind_options())  # again, now with the kinds' options
        lines = predict(options["ckpt"], options["input"], options["output"], overrides,
                        batch_size=options["batch_size"], overwrite=options["overwrite"], task=options["task"],
                        trust_checkpoint=options[TRUST_KEY], chunk_rows=options["chunk_rows"],
                        progress_every=options["progress_every"],
                        options={key: value for key, value in given.items() if key not in options})
        if is_rank_zero():
            print(done_lines(f"predicted {lines:,} rows: one JSON line each, in input order",
                             [("output", Path(options["output"]).expanduser().absolute())]))

    run_command(argv, PREDICT, job)
