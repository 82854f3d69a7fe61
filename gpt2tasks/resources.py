"""Where the project's own files live, and the OmegaConf resolvers that point at them.

`conf/` (Hydra configs) and `data/` (bundled samples and the tiny tokenizer) sit at the repository
root, beside the package: the README installs the project in editable mode, so both are found
relative to this file. `GPT2TASKS_DATA_DIR` / `GPT2TASKS_CONF_DIR` override them for other layouts.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(os.environ.get("GPT2TASKS_CONF_DIR", REPO_ROOT / "conf")).resolve()
DATA_DIR = Path(os.environ.get("GPT2TASKS_DATA_DIR", REPO_ROOT / "data")).resolve()
# The project's own small byte-level BPE tokenizer (made by scripts/make_tokenizer.py); used by
# models that have no checkpoint of their own (`model=tiny`).
BUNDLED_TOKENIZER = DATA_DIR / "tokenizer"


def default_cache_dir() -> Path:
    """Tokenized datasets are cached here (override with data.cache_dir or GPT2TASKS_CACHE)."""
    base = os.environ.get("GPT2TASKS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "gpt2tasks"
    )
    return Path(base)


def register_resolvers() -> None:
    """`${gpt2tasks_data:sample_sentiment/train.csv}` -> absolute path inside data/;
    `${gpt2tasks_cache:}` -> the cache folder; `${gpt2tasks_direction:${task.mode}}` -> maximize/minimize."""
    if not OmegaConf.has_resolver("gpt2tasks_data"):
        OmegaConf.register_new_resolver("gpt2tasks_data", lambda rel="": str(DATA_DIR / rel))
    if not OmegaConf.has_resolver("gpt2tasks_cache"):
        OmegaConf.register_new_resolver("gpt2tasks_cache", lambda: str(default_cache_dir()))
    if not OmegaConf.has_resolver("gpt2tasks_direction"):
        # conf/hparams_search/: the search's direction from the task's checkpoint mode
        OmegaConf.register_new_resolver("gpt2tasks_direction", optimization_direction)


def optimization_direction(mode: str) -> str:
    """task.mode (max | min) -> an Optuna study direction (maximize | minimize)."""
    directions = {"max": "maximize", "min": "minimize"}
    if mode not in directions:
        from gpt2tasks.errors import UserError

        raise UserError(f"task.mode={mode!r} must be max or min. Fix: task.mode=max (higher task.monitor is "
                        "better) or task.mode=min.")
    return directions[mode]


register_resolvers()
