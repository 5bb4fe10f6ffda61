"""Writing files safely: whole or not at all, never through a link, one writer per folder.

    write_text("run/config.yaml", text)                    # atomic: temporary file, then rename
    write_atomically("fig.png", lambda tmp: figure.savefig(tmp, format="png"))
    with folder_written_atomically("data") as building:    # a whole folder replaced at once
        ...
    with folder_lock("checkpoints/gan", "pix2pixhd train --name gan"):
        ...                                                # a second writer is refused

Every file this package (and its scripts) writes goes through here, so a crash leaves no
half-written file under the real name, a link in an output folder never sends a write to its
target, and the checks live in one place. Imports nothing of the package: `layout` (the
dataset's paths) and every writer build on it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import numbers
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset file or folder that cannot be used as it is."""


class FolderBusyError(DataError):
    """Another process holds the lock of a folder this command would write."""


# --- single files -----------------------------------------------------------------------------


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_link(path: str | Path, folder: str | Path) -> None:
    """DataError if `path`, a folder this package writes into inside `folder`, is a link."""
    if Path(path).is_symlink():
        raise DataError(f"{path} is a symbolic link (to {os.readlink(path)}): writing through "
                        f"it would change files outside {folder}; remove the link, or choose "
                        "another output folder")


def output_path(folder: str | Path, *names: str) -> Path:
    """folder/names[0]/.../names[-1], its subfolders made; a subfolder that is a link is refused.

    `folder` is the user's choice (it may well be a link to scratch space), but a link inside
    it, such as OUT/nuclei pointing at the real stains, would send every write into the
    link's target. The file itself may be a link: `write_atomically` replaces the link, not
    its target.
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for name in names[:-1]:
        path = path / name
        refuse_link(path, folder)
        path.mkdir(exist_ok=True)
    return path / names[-1]


def write_atomically(path: str | Path, write: Callable[[str], object]) -> Path:
    """Let `write` fill a temporary file beside `path`, then rename it: a reader (or a resumed
    download, or a crash) never sees a half-written file under the real name.

    Leftover temporaries of `path` from a killed earlier write are removed first, and the file
    takes the mode the umask gives new files (mkstemp alone would make it private, 0600). A
    `path` that is a symbolic link is replaced by the new file; its target is left alone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        leftover.unlink(missing_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (`write_atomically`)."""
    return write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def write_json(path: str | Path, values: dict[str, Any]) -> Path:
    """Write a flat dict (e.g. a summary of metrics) as JSON, atomically; nan and inf -> null.

    JSON has no nan or inf (Python would write invalid tokens), so a score that is undefined
    (nan) or unbounded (the inf PSNR of a perfect prediction) is stored as null.
    """
    plain = {key: None if isinstance(value, numbers.Real) and not math.isfinite(value)
             else value for key, value in values.items()}
    return write_text(path, json.dumps(plain, indent=2, sort_keys=True, allow_nan=False) + "\n")


# --- whole folders ----------------------------------------------------------------------------


def _resolved_folder(folder: str | Path) -> Path:
    """`folder` made absolute; a link to a folder is followed, a dangling link refused."""
    folder = Path(folder).absolute()
    if folder.is_symlink():
        if not folder.exists():
            raise DataError(f"{folder} is a symbolic link to {os.readlink(folder)}, which does "
                            "not exist; make that folder or choose another one")
        folder = folder.resolve()
    return folder


@contextlib.contextmanager
def folder_written_atomically(folder: str | Path) -> Iterator[Path]:
    """A new, empty folder beside `folder` to fill; when the block ends well it takes the place
    of `folder` (the earlier one is deleted only then), on an error it is deleted.

    So a reader, an interrupted re-run or a crash sees either the old folder or the complete
    new one, never a mix. Hidden leftovers `.NAME.*.part` of a killed earlier run are removed
    first (hold the folder's lock: a concurrent run's are not leftovers). Between the two
    renames of a replacement the name is briefly absent. A `folder` that is a symbolic link
    stays one: its target is replaced.
    """
    folder = _resolved_folder(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file; choose a folder (it will be made)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    for leftover in folder.parent.glob(f".{glob.escape(folder.name)}.*.part"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    building = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
    try:
        os.chmod(building, 0o777 & ~current_umask())  # mkdtemp makes it private (0700)
        yield building
        if folder.is_dir() and any(folder.iterdir()):
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.",
                                        suffix=".old.part"))
            os.replace(folder, old)
            os.replace(building, folder)
            shutil.rmtree(old)
        else:
            os.replace(building, folder)  # an empty folder is replaced by rename alone
    finally:
        if building.exists():
            shutil.rmtree(building)


# --- one writer per folder --------------------------------------------------------------------
#
# The lock is `fcntl.flock` on a small file beside the folder (`.<folder>.lock`), not inside
# it: a dataset is re-written by renaming a new folder into place, which would take a lock
# inside the old one away with it. The kernel drops a flock when its process ends, however it
# ends (Ctrl-C, SIGKILL, a crash), so a lock left by a dead process is taken over; the file
# records who holds it (pid, host, command, since when) for the message the next command
# shows, and the next command says when it takes over the file of a process that is gone.
# Where flock does not exist (Windows) folders are not locked.


def lock_path(folder: str | Path) -> Path:
    """The lock file of `folder`: `.<name>.lock` beside it (a symlinked folder: its target's)."""
    folder = _resolved_folder(folder)
    return folder.parent / f".{folder.name}.lock"


def command_line() -> str:
    """This process's command as a person typed it, for the lock's record."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py":  # python -m pix2pixhd
        argv[0] = f"python -m {Path(argv[0]).parent.name}"
    return " ".join(argv)


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold the lock of `folder` while the block runs; FolderBusyError names its holder.

    `command` (default: this process's command line) is recorded for that message. The lock
    file goes when the block ends; a process that opened it just before is told to try again.
    """
    if fcntl is None:
        log.debug("no flock on this system: %s is not locked", folder)
        yield Path(folder)
        return
    path = lock_path(folder)
    made = _missing_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, folder)
    try:
        _note_stale(path, handle)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "command": command or command_line(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(handle, 0)
        os.write(handle, (json.dumps(record) + "\n").encode())
        yield Path(folder)
    finally:
        # unlink while still holding the lock: a waiter that opened this file sees it gone
        path.unlink(missing_ok=True)
        os.close(handle)
        _remove_empty(made)


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders the lock made (deepest first) while they are empty: a command that
    failed before writing anything leaves no trace, one that wrote keeps its folders."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _acquire(path: Path, folder: str | Path) -> int:
    """An open descriptor of `path` holding an exclusive flock on the file that is there now."""
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            os.close(handle)
            raise FolderBusyError(
                f"{folder} is in use by {holder}; wait until it finishes, or stop it (the lock "
                f"is {path}, released when that process ends)") from None
        except BaseException:
            os.close(handle)
            raise
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # released and removed between our open and our flock
            same = False
        if same:
            return handle
        os.close(handle)


def _record(handle: int) -> dict | None:
    """What the lock file says of its holder, or None (empty, or written a moment ago)."""
    try:
        record = json.loads(os.pread(handle, 4096, 0).decode())
    except (ValueError, OSError):
        return None
    return record if isinstance(record, dict) else None


def _holder(handle: int) -> str:
    """'process 1234 on host (command, since ...)' from the lock file, or what is known."""
    record = _record(handle)
    try:
        return (f"process {record['pid']} on {record['host']} ({record['command']}, since "
                f"{record['since']})")
    except (KeyError, TypeError):
        return "another process"


def _note_stale(path: Path, handle: int) -> None:
    """Log that the lock file of a process that ended without removing it (SIGKILL, a power
    cut) is taken over: the flock was already free, the file was only a leftover."""
    record = _record(handle)
    if record is None or record.get("pid") == os.getpid():
        return
    log.info("%s was left by process %s (%s), which is gone; taking it over", path,
             record.get("pid"), record.get("command", "unknown command"))


def stop_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (`kill PID`, a scheduler's time limit) into SystemExit, so that `finally`
    blocks run: the lock file and the temporaries of a stopped command go with it, as they do
    on Ctrl-C. (SIGKILL cannot be caught; its lock is taken over by the next command.)"""
    import signal

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, _exit)
