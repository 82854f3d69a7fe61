"""What every command prints, in one format: log lines, warnings, metrics and the final block.

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
it on the screen.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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
