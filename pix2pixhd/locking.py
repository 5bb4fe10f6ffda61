"""One writer per folder: a lock that a second command on the same run or dataset folder meets.

    with folder_lock("checkpoints/pix2pixhd_nuclei", "pix2pixhd train --name pix2pixhd_nuclei"):
        ...  # write into the folder

The lock is `fcntl.flock` on a small file beside the folder (`.<folder>.lock`), not inside it:
a dataset is re-written by renaming a new folder into place, which would take a lock inside
the old one away with it. The kernel drops a flock when its process ends, however it ends
(Ctrl-C, SIGKILL, a crash), so a lock left by a dead process is simply taken over; the file
records who holds it (pid, host, command, since when) for the message the next command shows.
Where flock does not exist (Windows) folders are not locked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

from pix2pixhd.layout import DataError

log = logging.getLogger(__name__)


class FolderBusyError(DataError):
    """Another process holds the lock of a folder this command would write."""


def lock_path(folder: str | Path) -> Path:
    """The lock file of `folder`: `.<name>.lock` beside it (a symlinked folder: its target's)."""
    folder = Path(folder).absolute()
    if folder.is_symlink():
        if not folder.exists():
            raise DataError(f"{folder} is a symbolic link to {os.readlink(folder)}, which does "
                            "not exist; make that folder or choose another one")
        folder = folder.resolve()
    return folder.parent / f".{folder.name}.lock"


def command_line() -> str:
    """This process's command as a person typed it, for the lock's record."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py":  # python -m pix2pixhd
        argv[0] = f"python -m {Path(argv[0]).parent.name}"
    return " ".join(argv)


@contextmanager
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


def _holder(handle: int) -> str:
    """'process 1234 on host (command, since ...)' from the lock file, or what is known."""
    try:
        record = json.loads(os.pread(handle, 4096, 0).decode())
        return (f"process {record['pid']} on {record['host']} ({record['command']}, since "
                f"{record['since']})")
    except (ValueError, KeyError, TypeError, OSError):  # written a moment ago, not yet recorded
        return "another process"
