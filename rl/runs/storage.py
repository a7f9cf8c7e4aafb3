"""The run directory of one training run (``RunDir``): create or resume it, its status,
metrics rows and checkpoints. See docs/run-directory.md for the full description."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rl.runs.checkpoints import (
    UnsafeCheckpointError,
    read_checkpoint_file,
    write_checkpoint_file,
)
from rl.runs.errors import RunDirError
from rl.runs.files import (
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    naming_file,
    read_json,
)
from rl.runs.layout import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LATEST_FILE,
    LOCK_FILE,
    METRICS_FILE,
    STATUS_FILE,
    TB_DIR,
)
from rl.runs.lock import RunLock, lock_run_dir, remove_temp_files
from rl.runs.metrics import encode_metrics_row, load_metrics, parse_metrics_lines

__all__ = ["RunDir", "flatten_config", "read_run_config"]

_CREATING = re.compile(rf"\.{re.escape(CONFIG_FILE)}\..+\.tmp")  # create's temp file

_CKPT_RE = re.compile(r"^ckpt_(\d{8,})\.pt$")
_STATES = ("running", "finished", "failed")


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run directory's config.json ({} when missing or unreadable)."""
    try:
        return json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


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


class RunDir:
    """One training run's directory. See docs/run-directory.md for the layout.

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
        self._may_differ: tuple[str, ...] | None = None
        """Set by ``open_for_resume``: a checkpoint's config may differ from config.json in
        these keys (else the checkpoint belongs to another run)."""

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
                with naming_file(run.config_path), os.fdopen(fd, "wb") as f:
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
            fsync_dir(run.path)
            fsync_dir(run.path.parent)
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
        run._may_differ = tuple(may_differ)
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
            stored = read_json(run.config_path)
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
        return read_json(self.config_path)

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
        line = encode_metrics_row(row).encode("utf-8")
        if not self._metrics_checked:
            self._repair_metrics_tail()
        new_file = not self.metrics_path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        # One write() of one whole line in O_APPEND mode; fsync per row (see docstring).
        fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            with naming_file(self.metrics_path):
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            fsync_dir(self.path)
        self._metrics_checked = True

    def load_metrics(self) -> pd.DataFrame:
        return load_metrics(self.metrics_path)

    def truncate_metrics(self, after_iteration: int) -> int:
        """Atomically keep only rows with ``iteration <= after_iteration``.

        Used on resume from the checkpoint of iteration k: rows written after it will be
        produced again. Torn and unreadable lines are dropped too. Returns rows kept.
        """
        rows = parse_metrics_lines(self.metrics_path)
        if not rows and not self.metrics_path.exists():
            return 0
        kept = [text for iteration, text, _ in rows if iteration <= after_iteration]
        atomic_write_text(self.metrics_path, "".join(t + "\n" for t in kept))
        self._metrics_checked = True
        return len(kept)

    def check_resume_rows(self, iteration: int, *, contiguous: bool = True) -> None:
        """RunDirError unless the rows can continue after checkpoint ``iteration`` without a
        silent gap (call it before ``truncate_metrics``, which would drop what is missing).

        Every line must be whole, a torn last line aside (the row being written when a
        process died: after the checkpoint, written again). With ``contiguous`` the rows up
        to ``iteration`` must be 1 ... ``iteration``; leave it off only for a run whose
        timeline jumps on purpose (a PBT member continued from a donor ahead of it).
        """
        problems: list[str] = []
        rows = parse_metrics_lines(self.metrics_path, problems)
        damaged = [p for p in problems if "torn last line" not in p]
        fix = ("Restore it from a copy of the run directory, or start this run over with "
               "--restart (or a new --run-dir).")
        if damaged:
            raise RunDirError(
                f"cannot resume {self.path}: {damaged[0]}"
                + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else "")
                + f"; continuing would leave a gap where that row was. {fix}")
        if not contiguous:
            return
        missing = sorted(set(range(1, iteration + 1)) - {it for it, _, _ in rows})
        if missing:
            shown = ", ".join(str(it) for it in missing[:5])
            raise RunDirError(
                f"cannot resume {self.path}: {self.metrics_path} lacks the rows of "
                f"iteration(s) {shown}" + (f" (and {len(missing) - 5} more)"
                                          if len(missing) > 5 else "")
                + f" up to the checkpoint's iteration {iteration}; continuing would leave "
                f"that gap. {fix}")

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
        config = read_json(self.config_path) if self.config_path.exists() else None
        target = write_checkpoint_file(self.checkpoint_path(iteration), state, iteration, config)
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
        fsync_dir(self.checkpoint_dir)
        return target

    def load_latest_checkpoint(
        self, map_location: Any = None, *, required: Iterable[str] = ()
    ) -> tuple[dict[str, Any], int] | None:
        """(state, iteration) of the latest good checkpoint, or None if there is none.

        Tries the file ``checkpoints/latest.json`` names, then every ``ckpt_*.pt`` newest
        first; missing, truncated or corrupt files are skipped with a warning. Files are
        read with ``weights_only=True``: one that would need a full unpickle raises
        ``UnsafeCheckpointError``, and one whose state lacks a key of ``required``, or that
        belongs elsewhere (``_check_belongs``), raises ``RunDirError`` (all name the file
        and what to do), rather than be skipped.
        """
        candidates: list[Path] = []
        try:
            pointer = read_json(self.checkpoint_dir / LATEST_FILE)
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
                payload = read_checkpoint_file(path, map_location)
            except UnsafeCheckpointError:
                raise
            except Exception as err:  # a torn or corrupt file: try the next one
                warnings.warn(f"skipping unloadable checkpoint {path}: {err!r}", stacklevel=2)
                continue
            self._check_belongs(path, payload)
            state, iteration = payload["state"], payload["iteration"]
            missing = [k for k in required if k not in state]
            if missing:
                raise RunDirError(
                    f"checkpoint {path} lacks {', '.join(missing)}: it was not written by this "
                    "kind of run (or by this version). Move it out of the checkpoints folder "
                    "to resume from an older checkpoint, or start a new run."
                )
            return state, iteration
        return None

    def _check_belongs(self, path: Path, payload: Mapping[str, Any]) -> None:
        """RunDirError unless the checkpoint ``path`` was written by this run under its name.

        A file copied in from elsewhere would be continued as if it were this run's: its
        iteration (and counters) past the budget, its weights from other settings. The
        iteration must match the file name; a run opened for resume also compares the
        config the file keeps (older files keep none) with config.json.
        """
        named = int(_CKPT_RE.match(path.name).group(1))
        fix = (f"Move it out of {self.checkpoint_dir} to resume from an older checkpoint, or "
               "start this run over with --restart (or a new --run-dir).")
        if payload["iteration"] != named:
            raise RunDirError(
                f"checkpoint {path} holds iteration {payload['iteration']} but is named for "
                f"iteration {named}: it was copied or renamed, not written here. {fix}")
        kept = payload.get("config")
        if self._may_differ is None or not isinstance(kept, dict):
            return
        differing = _config_diff(kept, self.load_config(), self._may_differ)
        if differing:
            raise RunDirError(
                f"checkpoint {path} belongs to another run: its config differs from "
                f"{self.config_path} in {', '.join(differing[:5])}"
                + (f" (and {len(differing) - 5} more)" if len(differing) > 5 else "")
                + f". {fix}")

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
                writer, self._writer = self._writer, None
                with naming_file(self.tb_dir):
                    writer.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def restart(self) -> None:
        """Start the run over from iteration 0: drop its checkpoints, metrics rows and
        TensorBoard events (``rlscale train --restart``: asked for, never a fallback).

        Checkpoints go first: a restart cut short must not leave a checkpoint that a later
        ``--resume`` would continue while the rows before it are gone. ``tb/`` may be a link
        to storage elsewhere: its events go, the link (or folder) stays.
        """
        for _, path in self._checkpoint_files():
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.checkpoint_dir / LATEST_FILE).unlink()
        self.truncate_metrics(after_iteration=0)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.tb_dir.is_dir():
            for entry in self.tb_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def no_checkpoint_error(self) -> RunDirError:
        """The refusal of a resume that found no usable checkpoint, naming what the run holds.

        Such a resume would start over and replace the rows and events the run has (of a
        finished run too), so it only says what there is and how to start over on purpose.
        """
        files = len(self._checkpoint_files())
        rows = len(parse_metrics_lines(self.metrics_path, problems=[]))
        state = (self.read_status() or {}).get("state", "unknown")
        found = (f"{files} checkpoint file(s), none loadable (see the warnings)" if files
                 else "no checkpoint")
        return RunDirError(
            f"cannot resume {self.path}: found {found}, {rows} metrics row(s), status "
            f"{state}; nothing was changed. Start a new run in another --run-dir, or pass "
            "--restart instead of --resume to start this run over from iteration 0 (its "
            "rows, TensorBoard events and checkpoints are deleted)."
        )

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
            return read_json(self.status_path)
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
