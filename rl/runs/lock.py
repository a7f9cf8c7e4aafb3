"""The run lock: one process at a time holds a run directory (an ``flock`` on its lock
file), and what only the holder may do (clear the run, remove killed writers' temp files).
See docs/run-directory.md."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

from rl.runs.errors import RunDirError
from rl.runs.layout import LOCK_FILE

__all__ = ["RunLock", "clear_run_dir", "lock_run_dir", "refuse_dangling_link",
           "remove_temp_files"]


try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None

_held: dict[str, list[int]] = {}  # resolved run dir -> [fd, holders in this process]
_held_guard = threading.Lock()


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


class RunLock:
    """This process's hold on one run directory's lock (see ``lock_run_dir``)."""

    def __init__(self, key: str, path: Path) -> None:
        self._key = key
        self.path = path
        self.released = False

    def release(self) -> None:
        """Give the hold back; the lock itself goes when this process's last hold does."""
        if self.released:
            return
        self.released = True
        with _held_guard:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                os.close(entry[0])  # releases the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def refuse_dangling_link(path: str | os.PathLike[str]) -> None:
    """``RunDirError`` if run directory ``path`` (or a folder above it) is a symbolic link
    to nothing (its target deleted, or on a disk not mounted): creating it would fail with a
    bare "File exists", and reading it would find no run where there may be one."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():  # follows links: from here up, everything resolves
            return
        if p.is_symlink():
            where = f"run dir {p}" if p == Path(path) else f"run dir {path}: the folder {p}"
            raise RunDirError(
                f"{where} is a symbolic link to {os.readlink(p)}, which does not exist; mount "
                f"or restore its target, or remove the link (rm {p}) to start afresh there"
            )


def lock_run_dir(path: str | os.PathLike[str], *, wait: bool = False) -> RunLock:
    """Hold the exclusive lock of run directory ``path`` (created if missing).

    The lock is an ``flock`` on ``<path>/.lock``, which names the holder's PID. It is
    re-entrant within a process and released by ``RunLock.release`` (or the ``with``
    block's end) once every hold of this process is given back, or by the kernel when the
    process dies. Another process holding it: ``RunDirError`` naming its PID, or, with
    ``wait``, block until it is free.
    """
    path = Path(path)
    refuse_dangling_link(path)
    path.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
            return RunLock(key, path)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not wait:
                        holder = _lock_holder(fd)
                        raise RunDirError(
                            f"run dir {path} is in use by process {holder} (it holds "
                            f"{path / LOCK_FILE}); wait for that process to end (or stop it: "
                            f"kill {holder}), or use another --run-dir"
                        ) from None
                    fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        _held[key] = [fd, 1]
    return RunLock(key, path)


def clear_run_dir(path: str | os.PathLike[str]) -> None:
    """Remove everything in run directory ``path`` but its lock file (to start it over).

    The caller holds the run's lock (``lock_run_dir``), which stays valid.
    """
    path = Path(path)
    if not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove_temp_files(directory: str | os.PathLike[str]) -> int:
    """Remove the temp files (``.<name>.<random>.tmp``) of killed writers in ``directory``.

    Only for a directory whose writers are known to be gone (the caller holds the run's
    lock). Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
    return removed
