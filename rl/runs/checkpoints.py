"""The checkpoint file format (tensors and plain values only): its atomic writing and its
safe loading with ``torch.load(weights_only=True)``. See docs/run-directory.md."""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rl.runs.errors import RunDirError
from rl.runs.files import atomic_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "UnsafeCheckpointError",
    "check_plain",
    "load_checkpoint_file",
    "read_checkpoint_file",
    "write_checkpoint_file",
]

CHECKPOINT_FORMAT = 2
_CKPT_FORMATS_READ = (1, 2)  # format 1 differs only in what the trainer put in "state"


class UnsafeCheckpointError(RunDirError):
    """A checkpoint file that could only be loaded by running arbitrary code (refused)."""


_PLAIN = (str, int, float, bool, type(None))


def check_plain(value: Any, where: str) -> None:
    """TypeError unless ``value`` is tensors and plain values all the way down."""

    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if type(value) in (dict,) or isinstance(value, Mapping) and type(value).__module__ in (
            "collections", "builtins"):
        for key, item in value.items():
            if type(key) not in _PLAIN:
                raise TypeError(f"checkpoint {where} has a key of type {type(key).__name__}")
            check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint {where} is a {type(value).__module__}.{type(value).__qualname__}; a "
        "checkpoint holds only tensors and plain values (convert it, e.g. float(x) or "
        "torch.as_tensor(x))"
    )


def write_checkpoint_file(path: str | os.PathLike[str], state: Mapping[str, Any],
                          iteration: int, config: Mapping[str, Any] | None = None) -> Path:
    """Write ``state`` as the checkpoint of ``iteration`` to ``path``, atomically and durably.

    ``state`` may hold only tensors and plain values (see ``check_plain``); anything else is
    a ``TypeError`` before the file is touched, rather than a file that cannot be loaded.
    ``config``: the run's config.json, kept in the file (key ``config``) so that a resume
    can tell a checkpoint of another run. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "iteration": int(iteration), "state": dict(state)}
    if config is not None:
        payload["config"] = dict(config)
    check_plain(payload["state"], "state")  # config: read from JSON, plain by construction
    # Serialized in memory first: torch's writer reports a failed write (disk full, file
    # size limit) as "[enforce fail at inline_container.cc] unexpected pos", while a plain
    # write raises the OSError that names the errno and, through atomic_file, the file.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_file(path) as f:
        f.write(buffer.getbuffer())
    return path


def load_checkpoint_file(path: str | os.PathLike[str], map_location: Any = None
                         ) -> tuple[dict[str, Any], int]:
    """(state, iteration) of one checkpoint file (``read_checkpoint_file``)."""
    payload = read_checkpoint_file(path, map_location)
    return payload["state"], payload["iteration"]


def read_checkpoint_file(path: str | os.PathLike[str], map_location: Any = None
                         ) -> dict[str, Any]:
    """The whole payload of one checkpoint file, read with ``weights_only=True``: ``state``,
    ``iteration`` (an int) and, where it was written with one, the run's ``config``.

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
            f"this version (format {CHECKPOINT_FORMAT}): either an older rlscale wrote it (finish "
            "that run with the version that started it) or it was not written by rlscale. "
            "Move it out of the checkpoints folder to resume from an older checkpoint, or "
            "start a new run."
        ) from None
    if (not isinstance(payload, dict) or payload.get("format") not in _CKPT_FORMATS_READ
            or not isinstance(payload.get("state"), dict)):
        raise RunDirError(f"{path} is not a checkpoint written by rl.runs.checkpoints")
    return {**payload, "iteration": int(payload["iteration"])}
