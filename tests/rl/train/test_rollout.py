"""The collection loop against a scripted environment, and the trainer's CPU speed options."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import PPOConfig
from envs.vector import VecEnv
from rl.runs.metrics import load_metrics
from rl.train.config import PRESETS, TrainConfig
from rl.train.gae import compute_gae
from rl.train.launch import train
from rl.train.rollout import RolloutBuffer, collect, to_device

N_ACTIONS = 3


class ScriptedRaw:
    """A raw backend whose every output is a function of (env, its step count, action).

    Env i's game ends after ``lengths[i]`` steps (terminated, or truncated for odd i);
    the observation encodes (env, step within the game, last action); the reward is
    ``10 * env + step + action / 10``. Next-step auto-reset, as the raw contract says.
    """

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)
        self.num_envs = len(lengths)
        self.single_observation_space = gym.spaces.Box(-1e6, 1e6, (3,), np.float32)
        self.single_action_space = gym.spaces.Discrete(N_ACTIONS)
        self.step_in_game = np.zeros(self.num_envs, dtype=np.int64)
        self.over = np.zeros(self.num_envs, dtype=bool)
        self.log = []  # (actions sent, autoreset expected) per step

    def _obs(self, actions):
        ids = np.arange(self.num_envs)
        return np.stack([ids, self.step_in_game, actions], axis=1).astype(np.float32)

    def reset(self, seed):
        self.step_in_game[:] = 0
        self.over[:] = False
        return self._obs(np.zeros(self.num_envs))

    def step(self, actions):
        actions = np.asarray(actions)
        resetting = self.over.copy()
        self.log.append((actions.copy(), resetting))
        self.step_in_game = np.where(resetting, 0, self.step_in_game + 1)
        reward = np.where(resetting, 0.0,
                          10.0 * np.arange(self.num_envs) + self.step_in_game + actions / 10)
        ended = ~resetting & (self.step_in_game >= self.lengths)
        odd = np.arange(self.num_envs) % 2 == 1
        terminated, truncated = ended & ~odd, ended & odd
        self.over = ended
        return self._obs(np.where(resetting, 0, actions)), reward, terminated, truncated, None

    def close(self):
        pass


class ScriptedModel(torch.nn.Module):
    """act(): a deterministic action per (env, step); value = the observation's step."""

    def forward(self, obs):
        logits = torch.zeros(obs.shape[0], N_ACTIONS)
        return logits, obs[:, 1] * 1.0 + obs[:, 0] * 100.0

    def act(self, obs, generator=None):
        _, value = self(obs)
        action = (obs[:, 0].long() + obs[:, 1].long()) % N_ACTIONS
        logprob = -obs[:, 0] - 0.5
        return action, logprob, value


def _reference(lengths, num_steps, rollouts):
    """Step the scripted env by hand, with the model's rule, and record every array."""
    raw = ScriptedRaw(lengths)
    env = VecEnv(raw, seed=0)
    obs, _ = env.reset()
    model = ScriptedModel()
    out = []
    for _ in range(rollouts):
        rec = {k: [] for k in ("obs", "actions", "logprobs", "values", "rewards", "terminated",
                               "truncated", "autoreset")}
        returns = []
        for _ in range(num_steps):
            x = torch.from_numpy(obs)
            action, logprob, value = model.act(x)
            rec["obs"].append(obs.copy())
            rec["actions"].append(action.numpy())
            rec["logprobs"].append(logprob.numpy())
            rec["values"].append(value.numpy())
            obs, reward, term, trunc, info = env.step(action.numpy())
            rec["rewards"].append(reward)
            rec["terminated"].append(term)
            rec["truncated"].append(trunc)
            rec["autoreset"].append(info["autoreset"])
            returns.extend(info["episode_return"][info["episode_done"]].tolist())
        out.append(({k: np.stack(v) for k, v in rec.items()}, returns, obs.copy()))
    return out


@pytest.mark.parametrize("lengths, num_steps", [([3, 4, 5, 7], 9), ([1, 2], 5), ([50], 4)])
def test_collect_stores_exactly_what_the_env_and_model_produced(lengths, num_steps):
    reference = _reference(lengths, num_steps, rollouts=3)
    env = VecEnv(ScriptedRaw(lengths), seed=0)
    obs, _ = env.reset()
    device = torch.device("cpu")
    next_obs = to_device(obs, device)
    buffer = RolloutBuffer(num_steps, len(lengths), next_obs, device)
    model = ScriptedModel()
    for ref, ref_returns, ref_next_obs in reference:  # consecutive rollouts, one buffer
        next_obs, next_value, episodes = collect(env, model, buffer, next_obs, None, device)
        for key, expected in ref.items():
            got = getattr(buffer, key)
            assert got.shape == (num_steps, len(lengths)) + expected.shape[2:], key
            np.testing.assert_array_equal(got.numpy(), expected.astype(got.numpy().dtype),
                                          err_msg=key)
        assert buffer.rewards.dtype == torch.float32
        assert {buffer.terminated.dtype, buffer.truncated.dtype, buffer.autoreset.dtype} == \
            {torch.bool}
        np.testing.assert_array_equal(next_obs.numpy(), ref_next_obs)
        np.testing.assert_array_equal(next_value.numpy(), model(next_obs)[1].numpy())
        assert episodes.returns == ref_returns
        assert len(episodes.lengths) == len(ref_returns)


def test_collect_trajectories_and_gae_inputs_per_env():
    """Per env: auto-reset steps follow exactly the steps that ended a game, the ignored
    action's reward is 0, and GAE masks exactly those steps."""
    lengths, num_steps = [2, 3, 4], 12
    raw = ScriptedRaw(lengths)
    env = VecEnv(raw, seed=0)
    obs, _ = env.reset()
    buffer = RolloutBuffer(num_steps, 3, torch.from_numpy(obs), "cpu")
    collect(env, ScriptedModel(), buffer, torch.from_numpy(obs), None, torch.device("cpu"))
    ended = (buffer.terminated | buffer.truncated).numpy()
    auto = buffer.autoreset.numpy()
    np.testing.assert_array_equal(auto[1:], ended[:-1])
    assert not auto[0].any()
    assert (buffer.rewards.numpy()[auto] == 0).all()
    for i, n in enumerate(lengths):
        # A game is n real steps followed by one auto-reset step.
        ends = np.flatnonzero(ended[:, i])
        np.testing.assert_array_equal(ends, np.arange(n - 1, num_steps, n + 1))
        assert buffer.truncated[:, i].any() == (i % 2 == 1)
    _, _, mask = compute_gae(buffer.rewards, buffer.values, torch.zeros(3), buffer.terminated,
                             buffer.truncated, buffer.autoreset, 0.99, 0.95)
    np.testing.assert_array_equal(mask.numpy(), 1.0 - auto)


def test_upload_overwrites_flags_of_the_previous_rollout():
    buffer = RolloutBuffer(2, 3, torch.zeros(3, 1), "cpu")
    buffer.host_flags[:] = True
    buffer.host_rewards[:] = 5.0
    buffer.upload()
    assert buffer.terminated.all() and buffer.truncated.all() and buffer.autoreset.all()
    buffer.host_flags[1] = False
    buffer.host_rewards[0, 1] = -1.5
    buffer.upload()
    assert buffer.terminated.all() and not buffer.truncated.any() and buffer.autoreset.all()
    assert buffer.rewards[0, 1] == -1.5 and buffer.rewards.sum() == 5.0 * 5 - 1.5


CLASSIC_TRAIN, CLASSIC_PPO = PRESETS["classic"]


def _cartpole(tmp_path, name, **kw):
    cfg = TrainConfig(env="CartPole", **{**CLASSIC_TRAIN, "total_agent_steps": 256 * 4,
                                         "run_dir": str(tmp_path / name), **kw})
    return cfg, PPOConfig(**CLASSIC_PPO)


def test_cpu_speed_options_train_and_restore_threads(tmp_path):
    before = torch.get_num_threads()
    seen = []
    cfg, ppo = _cartpole(tmp_path, "fast", cpu_bf16=True, torch_threads=1, gns_every=1,
                         device="cpu")
    train(cfg, ppo, on_iteration=lambda row: seen.append(torch.get_num_threads()))
    assert seen == [1] * 4 and torch.get_num_threads() == before
    df = load_metrics(tmp_path / "fast")
    for col in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert np.isfinite(df[col]).all(), col
    assert df.filter(like="gns/").notna().any().any()
    with pytest.raises(ValueError, match="torch_threads"):
        TrainConfig(torch_threads=-1).validate()


def test_speed_options_do_not_change_fp32_results_and_resume_old_configs(tmp_path):
    """torch_threads=1 gives the same rows as the default (0: torch's own count) when that
    count is 1 (MLP, fp32): the option changes the thread count, nothing else. (With another
    ambient count the rows differ from the first: the network's orthogonal init depends on
    the thread count, which is why torch_threads takes effect before it is built.) A run dir
    written before the speed options existed still resumes."""
    from rl.train.config import TIMING_COLUMNS

    def rows(name):
        df = load_metrics(tmp_path / name)
        drop = [c for c in df.columns if c in TIMING_COLUMNS or c.endswith("/seconds")]
        return df.drop(columns=drop)

    ambient = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(*_cartpole(tmp_path, "a"))
    finally:
        torch.set_num_threads(ambient)
    train(*_cartpole(tmp_path, "b", torch_threads=1))
    assert rows("a").equals(rows("b"))

    cfg, ppo = _cartpole(tmp_path, "old", total_agent_steps=256 * 2)
    train(cfg, ppo)
    path = tmp_path / "old" / "config.json"
    config = json.loads(path.read_text())
    for key in ("cpu_bf16", "channels_last_memory", "torch_threads"):
        del config["train"][key]
    path.write_text(json.dumps(config, sort_keys=True))
    cfg.total_agent_steps, cfg.resume = 256 * 3, True
    assert train(cfg, ppo).iterations == 3


@pytest.mark.slow
def test_cnn_channels_last_and_cpu_bf16_train(tmp_path):
    cfg = TrainConfig(env="MinAtar-Breakout", num_envs=4, num_steps=16, total_agent_steps=64 * 2,
                      run_dir=str(tmp_path / "m"), device="cpu", channels_last_memory=True,
                      cpu_bf16=True, gns_every=1, gns_groups=4)
    result = train(cfg, PPOConfig())
    assert result.iterations == 2
    df = load_metrics(tmp_path / "m")
    assert np.isfinite(df["policy_loss"]).all() and np.isfinite(df["value_loss"]).all()


def test_bench_scaling_reports_ratios_to_env_only():
    from rl.bench.scaling import ScalingBenchConfig, bench_scaling

    cfg = ScalingBenchConfig(envs="CartPole", num_envs="2,4", num_steps=8, iterations=1,
                             repeats=1, threads=1)
    df = bench_scaling(cfg)
    assert list(df.num_envs) == [2, 4] and (df.backend == "gym-vector").all()
    for col in ("env_only_sps", "e2e_sps", "rollout_sps"):
        assert (df[col] > 0).all(), col
    np.testing.assert_allclose(df.ratio_e2e_to_env, df.e2e_sps / df.env_only_sps)
    assert ((df.update_share > 0) & (df.update_share < 1)).all()


@pytest.mark.slow
def test_bench_scaling_overlap_probe_on_envpool():
    from rl.bench.scaling import ScalingBenchConfig, bench_scaling

    cfg = ScalingBenchConfig(envs="Pong", num_envs="4", num_steps=4, iterations=1, repeats=1,
                             overlap_probe=True)
    df = bench_scaling(cfg)
    assert (df.backend == "envpool").all()
    assert (df.sync_infer_sps > 0).all() and (df.async_infer_sps > 0).all()


def test_collect_with_deferred_values_stores_the_same_rollout():
    """The MLP's rollout samples with the actor alone and gets the values in one batched
    pass: the buffer is the per-step path's (values equal up to float rounding: one batched
    matrix product over the rollout vs one per step may sum in another order on >1 thread)."""
    import envs
    from agents import build_actor_critic

    def run(defer: bool):
        torch.manual_seed(0)
        model = build_actor_critic(
            gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
        if not defer:
            model.register_forward_hook(lambda m, i, o: o)  # forces the per-step path
        env = envs.make_vec("CartPole", 4, seed=0)
        obs = to_device(env.reset()[0], torch.device("cpu"))
        buffer = RolloutBuffer(50, 4, obs, "cpu")
        gen = torch.Generator().manual_seed(0)
        out = []
        for _ in range(2):
            obs, next_value, episodes = collect(env, model, buffer, obs, gen,
                                                torch.device("cpu"))
            out.append([buffer.obs.clone(), buffer.actions.clone(), buffer.logprobs.clone(),
                        buffer.values.clone(), next_value.clone(), episodes.returns])
        return out

    for a, b in zip(run(True), run(False), strict=True):
        obs, actions, logprobs, values, next_value, returns = a
        assert torch.equal(obs, b[0]) and torch.equal(actions, b[1])
        assert torch.equal(logprobs, b[2]) and returns == b[5]
        torch.testing.assert_close(values, b[3], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(next_value, b[4], rtol=1e-6, atol=1e-6)
