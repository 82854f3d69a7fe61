"""How a user-fixable error reaches the user: one paragraph on stderr, exit code 2, no traceback."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2tasks.errors import UserError


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("gpt2tasks").setLevel(logging.INFO)


def run_and_report(job: Callable[[], Any], cleanup_dir: Path | None = None) -> Any:
    try:
        return job()
    except UserError as err:
        if cleanup_dir is not None:
            from gpt2tasks.outputs import remove_if_empty

            remove_if_empty(cleanup_dir)  # the folder Hydra made for a run that never started
        print(f"gpt2tasks: error: {err}", file=sys.stderr)
        sys.exit(2)


def run_command(argv: list[str], usage: str, job: Callable[[], Any]) -> None:
    """A subcommand's entry (eval, predict, export): --help or no arguments print its usage;
    otherwise logging is set up and `job` runs, a UserError ending it as above."""
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(usage)
        return
    setup_logging()
    quiet_known_noise()
    run_and_report(job)
    sys.stdout.flush()


def quiet_known_noise() -> None:
    # CPU runs use num_workers=0 on purpose (tokenized rows are in memory; workers only add start-up).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # predict_step keeps its outputs on the module (put back in input order at the end), not in Lightning's list.
    warnings.filterwarnings("ignore", message="predict returned None")
    # Eval metrics are computed once from outputs gathered from every rank (identical everywhere),
    # so Lightning's advice to all-reduce them with sync_dist does not apply.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*when logging on epoch level in distributed.*")
    # Packed batches (data.pack_examples) pass position ids and no 2D mask on purpose: transformers
    # builds the block-diagonal mask from them; its padding hint does not apply.
    logging.getLogger("transformers.modeling_utils").addFilter(
        lambda record: "strongly recommend passing in an `attention_mask`" not in record.getMessage())
    # An advertisement Lightning prints on every Trainer start.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage())
