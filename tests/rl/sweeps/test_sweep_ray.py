"""The CartPole test sweep through the Ray Tune executor on a local Ray instance."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip(
    "ray", reason="ray is not importable: install the extra (pip install -e '.[ray]', i.e. "
    "ray[tune]) to test the Ray executor"
)
pytest.importorskip("ray.tune", reason="ray is installed without Tune: pip install 'ray[tune]'")

from rl.sweeps.executors import run_sweep  # noqa: E402
from rl.sweeps.results import RESULT_TIMING_COLUMNS, read_results, result_columns  # noqa: E402
from rl.sweeps.spec import load_spec, plan_runs  # noqa: E402
from rl.sweeps.state import read_events  # noqa: E402
from tests.rl.sweeps.test_sweep import write_spec  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep_gives_the_same_table(local_ray, tmp_path, tmp_path_factory):
    spec = load_spec(write_spec(tmp_path / "spec.toml", tmp_path / "out"),
                     {"backend": "ray", "cpus_per_trial": 1})
    lock = threading.RLock()  # Tune pickles its callbacks: the log must not need to be

    def log(msg):
        with lock:
            messages.append(msg)

    messages: list[str] = []
    table = run_sweep(spec, log=log)
    assert sum(" finished (new)" in m for m in messages) == 10

    plans = plan_runs(spec)
    assert list(table.columns) == result_columns(spec.targets)
    assert list(table["run"]) == [p.name for p in plans]
    assert (table["status"] == "finished").all(), table[["run", "status", "message"]]
    pd.testing.assert_frame_equal(read_results(spec.out), table)
    # Each run trained once, in its own run dir under the sweep dir; Tune's records beside.
    starts = [e["run"] for e in read_events(spec.out) if e["event"] == "start"]
    assert sorted(starts) == sorted(p.name for p in plans)
    assert all((Path(p.run_dir) / "metrics.jsonl").exists() for p in plans)
    assert any((Path(spec.out) / "ray").iterdir())

    # Runs are deterministic: where this session also ran the local sweep, the tables match.
    local = sorted(Path(tmp_path_factory.getbasetemp()).glob("sweep*/out/results.parquet"))
    if local:
        ref = pd.read_parquet(local[0])
        timing = list(RESULT_TIMING_COLUMNS)
        pd.testing.assert_frame_equal(table.drop(columns=timing), ref.drop(columns=timing),
                                      check_exact=False, rtol=1e-9)
