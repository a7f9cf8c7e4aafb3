"""Count the files and classes of this repository one plain PPO iteration runs code from.

A CartPole run of 3 iterations (classic preset, one process, fixed batch, the noise scale
measured every iteration, no checkpoint in between) is profiled from the end of iteration
1's ``after_iteration`` to the end of iteration 2's: every Python function called meanwhile
whose code lives under rl/, agents/ or envs/ counts its file, and, for a method, its class
(the qualified name up to the method). Prints both counts, then the lists.

    PYTHONPATH=. python scripts/iteration_footprint.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

import rl.train.launch as launch
from agents import PPOConfig
from rl.train.config import PRESETS, TrainConfig
from rl.train.hooks import Hook
from rl.train.launch import build_loop

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tuple(str(ROOT / p) + "/" for p in ("rl", "agents", "envs"))


class Recorder(Hook):
    """Profiles between the ends of the first and second ``after_iteration``. Every event
    is defined here, so that the recorder itself runs no code of rl/train/hooks.py (a plain
    ``train()`` call has no hooks)."""

    def __init__(self):
        self.files: set[str] = set()
        self.classes: set[str] = set()
        self.seen = 0

    def profile(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if not code.co_filename.startswith(PACKAGES):
            return
        path = str(Path(code.co_filename).relative_to(ROOT))
        self.files.add(path)
        owner = code.co_qualname.rpartition(".")[0]
        if owner and not owner.endswith("<locals>"):
            self.classes.add(f"{path}:{owner}")

    def on_start(self, loop):
        pass

    def before_update(self, loop, rollout):
        pass

    def on_row(self, loop, row):
        return None

    def after_iteration(self, loop, row):
        self.seen += 1
        sys.setprofile(self.profile if self.seen == 1 else None)

    def on_end(self, loop, result):
        pass

    def close(self):
        pass


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    train, ppo = PRESETS["classic"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(env="CartPole", **{**train, "total_agent_steps": 3 * 256,
                                             "gns_every": 1, "checkpoint_every": 100,
                                             "run_dir": tmp})
        recorder = Recorder()
        run_one(cfg, PPOConfig(**ppo), recorder)
    print(f"files: {len(recorder.files)}, classes: {len(recorder.classes)}")
    print("\n".join(sorted(recorder.files)))
    print("\n".join(sorted(recorder.classes)))


def run_one(cfg: TrainConfig, ppo: PPOConfig, recorder: Recorder) -> None:
    """``train(cfg, ppo)`` with ``recorder`` among the loop's hooks."""
    def with_recorder(*args, **kw):
        loop = build_loop(*args, **kw)
        loop.hooks.append(recorder)
        return loop

    launch.build_loop = with_recorder
    launch.train(cfg, ppo)


if __name__ == "__main__":
    main()
