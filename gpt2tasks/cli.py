"""How a user-fixable error reaches the user: one paragraph on stderr, exit code 2, no traceback."""

from __future__ import annotations

import logging
import sys
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
