"""Shared fixtures. Tests are offline: no Hub access, tiny random models, a private cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Never wait for Hub retries in tests: a Hub name must fail at once, as it does for an offline user.
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[var] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("GPT2TASKS_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["GPT2TASKS_CACHE"] = str(tmp_path_factory.mktemp("gpt2tasks_cache"))
    yield


def shared_dataset(*parts: str) -> Path:
    """A file from ../shared/datasets, or skip the test with the reason."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset {path} not present (set GPT2TASKS_SHARED_DATASETS)")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def file_datamodule(cls, tmp_path: Path, tokenizer, rows: list[dict], val_rows: list[dict] | None = None, **spec):
    """A datamodule of kind `cls` over JSONL train/validation files of `rows`, set up for fit."""
    from gpt2tasks.datamodules.base import DataSpec

    dm = cls(DataSpec(train_file=write_jsonl(tmp_path / "train.jsonl", rows),
                      validation_file=write_jsonl(tmp_path / "val.jsonl", val_rows or rows),
                      cache_dir=str(tmp_path / "cache"), **spec), tokenizer)
    dm.setup("fit")
    return dm


def compose(*overrides: str):
    """The config `python -m gpt2tasks train <overrides>` would run (without Hydra's runtime), a
    multi-task run's tasks expanded as `train` expands them."""
    from gpt2tasks import multitask
    from gpt2tasks.resources import register_resolvers

    register_resolvers()
    return multitask.compose(list(overrides))


@pytest.fixture
def cfg_factory(tmp_path):
    """compose() with a fresh output_dir and no logger files unless asked."""

    def make(*overrides: str, output_dir: Path | None = None):
        return compose(f"output_dir={output_dir or tmp_path / 'run'}", "logger=none",
                       "trainer.enable_progress_bar=false", *overrides)

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from gpt2tasks.backbone import ModelSpec, load_tokenizer

    return load_tokenizer(ModelSpec())


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A local 'pretrained' tiny GPT-2 (LM head + tokenizer), as `save_pretrained` writes it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=len(tiny_tokenizer),
                        eos_token_id=tiny_tokenizer.eos_token_id, bos_token_id=tiny_tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600):
    import subprocess

    # PYTHONPATH: the package of this checkout, whatever the working directory (cwd=tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "gpt2tasks", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _logging_state():
    import logging

    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [(lg, list(lg.handlers), lg.level, lg.disabled, lg.propagate) for lg in loggers]


@pytest.fixture
def cli(capsys, monkeypatch):
    """`python -m gpt2tasks <args>` run in this process: the same entry point, exit status and
    stdout/stderr (a CompletedProcess, like run_cli) without a fresh interpreter's imports (seconds
    per call). For command-line checks that fail or finish early; subprocess tests (run_cli) still
    prove the real exit status and the absence of a traceback end to end
    (tests/integration/test_cli.py)."""
    import subprocess

    from gpt2tasks.__main__ import main

    def run(*args: str) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", [sys.argv[0], *args])  # `train` hands sys.argv to Hydra
        saved = _logging_state()  # Hydra's job logging re-configures the root logger; undo it
        capsys.readouterr()
        code, message = 0, ""
        try:
            main(list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            message = "" if stop.code is None or isinstance(stop.code, int) else f"{stop.code}\n"  # as Python prints it
        finally:
            for logger, handlers, level, disabled, propagate in saved:
                logger.handlers[:] = handlers
                logger.setLevel(level)
                logger.disabled, logger.propagate = disabled, propagate
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["gpt2tasks", *args], code, out.out, out.err + message)

    return run
