#!/usr/bin/env bash
# Set up gpt2tasks: a virtual environment (reuses the active one), torch, then the project.
#
# torch is installed first and only when missing: `pip install torch==2.13.0` takes the CPU wheel
# on our machines, and a torch the user already has (e.g. a CUDA build in their active venv) is
# never replaced, because the project's own requirement (torch>=2.2) is already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
fi

"$PY" -m pip install --quiet --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==${GPT2TASKS_TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install --quiet -e ".[dev]"
"$PY" -c "import torch, lightning, transformers; print(f'gpt2tasks ready: torch {torch.__version__}, lightning {lightning.__version__}, transformers {transformers.__version__} ({\"$PY\"})')"
