"""The loop's ``Comm`` (collectives) and the statistics it reduces over ranks with them.

``LocalComm`` is world size 1 (every collective is the identity); ``DistComm`` runs them
over the default process group. The functions take any ``Comm``: the advantages to train
on (``global_normalize``), the update statistics, the games and the rollout statistics of
all ranks, and the check that every rank holds the same parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from agents import PPOConfig
from rl.train.protocols import Comm
from rl.train.rollout import RolloutBuffer


class LocalComm:
    """The collectives the loop uses; this one is a single process (world size 1)."""

    rank, size = 0, 1
    device = torch.device("cpu")

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def gather_object(self, obj: Any) -> list[Any] | None:
        return [obj]

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def scatter_object(self, objs: Sequence[Any] | None) -> Any:
        return objs[0]

    def broadcast_params(self, model: torch.nn.Module) -> None:
        pass

    def barrier(self) -> None:
        pass


class DistComm(LocalComm):
    """torch.distributed collectives over the default process group."""

    def __init__(self, device: torch.device):
        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device = device

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        self.dist.all_reduce(t)
        return t

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        out: list[Any] | None = [None] * self.size if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def scatter_object(self, objs: Sequence[Any] | None) -> Any:
        box: list[Any] = [None]
        self.dist.scatter_object_list(box, list(objs) if self.rank == 0 else None, src=0)
        return box[0]

    def broadcast_params(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                self.dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.device.type == "cuda" and self.dist.get_backend() == "nccl":
            self.dist.barrier(device_ids=[self.device.index])
        else:
            self.dist.barrier()


def global_normalize(comm: Comm, adv: torch.Tensor, mask: torch.Tensor,
                      eps: float = 1e-8) -> torch.Tensor:
    """``agents.ppo.normalize_advantages`` with the masked mean and std of all ranks' slots."""
    keep = mask > 0
    w = mask.to(torch.float64)
    a = torch.where(keep, adv, torch.zeros_like(adv)).to(torch.float64)
    sums = comm.all_reduce_sum(torch.stack([w.sum(), (a * w).sum()]))
    n = sums[0]
    mean = sums[1] / n.clamp_min(1e-8)
    centred = torch.where(keep, a - mean, torch.zeros_like(a))
    sq = comm.all_reduce_sum((centred.square() * w).sum().reshape(1))[0]
    var = sq / (n - 1.0).clamp_min(1.0)
    out = torch.where(keep, centred / (var.sqrt() + eps), torch.zeros_like(a))
    return out.to(adv.dtype)


def params_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def params_in_sync(comm: Comm, model: torch.nn.Module, iteration: int) -> dict[str, float]:
    """Every rank holds the same parameters (``dp/params_in_sync``), else an error."""
    digests = comm.all_gather_object(params_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks hold different parameters after iteration "
                           f"{iteration} (SHA-1 {digests}); this is a bug")
    return {"dp/params_in_sync": 1.0}


def train_advantages(comm: Comm, adv: torch.Tensor, mask: torch.Tensor,
                     ppo: PPOConfig) -> tuple[torch.Tensor, PPOConfig]:
    """The advantages the update trains on, and the PPO settings it trains with.

    One process: as computed (``ppo_update`` normalizes them). Several ranks: normalized
    here with the statistics of all ranks' rollouts, and the update told not to again."""
    if comm.size == 1 or not ppo.norm_adv:
        return adv.flatten(), ppo
    return (global_normalize(comm, adv.flatten(), mask.flatten()),
            dataclasses.replace(ppo, norm_adv=False))


def mean_over_ranks(comm: Comm, stats: dict[str, float]) -> dict[str, float]:
    """Each update statistic averaged over the ranks."""
    keys = sorted(stats)
    t = torch.tensor([stats[k] for k in keys], dtype=torch.float64)
    t = comm.all_reduce_sum(t.to(comm.device)) / comm.size
    return dict(zip(keys, t.tolist(), strict=True))


def games_of_all_ranks(comm: Comm, episodes) -> tuple[list[float], list[int]]:
    """(returns, lengths) of the games every rank finished during the rollout."""
    every = comm.all_gather_object((episodes.returns, episodes.lengths))
    return [x for r, _ in every for x in r], [x for _, n in every for x in n]


def explained_variance(values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the unmasked slots (NaN if undefined)."""
    keep = mask.bool()
    y, pred = returns[keep], values[keep]
    var_y = torch.var(y) if y.numel() > 1 else torch.tensor(float("nan"))
    return float("nan") if var_y == 0 else float(1 - torch.var(y - pred) / var_y)


def rollout_stats(comm: Comm, buffer: RolloutBuffer, returns: torch.Tensor,
                  mask: torch.Tensor) -> dict[str, float]:
    """``explained_variance`` and ``masked_fraction`` of all ranks' rollouts.

    One process computes them on its own slots in the rollout's dtype; several ranks add up
    float64 sums (the same quantities, not bit for bit the one-process numbers)."""
    values, returns, mask = buffer.values.flatten(), returns.flatten(), mask.flatten()
    if comm.size == 1:
        return {"explained_variance": explained_variance(values, returns, mask),
                "masked_fraction": float(1 - mask.mean())}
    keep = mask.bool()
    y = returns[keep].to(torch.float64)
    r = y - values[keep].to(torch.float64)
    sums = torch.stack([y.new_tensor(float(y.numel())), y.sum(), y.square().sum(), r.sum(),
                        r.square().sum(), y.new_tensor(float(mask.numel()))])
    n, sy, syy, sr, srr, slots = comm.all_reduce_sum(sums).tolist()
    var_y = (syy - sy * sy / n) / (n - 1) if n > 1 else math.nan
    var_r = (srr - sr * sr / n) / (n - 1) if n > 1 else math.nan
    ev = math.nan if not var_y or var_y != var_y else 1 - var_r / var_y
    return {"explained_variance": ev, "masked_fraction": 1 - n / slots}
