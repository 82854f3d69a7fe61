"""`--version` and every command's `--help` answer without loading torch, lightning or transformers
(the heavy imports wait until the arguments are parsed)."""

import subprocess
import sys

import pytest

from gpt2tasks import __version__
from tests.conftest import REPO

HEAVY = {"torch", "lightning", "transformers", "peft", "datasets"}


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime -m gpt2tasks <args>`; the top-level modules it imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpt2tasks", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    return result, names


@pytest.mark.parametrize("args", [("--version",), ("-V",), ("train", "--help"), ("eval", "--help"),
                                  ("predict", "--help"), ("export", "--help"), ("combine", "--help")])
def test_version_and_help_answer_without_heavy_imports(args):
    result, modules = imported_modules(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "omegaconf" in modules or args[0].startswith("-")  # the check sees imports at all
    assert not modules & HEAVY, f"{args} imported {modules & HEAVY}"
    if args[0] in ("--version", "-V"):
        assert result.stdout.strip() == f"gpt2tasks {__version__}"
    else:
        assert "usage" in result.stdout.lower() or "python -m gpt2tasks train" in result.stdout


def test_no_command_is_a_usage_error_and_help_is_not():
    result = subprocess.run([sys.executable, "-m", "gpt2tasks"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert "no command given" in result.stderr and "commands:" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gpt2tasks", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "commands:" in result.stdout
