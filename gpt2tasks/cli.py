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
    """A subcommand's entry (eval, predict, export, combine): --help prints its usage (exit 0); no
    arguments is a usage error (usage on stderr, exit 2); otherwise logging is set up and `job`
    runs, a UserError ending it as above."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        return
    if not argv:
        print(usage, file=sys.stderr)
        sys.exit(2)
    setup_logging()
    quiet_known_noise()
    run_and_report(job)
    sys.stdout.flush()


def parse_bool(key: str, value: Any) -> bool:
    """A true/false option of eval / predict / export / combine (a bool already parsed passes)."""
    if isinstance(value, bool):
        return value
    if str(value).lower() not in ("true", "false"):
        raise UserError(f"{key}={value!r} must be true or false. Fix: {key}=true or {key}=false.")
    return str(value).lower() == "true"


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
    # Packed batches (data.pack_examples) pass position ids and no 2D mask on purpose: transformers
    # builds the block-diagonal mask from them; its padding hint does not apply.
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
    # `import lightning` gives its top logger its own stderr handler even when the application has
    # configured logging: every Lightning message then appears twice. The application's handlers print it.
    import lightning  # noqa: F401  (the handler is added on import)

    top = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(top.handlers):
            top.removeHandler(handler)
