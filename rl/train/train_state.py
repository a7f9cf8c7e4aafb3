"""Everything a run carries from one PPO iteration to the next, and its checkpoint.

``TrainState`` is the one object a checkpoint saves and a resume loads: model, optimizer,
random generators, counters, the recent returns, the environments (as arrays where they
can be saved, ``rl.runs.envstate``) and the observation in hand, plus the state of the
noise-scale trackers and the batch schedule. Each data-parallel rank keeps its own
generators and environments; rank 0 writes them all into one file (checkpoint format 2 of
``rl.runs.checkpoints``, loaded with ``weights_only=True``) and sends each rank its part on
resume. A one-process checkpoint is the same file with no per-rank part.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import envs
from rl.measure.returns import SmoothedReturn
from rl.runs.envstate import EnvStateError, restore_env_state, saved_env_state
from rl.runs.errors import RunDirError
from rl.runs.storage import RunDir
from rl.train.protocols import Comm

CHECKPOINT_KEYS = ("model", "optimizer", "sample_gen", "perm_gen", "torch_rng", "agent_steps",
                   "episodes_total", "recent_returns")
"""Keys every training checkpoint's state holds (a resume refuses one without them)."""

RANK_KEYS = ("sample_gen", "perm_gen", "torch_rng", "env_state", "env", "next_obs",
             "env_norm")
"""The per-rank part of a checkpoint ("env": the old pickled form, never loaded;
"env_norm": the observation/reward normalization statistics, or None)."""


@dataclass
class TrainState:
    """The state of one rank's run between PPO iterations."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sample_gen: torch.Generator
    """Action sampling."""
    perm_gen: torch.Generator
    """Minibatch order."""
    env: Any
    returns: SmoothedReturn
    next_obs: torch.Tensor | None = None
    iteration: int = 0
    """PPO iterations done (the metrics row of the last one has this ``iteration``)."""
    agent_steps: int = 0
    """Agent steps done, all ranks."""
    episodes_total: int = 0
    """Games finished, all ranks."""

    def rank_part(self) -> dict[str, Any]:
        """This rank's own part of the checkpoint."""
        env_state = saved_env_state(self.env)
        return {
            "sample_gen": self.sample_gen.get_state(),
            "perm_gen": self.perm_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "env_state": env_state,
            "next_obs": self.next_obs.cpu() if env_state is not None else None,
            "env_norm": normalization_state(self.env),
        }

    def save(self, run: RunDir | None, comm: Comm, extra: Mapping[str, Any]) -> None:
        """Write the checkpoint of this iteration (collective: every rank calls it).

        ``extra``: the strategies' own state by key (``gns``, ``schedule``)."""
        mine = self.rank_part()
        ranks = comm.gather_object(mine)
        if run is None:
            return
        run.save_checkpoint(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **mine,  # rank 0's own part at the top: a one-process checkpoint as well
                "agent_steps": self.agent_steps,
                "episodes_total": self.episodes_total,
                "recent_returns": list(self.returns.returns),
                "rank_states": ranks if comm.size > 1 else None,
                "world_size": comm.size,
                **extra,
            },
            self.iteration,
        )

    def load(self, common: Mapping[str, Any], mine: Mapping[str, Any], iteration: int,
             run_path) -> None:
        """Continue from a checkpoint: model, optimizer, generators, counters, returns.

        The environments are restored separately (``restore_env``)."""
        load_run_state(self.model, self.optimizer, common, run_path)
        restore_generator(self.sample_gen, mine["sample_gen"], "action sampling")
        restore_generator(self.perm_gen, mine["perm_gen"], "minibatch order")
        torch.set_rng_state(mine["torch_rng"])
        self.iteration = iteration
        self.agent_steps, self.episodes_total = common["agent_steps"], common["episodes_total"]
        self.returns.extend(common["recent_returns"])


def restore_generator(gen: torch.Generator, saved: torch.Tensor, what: str) -> None:
    """Set ``gen`` to a saved state; a state saved on another device type reseeds it.

    The generators live on the learner's device, and a CPU generator's state (5,056 bytes)
    does not fit a CUDA one (16 bytes) or the reverse, so a resume on another device
    (``--device`` may change) reseeds from a hash of the saved state: deterministic, but
    not the uninterrupted run's stream.
    """
    if saved.numel() == gen.get_state().numel():
        gen.set_state(saved)
        return
    digest = hashlib.sha256(saved.cpu().numpy().tobytes()).digest()
    gen.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    warnings.warn(f"the {what} generator was saved on another device type than "
                  f"{gen.device}; it continues reseeded from the saved state, so the resumed "
                  "run is not bit-for-bit the uninterrupted one", stacklevel=2)


def load_run_state(model, optimizer, state: Mapping[str, Any], path) -> None:
    """Load a checkpoint's model and optimizer state; RunDirError if they do not fit."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(
            f"the newest checkpoint in {path} does not fit this run's network or optimizer "
            f"({str(err).splitlines()[0]}); move it out of checkpoints/ to resume from an "
            "older one, or start a new run"
        ) from None


def normalization_state(env) -> dict[str, Any] | None:
    """The statistics of the env's normalization wrapper (``envs.NormalizeVec``), as
    tensors, or None for an env without one."""
    if not isinstance(env, envs.NormalizeVec):
        return None
    return _tensors(env.state_dict())


def restore_normalization(env, saved: Mapping[str, Any] | None) -> None:
    """Continue the env's normalization with the checkpoint's statistics (whether the env
    was restored exactly or rebuilt); RunDirError when they do not fit this run's."""
    normalized = isinstance(env, envs.NormalizeVec)
    if saved is None and not normalized:
        return
    if saved is None or not normalized:
        raise RunDirError(
            "the checkpoint was written " + ("without" if saved is None else "with")
            + " observation/reward normalization and this run has it "
            + ("on" if saved is None else "off") + "; resume with the run's own norm_obs and "
            "norm_reward settings")
    try:
        env.load_state_dict(_arrays(saved))
    except (ValueError, KeyError, TypeError) as err:
        raise RunDirError(f"the checkpoint's normalization statistics do not fit this run "
                          f"({err}); resume with the run's own settings") from None


def _tensors(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tensors(v) for k, v in tree.items()}
    if isinstance(tree, (np.ndarray, np.generic)):
        return torch.from_numpy(np.array(tree))
    return tree


def _arrays(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _arrays(v) for k, v in tree.items()}
    if isinstance(tree, torch.Tensor):
        return tree.numpy()
    return tree


def restore_env(env, state: Mapping[str, Any], rebuild: Callable[[], Any]):
    """The env to continue with: ``env`` with the checkpoint's saved state written into it,
    or ``rebuild()`` (after closing ``env``) when the checkpoint holds none that fits."""
    saved = state.get("env_state")
    if saved is None and state.get("env") is not None:
        warnings.warn("the checkpoint holds its environment in the old pickled form, which is "
                      "never loaded (it could run code): the environments are rebuilt from a "
                      "derived seed and the resume is not exact", stacklevel=2)
    if saved is not None:
        try:
            return restore_env_state(env, saved)
        except EnvStateError as err:
            warnings.warn(f"the checkpoint's environment state does not fit this environment "
                          f"({err}); rebuilding it from a derived seed (the resume is not "
                          "exact)", stacklevel=2)
    env.close()
    return rebuild()


def saved_chunks(saved: Mapping[str, Any] | None) -> int:
    """How many chunks the saved state of an ``EnvChunks`` holds (0 if not one)."""
    try:
        return len(saved["root"]["attrs"]["chunks"]["items"])
    except (KeyError, TypeError):
        return 0


def rank_state(state: Mapping[str, Any], rank: int, world: int) -> dict[str, Any]:
    """Rank ``rank``'s part of a checkpoint written by ``TrainState.save``."""
    ranks = state.get("rank_states")
    if ranks is None:  # one process
        if world != 1:
            raise ValueError("the checkpoint was written by a single-process run; resume it "
                             "with one process")
        return {k: state.get(k) for k in RANK_KEYS}
    if len(ranks) != world:
        raise ValueError(f"the checkpoint holds {len(ranks)} ranks, this run has {world}; "
                         "resume with the same --nproc")
    return ranks[rank]


def distribute_checkpoint(comm: Comm, checkpoint) -> tuple[dict, dict, int] | None:
    """(common state, this rank's state, iteration) from rank 0's checkpoint, or None."""
    if comm.size == 1:
        if checkpoint is None:
            return None
        state, iteration = checkpoint
        return state, rank_state(state, 0, 1), iteration
    head = None
    if comm.rank == 0 and checkpoint is not None:
        state, iteration = checkpoint
        head = ({k: v for k, v in state.items() if k != "rank_states"}, iteration)
    head = comm.broadcast_object(head)
    if head is None:
        return None
    common, iteration = head
    parts = None
    if comm.rank == 0:
        parts = [rank_state(checkpoint[0], r, comm.size) for r in range(comm.size)]
    return common, comm.scatter_object(parts), iteration
