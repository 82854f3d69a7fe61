"""The run directory contract: config.yaml, metrics.json, checkpoints/{best,last}.ckpt.

A run never silently overwrites another: an output_dir that already holds a run is refused unless
`overwrite=true` (replace it) or `resume=true` (continue it). Files are written atomically, so a
crash never leaves a half-written config or metrics file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from gpt2tasks.errors import UserError

RUN_MARKERS = ("config.yaml", "metrics.json", "checkpoints")


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def previous_dir(output_dir: Path) -> Path:
    """Where overwrite=true keeps the run it replaces until the new run has a checkpoint."""
    return output_dir.with_name(f"{output_dir.name}.previous")


def check_output_dir(output_dir: Path, overwrite: bool, resume: bool) -> Path | None:
    """Refuse a conflicting output_dir early (before any work). Returns the checkpoint to resume.

    Every refusal leads somewhere: a folder with a checkpoint can be resumed or overwritten; one whose
    run stopped before its first checkpoint (nothing to resume) can only be overwritten, and both the
    plain re-run and resume=true say so."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"output_dir={output_dir} is a file. Fix: choose a directory path.")
    kept = previous_dir(output_dir)
    if kept.exists() and (overwrite or resume):
        # A kill (no Python cleanup) between overwrite=true's start and its first checkpoint.
        raise UserError(f"{kept} holds the run that overwrite=true replaced in output_dir={output_dir}; it was "
                        "kept because the new run there stopped before its first checkpoint. Fix: to get it back, "
                        f"delete {output_dir} and rename {kept} to {output_dir.name}; otherwise delete {kept}. "
                        "Then run again.")
    if resume:
        return resume_checkpoint(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        if (checkpoints_dir(output_dir) / "last.ckpt").exists():
            raise UserError(f"output_dir={output_dir} holds a previous run. Fix: pick a new output_dir, or add "
                            "overwrite=true to replace it, or resume=true to continue that run from its last "
                            "checkpoint.")
        what = ("holds a run that stopped before its first checkpoint (nothing to resume)"
                if any((output_dir / m).exists() for m in RUN_MARKERS) else "is not empty")
        raise UserError(f"output_dir={output_dir} {what}. Fix: pick a new output_dir, or add overwrite=true "
                        "to replace what is there.")
    return None


def resume_checkpoint(output_dir: Path) -> Path:
    """checkpoints/last.ckpt of the run to continue (a file; a DeepSpeed checkpoint is a folder)."""
    last = checkpoints_dir(output_dir) / "last.ckpt"
    if last.exists():
        return last
    if any((output_dir / m).exists() for m in RUN_MARKERS):
        raise UserError(f"resume=true: output_dir={output_dir} holds a run that stopped before its first "
                        f"checkpoint ({last} does not exist), so there is nothing to resume. Fix: start it again "
                        "with overwrite=true instead of resume=true (checkpoint.every_n_train_steps=N saves "
                        "every N steps).")
    raise UserError(f"resume=true but output_dir={output_dir} holds no run ({last} does not exist). Fix: set "
                    "output_dir to the run to continue (the folder holding checkpoints/last.ckpt), or drop "
                    "resume=true to start a new run there.")


def set_aside(output_dir: Path) -> Path | None:
    """overwrite=true: move the previous run's files to <output_dir>.previous (returned), to be put
    back if the new run fails before its first checkpoint (`put_back`) or deleted once it has one."""
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        output_dir.mkdir(parents=True, exist_ok=True)
        return None
    kept = previous_dir(output_dir)
    kept.mkdir()
    for child in output_dir.iterdir():
        child.rename(kept / child.name)
    return kept


def put_back(output_dir: Path, kept: Path | None) -> None:
    """Undo a run that failed before its first checkpoint: remove what it wrote; the run it replaced
    (if any) moves back."""
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    if kept is not None and kept.is_dir():
        for child in kept.iterdir():
            child.rename(output_dir / child.name)
        kept.rmdir()


def remove_if_empty(output_dir: Path) -> None:
    try:
        output_dir.rmdir()  # only succeeds when empty: nothing of a previous run is touched
    except OSError:
        pass


def write_atomic(path: Path, text: str) -> None:
    save_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write(file)` into a temporary file beside `path`, renamed onto it only once complete: a
    failure never leaves a half-written `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp makes it private (0600); the file is the run's, not a secret
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the process umask (0644 under the usual 022)."""
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    write_atomic(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def write_predictions(directory: Path, predictions: dict[str, dict[str, str]]) -> list[Path]:
    """Per eval set {example id: predicted text} (QA): predictions.json for val, <set>_predictions.json
    for the others, beside metrics.json."""
    written = []
    for eval_set, by_id in predictions.items():
        path = directory / ("predictions.json" if eval_set == "val" else f"{eval_set}_predictions.json")
        write_atomic(path, json.dumps(by_id, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def check_writable(path: Path, key: str, shown: Path | None = None) -> None:
    """Refuse an output file path that cannot be written, before any work: a folder, a parent that
    is a file, or a folder where files cannot be created. Folders still to be made are fine (they
    are made when the file is written); nothing is left behind by the check. `shown`: the path the
    user gave, when `path` is a file written beside it."""
    path = path.expanduser().absolute()
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder. Fix: give a file path, e.g. {key}={path / 'out.json'}.")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{key}={shown or path}: {parent} is a file, so no file can be written below it. Fix: choose "
                        "another path.")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".gpt2tasks-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{key}={shown or path}: cannot write in {parent} ({exc.strerror or type(exc).__name__}). Fix: "
                        "choose a folder you can write to, or fix its permissions.") from None
