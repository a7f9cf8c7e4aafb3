"""Atomic, durable file writes (temp file, fsync, rename, fsync the directory) and JSON
reading. See docs/run-directory.md for the durability rules."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_file",
    "atomic_symlink",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_texts",
    "fsync_dir",
    "naming_file",
    "read_json",
    "with_filename",
    "save_figure",
]


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file name in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]):
    """Yield a binary file object; on success it replaces ``path`` atomically and durably.

    On any exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o644)  # mkstemp makes 0600; run files are meant to be shared
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise with_filename(exc, path) from exc
        raise
    fsync_dir(directory)


def with_filename(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc`` naming ``path`` where it names no file: a failed write() or fsync() (disk
    full, file size limit) does not, and the one-line error must say which file (#24)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, os.fspath(path))


@contextlib.contextmanager
def naming_file(path: str | os.PathLike[str]):
    """Re-raise an OSError inside the block with ``path`` as its file name where it has none."""
    try:
        yield
    except OSError as exc:
        named = with_filename(exc, path)
        if named is exc:
            raise
        raise named from exc


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, os.replace, fsync dir."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_texts(files: Mapping[str | os.PathLike[str], str]) -> None:
    """Replace files that belong together (e.g. fit.csv and fit_per_batch.csv): every old
    one is removed before any new one is written, so that an interruption leaves some of
    them missing, never a new one beside an old one (#24 item 3)."""
    paths = [Path(p) for p in files]
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for directory in {path.parent for path in paths if path.parent.is_dir()}:
        fsync_dir(directory)
    for path, text in zip(paths, files.values(), strict=True):
        atomic_write_text(path, text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON (sorted keys, indent 2) atomically.

    ``obj`` must be plain JSON (dict, list, str, number, bool, None); the caller converts
    dataclasses and the like. NaN/inf are written as Python's ``NaN``/``Infinity``.
    """
    atomic_write_text(path, json.dumps(obj, sort_keys=True, indent=2) + "\n")


def atomic_symlink(link: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Point the symlink ``link`` at ``target`` atomically (a new link, then os.replace): a
    reader sees the old target or the new one. ``target`` is stored as given (relative
    targets resolve from the link's folder). Refuses to replace anything but a symlink."""
    link = Path(link)
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink; not replacing it")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(link.parent)


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """Write a matplotlib figure to ``path`` atomically (rendered in memory, then replaced).

    The format follows the suffix, as ``fig.savefig`` does. Returns the path.
    """

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
