"""The run directory lock: one job at a time writes a run directory.

The lock is an advisory `flock` on `<run>/.lock`, not a file whose existence is the lock.
The kernel drops it when its holder ends however it ends (SIGKILL, out of memory), so a
killed job never blocks the next one and there is no stale lock to detect. Over NFS it
excludes processes on every host, and a dead host's locks go when its NFSv4 lease expires
(v3 with lockd: when the host reboots). A pid recorded in a file could only be checked
for liveness on its own host: a multi-worker chief restarted on another node could not
tell its predecessor's lock from a live one. The file also records who holds the lock (host, pid,
start time) for the message a second job gets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dltoolkit.core.errors import RunDirError

LOCK_FILE = ".lock"
# Filesystems that cannot lock (e.g. NFS mounted without a lock daemon) raise one of these.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass
class _Hold:
    fd: int
    created: bool  # the lock made the directory (and removes it if nothing else was written)


_held: dict[Path, _Hold] = {}


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[None]:
    """Hold `directory`'s lock for the block, creating the directory; re-entrant within a
    process. Raises RunDirError at once if another process holds it."""
    directory = Path(directory)
    key = directory.resolve()
    if key in _held:  # this process holds it already (e.g. fit inside the CLI's hold)
        yield
        return
    _held[key] = _acquire(directory)
    try:
        yield
    finally:
        _release(directory, _held.pop(key))


def _acquire(directory: Path) -> _Hold:
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"'{directory}' is a file; a run directory must be a directory")
    created = not directory.exists()
    lock = directory / LOCK_FILE
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the last holder removed the directory meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(_in_use_message(directory)) from None
        except OSError as err:
            if err.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            warnings.warn(
                f"cannot lock '{directory}' ({err.strerror}): nothing stops another job from "
                "writing it at the same time",
                stacklevel=2,
            )
            return _Hold(fd, created)
        if _is_current(fd, lock):
            break
        os.close(fd)  # its holder removed the file before we locked it: lock the new one
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    return _Hold(fd, created)


def _is_current(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the one at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _release(directory: Path, hold: _Hold) -> None:
    """Unlock; a directory the lock created and nothing else was written to goes too."""
    try:
        os.ftruncate(hold.fd, 0)
        if hold.created and [p.name for p in directory.iterdir()] == [LOCK_FILE]:
            (directory / LOCK_FILE).unlink()
            directory.rmdir()
    except FileNotFoundError:  # a failed run removed its directory, lock file included
        pass
    finally:
        os.close(hold.fd)


def _holder(directory: Path) -> dict:
    """Who holds (or last held) `directory`'s lock: host, pid, since; {} if unknown."""
    try:
        return json.loads((Path(directory) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _in_use_message(directory: Path) -> str:
    who = _holder(directory)
    by = f" (pid {who.get('pid')} on {who.get('host')}, since {who.get('since')})" if who else ""
    return (
        f"'{directory}' is in use by another dltoolkit job{by}; wait for it to end "
        "or choose another --out"
    )
