import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents.networks import (
    MLP,
    ActorCritic,
    ImpalaCNN,
    NatureCNN,
    SmallCNN,
    build_actor_critic,
)

ATARI = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
MINATAR = gym.spaces.Box(0, 1, (10, 10, 4), bool)  # MinAtar's gymnasium space: channels-last
CARTPOLE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


def _obs(space: gym.spaces.Box, n: int, seed: int = 0) -> torch.Tensor:
    space.seed(seed)
    return torch.as_tensor(np.stack([space.sample() for _ in range(n)]))


def _check_outputs(model: ActorCritic, obs: torch.Tensor, num_actions: int) -> None:
    n = obs.shape[0]
    logits, value = model(obs)
    assert logits.shape == (n, num_actions)
    assert value.shape == (n,)
    assert logits.dtype == value.dtype == torch.float32
    with torch.no_grad():
        action, logprob, value2 = model.act(obs)
    assert action.shape == logprob.shape == value2.shape == (n,)
    assert action.dtype == torch.int64
    assert int(action.min()) >= 0 and int(action.max()) < num_actions
    logprob2, entropy, value3 = model.evaluate(obs, action)
    assert logprob2.shape == entropy.shape == value3.shape == (n,)
    torch.testing.assert_close(logprob2.detach(), logprob)
    torch.testing.assert_close(value3.detach(), value2)
    expected_entropy = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy, expected_entropy)


@pytest.mark.parametrize(
    ("space", "network", "trunk_type"),
    [
        (ATARI, "auto", NatureCNN),
        (ATARI, "nature", NatureCNN),
        (ATARI, "impala", ImpalaCNN),
        (CARTPOLE, "auto", MLP),
        (MINATAR, "auto", SmallCNN),
        (MINATAR, "impala", ImpalaCNN),
        (MINATAR, "mlp", MLP),
    ],
)
def test_output_shapes(space, network, trunk_type):
    torch.manual_seed(0)
    model = build_actor_critic(space, gym.spaces.Discrete(5), network)
    assert isinstance(model.actor_trunk, trunk_type)
    _check_outputs(model, _obs(space, 3), 5)


def test_cartpole_uses_separate_mlps_and_cnn_shares_trunk():
    env = gym.make("CartPole-v1")
    model = build_actor_critic(env.observation_space, env.action_space)
    assert isinstance(model.critic_trunk, MLP) and not model.shared_trunk
    actor_params = {id(p) for p in model.actor_trunk.parameters()}
    assert actor_params.isdisjoint(id(p) for p in model.critic_trunk.parameters())
    assert model.actor_trunk.out_features == 64
    obs, _ = env.reset(seed=0)
    _check_outputs(model, torch.as_tensor(obs).unsqueeze(0), 2)
    cnn = build_actor_critic(ATARI, gym.spaces.Discrete(4))
    assert cnn.shared_trunk and cnn.actor_trunk.out_features == 512


def test_real_minatar_observations():
    minatar_gym = pytest.importorskip("minatar.gym")
    if hasattr(minatar_gym, "register_envs"):
        minatar_gym.register_envs()
    env = gym.make("MinAtar/Breakout-v1")
    model = build_actor_critic(env.observation_space, env.action_space)
    assert isinstance(model.actor_trunk, SmallCNN)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.bool_ and obs.shape == (10, 10, 4)
    _check_outputs(model, torch.as_tensor(obs).unsqueeze(0), int(env.action_space.n))


def test_channels_last_input_is_permuted():
    torch.manual_seed(0)
    hwc = build_actor_critic(MINATAR, gym.spaces.Discrete(3), "small")
    chw_space = gym.spaces.Box(0, 1, (4, 10, 10), bool)
    chw = build_actor_critic(chw_space, gym.spaces.Discrete(3), "small")
    chw.load_state_dict(hwc.state_dict())
    x = _obs(MINATAR, 6)
    logits_a, value_a = hwc(x)
    logits_b, value_b = chw(x.permute(0, 3, 1, 2))
    torch.testing.assert_close(logits_a, logits_b)
    torch.testing.assert_close(value_a, value_b)
    # The override treats the same space as channels-first: a different network shape.
    forced = build_actor_critic(MINATAR, gym.spaces.Discrete(3), "small", channels_last=False)
    assert forced.actor_trunk.conv[0].in_channels == 10


def test_uint8_scaling_matches_prescaled_float():
    torch.manual_seed(0)
    model = build_actor_critic(ATARI, gym.spaces.Discrete(4), "nature")
    x = _obs(ATARI, 4)
    assert x.dtype == torch.uint8
    logits_u8, value_u8 = model(x)
    logits_f, value_f = model(x.float() / 255.0)
    torch.testing.assert_close(logits_u8, logits_f)
    torch.testing.assert_close(value_u8, value_f)
    # Unscaled floats are taken as given, so they must give a different answer.
    _, value_raw = model(x.float())
    assert not torch.allclose(value_raw, value_u8)


def test_bool_and_uint8_binary_inputs_are_zero_one():
    torch.manual_seed(0)
    model = build_actor_critic(MINATAR, gym.spaces.Discrete(3))
    x = _obs(MINATAR, 4)
    assert x.dtype == torch.bool
    out_bool = model(x)
    out_float = model(x.float())
    torch.testing.assert_close(out_bool, out_float)
    # The same grid stored as uint8 with high=1 is not divided by 255.
    u8_space = gym.spaces.Box(0, 1, (10, 10, 4), np.uint8)
    u8_model = build_actor_critic(u8_space, gym.spaces.Discrete(3))
    u8_model.load_state_dict(model.state_dict())
    torch.testing.assert_close(u8_model(x.to(torch.uint8)), out_float)


def _expected_gain(name: str) -> float:
    if name.startswith("policy_head"):
        return 0.01
    if name.startswith("value_head"):
        return 1.0
    return math.sqrt(2.0)


@pytest.mark.parametrize(
    ("space", "network"), [(ATARI, "nature"), (ATARI, "impala"), (CARTPOLE, "mlp")]
)
def test_orthogonal_init(space, network):
    torch.manual_seed(0)
    model = build_actor_critic(space, gym.spaces.Discrete(6), network)
    layers = [
        (name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    assert len(layers) >= 4
    for name, layer in layers:
        gain = _expected_gain(name)
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
        rows, cols = w.shape
        gram = w @ w.T if rows <= cols else w.T @ w
        eye = torch.eye(min(rows, cols), dtype=torch.float64)
        torch.testing.assert_close(gram / gain**2, eye, atol=1e-4, rtol=0, msg=name)
        assert torch.count_nonzero(layer.bias) == 0, name


def test_error_unsupported_action_space():
    # Discrete and 1-D Box actions are supported (tests/agents/test_gaussian.py); others
    # get an error naming the space and a fix.
    with pytest.raises(ValueError, match="Discrete and 1-D Box.*ActionWrapper"):
        build_actor_critic(CARTPOLE, gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(ValueError, match="1-D Box action space.*shape \\(2, 2\\)"):
        build_actor_critic(CARTPOLE, gym.spaces.Box(-1, 1, (2, 2), np.float32))


def test_error_nature_on_vector_observations():
    with pytest.raises(ValueError, match="network='mlp'"):
        build_actor_critic(CARTPOLE, gym.spaces.Discrete(2), "nature")
    with pytest.raises(ValueError, match="network='mlp'"):
        build_actor_critic(CARTPOLE, gym.spaces.Discrete(2), "impala")


def test_error_nature_on_small_images_names_alternative():
    with pytest.raises(ValueError, match="36") as info:
        build_actor_critic(MINATAR, gym.spaces.Discrete(3), "nature")
    assert "small" in str(info.value) and "impala" in str(info.value)
    assert "10x10" in str(info.value)


def test_error_unknown_network_and_non_box_observations():
    with pytest.raises(ValueError, match="unknown network 'resnet'.*impala"):
        build_actor_critic(ATARI, gym.spaces.Discrete(3), "resnet")
    dict_space = gym.spaces.Dict({"a": CARTPOLE})
    with pytest.raises(ValueError, match="FlattenObservation"):
        build_actor_critic(dict_space, gym.spaces.Discrete(3))
    with pytest.raises(ValueError, match="network='mlp'"):
        build_actor_critic(gym.spaces.Box(0, 1, (3, 3), np.float32), gym.spaces.Discrete(3))


def test_error_unbatched_observation():
    model = build_actor_critic(CARTPOLE, gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="batch"):
        model(torch.zeros(4))


def test_act_generator_makes_sampling_reproducible():
    torch.manual_seed(0)
    model = build_actor_critic(CARTPOLE, gym.spaces.Discrete(2))
    obs = _obs(CARTPOLE, 64).clamp(-3, 3)
    with torch.no_grad():
        a1 = model.act(obs, generator=torch.Generator().manual_seed(3))[0]
        a2 = model.act(obs, generator=torch.Generator().manual_seed(3))[0]
        greedy, _, _ = model.act(obs, deterministic=True)
        logits, _ = model(obs)
    assert torch.equal(a1, a2)
    assert torch.equal(greedy, logits.argmax(-1))


# --- performance paths: the same values as the plain module calls -----------------------


def test_mlp_fast_forward_equals_its_sequential_and_keeps_state_dict_names():
    torch.manual_seed(0)
    model = build_actor_critic(CARTPOLE, gym.spaces.Discrete(2))
    obs = _obs(CARTPOLE, 33).clamp(-3, 3)
    logits, value = model(obs)
    (logits.square().sum() + value.sum()).backward()
    fast = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    x = model.preprocess(obs)
    logits2 = model.policy_head(model.actor_trunk.net(x))
    value2 = model.value_head(model.critic_trunk.net(x)).squeeze(-1)
    (logits2.square().sum() + value2.sum()).backward()
    assert torch.equal(logits, logits2) and torch.equal(value, value2)
    assert all(torch.equal(a, p.grad) for a, p in zip(fast, model.parameters(), strict=True))
    assert "actor_trunk.net.0.weight" in model.state_dict()
    clone = __import__("copy").deepcopy(model)
    assert clone.actor_trunk._linears[0] is clone.actor_trunk.net[0]


def test_act_without_value_and_batched_value_match_forward():
    torch.manual_seed(0)
    mlp = build_actor_critic(CARTPOLE, gym.spaces.Discrete(2))
    cnn = build_actor_critic(ATARI, gym.spaces.Discrete(6))
    assert mlp.defers_value and not cnn.defers_value
    for model, space in ((mlp, CARTPOLE), (cnn, ATARI)):
        obs = _obs(space, 6)
        if obs.is_floating_point():
            obs = obs.clamp(-3, 3)
        with torch.no_grad():
            logits, value = model(obs)
            a1, lp1, v1 = model.act(obs, generator=torch.Generator().manual_seed(1))
            a2, lp2, v2 = model.act(obs, generator=torch.Generator().manual_seed(1),
                                    with_value=False)
            assert v2 is None and torch.equal(a1, a2) and torch.equal(lp1, lp2)
            assert torch.equal(v1, value) and torch.equal(model.value(obs), value)
            assert torch.equal(model.policy_logits(obs), logits)
    # A forward hook (cpu_bf16's output cast) sees only forward: no deferring then.
    handle = mlp.register_forward_hook(lambda m, i, o: o)
    assert not mlp.defers_value
    handle.remove()
    assert mlp.defers_value
def test_channels_last_weights_get_channels_last_input_with_the_same_outputs():
    torch.manual_seed(0)
    model = build_actor_critic(ATARI, gym.spaces.Discrete(6))
    obs = _obs(ATARI, 3)
    assert not model.preprocess.to_channels_last
    x = model.preprocess(obs)
    assert x.is_contiguous()
    with torch.no_grad():
        logits, value = model(obs)
        model.to(memory_format=torch.channels_last)
        assert model.preprocess.to_channels_last
        x_cl = model.preprocess(obs)
        assert x_cl.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x_cl, x)  # same values, other memory layout
        logits_cl, value_cl = model(obs)
    torch.testing.assert_close(logits_cl, logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(value_cl, value, rtol=1e-5, atol=1e-6)
    model.to(memory_format=torch.contiguous_format)
    assert not model.preprocess.to_channels_last
    # MinAtar (HWC in the env) is channels-last in memory already; MLPs have no 4-D weights.
    mlp = build_actor_critic(CARTPOLE, gym.spaces.Discrete(2)).to(memory_format=torch.channels_last)
    assert not mlp.preprocess.to_channels_last


def test_gumbel_noise_samples_the_policy_distribution():
    """act(noise=sampling_noise(...)) draws argmax(log p + Gumbel): distributed as p."""
    torch.manual_seed(0)
    model = build_actor_critic(ATARI, gym.spaces.Discrete(6))
    obs = _obs(ATARI, 2)
    with torch.no_grad():
        # Sharpen the policy so the frequencies differ between actions.
        model.policy_head.weight.mul_(300.0)
        logp = torch.log_softmax(model(obs)[0], -1)
        probs = logp.exp()
        draws = 20_000
        noise = model.sampling_noise((draws, 2), generator=torch.Generator().manual_seed(0))
        assert noise.shape == (draws, 2, 6) and torch.isfinite(noise).all()
        actions = (logp.unsqueeze(0) + noise).argmax(-1)  # what act does, for every draw
        counts = torch.zeros(2, 6)
        for i in range(2):
            counts[i] = torch.bincount(actions[:, i], minlength=6).float()
        a, lp, _ = model.act(obs, noise=noise[0])
        assert torch.equal(a, actions[0]) and torch.equal(lp, logp.gather(-1, a[:, None])[:, 0])
    freq = counts / draws
    assert probs.max() > 0.3  # not uniform
    # Binomial standard error at 20k draws is <= 0.0036; allow 5 of them.
    torch.testing.assert_close(freq, probs, atol=0.018, rtol=0)
    with torch.no_grad():
        again = model.sampling_noise((draws, 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(noise, again)


def test_collect_returns_ordinary_tensors():
    import envs
    from rl.train.rollout import RolloutBuffer, collect, to_device

    model = build_actor_critic(CARTPOLE, gym.spaces.Discrete(2))
    env = envs.make_vec("CartPole", 2, seed=0)
    obs = to_device(env.reset()[0], torch.device("cpu"))
    buffer = RolloutBuffer(5, 2, obs, "cpu")
    next_obs, next_value, _ = collect(env, model, buffer, obs, torch.Generator(),
                                      torch.device("cpu"))
    assert not next_obs.is_inference() and not next_value.is_inference()
    # Usable where autograd saves its inputs (inference tensors are not).
    model(next_obs)[1].sum().backward()
