"""GAE against a straightforward per-environment reference loop on hand-built sequences."""

import numpy as np
import pytest
import torch

from rl.train.gae import compute_gae


def reference_gae(rewards, values, next_value, term, trunc, autoreset, gamma, lam):
    """Walk each environment's sequence episode by episode, the slow obvious way.

    For step t: if it is an auto-reset step it is not a transition (advantage 0). Else the
    TD error bootstraps from the value of the observation that followed it (values[t+1],
    or next_value after the last step) unless the episode terminated; and the sum over
    future TD errors stops at the step that ended the episode (terminated or truncated).
    """
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        v_next = np.append(values[1:, n], next_value[n])
        deltas = rewards[:, n] + gamma * v_next * (1 - term[:, n]) - values[:, n]
        for t in range(T):
            if autoreset[t, n]:
                continue
            total, discount = 0.0, 1.0
            for k in range(t, T):
                total += discount * deltas[k]
                if term[k, n] or trunc[k, n]:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    mask = 1.0 - autoreset
    return adv, (adv + values) * mask, mask


def _case(seed, T=12, N=3):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    next_value = rng.normal(size=N)
    term = np.zeros((T, N), bool)
    trunc = np.zeros((T, N), bool)
    # env 0: a termination at t=3 followed by its auto-reset step at t=4
    term[3, 0] = True
    # env 1: a truncation at t=5 (bootstraps from values[6] = V(final obs)), reset at t=6;
    # then a termination on the last step (the auto-reset falls into the next rollout)
    trunc[5, 1] = True
    term[T - 1, 1] = True
    # env 2: an auto-reset on the first step (the previous rollout ended an episode) and a
    # termination and truncation close together
    term[7, 2] = True
    trunc[9, 2] = True
    autoreset = np.zeros((T, N), bool)
    autoreset[4, 0] = autoreset[6, 1] = autoreset[0, 2] = True
    autoreset[8, 2] = autoreset[10, 2] = True
    return rewards, values, next_value, term, trunc, autoreset


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 1.0), (1.0, 0.0)])
def test_gae_matches_reference_loop(seed, gamma, lam):
    r, v, nv, te, tr, ar = _case(seed)
    want_adv, want_ret, want_mask = reference_gae(r, v, nv, te, tr, ar, gamma, lam)
    t = lambda x: torch.as_tensor(x)
    adv, ret, mask = compute_gae(t(r).float(), t(v).float(), t(nv).float(), t(te), t(tr),
                                 t(ar), gamma, lam)
    np.testing.assert_allclose(adv.numpy(), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), want_ret, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mask.numpy(), want_mask)


def test_truncation_bootstraps_and_termination_does_not():
    """One step each: reward 1, V(next) = 10, gamma 0.5, lambda irrelevant."""
    r = torch.ones(1, 2)
    v = torch.zeros(1, 2)
    nv = torch.full((2,), 10.0)
    term = torch.tensor([[True, False]])
    trunc = torch.tensor([[False, True]])
    adv, _, _ = compute_gae(r, v, nv, term, trunc, torch.zeros(1, 2, dtype=torch.bool), 0.5, 0.9)
    assert adv.tolist() == [[1.0, 1.0 + 0.5 * 10.0]]


def test_autoreset_step_is_masked_and_breaks_nothing():
    """An auto-reset step carrying garbage reward changes no other advantage."""
    r, v, nv, te, tr, ar = _case(3)
    t = lambda x: torch.as_tensor(x)
    base, _, _ = compute_gae(t(r).float(), t(v).float(), t(nv).float(), t(te), t(tr), t(ar),
                             0.99, 0.95)
    r2 = r.copy()
    r2[4, 0] = 1e6
    other, _, mask = compute_gae(t(r2).float(), t(v).float(), t(nv).float(), t(te), t(tr),
                                 t(ar), 0.99, 0.95)
    assert mask[4, 0] == 0 and other[4, 0] == 0
    torch.testing.assert_close(base, other)
