import ast
import copy
import inspect
import math
from dataclasses import fields

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents.networks import build_actor_critic
from agents.ppo import (
    PPOBatch,
    PPOConfig,
    learning_rate_at,
    make_optimizer,
    normalize_advantages,
    ppo_loss,
    ppo_update,
)


class TablePolicy(nn.Module):
    """obs[i] is a row index into learnable tables of logits and values."""

    def __init__(self, logits, values):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float64))
        self.values = nn.Parameter(torch.tensor(values, dtype=torch.float64))
        self.seen: list[list[int]] = []

    def evaluate(self, obs, actions):
        self.seen.append(obs.tolist())
        logp = torch.log_softmax(self.logits[obs], dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, actions.view(-1, 1)).squeeze(-1), entropy, self.values[obs]


def _log_softmax(row, k):
    return row[k] - math.log(sum(math.exp(x) for x in row))


def _entropy(row):
    z = sum(math.exp(x) for x in row)
    probs = [math.exp(x) / z for x in row]
    return -sum(p * math.log(p) for p in probs)


# Four real samples and one masked-out sample (index 4) with extreme stored values.
LOGITS = [[0.5, -0.5], [0.0, 1.0], [2.0, 0.0], [0.1, 0.2], [0.0, 0.0]]
ACTIONS = [0, 1, 1, 0, 0]
RATIOS = [1.5, 0.5, 1.1, 1.4]  # new/old probability ratios of the real samples
ADVANTAGES = [1.0, -2.0, 0.5, -1.0, float("nan")]
NEW_VALUES = [1.0, 1.0, 0.3, -1.0, 0.0]
OLD_VALUES = [0.5, 0.5, 0.25, 0.0, -1e30]
RETURNS = [2.0, 0.0, 0.0, 0.5, float("inf")]
MASK = [1.0, 1.0, 1.0, 1.0, 0.0]
CLIP = 0.2


def _new_logprobs():
    return [_log_softmax(row, a) for row, a in zip(LOGITS, ACTIONS, strict=True)]


def _batch(n=5):
    new = _new_logprobs()
    old = [lp - math.log(r) for lp, r in zip(new, RATIOS, strict=False)] + [-1e4]
    batch = {
        "obs": torch.arange(5),
        "actions": torch.tensor(ACTIONS),
        "logprobs": torch.tensor(old, dtype=torch.float64),
        "values": torch.tensor(OLD_VALUES, dtype=torch.float64),
        "advantages": torch.tensor(ADVANTAGES, dtype=torch.float64),
        "returns": torch.tensor(RETURNS, dtype=torch.float64),
        "mask": torch.tensor(MASK, dtype=torch.float64),
    }
    return {k: v[:n] for k, v in batch.items()}


def _model():
    return TablePolicy(LOGITS, NEW_VALUES)


def test_ppo_loss_matches_hand_computation():
    cfg = PPOConfig(clip_coef=CLIP, ent_coef=0.01, vf_coef=0.5, clip_value_loss=True)
    terms = ppo_loss(_model(), _batch(), cfg)

    # Policy: sample 0 (A>0, r=1.5) and sample 1 (A<0, r=0.5) are clipped; sample 2 is inside
    # the clip range; sample 3 (A<0, r=1.4) takes the unclipped, more pessimistic term.
    per_sample = [-1.0 * 1.2, 2.0 * 0.8, -0.5 * 1.1, 1.0 * 1.4]
    policy = sum(per_sample) / 4
    assert policy == pytest.approx(0.3125)
    unclipped = sum(-a * r for a, r in zip(ADVANTAGES, RATIOS, strict=False)) / 4
    assert abs(policy - unclipped) > 0.1  # the clipping matters for this batch

    # Value: sample 0 has clipping active (0.7 is further from 2.0 than 1.0 is);
    # sample 1 inactive; sample 2 inside the range; sample 3 inactive.
    value_terms = [(0.7 - 2.0) ** 2, (1.0 - 0.0) ** 2, (0.3 - 0.0) ** 2, (-1.0 - 0.5) ** 2]
    value = 0.5 * sum(value_terms) / 4
    entropy = sum(_entropy(row) for row in LOGITS[:4]) / 4
    approx_kl = sum((r - 1) - math.log(r) for r in RATIOS) / 4

    assert terms.policy_loss.item() == pytest.approx(policy, rel=1e-12)
    assert terms.value_loss.item() == pytest.approx(value, rel=1e-12)
    assert terms.entropy.item() == pytest.approx(entropy, rel=1e-12)
    assert terms.total.item() == pytest.approx(policy - 0.01 * entropy + 0.5 * value, rel=1e-12)
    assert terms.approx_kl.item() == pytest.approx(approx_kl, rel=1e-9)
    assert terms.clip_fraction.item() == pytest.approx(3 / 4)


def test_unclipped_value_loss():
    cfg = PPOConfig(clip_coef=CLIP, clip_value_loss=False)
    terms = ppo_loss(_model(), _batch(), cfg)
    expected = 0.5 * sum((v - r) ** 2 for v, r in zip(NEW_VALUES, RETURNS[:4], strict=False)) / 4
    assert terms.value_loss.item() == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(0.5 * (1.69 + 1 + 0.09 + 2.25) / 4)


def test_masked_sample_contributes_nothing():
    cfg = PPOConfig(clip_coef=CLIP)
    model = _model()
    full = ppo_loss(model, _batch(), cfg)
    real_only = ppo_loss(_model(), _batch(4), cfg)
    for a, b in zip(full, real_only, strict=True):
        assert torch.isfinite(a)
        assert a.item() == pytest.approx(b.item(), rel=1e-12)
    full.total.backward()
    assert torch.isfinite(model.logits.grad).all() and torch.isfinite(model.values.grad).all()
    assert torch.count_nonzero(model.logits.grad[4]) == 0
    assert model.values.grad[4] == 0
    assert torch.count_nonzero(model.logits.grad[:4]) > 0


def test_loss_uses_advantages_as_given():
    cfg = PPOConfig(clip_coef=CLIP)
    batch = _batch(4)
    base = ppo_loss(_model(), batch, cfg).policy_loss.item()
    scaled = dict(batch, advantages=batch["advantages"] * 10)
    assert ppo_loss(_model(), scaled, cfg).policy_loss.item() == pytest.approx(10 * base)


def test_normalize_advantages_ignores_masked_entries():
    adv = torch.tensor([1.0, 2.0, 3.0, 1e6, float("nan")])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    out = normalize_advantages(adv, mask)
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0]))


def _rollout_batch(n=64, seed=0):
    torch.manual_seed(seed)
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    model = build_actor_critic(space, gym.spaces.Discrete(3))
    obs = torch.rand(n, 4) * 2 - 1
    with torch.no_grad():
        actions, logprobs, values = model.act(obs)
    advantages = torch.randn(n)
    mask = (torch.arange(n) % 7 != 3).float()
    batch = PPOBatch(obs, actions, logprobs, values, advantages, values + advantages, mask)
    return model, batch


def test_ppo_update_is_deterministic_and_counts_steps():
    cfg = PPOConfig(num_epochs=3, num_minibatches=4, learning_rate=1e-3)
    model_a, batch = _rollout_batch()
    model_b = copy.deepcopy(model_a)
    model_c = copy.deepcopy(model_a)
    opt_a, opt_b, opt_c = (make_optimizer(m, cfg) for m in (model_a, model_b, model_c))
    stats_a = ppo_update(model_a, opt_a, batch, cfg, torch.Generator().manual_seed(7))
    stats_b = ppo_update(model_b, opt_b, batch, cfg, torch.Generator().manual_seed(7))
    ppo_update(model_c, opt_c, batch, cfg, torch.Generator().manual_seed(8))

    assert stats_a == stats_b
    assert stats_a["num_optimizer_steps"] == 12 and stats_a["early_stopped"] == 0.0
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
        assert math.isfinite(stats_a[key])
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(
        not torch.equal(pa, pc)
        for pa, pc in zip(model_a.parameters(), model_c.parameters(), strict=True)
    )
    for p in model_a.parameters():
        assert int(opt_a.state[p]["step"]) == 12


def test_each_epoch_visits_every_sample_once():
    cfg = PPOConfig(num_epochs=2, num_minibatches=2, clip_coef=CLIP)
    model = _model()
    batch = _batch(4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = ppo_update(model, optimizer, batch, cfg, torch.Generator().manual_seed(0))
    assert stats["num_optimizer_steps"] == 4
    assert [len(s) for s in model.seen] == [2, 2, 2, 2]
    assert sorted(model.seen[0] + model.seen[1]) == [0, 1, 2, 3]
    assert sorted(model.seen[2] + model.seen[3]) == [0, 1, 2, 3]


def test_target_kl_stops_early():
    cfg = PPOConfig(num_epochs=4, num_minibatches=4, learning_rate=1.0, target_kl=1e-6)
    model, batch = _rollout_batch()
    stats = ppo_update(model, make_optimizer(model, cfg), batch, cfg, torch.Generator())
    assert stats["num_optimizer_steps"] == 1
    assert stats["early_stopped"] == 1.0


def test_learning_rate_at():
    cfg = PPOConfig(learning_rate=2.5e-4)
    assert learning_rate_at(cfg, 0, 100) == 2.5e-4
    assert learning_rate_at(cfg, 50, 100) == pytest.approx(1.25e-4)
    assert learning_rate_at(cfg, 99, 100) == pytest.approx(2.5e-6)
    assert learning_rate_at(cfg, 100, 100) == 0.0
    assert learning_rate_at(PPOConfig(anneal_lr=False), 99, 100) == 2.5e-4
    with pytest.raises(ValueError, match="iteration"):
        learning_rate_at(cfg, 101, 100)


def test_defaults_are_the_reference_settings():
    cfg = PPOConfig()
    assert (cfg.learning_rate, cfg.anneal_lr, cfg.num_epochs, cfg.num_minibatches) == (
        2.5e-4, True, 4, 4
    )
    assert (cfg.gamma, cfg.gae_lambda, cfg.clip_coef, cfg.clip_value_loss) == (
        0.99, 0.95, 0.1, True
    )
    assert (cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm, cfg.norm_adv) == (0.01, 0.5, 0.5, True)
    assert (cfg.adam_eps, cfg.target_kl) == (1e-5, None)
    cfg.validate(8 * 128)


def test_every_config_field_has_an_attribute_docstring():
    tree = ast.parse(inspect.getsource(PPOConfig))
    body = tree.body[0].body
    documented = set()
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                assert "\n" not in nxt.value.value.strip()
                documented.add(node.target.id)
    assert documented == {f.name for f in fields(PPOConfig)}


def test_validate_errors():
    with pytest.raises(ValueError, match="1000.*num_minibatches=3") as info:
        PPOConfig(num_minibatches=3).validate(1000)
    assert "999" in str(info.value) and "1002" in str(info.value)
    assert "[1, 2, 4, 5, 8, 10]" in str(info.value)
    with pytest.raises(ValueError, match="learning_rate"):
        PPOConfig(learning_rate=0.0).validate(64)
    with pytest.raises(ValueError, match="gamma"):
        PPOConfig(gamma=1.5).validate(64)
    with pytest.raises(ValueError, match="gae_lambda"):
        PPOConfig(gae_lambda=-0.1).validate(64)
    with pytest.raises(ValueError, match="exceeds the rollout batch size 4"):
        PPOConfig(num_minibatches=8).validate(4)
    with pytest.raises(ValueError, match="target_kl"):
        PPOConfig(target_kl=0.0).validate(64)
    with pytest.raises(ValueError, match="positive integer"):
        PPOConfig().validate(0)


@pytest.mark.parametrize("norm_adv", [True, False])
def test_per_minibatch_advantage_normalization(norm_adv):
    # With normalization the update is invariant to an affine map of the advantages.
    cfg = PPOConfig(num_epochs=2, num_minibatches=4, learning_rate=1e-2, norm_adv=norm_adv)
    model_a, batch = _rollout_batch()
    model_b = copy.deepcopy(model_a)
    shifted = PPOBatch(**{**batch.__dict__, "advantages": 5.0 * batch.advantages + 3.0})
    for model, data in ((model_a, batch), (model_b, shifted)):
        ppo_update(model, make_optimizer(model, cfg), data, cfg, torch.Generator().manual_seed(1))
    pa = torch.cat([p.flatten() for p in model_a.parameters()])
    pb = torch.cat([p.flatten() for p in model_b.parameters()])
    assert torch.allclose(pa, pb, atol=1e-5) is norm_adv


def test_fused_adam_only_for_vector_and_matrix_parameters():
    """The fused kernel walks raw memory: with a channels-last conv weight and Adam moments
    in another layout it silently mixes up elements, so CNNs keep the per-tensor Adam."""
    cfg = PPOConfig()
    mlp = build_actor_critic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    cnn = build_actor_critic(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
                             gym.spaces.Discrete(6))
    assert make_optimizer(mlp, cfg).param_groups[0]["fused"] is True
    assert not make_optimizer(cnn, cfg).param_groups[0]["fused"]
    # The fused update is Adam's: compare with the per-tensor implementation.
    ref = copy.deepcopy(mlp)
    fused_opt = make_optimizer(mlp, cfg)
    plain_opt = torch.optim.Adam(ref.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    for step in range(5):
        for model, opt in ((mlp, fused_opt), (ref, plain_opt)):
            gen = torch.Generator().manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
    for a, b in zip(mlp.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_batch_index_matches_advanced_indexing():
    model, batch = _rollout_batch()
    idx = torch.randperm(len(batch), generator=torch.Generator().manual_seed(0))[:7]
    for name in ("obs", "actions", "logprobs", "values", "advantages", "returns", "mask"):
        assert torch.equal(getattr(batch.index(idx), name), getattr(batch, name)[idx])
    keep = torch.arange(len(batch)) % 3 == 0
    assert torch.equal(batch.index(keep).obs, batch.obs[keep])
