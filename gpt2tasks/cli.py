"""The command line around the entry points: one parser for the key=value options of eval, predict,
export and combine (`Command`), how a user-fixable error reaches the user (one paragraph on
stderr, exit code 2, no traceback), and what every command prints, in one format:

- Log records (gpt2tasks', Lightning's, transformers'): the message alone, INFO on stdout;
  warnings and errors on stderr as `warning: <message>` / `error: <message>`.
- Python warnings (Lightning's, torch's, ...): logged as warnings, with where they come from:
  `warning: <message> (<Category>, <package path>:<line>)`.
- Metrics: `name=value` to 4 decimals, two spaces apart (`format_metrics`).
- The end of a command: `Done. <headline>` and one aligned `label: value` row each, paths absolute
  (`done_lines`).

The console stream is looked up for every record, not kept from the start: Rich's progress bar
replaces sys.stdout while it draws (so that text printed during training appears above the bar),
and a handler holding the original stream would write through the bar, leaving broken copies of
it on the screen."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpt2tasks.errors import UserError, redact


# ---- the console: one format for every command ---------------------------------------------------
#: the loggers a library gives its own console handler on import (Lightning: "lightning" always,
#: "lightning.pytorch" when logging was not configured yet); their records go to ours instead,
#: or every Lightning message would be printed twice, in two formats
_OWN_HANDLERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)  # the message, and a traceback when one is attached
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class ConsoleHandler(logging.Handler):
    """INFO and below to the current sys.stdout, warnings and errors to the current sys.stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Format("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()  # in order with the progress lines and the other stream, in a log file too
        except Exception:  # noqa: BLE001 (logging's own contract: never raise from emit)
            self.handleError(record)


def setup_logging() -> None:
    """The one console setup of every command (train, eval, predict, export, combine); calling it
    again replaces it. gpt2tasks and the libraries log at INFO through one ConsoleHandler on the
    root logger, and Python warnings are shown as log warnings (`show_warning`)."""
    import lightning  # noqa: F401  (its loggers get their own handlers on import: removed below)

    root = logging.getLogger()
    # ours from an earlier call, and plain console handlers: Hydra's ("[<time>][HYDRA] ..."), which
    # its launcher leaves on the root logger for the job (a test's capturing handlers are subclasses)
    for handler in [h for h in root.handlers if isinstance(h, ConsoleHandler) or type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
    root.addHandler(ConsoleHandler())
    root.setLevel(logging.WARNING)  # other libraries: their warnings only
    for name in ("gpt2tasks", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.INFO)
    for name in _OWN_HANDLERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    warnings.showwarning = show_warning
    if not sys.stderr.isatty():
        # bars redrawn in place (datasets' "Tokenizing", transformers' "Writing model shards") are
        # one long line of control characters in a log file (nohup, SLURM, CI)
        from datasets.utils.logging import disable_progress_bar as datasets_bars_off
        from transformers.utils.logging import disable_progress_bar as transformers_bars_off

        datasets_bars_off()
        transformers_bars_off()


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning: a Python warning as a log warning of its category's module, with the
    place it comes from (a path inside its package, not the whole site-packages path)."""
    logging.getLogger("py.warnings").warning("%s (%s, %s:%s)", message, category.__name__, _short(filename), lineno)


def _short(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    return filename


def format_metrics(metrics: Mapping[str, float]) -> str:
    """'val/accuracy=0.9967  val/f1=0.9967': every command shows metrics so."""
    return "  ".join(f"{name}={float(value):.4f}" for name, value in metrics.items())


def done_lines(headline: str, rows: Iterable[tuple[str, Any]]) -> str:
    """The final block of a command, after a blank line: `Done. <headline>`, then `  <label>: <value>`
    per row, the values aligned (rows whose value is None are left out)."""
    lines = ["", f"Done. {headline}".rstrip()]
    lines += [f"  {label + ':':<11} {value}" for label, value in rows if value is not None]
    return "\n".join(lines)


def run_and_report(job: Callable[[], Any], cleanup_dir: Path | None = None) -> Any:
    """Run a command's job: a UserError -- or an OSError the user fixes (a full disk, a read-only or
    forbidden folder: `user_problem`), from any writer -- ends it with one paragraph on stderr,
    secrets hidden (errors.redact), and exit 2; SIGTERM / SIGINT (gpt2tasks/signals.py) with one
    line (how to resume, for train) and exit 143 / 130."""
    from gpt2tasks.outputs import remove_if_empty
    from gpt2tasks.signals import Interrupted, stop_on_signals

    try:
        with stop_on_signals():
            return job()
    except Interrupted as err:
        if cleanup_dir is not None:
            remove_if_empty(cleanup_dir)  # the folder Hydra made for a run that never started
        print(f"gpt2tasks: stopped by {err.name}" + (f": {err.note}" if err.note else "."), file=sys.stderr)
        sys.exit(err.code)
    except (UserError, OSError) as err:
        message = user_problem(err)
        if message is None:
            raise
        report_user_error(message, cleanup_dir)
        sys.exit(2)


def user_problem(err: BaseException) -> str | None:
    """The message of an error the user fixes: a UserError's, or an OSError's that names its fix
    (outputs.filesystem_problem); None for anything else (a bug: its traceback is worth seeing)."""
    from gpt2tasks.outputs import filesystem_problem

    if isinstance(err, UserError):
        return str(err)
    return filesystem_problem(err) if isinstance(err, OSError) else None


def report_user_error(message: str, cleanup_dir: Path | None = None) -> None:
    """The error's one paragraph on stderr, secrets hidden; `cleanup_dir` removed if empty (the
    folder Hydra made for a run that never started). A `-m` sweep's job (sweep.run_job) reports
    its error so and goes on."""
    if cleanup_dir is not None:
        from gpt2tasks.outputs import remove_if_empty

        remove_if_empty(cleanup_dir)
    print(f"gpt2tasks: error: {redact(message)}", file=sys.stderr)


# ---- the key=value options of eval, predict, export and combine ---------------------------------
@dataclass(frozen=True)
class Option:
    """One `name=value` option of a command. `type`: "str"; "bool" (true or false); "yaml" (a YAML
    value: numbers, true/false, lists; text that is not YAML stays text); "list" (repeatable: every
    value, in order)."""

    name: str  # as typed, e.g. hub.repo_id (its Python name: hub_repo_id)
    type: str = "str"
    default: Any = None
    help: str = ""
    metavar: str = ""  # the value's placeholder in the usage, e.g. <path.ckpt>

    @property
    def key(self) -> str:
        return self.name.replace(".", "_")

    def default_shown(self) -> str:
        if self.default is None:
            return ""
        return f" (default: {str(self.default).lower() if isinstance(self.default, bool) else self.default})"

    def shown(self) -> str:
        value = self.metavar or ("true|false" if self.type == "bool" else "<value>")
        return f"{self.name}={value}" + (f" [{self.name}=...]" if self.type == "list" else "")


@dataclass(frozen=True)
class Command:
    """A subcommand's options, its usage text (made from them) and its argument parser.
    `overrides`: arguments that are not its options pass through as config overrides (eval,
    predict: checked against the run's config); otherwise they are refused here."""

    name: str
    options: tuple[Option, ...]
    about: str  # what the command does, after the list of options
    example: str  # arguments of a working call, for the Fix of an error
    required: tuple[str, ...] = ()
    overrides: bool = False

    def usage(self) -> str:
        words = [o.shown() if o.name in self.required else f"[{o.shown()}]" for o in self.options]
        words += ["[key=value ...]"] if self.overrides else []
        lines, line = [], f"usage: python -m gpt2tasks {self.name}"
        for word in words:  # wrapped, continuation lines under the first option
            if len(line) + len(word) > 110:
                lines.append(line)
                line = " " * len(f"usage: python -m gpt2tasks {self.name}")
            line += f" {word}"
        width = max(len(o.shown()) for o in self.options) + 2
        table = "\n".join(f"  {o.shown():<{width}}{o.help}{o.default_shown()}".rstrip() for o in self.options)
        synopsis = "\n".join([*lines, line])
        return f"{synopsis}\n\noptions:\n{table}\n\n{self.about}"

    def parse(self, argv: Sequence[str], more: Sequence[Option] = ()) -> tuple[dict[str, Any], list[str]]:
        """({option key: value, defaults filled in}, the other arguments: config overrides).
        `more`: options known only at run time (predict's per-kind options), in the result if given."""
        known = {name: o for o in (*self.options, *more) for name in (o.name, o.key)}  # hub.repo_id or hub_repo_id
        values = {o.key: [] if o.type == "list" else o.default for o in self.options}
        given, rest = set(), []
        for arg in argv:
            key, sep, value = arg.partition("=")
            option = known.get(key) if sep else None
            if option is None:
                if not self.overrides:
                    valid = ", ".join(f"{o.name}=" for o in self.options)
                    raise UserError(f"{self.name}: {arg!r} is not one of its key=value options ({valid}). Fix: e.g. "
                                    f"python -m gpt2tasks {self.name} {self.example}.\n{self.usage()}")
                rest.append(arg)
                continue
            given.add(option.name)
            if option.type == "list":
                values.setdefault(option.key, []).append(value)
            else:
                values[option.key] = self._convert(option, key, value)
        missing = [name for name in self.required if name not in given]
        if missing:
            raise UserError(f"{self.name} needs {', '.join(f'{name}=' for name in missing)}. Fix: e.g. "
                            f"python -m gpt2tasks {self.name} {self.example}.\n{self.usage()}")
        return values, rest

    def _convert(self, option: Option, key: str, value: str) -> Any:
        if option.type == "bool":
            if value.lower() not in ("true", "false"):
                raise UserError(f"{self.name}: {key}={value!r} must be true or false. Fix: {key}=true or {key}=false.")
            return value.lower() == "true"
        if option.type == "yaml":
            try:
                return yaml.safe_load(value) if value else None
            except yaml.YAMLError:
                return value
        return value


def run_command(argv: Sequence[str], command: Command, job: Callable[[dict[str, Any], list[str]], Any]) -> None:
    """A subcommand's entry: --help prints its usage (exit 0); no arguments is a usage error (usage
    on stderr, exit 2); otherwise logging is set up and `job(options, overrides)` runs on the parsed
    arguments, a UserError (from parsing too) ending it as above."""
    if any(a in ("-h", "--help") for a in argv):
        print(command.usage())
        return
    if not argv:
        print(command.usage(), file=sys.stderr)
        sys.exit(2)
    setup_logging()
    quiet_known_noise()
    run_and_report(lambda: job(*command.parse(argv)))
    sys.stdout.flush()


def quiet_known_noise() -> None:
    # CPU runs use num_workers=0 on purpose (tokenized rows are in memory; workers only add start-up).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # TaskModule.on_before_batch_transfer marks unpadded batches on the host (no sync later); the
    # datamodule has no such hook, so Lightning's note that the module's one is used says nothing.
    warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer` in `LightningModule`.*")
    # predict_step keeps its outputs on the module (put back in input order at the end), not in Lightning's list.
    warnings.filterwarnings("ignore", message="predict returned None")
    # Eval metrics are computed once from outputs gathered from every rank (identical everywhere),
    # so Lightning's advice to all-reduce them with sync_dist does not apply.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*when logging on epoch level in distributed.*")
    # Packed batches (data.pack_examples) under eager attention pass position ids and no mask on
    # purpose: transformers builds the block-diagonal mask from them; its padding hint does not apply.
    logging.getLogger("transformers.modeling_utils").addFilter(
        lambda record: "strongly recommend passing in an `attention_mask`" not in record.getMessage())
    # transformers 5 deprecates the name PEFT still calls (LoRA, export and resume runs): nothing to act on.
    warnings.filterwarnings("ignore", message=".*`is_gradient_checkpointing` is deprecated.*", category=FutureWarning)
    # Lightning start-up chatter that tells a user nothing: an advertisement, TPUs, and the restore
    # lines of the final evaluation (the Done line names the checkpoint the metrics come from).
    noise = ("litlogger", "TPU available", "Restoring states from the checkpoint path",
             "Loaded model weights from the checkpoint", "to estimate number of stepping batches")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not any(text in record.getMessage() for text in noise))
