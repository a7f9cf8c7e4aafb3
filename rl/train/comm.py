"""The collectives the training loop uses: a one-process stand-in and torch.distributed.

``LocalComm`` is world size 1 (every collective is the identity); ``DistComm`` runs them
over the default process group. ``global_normalize`` normalizes advantages with the
statistics of all ranks' rollouts; ``params_digest`` fingerprints a model's parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


class LocalComm:
    """The collectives the loop uses; this one is a single process (world size 1)."""

    rank, size = 0, 1

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


def global_normalize(comm: LocalComm, adv: torch.Tensor, mask: torch.Tensor,
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
