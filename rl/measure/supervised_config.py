"""The supervised reference's settings (``SupervisedConfig``), tasks and datasets, apart from
``rl.measure.supervised`` (which re-exports them) so that ``rlscale gns supervised``'s options
and the sweep spec's checks import no training code."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

SUPERVISED_TASKS: dict[str, dict[str, str]] = {
    "digits-mlp": {"dataset": "digits", "model": "mlp"},
    "digits-cnn": {"dataset": "digits", "model": "cnn"},
}
"""Supervised tasks a sweep can name as its ``env`` (docs/sweeps.md, "Supervised sweeps"):
task name -> the SupervisedConfig fields it fixes."""

PROGRESS: dict[str, str] = {
    "train_loss": "minus the training loss (mean cross-entropy over the whole training split, "
                  "nats): a target of -0.1 is reached once the training loss is <= 0.1",
    "test_acc": "the test accuracy (fraction of the test split classified right)",
}
"""The progress score of a supervised run (metrics column ``return_recent`` of its rows):
higher is better, as with a return, so that targets, floors and the fit treat it alike."""


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # lazy: slow import, supervised only

    data = load_digits()
    return data.data, data.target


# name -> loader returning (features [N, D], integer labels [N]); every loader must read data
# that ships with an installed package (nothing is downloaded). To add a dataset (e.g.
# sklearn's bundled load_wine), register its loader here and add its name to the Literal of
# SupervisedConfig.dataset.
DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"digits": _digits}

# name -> (examples, image shape (height, width) of the features or None): what the sweep
# checks batch sizes against without loading the data, and what the cnn needs.
DATASET_SHAPES: dict[str, tuple[int, tuple[int, int] | None]] = {"digits": (1797, (8, 8))}


@dataclass
class SupervisedConfig:
    """Supervised reference run: a small classifier on a bundled scikit-learn dataset."""

    dataset: Literal["digits"] = "digits"
    """scikit-learn bundled dataset (no download)"""
    test_fraction: float = 0.2
    """fraction of the examples held out for test accuracy (stratified split)"""
    model: Literal["mlp", "logreg", "cnn"] = "mlp"
    """mlp: features -> hidden -> classes with ReLU; logreg: multinomial logistic regression;
    cnn: two 3x3 convolutions (the second with stride 2) with ReLU and a linear head, on
    image datasets"""
    hidden: int = 128
    """hidden units of the mlp"""
    channels: int = 8
    """channels of the cnn's first convolution (its second has twice as many)"""
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
    sampling: Literal["epochs", "iid"] = "epochs"
    """how minibatches are drawn: epochs, shuffled passes over the training split (each ends
    with a short batch); iid, batch_size examples drawn uniformly with replacement, every
    batch independently, as the noise-scale theory and measurement assume (a batch gradient's
    variance is then tr(Sigma) / batch_size at any batch size, also near or above the split's
    size, where passes would shrink the noise by the finite-population factor)"""
    progress: Literal["train_loss", "test_acc"] = "train_loss"
    """the progress score that target is compared with (higher is better): train_loss is minus
    the training loss, test_acc the test accuracy"""
    target: float | None = None
    """stop at the first evaluation whose progress score is >= this (none: run every step)"""
    diverge_factor: float | None = None
    """stop the run as failed (diverged) once the training loss at an evaluation exceeds this
    many times its untrained loss: it cannot reach a target any more (none: never)"""
    eval_per_octave: int | None = None
    """extra evaluations of the loss and accuracy between noise-scale measurements: at every
    step below this count, then this many per doubling of the step count (relative spacing at
    most 1 / this, so steps to a target are resolved to that fraction); none: only at the
    measurements"""
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

        for name in ("hidden", "channels", "batch_size", "epochs", "gns_group_size",
                     "gns_every", "gns_window"):
            positive(name)
        for name in ("total_steps", "threads", "eval_per_octave"):
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
        if self.progress not in PROGRESS:
            raise ValueError(f"progress must be one of {', '.join(PROGRESS)}, got "
                             f"{self.progress!r}")
        if self.target is not None and not math.isfinite(self.target):
            raise ValueError(f"target must be a finite number or none, got {self.target!r}")
        if self.diverge_factor is not None and not self.diverge_factor > 1:
            raise ValueError(f"diverge_factor must be a number above 1 or none, got "
                             f"{self.diverge_factor!r}")
        if self.model == "cnn" and DATASET_SHAPES[self.dataset][1] is None:
            raise ValueError(f"the cnn needs an image dataset; {self.dataset} has no image shape "
                             "(use model mlp or logreg)")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return {"sgd": 0.05, "adam": 1e-3}[self.optimizer]
