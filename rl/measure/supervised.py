"""Supervised reference: the gradient noise scale of a small classifier, measured like RL.

See docs/noise-scale.md for the full description.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from rl.measure.gns import GNSTracker, measure, ratio_interval
from rl.runs.errors import RunDirError
from rl.runs.files import atomic_write_json
from rl.runs.storage import RunDir

__all__ = [
    "DATASETS",
    "Dataset",
    "SupervisedConfig",
    "SupervisedResult",
    "build_model",
    "load_dataset",
    "ratio_interval",
    "run_supervised",
]

SUMMARY_FILE = "summary.json"
SEGMENT_FRACTION = 0.25  # start / end B_simple: the first / last quarter of the measurements


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A train/test split as float32 feature and int64 label tensors."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # lazy: slow import, supervised only

    data = load_digits()
    return data.data, data.target


# name -> loader returning (features [N, D], integer labels [N]); every loader must read data
# that ships with an installed package (nothing is downloaded). To add a dataset (e.g.
# sklearn's bundled load_wine), register its loader here and add its name to the Literal of
# SupervisedConfig.dataset.
DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"digits": _digits}


def load_dataset(name: str, test_fraction: float, seed: int) -> Dataset:
    """Load ``name``, split it stratified by class, standardize with the train statistics.

    Each feature is shifted and scaled by the training split's mean and standard deviation
    (features constant on the training split are only shifted).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.model_selection import train_test_split  # lazy: slow import, supervised only

    x, y = DATASETS[name]()
    x = np.asarray(x, dtype=np.float64)
    labels, y = np.unique(np.asarray(y), return_inverse=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0.0] = 1.0
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std

    def tensors(xs, ys):
        return torch.as_tensor(xs, dtype=torch.float32), torch.as_tensor(ys, dtype=torch.int64)

    (xtr, ytr), (xte, yte) = tensors(x_tr, y_tr), tensors(x_te, y_te)
    return Dataset(name, xtr, ytr, xte, yte, num_classes=len(labels))


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class SupervisedConfig:
    """Supervised reference run: a small classifier on a bundled scikit-learn dataset."""

    dataset: Literal["digits"] = "digits"
    """scikit-learn bundled dataset (no download)"""
    test_fraction: float = 0.2
    """fraction of the examples held out for test accuracy (stratified split)"""
    model: Literal["mlp", "logreg"] = "mlp"
    """mlp: features -> hidden -> classes with ReLU; logreg: multinomial logistic regression"""
    hidden: int = 128
    """hidden units of the mlp"""
    optimizer: Literal["sgd", "adam"] = "sgd"
    """sgd (with momentum) or adam"""
    lr: float | None = None
    """learning rate; none: 0.05 for sgd, 1e-3 for adam"""
    momentum: float = 0.9
    """momentum of sgd (ignored by adam)"""
    batch_size: int = 32
    """training minibatch size (examples)"""
    epochs: int = 20
    """passes over the training set (reshuffled every epoch)"""
    total_steps: int | None = None
    """optimizer steps to take; overrides epochs when set"""
    gns_groups: int = 16
    """K: groups per noise-scale measurement (big batch = K x group size)"""
    gns_group_size: int = 32
    """b: examples per group, drawn with replacement from the training set"""
    gns_every: int = 10
    """optimizer steps between noise-scale measurements (the first is at step 0)"""
    gns_beta: float = 0.9
    """decay of the per-measurement EMA of g2 and trace_sigma"""
    gns_window: int = 20
    """measurements in the running mean (and its interval) reported on each row"""
    seed: int = 0
    """seed of the split, the initialization, the shuffling and the measurement draws"""
    threads: int | None = 1
    """torch CPU threads during the run (a model this small is fastest on one; restored
    afterwards); none: keep torch's setting"""

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if value is None or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name in ("hidden", "batch_size", "epochs", "gns_group_size", "gns_every",
                     "gns_window"):
            positive(name)
        for name in ("total_steps", "threads"):
            if getattr(self, name) is not None:
                positive(name)
        if self.dataset not in DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(sorted(DATASETS))}"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.gns_groups < 2:
            raise ValueError(f"gns_groups must be at least 2, got {self.gns_groups}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.gns_beta < 1.0:
            raise ValueError(f"gns_beta must be in [0, 1), got {self.gns_beta}")
        if not self.momentum >= 0:
            raise ValueError(f"momentum must be >= 0 (0: plain sgd), got {self.momentum}")
        if self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return {"sgd": 0.05, "adam": 1e-3}[self.optimizer]


# ---------------------------------------------------------------------------------------------
# Model and loss
# ---------------------------------------------------------------------------------------------


def build_model(cfg: SupervisedConfig, num_features: int, num_classes: int) -> nn.Module:
    """The classifier of ``cfg.model``, initialized from ``cfg.seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.model == "mlp":
            return nn.Sequential(
                nn.Linear(num_features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, num_classes)
            )
        if cfg.model == "logreg":
            return nn.Sequential(nn.Linear(num_features, num_classes))
    raise ValueError(f"unknown model {cfg.model!r}; choose mlp or logreg")


def _build_optimizer(cfg: SupervisedConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adam")


def batch_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of ``batch = (x, y)``: the loss trained on and measured."""
    x, y = batch
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = model(x)
    loss = float(F.cross_entropy(logits, y))
    acc = float((logits.argmax(dim=1) == y).double().mean())
    return loss, acc


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class SupervisedResult:
    """What ``run_supervised`` returns: the summary and one metrics row per measurement."""

    summary: dict[str, Any]
    metrics: pd.DataFrame
    out_dir: Path | None = None
    model: nn.Module | None = None
    """the trained model (in memory only; not saved to ``out_dir``)"""


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RunDirError(
            f"output directory {out_dir} already exists and is not empty (it may hold an "
            "earlier run); refusing to overwrite it. Choose a new --out directory."
        )


def run_supervised(
    cfg: SupervisedConfig,
    out_dir: str | Path | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SupervisedResult:
    """Train ``cfg``'s classifier, measuring B_simple every ``cfg.gns_every`` steps.

    Args:
        cfg: the run's settings.
        out_dir: if given, a new or empty directory that receives ``config.json``,
            ``metrics.jsonl`` (one row per measurement, appended as the run goes),
            ``summary.json`` and ``status.json``. An existing non-empty directory is refused
            (``rl.runs.errors.RunDirError``, a ValueError) before anything is trained.
        progress: called as ``progress(steps_done, total_steps)`` after each measurement.

    Returns:
        ``SupervisedResult(summary, metrics, out_dir, model)``. Metrics columns: step, epoch,
        samples (examples trained on), batch_loss (mean minibatch loss since the previous
        row), train_loss and test_loss (full splits, at the measured parameters), test_acc,
        g2, trace_sigma, b_simple (this measurement alone: noisy, may be negative or nan),
        b_simple_ema, b_simple_mean with b_simple_lower/b_simple_upper (running mean over
        the last ``gns_window`` measurements, Fieller 95%), small_sq_norm, big_sq_norm.
    """
    run_dir = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        _check_out_dir(out_dir)
        run_dir = RunDir.create(out_dir, {"kind": "gns-supervised", **dataclasses.asdict(cfg)})
        run_dir.mark_running(0, 0)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        summary, metrics, model = _train(cfg, run_dir, progress)
    except BaseException as exc:
        if run_dir is not None:
            run_dir.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        torch.set_num_threads(threads)
    if run_dir is not None:
        atomic_write_json(run_dir.path / SUMMARY_FILE, summary)
        run_dir.mark_finished(summary["steps"], summary["steps"] * cfg.batch_size)
    return SupervisedResult(summary, metrics, None if run_dir is None else run_dir.path, model)


def _train(cfg: SupervisedConfig, run_dir: RunDir | None, progress):
    started = time.perf_counter()
    data = load_dataset(cfg.dataset, cfg.test_fraction, cfg.seed)
    n_train = int(data.x_train.shape[0])
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.total_steps or cfg.epochs * steps_per_epoch
    model = build_model(cfg, data.num_features, data.num_classes)
    model.train()
    optimizer = _build_optimizer(cfg, model)
    shuffle_gen, gns_gen = _generators(cfg.seed)
    recorder = _Recorder(cfg, data, model, gns_gen, steps_per_epoch, total_steps, run_dir,
                         progress)
    batches = _shuffled_batches(n_train, cfg.batch_size, shuffle_gen)
    for step in range(total_steps + 1):
        if step % cfg.gns_every == 0 or step == total_steps:
            recorder.record(step)
        if step == total_steps:
            break
        recorder.pending_losses.append(_sgd_step(model, optimizer, data, next(batches), step))

    metrics = pd.DataFrame.from_records(recorder.rows).drop(columns="iteration")
    summary: dict[str, Any] = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "optimizer": cfg.optimizer,
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "num_train": n_train,
        "num_test": int(data.x_test.shape[0]),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "steps": total_steps,
        "epochs": total_steps / steps_per_epoch,
        "initial_train_loss": recorder.rows[0]["train_loss"],
        "final_train_loss": recorder.rows[-1]["train_loss"],
        "final_test_loss": recorder.rows[-1]["test_loss"],
        "final_test_acc": recorder.rows[-1]["test_acc"],
        **_noise_summary(cfg, np.asarray(recorder.g2), np.asarray(recorder.trace)),
        "seconds": time.perf_counter() - started,
    }
    return summary, metrics, model


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """(shuffling, measurement draws): independent streams, so neither affects the other."""
    seeds = np.random.SeedSequence(seed).spawn(2)
    return (torch.Generator().manual_seed(int(seeds[0].generate_state(1)[0])),
            torch.Generator().manual_seed(int(seeds[1].generate_state(1)[0])))


def _shuffled_batches(n_train: int, batch_size: int, gen: torch.Generator):
    """Minibatch indices without end: the training set reshuffled at every pass."""
    order, cursor = torch.randperm(n_train, generator=gen), 0
    while True:
        if cursor >= n_train:
            order, cursor = torch.randperm(n_train, generator=gen), 0
        yield order[cursor : cursor + batch_size]
        cursor += batch_size


def _sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: Dataset,
              idx: torch.Tensor, step: int) -> float:
    """One optimizer step on the examples ``idx``; returns the minibatch loss."""
    loss = batch_loss(model, (data.x_train[idx], data.y_train[idx]))
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite training loss {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


class _Recorder:
    """The measurement every ``gns_every`` steps: the loss on both splits, one noise-scale
    sample, a metrics row (written to the run directory as it goes)."""

    def __init__(self, cfg: SupervisedConfig, data: Dataset, model: nn.Module,
                 gen: torch.Generator, steps_per_epoch: int, total_steps: int,
                 run_dir: RunDir | None, progress):
        self.cfg, self.data, self.model, self.gen = cfg, data, model, gen
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.run_dir, self.progress = run_dir, progress
        self.tracker = GNSTracker(beta=cfg.gns_beta, window=cfg.gns_window)
        self.rows: list[dict[str, Any]] = []
        self.g2: list[float] = []
        self.trace: list[float] = []
        self.pending_losses: list[float] = []
        """minibatch losses since the last row"""

    def record(self, step: int) -> None:
        cfg, data = self.cfg, self.data
        self.model.eval()
        train_loss, _ = _evaluate(self.model, data.x_train, data.y_train)
        test_loss, test_acc = _evaluate(self.model, data.x_test, data.y_test)
        self.model.train()
        idx = torch.randint(int(data.x_train.shape[0]), (cfg.gns_groups, cfg.gns_group_size),
                            generator=self.gen)
        groups = [(data.x_train[i], data.y_train[i]) for i in idx]
        sample = measure(self.model, batch_loss, groups, group_size=cfg.gns_group_size)
        self.tracker.update(sample)
        self.g2.append(sample.g2)
        self.trace.append(sample.trace_sigma)
        row = self._row(step, train_loss, test_loss, test_acc, sample)
        self.pending_losses.clear()
        self.rows.append(row)
        if self.run_dir is not None:
            self.run_dir.append_metrics(row)
            self.run_dir.mark_running(step, step * cfg.batch_size)
        if self.progress is not None:
            self.progress(step, self.total_steps)

    def _row(self, step: int, train_loss: float, test_loss: float, test_acc: float,
             sample) -> dict[str, Any]:
        _, lower, upper = self.tracker.b_simple_interval()
        pending = self.pending_losses
        return {
            "iteration": step,
            "step": step,
            "epoch": step / self.steps_per_epoch,
            "samples": step * self.cfg.batch_size,
            "batch_loss": float(np.mean(pending)) if pending else math.nan,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "g2": sample.g2,
            "trace_sigma": sample.trace_sigma,
            "b_simple": sample.b_simple,
            "b_simple_ema": self.tracker.ema_b_simple,
            "b_simple_mean": self.tracker.mean_b_simple,
            "b_simple_lower": lower,
            "b_simple_upper": upper,
            "small_sq_norm": sample.small_sq_norm,
            "big_sq_norm": sample.big_sq_norm,
        }


def _noise_summary(cfg: SupervisedConfig, g2: np.ndarray, trace: np.ndarray) -> dict[str, Any]:
    """The run's noise-scale entries of summary.json: the run-averaged B_simple and the
    first / last ``SEGMENT_FRACTION`` of the measurements, with Fieller intervals."""
    n_meas = len(g2)
    seg = max(1, round(SEGMENT_FRACTION * n_meas))
    run_b, run_lo, run_hi = ratio_interval(g2, trace)
    start_b, start_lo, start_hi = ratio_interval(g2[:seg], trace[:seg])
    end_b, end_lo, end_hi = ratio_interval(g2[-seg:], trace[-seg:])
    return {
        "measurements": n_meas,
        "gns_small_batch": cfg.gns_group_size,
        "gns_big_batch": cfg.gns_groups * cfg.gns_group_size,
        "mean_g2": float(g2.mean()),
        "mean_trace_sigma": float(trace.mean()),
        "negative_g2_fraction": float((g2 < 0).mean()),
        "b_simple_run": run_b,
        "b_simple_run_lower": run_lo,
        "b_simple_run_upper": run_hi,
        "segment_measurements": seg,
        "b_simple_start": start_b,
        "b_simple_start_lower": start_lo,
        "b_simple_start_upper": start_hi,
        "b_simple_end": end_b,
        "b_simple_end_lower": end_lo,
        "b_simple_end_upper": end_hi,
        "b_simple_end_over_start": end_b / start_b if start_b > 0 else math.nan,
        "b_simple_unit": "training examples",
    }
