"""The bench configs read their comma-separated fields in one place, for validate and run."""

import pytest

from rl.bench import envs as bench_envs_module
from rl.bench import scaling as bench_scaling_module
from rl.bench.envs import EnvBenchConfig, bench_envs
from rl.bench.gns import GNSBenchConfig
from rl.bench.scaling import ScalingBenchConfig, bench_scaling
from rl.train.config import TrainConfig


class Stop(Exception):
    """Raised where a suite would start measuring."""


def test_list_fields_parse_to_the_values_the_suites_run():
    assert EnvBenchConfig(num_envs="1, 8,32").env_counts() == [1, 8, 32]
    assert ScalingBenchConfig(num_envs="8,512,").env_counts() == [8, 512]
    gns = GNSBenchConfig(iterations="40,3", cadences="0, default,1")
    assert gns.iteration_counts() == [40, 3]
    assert gns.gns_everies() == [0, TrainConfig().gns_every, 1]


@pytest.mark.parametrize("cfg, match", [
    (EnvBenchConfig(num_envs="8,0"), "num_envs must be comma-separated positive integers"),
    (ScalingBenchConfig(num_envs="8,x"), "num_envs must be comma-separated positive integers"),
    (GNSBenchConfig(iterations=""), "iterations must be comma-separated positive integers"),
    (GNSBenchConfig(cadences="0,-1"), "cadences must be comma-separated gns_every values"),
])
def test_bad_list_fields_are_refused_by_validate(cfg, match):
    with pytest.raises(ValueError, match=match):
        cfg.validate()


@pytest.mark.parametrize("module, run, cfg", [
    (bench_envs_module, bench_envs, EnvBenchConfig(env="CartPole", backends="gym-sync",
                                                   num_envs="2, 4")),
    (bench_scaling_module, bench_scaling, ScalingBenchConfig(num_envs="2, 4")),
])
def test_suites_run_the_counts_of_num_envs(module, run, cfg, monkeypatch):
    seen = []

    def stop(configs, measure, repeats, progress=None):
        seen.extend(c["num_envs"] for c in configs)
        raise Stop

    monkeypatch.setattr(module, "interleaved", stop)
    with pytest.raises(Stop):
        run(cfg)
    assert sorted(set(seen)) == [2, 4]
