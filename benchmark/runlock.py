"""One process per run directory: an exclusive lock while a run executes.

Two processes running the same configuration (two grid invocations over overlapping cells, a
``bench run`` while a grid runs it) would write the same checkpoints, logs and result file and
leave a run directory that belongs to neither. ``run_lock`` takes an exclusive ``flock`` on
``<run dir>/RUNNING`` and writes the owner's pid, host and start time into it. The kernel
drops the lock when the owner exits however it exits (SIGKILL, out of memory), so a lock is
never stale; on NFS, Linux maps ``flock`` to POSIX byte-range locks, which hold across hosts.
The file stays after the run (deleting a lock file races with a process that has it open).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = "RUNNING"


class RunInProgressError(RuntimeError):
    """The run directory is locked by another live process."""

    def __init__(self, directory: Path, holder: dict) -> None:
        self.directory = directory
        self.holder = holder
        started = holder.get("started")
        since = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}" if started else ""
        super().__init__(f"run {directory.name} is already running in process {holder.get('pid', '?')} on "
                         f"{holder.get('host', '?')}{since} ({directory / LOCK_NAME}); not starting a second copy")


def _owner(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}  # the owner is writing it right now


def try_lock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without blocking; False if another holder has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_holder(directory: str | Path) -> dict | None:
    """The owner (``{"pid", "host", "started"}``) of the live lock on ``directory``, or None
    when no process is running it."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if try_lock(fd):
            return None  # nobody holds it (our probe lock goes with the close below)
        return _owner(fd)
    finally:
        os.close(fd)


@contextmanager
def run_lock(directory: str | Path) -> Iterator[None]:
    """Hold ``directory``'s lock for the body; raises :class:`RunInProgressError` if another
    live process holds it. ``directory`` is created if missing."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        if not try_lock(fd):
            raise RunInProgressError(directory, _owner(fd))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
