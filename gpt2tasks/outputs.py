"""The run directory contract: config.yaml, metrics.json, checkpoints/{best,last}.ckpt.

A run never silently overwrites another: an output_dir that already holds a run is refused unless
`overwrite=true` (replace it) or `resume=true` (continue it). Files are written atomically, so a
crash never leaves a half-written config or metrics file.

What a command may replace or delete is one policy, used by every command (`replace_problem`,
`remove_marked`, `check_output_file`):
- a folder only when it carries gpt2tasks' own marker -- `.gpt2tasks-run` in a run folder,
  `.gpt2tasks-export` in an export -- or, for folders written before the markers, the layout those
  versions wrote (`is_run`, `is_export`); never the working directory, a folder above it, the home
  folder or a filesystem root; never through a symbolic link;
- a file only with overwrite=true, and only a regular file (not a folder, not a link).
One run folder has one writer: `run_lock` holds an exclusive lock on it for the whole run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from gpt2tasks.errors import UserError

log = logging.getLogger("gpt2tasks")

RUN_MARKERS = ("config.yaml", "metrics.json", "checkpoints")

# gpt2tasks' own marks: a folder carrying one was written by gpt2tasks and may be replaced by it.
RUN_MARKER, EXPORT_MARKER = ".gpt2tasks-run", ".gpt2tasks-export"
#: everything a run writes at the top of its folder: a folder holding config.yaml and nothing else
#: than these is a run of a version before RUN_MARKER (besides *_predictions.json of other eval sets)
RUN_ENTRIES = frozenset({RUN_MARKER, "config.yaml", "metrics.json", "checkpoints", "plots", "predictions.json",
                         "logs", "tensorboard", "wandb"})
#: the first line of a multi-task export's README (export.multitask_card), before EXPORT_MARKER
MULTITASK_EXPORT_TITLE = "# Multi-task GPT-2 export (gpt2tasks)"


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def previous_dir(output_dir: Path) -> Path:
    """Where overwrite=true keeps the run it replaces until the new run has a checkpoint."""
    return output_dir.with_name(f"{output_dir.name}.previous")


def holds_files(output_dir: Path) -> bool:
    """Whether the run folder holds anything besides RUN_MARKER (all a run killed right after it
    started leaves: nothing to keep)."""
    return output_dir.is_dir() and any(p.name != RUN_MARKER for p in output_dir.iterdir())


def check_output_dir(output_dir: Path, overwrite: bool, resume: bool) -> Path | None:
    """Refuse a conflicting output_dir early (before any work). Returns the checkpoint to resume.

    Every refusal leads somewhere: a folder with a checkpoint can be resumed or overwritten; one whose
    run stopped before its first checkpoint (nothing to resume) can only be overwritten, and both the
    plain re-run and resume=true say so."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"output_dir={output_dir} is a file. Fix: choose a directory path.")
    kept = previous_dir(output_dir)
    if (kept.exists() or kept.is_symlink()) and (overwrite or resume):
        # A kill (no Python cleanup) between overwrite=true's start and its first checkpoint.
        raise UserError(f"{kept} holds the run that overwrite=true replaced in output_dir={output_dir}; it was "
                        "kept because the new run there stopped before its first checkpoint. Fix: to get it back, "
                        f"delete {output_dir} and rename {kept} to {output_dir.name}; otherwise delete {kept}. "
                        "Then run again.")
    if resume:
        return resume_checkpoint(output_dir)
    if overwrite and holds_files(output_dir):
        problem = replace_problem(output_dir, "output_dir", is_run, "run")
        if problem:
            raise UserError(problem)
    if holds_files(output_dir) and not overwrite:
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
    if not holds_files(output_dir):
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


# ---- what gpt2tasks may replace or delete -----------------------------------------------------
def _regular_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def is_run(folder: Path) -> bool:
    """Whether `folder` is a run folder gpt2tasks wrote: it carries RUN_MARKER, or (a run of a version
    before the marker) it holds config.yaml and nothing a run does not write."""
    if _regular_file(folder / RUN_MARKER):
        return True
    names = [p.name for p in folder.iterdir()]
    return _regular_file(folder / "config.yaml") and all(
        name in RUN_ENTRIES or name.endswith("_predictions.json") for name in names)


def is_export(folder: Path) -> bool:
    """Whether `folder` is an export gpt2tasks wrote: it carries EXPORT_MARKER, or (before the marker)
    a single-task export's gpt2tasks.json, or a multi-task export's README title with only task
    folders (each holding gpt2tasks.json) and base/ beside it."""
    if _regular_file(folder / EXPORT_MARKER) or _regular_file(folder / "gpt2tasks.json"):
        return True
    readme = folder / "README.md"
    try:
        title = readme.read_text(errors="replace").splitlines()[0] if _regular_file(readme) else ""
    except (OSError, IndexError):
        return False
    others = [p for p in folder.iterdir() if p.name != "README.md"]
    return title == MULTITASK_EXPORT_TITLE and all(
        not p.is_symlink() and p.is_dir() and (p.name == "base" or _regular_file(p / "gpt2tasks.json")) for p in others)


def protected_reason(folder: Path) -> str | None:
    """Why `folder` is never replaced whatever it holds (None: it is not one of those): the working
    directory or a folder above it (the user's other files are there), the home folder or one above
    it, a filesystem root or mount point."""
    real = Path(os.path.realpath(os.path.expanduser(folder)))
    here, home = Path(os.path.realpath(os.getcwd())), Path(os.path.realpath(os.path.expanduser("~")))
    if real == here or real in here.parents:
        return "the working directory" if real == here else f"a folder above the working directory ({here})"
    if real == home or real in home.parents:
        return "the home folder" if real == home else "a folder above the home folder"
    if real == Path(real.anchor) or os.path.ismount(real):
        return "a filesystem root"
    return None


def replace_problem(folder: Path, key: str, marked: Callable[[Path], bool], what: str) -> str | None:
    """Why `folder` (the value of `key`) may not be replaced or emptied, as a message naming the fix;
    None when it may: a real folder (not a link), not protected (`protected_reason`), carrying
    gpt2tasks' mark of a `what` ("run" or "export"), as `marked` tells."""
    shown = f"{key}={folder}"
    if folder.is_symlink():
        return (f"{shown} is a symbolic link (to {os.readlink(folder)}); gpt2tasks never replaces what a link points "
                "to. Fix: give the folder itself, or a new folder.")
    reason = protected_reason(folder)
    if reason:
        return (f"{shown} is {reason}; gpt2tasks never replaces or empties it, whatever it holds. Fix: choose a "
                f"folder of its own, e.g. {key}={folder / f'my-{what}'}.")
    if not marked(folder):
        mark = RUN_MARKER if what == "run" else EXPORT_MARKER
        return (f"{shown} is not empty and was not written by gpt2tasks (no {mark} file, nor the layout of a "
                f"gpt2tasks {what}), so overwrite=true does not replace it. Fix: choose "
                f"another {key}, or move what is in {folder} away yourself.")
    return None


def remove_marked(folder: Path, marked: Callable[[Path], bool], what: str) -> None:
    """Delete `folder`, a staging or set-aside folder gpt2tasks made beside an output (`<out>.previous`,
    `<out>.partial-export`, ...), only if it carries gpt2tasks' mark of a `what`; anything else there
    (a link, someone's folder of that name) is a UserError naming it. shutil.rmtree removes links
    inside the folder as links: their targets are never touched."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()  # nothing in it to lose (e.g. an empty out= moved aside by export)
        return
    if folder.is_symlink() or not folder.is_dir() or not marked(folder):
        raise UserError(f"{folder} is in the way of gpt2tasks (it uses that name beside its output while writing), but "
                        f"it is not a {what} folder gpt2tasks wrote, so it is left alone. Fix: move or delete it "
                        "yourself, then run again.")
    shutil.rmtree(folder)


def check_output_file(path: Path, key: str, overwrite: bool, shown: str | None = None) -> Path:
    """An output file path (`key`=`path`) made absolute, checked before any work: an existing one is
    replaced only with overwrite=true and only if it is a regular file (not a folder, not a link:
    the atomic write would replace the link itself, and the user meant its target or nothing);
    its folder must be writable (`check_writable`)."""
    path = Path(os.path.expanduser(path)).absolute()
    given = shown or str(path)
    if path.is_symlink():
        raise UserError(f"{key}={given} is a symbolic link (to {os.readlink(path)}); gpt2tasks does not write through "
                        "links. Fix: give the real path, or a new file.")
    if path.is_dir():
        raise UserError(f"{key}={given} is a folder. Fix: give a file path, e.g. {key}={path / 'out.json'}.")
    if path.exists() and not path.is_file():
        raise UserError(f"{key}={given} exists and is not a regular file. Fix: choose another path.")
    if path.exists() and not overwrite:
        raise UserError(f"{key}={given} already exists. Fix: choose another file, or add overwrite=true to replace it.")
    check_writable(path, key)
    return path


# ---- one run folder, one writer -------------------------------------------------------------------
@contextlib.contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder `output_dir` (made if missing) for the block: a
    second `train` into it -- a new run, resume=true, overwrite=true, another sweep job -- is
    refused naming the first's pid, host and start (from RUN_MARKER, `write_run_marker`).

    The lock is the folder itself (flock on its directory descriptor): it writes nothing, so it can
    be taken before any check (a refused command leaves no trace), and it survives overwrite=true,
    which moves the folder's contents, not the folder. The kernel releases it when the process ends
    however it ends (a kill -9 leaves no stale lock). Only global rank 0 calls it: the ranks of one
    run are one writer. A filesystem without flock on folders (some network mounts) runs unlocked,
    with a warning."""
    made = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UserError(f"output_dir={output_dir}: cannot create or open it ({exc.strerror or exc}). Fix: choose a "
                        "folder you can write to.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"output_dir={output_dir} is in use by {_lock_owner(output_dir)}: one run folder has one "
                            "writer. Fix: wait for that run to finish (then resume=true continues it), or choose "
                            "another output_dir.") from None
        except OSError as exc:
            log.warning("output_dir=%s cannot be locked on this filesystem (%s): a second run into it at the same "
                        "time would not be detected.", output_dir, exc.strerror or exc)
        yield
    finally:
        os.close(fd)  # releases the lock
        if made:
            remove_if_empty(output_dir)  # made here for a run that wrote nothing


def write_run_marker(output_dir: Path) -> None:
    """RUN_MARKER: this folder is a gpt2tasks run, written by this process (what a refused second
    run names). Written by rank 0 as the run starts writing, before config.yaml."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
    write_atomic(output_dir / RUN_MARKER, json.dumps(owner) + "\n")


def _lock_owner(output_dir: Path) -> str:
    """Who holds the lock, from RUN_MARKER. Until the holder writes its own (once its checks pass),
    the marker is the previous run's: a pid that is gone on this host is not named."""
    try:
        owner = json.loads((output_dir / RUN_MARKER).read_text())
        pid, host, started = int(owner["pid"]), str(owner["host"]), str(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another gpt2tasks process (starting)"
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "another gpt2tasks process (starting)"
        except PermissionError:
            pass  # alive, another user's
    return f"pid {pid} on host {host} since {started}"


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


#: errors of the filesystem that the user fixes, and how
FILESYSTEM_FIXES = {
    errno.ENOSPC: "free space on that filesystem, or write elsewhere",
    errno.EDQUOT: "free space within your quota, or write elsewhere",
    errno.EROFS: "write to a folder on a writable filesystem",
    errno.EACCES: "choose a folder you can write to, or fix its permissions",
    errno.EPERM: "choose a folder you can write to, or fix its permissions",
    errno.ENOTDIR: "a file stands where the path needs a folder: choose another path",
}


def filesystem_problem(exc: OSError) -> str | None:
    """The message of an OSError the user fixes (full disk, quota, read-only or forbidden folder, a
    file where a folder is expected), None for others. Writers write to temporary names renamed
    when complete (save_atomic, resume.save_atomic, export's staging folder), so such a failure
    leaves the previous file or checkpoint as it was."""
    fix = FILESYSTEM_FIXES.get(exc.errno)
    if fix is None:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return (f"{where}{exc.strerror or os.strerror(exc.errno)}. Nothing half-written was kept (files are written "
            "under a temporary name and renamed once complete; what was there before is as it was). Fix: "
            f"{fix}, then run again (a train run: resume=true continues from its last checkpoint).")


def current_umask() -> int:
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return umask


def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the process umask (0644 under the usual 022)."""
    return 0o666 & ~current_umask()


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    write_atomic(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def write_predictions(directory: Path, predictions: dict[str, dict[str, str]]) -> list[Path]:
    """Per eval set {example id: predicted text} (QA): predictions.json for val, <set>_predictions.json
    for the others, beside metrics.json."""
    written = []
    for eval_set, by_id in predictions.items():
        path = prediction_path(directory, eval_set)
        write_atomic(path, json.dumps(by_id, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def prediction_path(directory: Path, eval_set: str) -> Path:
    return directory / ("predictions.json" if eval_set == "val" else f"{eval_set}_predictions.json")


def check_writable(path: Path, key: str, shown: Path | None = None) -> None:
    """Refuse an output file path that cannot be written, before any work: a folder, a parent that
    is a file, or a folder where files cannot be created. Folders still to be made are fine (they
    are made when the file is written); nothing is left behind by the check. `shown`: the path the
    user gave, when `path` is a file written beside it."""
    path = path.expanduser().absolute()
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder. Fix: give a file path, e.g. {key}={path / 'out.json'}.")
    _check_can_create_in(path.parent, key, shown or path)


def check_folder_writable(folder: Path, key: str) -> None:
    """Refuse an output folder (`key`=`folder`) that cannot be made or written in, before any work:
    a file, a file on its path, a folder where files cannot be created. Nothing is left behind."""
    folder = folder.expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}={folder} is a file. Fix: choose a folder path.")
    _check_can_create_in(folder, key, folder)


def _check_can_create_in(folder: Path, key: str, shown: Path) -> None:
    """Files can be created in `folder` (or, while it does not exist, in the closest existing folder
    above it, where it would be made): probed with a temporary file, removed at once."""
    parent = folder
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{key}={shown}: {parent} is a file, so no file can be written below it. Fix: choose "
                        "another path.")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".gpt2tasks-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{key}={shown}: cannot write in {parent} ({exc.strerror or type(exc).__name__}). Fix: "
                        "choose a folder you can write to, or fix its permissions.") from None
