"""One writer per run folder: a lock file naming its owner, and the new/resume/overwrite rules of a run folder.

    from msdfast.runlock import RunLock, open_run_folder

    with RunLock(folder):                  # the lock alone (e.g. a sweep's shard folder)
        ...
    with open_run_folder(out, resume=args.resume, overwrite=args.overwrite, checkpoint="checkpoint.pt"):
        ...                                # the lock + the folder rules every `msdfast` run command follows

`RunLock(folder)` creates `folder/run.lock` holding {"pid", "host", "started", "argv"} and keeps an exclusive
flock(2) on it until released (the context ends or the process dies: kill -9 releases it, so the lock of a
dead process is stale by construction and the next run takes it over). A second writer, in this process or any
other, gets a UserInputError naming the folder and the owner. On a file system without flock (ENOLCK) the
owner's pid is checked instead (same host and the pid gone = stale). The lock file is removed on release.

`open_run_folder` applies the rules (issue 17 item 4) before anything is written, then holds the lock:
  * --resume on a missing folder, or on one without `checkpoint` (a file or folder name), is an error;
  * a new run (no --resume) on a non-empty folder is an error, unless `overwrite`, which first empties a folder
    that holds an msdfast run (config.json, metrics.json or `checkpoint`; anything else is never deleted).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import UserInputError

__all__ = ["RunLock", "open_run_folder", "lock_owner", "LOCK_NAME"]

LOCK_NAME = "run.lock"
_RUN_MARKERS = ("config.json", "metrics.json")


def lock_owner(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The owner recorded in folder's lock file ({"pid", "host", "started", "argv"}), None if there is none."""
    try:
        rec = json.loads((Path(folder) / LOCK_NAME).read_text())
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}"


class RunLock:
    """Exclusive ownership of a run folder (module doc). Use as a context manager, or acquire()/release()."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock; UserInputError naming the folder and its owner when another writer holds it."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv}
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserInputError(f"--out: {self.folder} is in use by {_describe(lock_owner(self.folder))} "
                                     f"(lock file {self.path}); wait for it or use another --out") from None
            except OSError as e:
                if e.errno != errno.ENOLCK:
                    os.close(fd)
                    raise
                owner = lock_owner(self.folder)   # no flock on this file system: trust the recorded pid
                if (owner and owner.get("host") == me["host"] and isinstance(owner.get("pid"), int)
                        and owner["pid"] != me["pid"] and _pid_alive(owner["pid"])):
                    os.close(fd)
                    raise UserInputError(f"--out: {self.folder} is in use by {_describe(owner)} "
                                         f"(lock file {self.path}); wait for it or use another --out") from None
            try:   # the file we locked must still be the one at self.path (a releasing owner unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(me).encode())
            os.fsync(fd)
            self._fd = fd
            return self
        raise UserInputError(f"--out: could not take the lock {self.path} (it keeps changing)")

    def release(self) -> None:
        """Give the lock up (removes the lock file). Safe to call twice."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)   # closing drops the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def open_run_folder(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                    checkpoint: str = "checkpoint.pt") -> Iterator[RunLock]:
    """Check the run-folder rules for a new or resumed run, then hold its lock for the block (module doc)."""
    out = Path(out)
    if resume and overwrite:
        raise UserInputError("--overwrite: cannot be combined with --resume (one continues the run in --out, the "
                             "other deletes it)")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out: {out} is a file, not a run folder")
    if resume and not out.is_dir():
        raise UserInputError(f"--resume: the run folder {out} does not exist (nothing to resume; drop --resume "
                             "to start a new run)")
    with RunLock(out) as lock:
        if resume and not (out / checkpoint).exists():
            raise UserInputError(f"--resume: {out} has no {checkpoint} to resume from (the run never reached a "
                                 "checkpoint); drop --resume and add --overwrite to start it again")
        others = [p for p in out.iterdir() if p.name != LOCK_NAME]
        if not resume and others:
            if not overwrite:
                raise UserInputError(f"--out: {out} is not empty; pass --resume to continue the run in it, "
                                     "--overwrite to replace it, or choose another --out")
            if not any((out / m).exists() for m in (*_RUN_MARKERS, checkpoint)):
                raise UserInputError(f"--overwrite: {out} does not hold an msdfast run (no config.json, "
                                     f"metrics.json or {checkpoint}); refusing to delete its contents")
            for p in others:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        yield lock
