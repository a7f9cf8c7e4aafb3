"""#24 item 9: a seed reproduces whatever the shell's thread variables (and so whatever
``--parallel`` a sweep runs with): ``torch_threads`` takes effect before the network is
built, whose orthogonal init differs in the last bits with the thread count."""

import os
import subprocess
import sys

from rl.runs.metrics import load_metrics
from rl.train.config import TIMING_COLUMNS


def _train(run_dir, omp_threads: int):
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads),
           "MKL_NUM_THREADS": str(omp_threads)}
    subprocess.run([sys.executable, "-m", "rl.cli", "train", "--env", "CartPole",
                    "--total-agent-steps", "1024", "--seed", "3", "--torch-threads", "1",
                    "--quiet", "--run-dir", str(run_dir)], env=env, check=True, timeout=120)
    df = load_metrics(run_dir)
    timing = [c for c in df.columns if c in TIMING_COLUMNS or c.endswith("/seconds")]
    return df.drop(columns=timing).reset_index(drop=True)


def test_seed_reproduces_whatever_the_shell_thread_count(tmp_path):
    one, two = _train(tmp_path / "omp1", 1), _train(tmp_path / "omp2", 2)
    assert len(one) > 0
    assert list(one.columns) == list(two.columns)
    differ = [c for c in one.columns if not one[c].equals(two[c])]
    assert not differ, f"columns that differ with OMP_NUM_THREADS 1 vs 2: {differ}"
