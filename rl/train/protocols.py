"""The loop's typed extension points: ``Schedule``, ``NoiseScale`` and ``Comm``.

``rl.train.loop.Loop`` holds one of each; anything with these methods plugs in (structural
typing: implementations need not import this module). Implementations: ``Schedule`` by
``rl.train.batch_schedule`` (``FixedBatch``, ``AdaptiveBatch``), ``NoiseScale`` by
``rl.measure.ppo_noise.PPONoiseScale`` (one process) and ``rl.measure.free.FreeNoiseScale``
(data-parallel ranks), ``Comm`` by ``rl.train.comm`` (``LocalComm``, ``DistComm``). A
strategy returns metrics columns; only the loop writes the row. See docs/training-loop.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch

from agents import PPOConfig
from rl.train.rollout import RolloutBuffer

Columns = dict[str, Any]
"""Metrics columns a strategy or hook returns for the loop to add to the row."""

GradHook = Callable[[list[torch.Tensor]], None]
"""``agents.ppo_update``'s ``grad_hook``: called with the parameters after every backward."""


class Comm(Protocol):
    """The collectives of the loop's ranks; with one process every one is the identity."""

    rank: int
    size: int
    device: torch.device
    """Where tensors handed to ``all_reduce_sum`` may live (the rank's GPU under NCCL)."""

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor: ...

    def all_gather_object(self, obj: Any) -> list[Any]: ...

    def gather_object(self, obj: Any) -> list[Any] | None: ...

    def broadcast_object(self, obj: Any) -> Any: ...

    def scatter_object(self, objs: Sequence[Any] | None) -> Any: ...

    def broadcast_params(self, model: torch.nn.Module) -> None: ...

    def barrier(self) -> None: ...


class NoiseScale(Protocol):
    """The gradient noise scale of an iteration, at the parameters that collected its rollout.

    ``before_update`` runs before the first optimizer step and returns its columns and the
    gradient hook the update runs with (None: plain gradients; data-parallel: the hook that
    averages the gradients over ranks and keeps the per-rank norms the free estimate needs);
    ``after_update`` returns the columns that hook's measurement gives.
    """

    terms: tuple[str, ...]
    """The loss terms measured (``total``, and ``policy``/``value`` where they separate)."""

    def before_update(self, iteration: int, model: torch.nn.Module,
                      optimizer: torch.optim.Optimizer, ppo: PPOConfig, buffer: RolloutBuffer,
                      advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[Columns, GradHook | None]: ...

    def after_update(self, grad_hook: GradHook | None, buffer: RolloutBuffer,
                     ppo: PPOConfig) -> Columns: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None: ...


class Schedule(Protocol):
    """The rollout shape along the run, the learning rate, and when the budget is spent."""

    @property
    def shape(self) -> tuple[int, int]:
        """(num_envs, num_steps) of one rank's next rollout."""
        ...

    @property
    def batch_size(self) -> int:
        """Agent steps of the next iteration, all ranks."""
        ...

    def learning_rate(self, ppo: PPOConfig, iteration: int, agent_steps: int) -> float: ...

    def fits(self, iteration: int, agent_steps: int) -> bool:
        """Whether the next iteration fits in the budget."""
        ...

    def observe(self, noise: Mapping[str, Any], row: Mapping[str, Any],
                comm: Comm) -> tuple[int, int] | None:
        """The new (num_envs, num_steps) after this iteration's row, or None."""
        ...

    def columns(self) -> Columns:
        """The schedule's columns for the row, after ``observe``."""
        ...

    def resize(self, env: Any, next_obs: torch.Tensor,
               device: torch.device) -> tuple[torch.Tensor, RolloutBuffer]: ...

    def state_dict(self) -> dict[str, Any] | None: ...

    def load_state_dict(self, state: dict[str, Any] | None) -> None: ...
