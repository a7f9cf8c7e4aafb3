"""Supervised reference: the gradient noise scale of a small classifier, measured like RL.

See docs/noise-scale.md for the full description.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from rl.measure.gns import GNSTracker, measure, ratio_interval
from rl.measure.supervised_config import (
    DATASET_SHAPES,
    DATASETS,
    PROGRESS,
    SUPERVISED_TASKS,
    SupervisedConfig,
)
from rl.runs.errors import RunDirError
from rl.runs.files import atomic_write_json
from rl.runs.layout import LOCK_FILE
from rl.runs.storage import RunDir

__all__ = [
    "DATASETS",
    "PROGRESS",
    "SUPERVISED_TASKS",
    "SWEEP_COLUMNS",
    "Dataset",
    "SupervisedConfig",
    "SupervisedResult",
    "build_model",
    "evaluation_due",
    "load_dataset",
    "progress_score",
    "ratio_interval",
    "run_supervised",
    "train_size",
    "untrained_scores",
]

SUMMARY_FILE = "summary.json"
SEGMENT_FRACTION = 0.25  # start / end B_simple: the first / last quarter of the measurements

SWEEP_COLUMNS = ("agent_steps", "return_recent", "episodes_total", "gns/updates_done",
                 "gns/iid", "gns/total/g2", "gns/total/trace_sigma", "gns/total/b_simple")
"""Columns of every metrics row that a sweep's results table reads (``rl.sweeps.results``), in
its units: agent_steps counts the examples trained on (step x batch_size), return_recent is
the progress score (``PROGRESS``), episodes_total the evaluations so far (a target needs one),
gns/updates_done the optimizer steps before the row (the warm-up rule, ``rl.measure.warmup``),
gns/iid = 1 (the groups are independent draws), gns/total/* the noise-scale measurement of the
training loss (NaN on rows without one). ``iteration`` is the optimizer steps done."""


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
    image_shape: tuple[int, int] | None = None
    """(height, width) when the features are the pixels of a grey-scale image, row by row"""

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def train_size(name: str, test_fraction: float) -> int:
    """Examples in the training split of ``name`` (the split of ``load_dataset``: scikit-learn
    rounds the test split up)."""
    n = DATASET_SHAPES[name][0]
    return n - math.ceil(test_fraction * n)


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
    return Dataset(name, xtr, ytr, xte, yte, num_classes=len(labels),
                   image_shape=DATASET_SHAPES.get(name, (0, None))[1])


# ---------------------------------------------------------------------------------------------
# Model and loss
# ---------------------------------------------------------------------------------------------


def build_model(cfg: SupervisedConfig, num_features: int, num_classes: int,
                image_shape: tuple[int, int] | None = None) -> nn.Module:
    """The classifier of ``cfg.model``, initialized from ``cfg.seed`` (global RNG untouched).

    The cnn reads the features as one grey-scale image of ``image_shape`` (height, width):
    conv 3x3 (``channels``, padding 1), ReLU, conv 3x3 stride 2 (2 x ``channels``, padding 1),
    ReLU, a linear layer to the classes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.model == "mlp":
            return nn.Sequential(
                nn.Linear(num_features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, num_classes)
            )
        if cfg.model == "logreg":
            return nn.Sequential(nn.Linear(num_features, num_classes))
        if cfg.model == "cnn":
            if image_shape is None or image_shape[0] * image_shape[1] != num_features:
                raise ValueError(f"the cnn needs images: {num_features} features are not an "
                                 f"image of shape {image_shape}")
            h, w = image_shape
            c = cfg.channels
            out_pixels = ((h + 1) // 2) * ((w + 1) // 2)
            return nn.Sequential(
                nn.Unflatten(1, (1, h, w)),
                nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(2 * c * out_pixels, num_classes),
            )
    raise ValueError(f"unknown model {cfg.model!r}; choose mlp, logreg or cnn")


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


def progress_score(progress: str, train_loss: float, test_acc: float) -> float:
    """The progress score (``PROGRESS``) of an evaluation: higher is better."""
    return -train_loss if progress == "train_loss" else test_acc


def untrained_scores(cfg: SupervisedConfig, seeds: Sequence[int]) -> np.ndarray:
    """The progress score of ``cfg``'s network at initialization, one per seed: each seed's
    own split and initialization, as a run with that seed starts (the untrained floor of a
    supervised sweep's targets, docs/sweeps.md)."""
    scores = []
    for seed in seeds:
        c = dataclasses.replace(cfg, seed=int(seed))
        data = load_dataset(c.dataset, c.test_fraction, c.seed)
        model = build_model(c, data.num_features, data.num_classes, data.image_shape)
        model.eval()
        train_loss, _ = _evaluate(model, data.x_train, data.y_train)
        _, test_acc = _evaluate(model, data.x_test, data.y_test)
        scores.append(progress_score(c.progress, train_loss, test_acc))
    return np.asarray(scores, dtype=float)


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
    # The lock file alone is no run: a sweep holds the run's lock while it starts it.
    if out_dir.exists() and (not out_dir.is_dir() or any(
            e.name != LOCK_FILE for e in out_dir.iterdir())):
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
        out_dir: if given, a new or empty directory (its lock file aside) that receives
            ``config.json``, ``metrics.jsonl`` (one row per evaluation, appended as the run
            goes), ``summary.json`` and ``status.json``. An existing non-empty directory is
            refused (``rl.runs.errors.RunDirError``, a ValueError) before anything is trained.
        progress: called as ``progress(steps_done, total_steps)`` after each row.

    Returns:
        ``SupervisedResult(summary, metrics, out_dir, model)``. One metrics row per
        evaluation: at each noise-scale measurement (every ``gns_every`` steps), at the last
        step, and at the extra evaluations of ``eval_per_octave``. Columns: step, epoch,
        samples (examples trained on), batch_loss (mean minibatch loss since the previous
        row), train_loss and test_loss (full splits, at the row's parameters), test_acc,
        g2, trace_sigma, b_simple (this measurement alone: noisy, may be negative or nan),
        b_simple_ema, b_simple_mean with b_simple_lower/b_simple_upper (running mean over
        the last ``gns_window`` measurements, Fieller 95%), small_sq_norm, big_sq_norm (NaN on
        rows without a measurement); and the columns a sweep reads (``SWEEP_COLUMNS``).
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
        if run_dir is not None:
            atomic_write_json(run_dir.path / SUMMARY_FILE, summary)
            run_dir.mark_finished(summary["steps"], summary["steps"] * cfg.batch_size,
                                  message="" if cfg.target is None else "reached target"
                                  if summary["reached_target"] else "budget spent")
    except BaseException as exc:
        if run_dir is not None:
            run_dir.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        torch.set_num_threads(threads)
        if run_dir is not None:
            run_dir.close()
    return SupervisedResult(summary, metrics, None if run_dir is None else run_dir.path, model)


def evaluation_due(step: int, per_octave: int | None) -> bool:
    """Whether ``eval_per_octave`` asks for an evaluation after ``step`` optimizer steps: every
    step below ``per_octave``, then every 2^k steps between per_octave 2^k and
    per_octave 2^(k+1) (``per_octave`` evaluations per doubling of the steps)."""
    if per_octave is None:
        return False
    if step < per_octave:
        return True
    spacing = 1 << int(math.floor(math.log2(step / per_octave)))
    return step % spacing == 0


def _train(cfg: SupervisedConfig, run_dir: RunDir | None, progress):
    started = time.perf_counter()
    data = load_dataset(cfg.dataset, cfg.test_fraction, cfg.seed)
    n_train = int(data.x_train.shape[0])
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.total_steps or cfg.epochs * steps_per_epoch
    model = build_model(cfg, data.num_features, data.num_classes, data.image_shape)
    model.train()
    optimizer = _build_optimizer(cfg, model)
    shuffle_gen, gns_gen = _generators(cfg.seed)
    iid = cfg.sampling == "iid"
    recorder = _Recorder(cfg, data, model, gns_gen, n_train / cfg.batch_size if iid
                         else steps_per_epoch, total_steps, run_dir, progress)
    batches = (_iid_batches if iid else _shuffled_batches)(n_train, cfg.batch_size,
                                                             shuffle_gen)
    reached, steps = False, total_steps
    for step in range(total_steps + 1):
        measure = step % cfg.gns_every == 0 or step == total_steps
        if measure or evaluation_due(step, cfg.eval_per_octave):
            score = recorder.record(step, measure)
            if cfg.target is not None and score >= cfg.target:
                reached, steps = True, step
                break
            _check_diverged(cfg, recorder.rows, step)
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
        "steps": steps,
        "epochs": steps * cfg.batch_size / n_train if iid else steps / steps_per_epoch,
        "progress": cfg.progress,
        "target": cfg.target,
        "reached_target": reached,
        "final_score": recorder.rows[-1]["return_recent"],
        "initial_train_loss": recorder.rows[0]["train_loss"],
        "final_train_loss": recorder.rows[-1]["train_loss"],
        "final_test_loss": recorder.rows[-1]["test_loss"],
        "final_test_acc": recorder.rows[-1]["test_acc"],
        **_noise_summary(cfg, np.asarray(recorder.g2), np.asarray(recorder.trace)),
        "seconds": time.perf_counter() - started,
    }
    return summary, metrics, model


def _check_diverged(cfg: SupervisedConfig, rows: list[dict[str, Any]], step: int) -> None:
    """RuntimeError once the training loss exceeds ``diverge_factor`` x the untrained loss."""
    if cfg.diverge_factor is None:
        return
    loss, untrained = rows[-1]["train_loss"], rows[0]["train_loss"]
    if not loss <= cfg.diverge_factor * untrained:  # also NaN
        raise RuntimeError(f"diverged: training loss {loss:.4g} at step {step}, above "
                           f"diverge_factor {cfg.diverge_factor:g} x the untrained "
                           f"{untrained:.4g}")


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


def _iid_batches(n_train: int, batch_size: int, gen: torch.Generator):
    """Minibatch indices without end: each ``batch_size`` indices drawn uniformly with
    replacement, independently of every other batch."""
    while True:
        yield torch.randint(n_train, (batch_size,), generator=gen)


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
        """one per evaluation, each with the ``SWEEP_COLUMNS``"""
        self.g2: list[float] = []
        self.trace: list[float] = []
        self.pending_losses: list[float] = []
        """minibatch losses since the last row"""

    def record(self, step: int, measure_noise: bool = True) -> float:
        """Evaluate (and with ``measure_noise`` measure the noise scale) after ``step``
        optimizer steps; write the row; return its progress score."""
        cfg, data = self.cfg, self.data
        self.model.eval()
        train_loss, _ = _evaluate(self.model, data.x_train, data.y_train)
        test_loss, test_acc = _evaluate(self.model, data.x_test, data.y_test)
        self.model.train()
        sample = None
        if measure_noise:
            idx = torch.randint(int(data.x_train.shape[0]),
                                (cfg.gns_groups, cfg.gns_group_size), generator=self.gen)
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
        return row["return_recent"]

    def _row(self, step: int, train_loss: float, test_loss: float, test_acc: float,
             sample) -> dict[str, Any]:
        pending = self.pending_losses
        row: dict[str, Any] = {
            "iteration": step,
            "step": step,
            "epoch": step / self.steps_per_epoch,
            "samples": step * self.cfg.batch_size,
            "batch_loss": float(np.mean(pending)) if pending else math.nan,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_acc": test_acc,
        }
        nan = math.nan
        if sample is None:
            row.update(g2=nan, trace_sigma=nan, b_simple=nan, b_simple_ema=nan,
                       b_simple_mean=nan, b_simple_lower=nan, b_simple_upper=nan,
                       small_sq_norm=nan, big_sq_norm=nan)
        else:
            _, lower, upper = self.tracker.b_simple_interval()
            row.update(g2=sample.g2, trace_sigma=sample.trace_sigma, b_simple=sample.b_simple,
                       b_simple_ema=self.tracker.ema_b_simple,
                       b_simple_mean=self.tracker.mean_b_simple, b_simple_lower=lower,
                       b_simple_upper=upper, small_sq_norm=sample.small_sq_norm,
                       big_sq_norm=sample.big_sq_norm)
        score = progress_score(self.cfg.progress, train_loss, test_acc)
        row.update({
            "agent_steps": step * self.cfg.batch_size,
            "return_recent": score,
            "episodes_total": len(self.rows) + 1,
            "gns/updates_done": step,
            "gns/iid": 1,
            "gns/total/g2": row["g2"],
            "gns/total/trace_sigma": row["trace_sigma"],
            "gns/total/b_simple": row["b_simple"],
        })
        return row


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
