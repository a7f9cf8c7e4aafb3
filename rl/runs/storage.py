"""The run directory of one training run: its on-disk layout and nothing else.

See docs/run-directory.md for the full description.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
import pickle
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

__all__ = [
    "RunDir",
    "RunDirError",
    "UnsafeCheckpointError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "clear_run_dir",
    "RunLock",
    "load_checkpoint_file",
    "load_metrics",
    "lock_run_dir",
    "log_scalars",
    "remove_temp_files",
    "save_figure",
]

CONFIG_FILE = "config.json"
_CREATING = re.compile(rf"\.{re.escape(CONFIG_FILE)}\..+\.tmp")  # create's temp file
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest.json"
TB_DIR = "tb"
LOCK_FILE = ".lock"

_CKPT_RE = re.compile(r"^ckpt_(\d{8,})\.pt$")
_CKPT_FORMAT = 2
_CKPT_FORMATS_READ = (1, 2)  # format 1 differs only in what the trainer put in "state"
_STATES = ("running", "finished", "failed")


class RunDirError(ValueError):
    """A run directory cannot be used the way it was asked to be."""


class UnsafeCheckpointError(RunDirError):
    """A checkpoint file that could only be loaded by running arbitrary code (refused)."""


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """TypeError unless ``value`` is tensors and plain values all the way down."""

    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if type(value) in (dict,) or isinstance(value, Mapping) and type(value).__module__ in (
            "collections", "builtins"):
        for key, item in value.items():
            if type(key) not in _PLAIN:
                raise TypeError(f"checkpoint {where} has a key of type {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint {where} is a {type(value).__module__}.{type(value).__qualname__}; a "
        "checkpoint holds only tensors and plain values (convert it, e.g. float(x) or "
        "torch.as_tensor(x))"
    )


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
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
def _atomic_file(path: str | os.PathLike[str]):
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
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, os.replace, fsync dir."""
    with _atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON (sorted keys, indent 2) atomically.

    ``obj`` must be plain JSON (dict, list, str, number, bool, None); the caller converts
    dataclasses and the like. NaN/inf are written as Python's ``NaN``/``Infinity``.
    """
    atomic_write_text(path, json.dumps(obj, sort_keys=True, indent=2) + "\n")


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """Write a matplotlib figure to ``path`` atomically (rendered in memory, then replaced).

    The format follows the suffix, as ``fig.savefig`` does. Returns the path.
    """

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- the run lock

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


def lock_run_dir(path: str | os.PathLike[str], *, wait: bool = False) -> RunLock:
    """Hold the exclusive lock of run directory ``path`` (created if missing).

    The lock is an ``flock`` on ``<path>/.lock``, which names the holder's PID. It is
    re-entrant within a process and released by ``RunLock.release`` (or the ``with``
    block's end) once every hold of this process is given back, or by the kernel when the
    process dies. Another process holding it: ``RunDirError`` naming its PID, or, with
    ``wait``, block until it is free.
    """
    path = Path(path)
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


# --------------------------------------------------------------------------- metrics


def _plain(value: Any) -> Any:
    """json.dumps fallback: numpy / torch scalars and arrays become Python values."""
    for attr in ("item", "tolist"):
        fn = getattr(value, attr, None)
        if fn is not None:
            try:
                return fn()
            except (TypeError, ValueError, RuntimeError):
                continue
    raise TypeError(f"metrics value {value!r} of type {type(value).__name__} is not JSON")


def _encode_row(row: Mapping[str, Any]) -> str:
    if "iteration" not in row:
        raise RunDirError("a metrics row needs an integer 'iteration' key")
    iteration = row["iteration"]
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral):
        raise RunDirError(f"metrics 'iteration' must be an integer, got {iteration!r}")
    row = {**row, "iteration": int(iteration)}
    line = json.dumps(row, default=_plain, allow_nan=True, separators=(",", ":"))
    if "\n" in line:  # json.dumps escapes newlines in strings; this cannot happen
        raise AssertionError("encoded metrics row spans lines")
    return line + "\n"


def _parse_metrics_lines(
    path: Path, problems: list[str] | None = None
) -> list[tuple[int, str, dict[str, Any]]]:
    """(iteration, raw line, row) for every complete, parseable line of a metrics file.

    A torn final line (crash mid-append) is left out; an unparseable line elsewhere is left
    out too. Each left-out line is described in ``problems`` when a list is given, else
    unparseable lines (not a torn tail) are warned about.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    # What follows the last b"\n" is b"" for a complete file, else a torn last line (the
    # row being written when the process died): it is dropped here.
    lines = data.split(b"\n")
    complete = lines[:-1]
    if lines[-1].strip() and problems is not None:
        problems.append(f"{path}:{len(lines)}: torn last line (no newline at its end)")
    rows = []
    for lineno, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
            row = json.loads(text)
            iteration = row["iteration"]
            if isinstance(iteration, bool) or not isinstance(iteration, int):
                raise TypeError("iteration is not an integer")
        except (UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
            message = f"{path}:{lineno}: unreadable metrics line ({err})"
            if problems is not None:
                problems.append(message)
            else:
                warnings.warn(f"skipping {message}", stacklevel=3)
            continue
        rows.append((iteration, text, row))
    return rows


def _run_finished(metrics_path: Path) -> bool:
    try:
        status = _read_json(metrics_path.parent / STATUS_FILE)
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("state") == "finished"


def load_metrics(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load ``metrics.jsonl`` (or a run directory holding one) into a DataFrame.

    One row per iteration, sorted by ``iteration``; where an iteration occurs more than
    once, the last occurrence in the file wins. Keys missing from a row are NaN. A missing
    file gives an empty frame with an ``iteration`` column.

    Damaged lines: in a run that is not finished (its status.json next to the file says
    so) a torn last line is the row being written when the process died and is ignored,
    and an unreadable line elsewhere is skipped with a warning. In a finished run every
    row was complete, so either one is a ``RunDirError``: dropping it would silently change
    the results.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    problems: list[str] = []
    parsed = _parse_metrics_lines(path, problems)
    if problems and _run_finished(path):
        raise RunDirError(
            f"the finished run's metrics are damaged: {'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
            + ". A finished run writes only whole rows, so the file was changed afterwards "
            "(e.g. a cut-short copy): restore it from the original run directory, or delete "
            "the damaged lines by hand to accept losing those rows."
        )
    for message in problems:
        if "torn last line" not in message:
            warnings.warn(f"skipping {message}", stacklevel=2)
    rows = [row for _, _, row in parsed]
    if not rows:
        return pd.DataFrame({"iteration": pd.Series([], dtype="int64")})
    latest: dict[int, dict[str, Any]] = {}
    for row in rows:
        latest.pop(row["iteration"], None)  # re-insert so that file order stays "last wins"
        latest[row["iteration"]] = row
    frame = pd.DataFrame.from_records(list(latest.values()))
    columns = ["iteration"] + [c for c in frame.columns if c != "iteration"]
    frame = frame[columns].sort_values("iteration", kind="stable").reset_index(drop=True)
    frame["iteration"] = frame["iteration"].astype("int64")
    return frame


# --------------------------------------------------------------------------- tensorboard


def log_scalars(writer: Any, row: Mapping[str, Any], step: int) -> int:
    """Write every finite numeric value of ``row`` to ``writer`` under its key at ``step``.

    Keys containing "/" group into sections in TensorBoard. Booleans, strings, None and
    non-finite numbers are skipped. Returns the number of scalars written.
    """
    written = 0
    for key, value in row.items():
        if isinstance(value, bool) or value is None:
            continue
        if not isinstance(value, numbers.Real):
            item = getattr(value, "item", None)  # numpy / torch 0-d values
            try:
                value = item() if item is not None else None
            except (TypeError, ValueError, RuntimeError):
                value = None
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
        value = float(value)
        if not math.isfinite(value):
            continue
        writer.add_scalar(str(key), value, global_step=step)
        written += 1
    return written


# --------------------------------------------------------------------------- config diff


def _to_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize a config to what json.loads gives back (tuples -> lists, etc.)."""
    try:
        return json.loads(json.dumps(dict(config), sort_keys=True))
    except TypeError as err:
        raise RunDirError(f"run config must be plain JSON: {err}") from err


def flatten_config(obj: Any, prefix: str = "") -> dict[str, str]:
    """Dotted key -> canonical JSON text of the leaf (so NaN compares equal to NaN)."""
    if isinstance(obj, dict) and obj:
        out: dict[str, str] = {}
        for key, value in obj.items():
            out.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(obj, sort_keys=True)}


def _config_diff(old: dict[str, Any], new: dict[str, Any], may_differ: Iterable[str]) -> list[str]:
    """Dotted keys whose values differ (or exist on one side only), minus allowed ones.

    A key in ``may_differ`` allows itself and everything nested below it.
    """
    allowed = tuple(may_differ)
    a, b = flatten_config(old), flatten_config(new)
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))

    def is_allowed(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in allowed)

    return [k for k in differing if not is_allowed(k)]


# --------------------------------------------------------------------------- the run dir


def load_checkpoint_file(path: str | os.PathLike[str], map_location: Any = None
                         ) -> tuple[dict[str, Any], int]:
    """(state, iteration) of one checkpoint file, read with ``weights_only=True``.

    Raises ``UnsafeCheckpointError`` for a file that only a full unpickle could read, and
    ``RunDirError`` for a file that is not a checkpoint of this format.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds Python objects that only a full unpickle "
            "could rebuild, and unpickling a file can run code. It is not a checkpoint of "
            f"this version (format {_CKPT_FORMAT}): either an older rlscale wrote it (finish "
            "that run with the version that started it) or it was not written by rlscale. "
            "Move it out of the checkpoints folder to resume from an older checkpoint, or "
            "start a new run."
        ) from None
    if (not isinstance(payload, dict) or payload.get("format") not in _CKPT_FORMATS_READ
            or not isinstance(payload.get("state"), dict)):
        raise RunDirError(f"{path} is not a checkpoint written by rl.runs.storage")
    return payload["state"], int(payload["iteration"])


class RunDir:
    """One training run's directory. See the module docstring for the layout.

    ``RunDir(path)`` only wraps a path (for reading a finished run). A training process
    gets its ``RunDir`` from ``RunDir.create`` (new run) or ``RunDir.open_for_resume``
    (continue a run), or ``RunDir.open(..., resume=...)`` which picks one of the two; those
    hold the run's lock until ``close``.
    """

    def __init__(self, path: str | os.PathLike[str], *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.path = Path(path)
        self.keep = keep
        self._metrics_checked = False
        self._writer: Any = None
        self._lock: RunLock | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def tb_dir(self) -> Path:
        return self.path / TB_DIR

    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoint_dir / f"ckpt_{int(iteration):08d}.pt"

    # ---------------------------------------------------------------- create / resume
    @classmethod
    def create(
        cls, path: str | os.PathLike[str], config: Mapping[str, Any], *, keep: int = 2
    ) -> RunDir:
        """Start a new run in ``path`` (missing or empty directory) and write config.json.

        Never overwrites a run: a directory that holds anything is an error. Takes the
        run's lock first (held until ``close``), so of two processes creating the same run
        exactly one succeeds; the other gets a ``RunDirError``.
        """
        run = cls(path, keep=keep)
        cfg = _to_json(config)
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(
                f"run dir {run.path} exists and is not a directory; remove that file or "
                "choose another --run-dir"
            )
        run._check_free()  # before the lock file is made: a foreign directory stays as it was
        run._lock = lock_run_dir(run.path)
        try:
            run._check_free()
            remove_temp_files(run.path)  # a killed creator's config temp file
            # Link a complete temp file into place: fails if config.json appeared meanwhile.
            fd, tmp_name = tempfile.mkstemp(prefix=f".{CONFIG_FILE}.", suffix=".tmp",
                                            dir=run.path)
            try:
                with os.fdopen(fd, "wb") as f:
                    if hasattr(os, "fchmod"):
                        os.fchmod(fd, 0o644)
                    f.write((json.dumps(cfg, sort_keys=True, indent=2) + "\n").encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp_name, run.config_path)
                except FileExistsError:
                    raise RunDirError(
                        f"run dir {run.path} was just created by another process; refusing "
                        "to overwrite it. Use a new --run-dir."
                    ) from None
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
            _fsync_dir(run.path)
            _fsync_dir(run.path.parent)
        except BaseException:
            run.close()
            raise
        return run

    def _check_free(self) -> None:
        """RunDirError unless the directory is missing or holds nothing but the lock file
        (and a creator's config temp file: another process is creating this run, and the
        lock then names it, or one was killed doing so, and ``create`` removes its file)."""
        # One listing, then config.json checked in it too: a racing creator may link its
        # config between two looks, and must then be reported as a run, not as clutter.
        entries = [e.name for e in self.path.iterdir()] if self.path.is_dir() else []
        if CONFIG_FILE in entries or self.config_path.exists():
            raise RunDirError(
                f"run dir {self.path} already holds a run (it has {CONFIG_FILE}); refusing to "
                "overwrite it. Use a new --run-dir, or pass --resume with the same config "
                "to continue that run."
            )
        if any(name != LOCK_FILE and not _CREATING.fullmatch(name) for name in entries):
            raise RunDirError(
                f"run dir {self.path} is not empty and holds no {CONFIG_FILE}; refusing to "
                "start a run there. Use a new or empty --run-dir."
            )

    @classmethod
    def open_for_resume(
        cls,
        path: str | os.PathLike[str],
        config: Mapping[str, Any],
        *,
        may_differ: Iterable[str] = (),
        keep: int = 2,
    ) -> RunDir:
        """Reopen an existing run to continue it with ``config``.

        The config must equal the stored one except for the (dotted) keys in
        ``may_differ``, e.g. ``("total_steps",)``; if those differ, config.json is
        rewritten with the new values. The caller then loads the latest checkpoint, calls
        ``truncate_metrics(after_iteration=k)`` and opens TensorBoard with a purge step.
        """
        run = cls(path, keep=keep)
        cfg = _to_json(config)
        if not run.config_path.exists():
            raise RunDirError(
                f"nothing to resume in {run.path}: it has no {CONFIG_FILE}. Start a new run "
                "there without --resume, or point --run-dir at an existing run."
            )
        run._lock = lock_run_dir(run.path)
        try:
            run._check_resumable(cfg, may_differ)
        except BaseException:
            run.close()
            raise
        return run

    def _check_resumable(self, cfg: dict[str, Any], may_differ: Iterable[str]) -> None:
        run = self
        remove_temp_files(run.path)
        try:
            stored = _read_json(run.config_path)
        except (OSError, ValueError) as err:
            raise RunDirError(f"cannot read {run.config_path}: {err}") from err
        differing = _config_diff(stored, cfg, may_differ)
        if differing:
            details = "; ".join(
                f"{k}: stored {flatten_config(stored).get(k, '<absent>')} "
                f"!= given {flatten_config(cfg).get(k, '<absent>')}"
                for k in differing
            )
            raise RunDirError(
                f"cannot resume {run.path}: config differs in {', '.join(differing)} "
                f"({details}). Use a new --run-dir for a different config, or pass "
                "--resume with the same config as the stored run."
            )
        if stored != cfg:
            atomic_write_json(run.config_path, cfg)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        config: Mapping[str, Any],
        *,
        resume: bool,
        may_differ: Iterable[str] = (),
        keep: int = 2,
    ) -> RunDir:
        """``open_for_resume`` when ``resume`` is true, else ``create``."""
        if resume:
            return cls.open_for_resume(path, config, may_differ=may_differ, keep=keep)
        return cls.create(path, config, keep=keep)

    def load_config(self) -> dict[str, Any]:
        return _read_json(self.config_path)

    # ---------------------------------------------------------------- metrics
    def _repair_metrics_tail(self) -> None:
        """Cut a torn last line (left by a crash) so the next append starts a fresh line."""
        try:
            with open(self.metrics_path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    return
                f.seek(size - 1)
                if f.read(1) == b"\n":
                    return
                # Find the last newline, scanning back in blocks.
                pos, keep_to = size, 0
                while pos > 0:
                    start = max(0, pos - 65536)
                    f.seek(start)
                    block = f.read(pos - start)
                    idx = block.rfind(b"\n")
                    if idx >= 0:
                        keep_to = start + idx + 1
                        break
                    pos = start
                f.truncate(keep_to)
                f.flush()
                os.fsync(f.fileno())
        except FileNotFoundError:
            return

    def append_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one row (must hold an integer ``iteration``); flushed and fsynced.

        Values: numbers (NaN/inf allowed), strings, bools, None, lists, dicts; numpy and
        torch scalars are converted.
        """
        line = _encode_row(row).encode("utf-8")
        if not self._metrics_checked:
            self._repair_metrics_tail()
        new_file = not self.metrics_path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        # One write() of one whole line in O_APPEND mode; fsync per row (see docstring).
        fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            _fsync_dir(self.path)
        self._metrics_checked = True

    def load_metrics(self) -> pd.DataFrame:
        return load_metrics(self.metrics_path)

    def truncate_metrics(self, after_iteration: int) -> int:
        """Atomically keep only rows with ``iteration <= after_iteration``.

        Used on resume from the checkpoint of iteration k: rows written after it will be
        produced again. Torn and unreadable lines are dropped too. Returns rows kept.
        """
        rows = _parse_metrics_lines(self.metrics_path)
        if not rows and not self.metrics_path.exists():
            return 0
        kept = [text for iteration, text, _ in rows if iteration <= after_iteration]
        atomic_write_text(self.metrics_path, "".join(t + "\n" for t in kept))
        self._metrics_checked = True
        return len(kept)

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint_files(self) -> list[tuple[int, Path]]:
        """(iteration, path) of every ckpt_*.pt, newest first (temp files excluded)."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = []
        for entry in self.checkpoint_dir.iterdir():
            m = _CKPT_RE.match(entry.name)
            if m and entry.is_file():
                found.append((int(m.group(1)), entry))
        found.sort(key=lambda t: t[0], reverse=True)
        return found

    def list_checkpoints(self) -> list[int]:
        """Iterations that have a checkpoint file, oldest first (loadability unchecked)."""
        return sorted(it for it, _ in self._checkpoint_files())

    def save_checkpoint(self, state: Mapping[str, Any], iteration: int) -> Path:
        """Save ``state`` as the checkpoint of ``iteration`` and commit it via latest.json.

        ``state`` may hold only what ``torch.load(weights_only=True)`` reads back: tensors
        and plain values (dict, list, tuple, str, int, float, bool, None); anything else
        (a numpy scalar, an object) is a ``TypeError`` here rather than an unloadable file.

        Order: durable ckpt file, then durable latest.json, then prune to the newest
        ``keep`` checkpoints (files of later iterations, left from an abandoned timeline
        before a resume, are removed as well). Returns the checkpoint path.
        """

        iteration = int(iteration)
        target = self.checkpoint_path(iteration)
        payload = {"format": _CKPT_FORMAT, "iteration": iteration, "state": dict(state)}
        _check_plain(payload["state"], "state")
        with _atomic_file(target) as f:
            torch.save(payload, f)
        atomic_write_json(
            self.checkpoint_dir / LATEST_FILE, {"iteration": iteration, "file": target.name}
        )
        # Prune only now that the new checkpoint is committed.
        older = [(it, p) for it, p in self._checkpoint_files() if it < iteration]
        stale = [(it, p) for it, p in self._checkpoint_files() if it > iteration]
        for _, p in older[self.keep - 1 :] + stale:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        for entry in self.checkpoint_dir.iterdir():  # temp files of killed writers
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                # Holding the lock, no other writer exists; else spare a concurrent one's.
                with contextlib.suppress(FileNotFoundError):
                    if self._lock is not None or time.time() - entry.stat().st_mtime > 60:
                        entry.unlink()
        _fsync_dir(self.checkpoint_dir)
        return target

    def load_latest_checkpoint(
        self, map_location: Any = None, *, required: Iterable[str] = ()
    ) -> tuple[dict[str, Any], int] | None:
        """(state, iteration) of the latest good checkpoint, or None if there is none.

        Tries the file ``checkpoints/latest.json`` names, then every ``ckpt_*.pt`` newest
        first; missing, truncated or corrupt files are skipped with a warning. Files are
        read with ``weights_only=True``: one that would need a full unpickle raises
        ``UnsafeCheckpointError``, and one whose state lacks a key of ``required`` raises
        ``RunDirError`` (both name the file and what to do), rather than be skipped.
        """
        candidates: list[Path] = []
        try:
            pointer = _read_json(self.checkpoint_dir / LATEST_FILE)
            name = pointer["file"]
            if isinstance(name, str) and _CKPT_RE.match(name):
                candidates.append(self.checkpoint_dir / name)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.warn(f"ignoring unreadable {LATEST_FILE}: {err}", stacklevel=2)
        candidates += [p for _, p in self._checkpoint_files() if p not in candidates]
        for path in candidates:
            if not path.exists():
                warnings.warn(f"checkpoint {path} named in {LATEST_FILE} is missing", stacklevel=2)
                continue
            try:
                state, iteration = load_checkpoint_file(path, map_location)
            except UnsafeCheckpointError:
                raise
            except Exception as err:  # a torn or corrupt file: try the next one
                warnings.warn(f"skipping unloadable checkpoint {path}: {err!r}", stacklevel=2)
                continue
            missing = [k for k in required if k not in state]
            if missing:
                raise RunDirError(
                    f"checkpoint {path} lacks {', '.join(missing)}: it was not written by this "
                    "kind of run (or by this version). Move it out of the checkpoints folder "
                    "to resume from an older checkpoint, or start a new run."
                )
            return state, iteration
        return None

    # ---------------------------------------------------------------- tensorboard
    def tensorboard_writer(self, purge_step: int | None = None) -> Any:
        """The run's SummaryWriter on ``<run>/tb``, created on first call.

        On resume pass ``purge_step`` = the first step that will be logged again (in the
        unit used as ``step``, e.g. iteration k + 1 after checkpoint k): TensorBoard then
        drops the earlier process's events at and after that step.
        """
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is slow to import

            self._writer = SummaryWriter(log_dir=str(self.tb_dir), purge_step=purge_step)
        return self._writer

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if one was opened; release the lock."""
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def restart(self) -> None:
        """Start the run over from iteration 0: drop its metrics rows and TensorBoard events.

        What a resume does when it finds no usable checkpoint, so that the rows and points
        of the earlier attempt are not kept next to the new ones.
        """
        self.truncate_metrics(after_iteration=0)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.tb_dir.exists():
            shutil.rmtree(self.tb_dir)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- status
    def write_status(
        self,
        state: str,
        *,
        iteration: int | None = None,
        agent_steps: int | None = None,
        message: str = "",
    ) -> None:
        if state not in _STATES:
            raise ValueError(f"state must be one of {_STATES}, got {state!r}")
        atomic_write_json(
            self.status_path,
            {
                "state": state,
                "iteration": None if iteration is None else int(iteration),
                "agent_steps": None if agent_steps is None else int(agent_steps),
                "message": str(message),
                "updated": time.time(),
            },
        )

    def read_status(self) -> dict[str, Any] | None:
        try:
            return _read_json(self.status_path)
        except (FileNotFoundError, ValueError):
            return None

    def _last_progress(self) -> tuple[int | None, int | None]:
        status = self.read_status() or {}
        return status.get("iteration"), status.get("agent_steps")

    def mark_running(self, iteration: int, agent_steps: int, message: str = "") -> None:
        self.write_status("running", iteration=iteration, agent_steps=agent_steps, message=message)

    def mark_finished(
        self, iteration: int | None = None, agent_steps: int | None = None, message: str = ""
    ) -> None:
        """Mark the run finished; progress not given is kept from the last status."""
        last_it, last_steps = self._last_progress()
        if self._lock is not None:  # this process owns the run: temp files are leftovers
            for directory in (self.path, self.checkpoint_dir):
                remove_temp_files(directory)
        self.write_status(
            "finished",
            iteration=last_it if iteration is None else iteration,
            agent_steps=last_steps if agent_steps is None else agent_steps,
            message=message,
        )

    def mark_failed(
        self, message: str, iteration: int | None = None, agent_steps: int | None = None
    ) -> None:
        """Mark the run failed with ``message``; progress not given is kept from the last status."""
        last_it, last_steps = self._last_progress()
        self.write_status(
            "failed",
            iteration=last_it if iteration is None else iteration,
            agent_steps=last_steps if agent_steps is None else agent_steps,
            message=message,
        )
