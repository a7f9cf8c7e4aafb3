"""stable-baselines3 as a peer: run its PPO with our settings, through the same harness.

``train_sb3`` builds SB3's PPO from a ``TrainConfig`` + ``PPOConfig`` (via
``sb3_ppo_kwargs`` below) on SB3's own vector env of the same environment, and
reports the same smoothed return (mean over the last ``return_window`` finished
episodes, all environments) as our trainer, stopping at the same target.

``sb3_ppo_kwargs``, ``sb3_policy_name`` and ``sb3_parameter_name`` map a ``PPOConfig`` and
our networks onto SB3's PPO (the known differences: ``sb3_ppo_kwargs``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import LinearSchedule
from torch import nn
from torch.nn import functional as F

import envs
from agents import PPOConfig
from rl.measure.gns import GNSTracker, adam_preconditioner
from rl.measure.ppo_noise import (
    TERMS,
    adam_has_state,
    check_settings,
    measure_rollout,
    plan_split,
    split_columns,
    tracker_columns,
)
from rl.measure.returns import SmoothedReturn
from rl.train.config import TrainConfig

SB3_POLICIES = {"mlp": "MlpPolicy", "nature": "CnnPolicy"}
"""Our network names that SB3 has a built-in equivalent for, and that policy's name."""


def sb3_policy_name(network: str = "mlp") -> str:
    """SB3 policy name for one of our networks ("mlp" or "nature")."""
    if network not in SB3_POLICIES:
        raise ValueError(
            f"SB3 has no built-in equivalent of network={network!r}; use one of "
            f"{', '.join(SB3_POLICIES)}"
        )
    return SB3_POLICIES[network]


# Our ActorCritic parameter-name prefixes and SB3's (ActorCriticPolicy.named_parameters(),
# which lists a shared features extractor once, as features_extractor).
_SB3_PREFIXES = {
    "mlp": (("actor_trunk.net.", "mlp_extractor.policy_net."),
            ("critic_trunk.net.", "mlp_extractor.value_net."),
            ("policy_head.", "action_net."), ("value_head.", "value_net."),
            ("log_std", "log_std")),  # a Gaussian policy's (Box actions)
    "nature": (("actor_trunk.convs.", "features_extractor.cnn."),
               ("actor_trunk.fc.", "features_extractor.linear.0."),
               ("policy_head.", "action_net."), ("value_head.", "value_net.")),
}


def sb3_parameter_name(name: str, network: str = "mlp") -> str:
    """SB3's name for our parameter ``name`` (e.g. ``policy_head.weight`` -> ``action_net.weight``).

    The two layouts hold the same tensors with the same shapes, so weights copy one to one.
    """
    sb3_policy_name(network)
    for ours, theirs in _SB3_PREFIXES[network]:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise ValueError(f"no SB3 counterpart for parameter {name!r} of network={network!r}")


def sb3_ppo_kwargs(
    cfg: PPOConfig, num_envs: int, num_steps: int, *, network: str = "mlp"
) -> dict[str, Any]:
    """Keyword arguments for ``stable_baselines3.PPO(policy, env, **kwargs)``.

        model = PPO(sb3_policy_name("mlp"), venv, **sb3_ppo_kwargs(cfg, venv.num_envs, 128))

    ``num_envs`` must be the vector env's size: SB3's rollout is n_steps x num_envs.

    Known differences that remain (checked against SB3 2.9):
    * Value loss: SB3 uses mean((R - v')^2) with v' the clipped prediction alone; ours is
      0.5 * mean(max(unclipped, clipped)). With the same vf_coef, SB3 weights the value term
      about twice as much.
    * Learning-rate annealing: SB3 updates its progress after collecting a rollout, so its k-th
      update (0-based) uses lr * (1 - (k + 1) / K), one iteration behind ``learning_rate_at``.
    * SB3 does not mask auto-reset steps (it uses same-step resets, so it has none to mask).
    * target_kl: SB3 stops when a minibatch's approx KL exceeds 1.5 x its target_kl (checked
      before the step, as ours); the adapter passes cfg.target_kl / 1.5 so the thresholds agree.
    """
    sb3_policy_name(network)
    rollout = num_envs * num_steps
    batch_size = cfg.minibatch_size(rollout)
    learning_rate: Any = (
        LinearSchedule(cfg.learning_rate, 0.0, 1.0) if cfg.anneal_lr else cfg.learning_rate
    )
    policy_kwargs: dict[str, Any] = {
        "ortho_init": True,
        "optimizer_class": torch.optim.Adam,
        "optimizer_kwargs": {"eps": cfg.adam_eps},
    }
    if network == "mlp":
        policy_kwargs["net_arch"] = {"pi": [64, 64], "vf": [64, 64]}
        policy_kwargs["activation_fn"] = nn.Tanh
    else:  # nature: SB3's NatureCNN (512 features) shared by linear policy and value heads
        policy_kwargs["net_arch"] = []
        policy_kwargs["features_extractor_kwargs"] = {"features_dim": 512}
    return {
        "n_steps": num_steps,
        "batch_size": batch_size,
        "n_epochs": cfg.num_epochs,
        "learning_rate": learning_rate,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "clip_range": cfg.clip_coef,
        "clip_range_vf": cfg.clip_coef if cfg.clip_value_loss else None,
        "normalize_advantage": cfg.norm_adv,
        "ent_coef": cfg.ent_coef,
        "vf_coef": cfg.vf_coef,
        "max_grad_norm": cfg.max_grad_norm,
        "target_kl": None if cfg.target_kl is None else cfg.target_kl / 1.5,
        "policy_kwargs": policy_kwargs,
    }


@dataclass
class SB3Result:
    iterations: int
    agent_steps: int
    return_recent: float
    reached_target: bool
    wall_time_s: float


def make_sb3_env(cfg: TrainConfig):
    """SB3's own vector env for the environment (Atari: SB3's standard Atari wrappers)."""
    from stable_baselines3.common.env_util import (  # lazy: slow import, SB3 runs only
        make_atari_env,
        make_vec_env,
    )
    from stable_baselines3.common.vec_env import VecFrameStack  # lazy: slow import, SB3 runs only

    entry = envs.resolve(cfg.env)
    if entry.kind == "atari":
        import ale_py  # lazy: registers ALE envs (SB3 Atari)

        gym.register_envs(ale_py)
        env_id = f"{''.join(p.capitalize() for p in entry.target.split('_'))}NoFrameskip-v4"
        venv = make_atari_env(env_id, n_envs=cfg.num_envs, seed=cfg.seed)
        return VecFrameStack(venv, n_stack=4)
    if entry.kind == "plugin":
        return make_vec_env(entry.factory, n_envs=cfg.num_envs, seed=cfg.seed)
    return make_vec_env(entry.target, n_envs=cfg.num_envs, seed=cfg.seed)


def sb3_network(env_id: str) -> str:
    """Our network that SB3's built-in policy stands in for: ``nature`` on Atari, else ``mlp``."""
    return "nature" if envs.resolve(env_id).kind == "atari" else "mlp"


def sb3_ppo_model(venv, cfg: TrainConfig, ppo: PPOConfig, *, seed: int, device,
                  **overrides: Any) -> PPO:
    """SB3's PPO on ``venv`` with ``ppo``'s settings (``sb3_ppo_kwargs``) for rollouts
    of ``cfg.num_envs x cfg.num_steps``; ``overrides`` replace single SB3 arguments. Every
    SB3 run of the package (peer, learning parity, benchmark) is built here."""
    network = sb3_network(cfg.env)
    kwargs = {**sb3_ppo_kwargs(ppo, cfg.num_envs, cfg.num_steps, network=network), **overrides}
    return PPO(sb3_policy_name(network), venv, seed=seed, device=device, verbose=0, **kwargs)


def train_sb3(cfg: TrainConfig, ppo: PPOConfig, *, device: str = "cpu") -> SB3Result:
    """Train SB3's PPO with these settings; stop at ``cfg.target_return`` like ``train``."""
    cfg.validate()
    ppo.validate(cfg.rollout_batch_size)

    venv = make_sb3_env(cfg)
    model = sb3_ppo_model(venv, cfg, ppo, seed=cfg.seed, device=device)
    recent = SmoothedReturn(cfg.return_window)
    state = {"reached": False, "iterations": 0}

    class Harness(BaseCallback):
        """Same smoothed return and stopping rule as rl.train.loop."""

        def _on_step(self) -> bool:
            if state["reached"]:
                return False  # first step of the rollout after the target: stop
            for info in self.locals["infos"]:
                if "episode" in info:  # SB3's Monitor: one finished game
                    recent.extend([float(info["episode"]["r"])])
            return True

        def _on_rollout_end(self) -> None:
            state["iterations"] += 1
            state["reached"] = recent.reached(cfg.target_return)

    start = time.perf_counter()
    model.learn(total_timesteps=cfg.total_agent_steps,
                callback=Harness())
    venv.close()
    return SB3Result(
        iterations=state["iterations"],
        agent_steps=state["iterations"] * cfg.rollout_batch_size,
        return_recent=recent.mean,
        reached_target=state["reached"],
        wall_time_s=time.perf_counter() - start,
    )


class NoiseScaleCallback(BaseCallback):
    """Gradient noise scale of stable-baselines3's PPO or A2C, logged under ``gns/...``.

        model = PPO("MlpPolicy", venv)
        model.learn(100_000, callback=NoiseScaleCallback())

    At the end of every ``every``-th rollout (SB3 calls ``on_rollout_end`` after
    ``compute_returns_and_advantage``, before ``train``, so the parameters are those that
    collected the rollout) the rollout buffer is split into ``groups`` groups, along the
    environment axis when ``n_envs % groups == 0`` (else the time-axis fallback of
    ``rl.measure.ppo_noise.plan_split``), and ``rl.measure.gns.measure`` differentiates, per
    group, SB3's own
    loss at the start of its update:

    * PPO: policy = -mean(min(A r, A clip(r, 1 - c, 1 + c))) with r = exp(logp - logp_old)
      (r = 1 here), value = mse(returns, v_pred) with SB3's optional value clipping
      (inactive at the start), total = policy + ent_coef * (-mean(entropy)) + vf_coef * value;
    * A2C: policy = -mean(A logp), value = mse(returns, v), total combined as above.

    A is normalized when the model's ``normalize_advantage`` is set, with the statistics of
    the whole rollout (SB3 itself normalizes per minibatch; the noise scale needs one
    normalization shared by all groups). Entropy falls back to -mean(-logp) when the
    distribution has no closed form, as in SB3. ``preconditioned=True`` divides gradients by
    Adam's sqrt(v_hat) + eps (Adam/AdamW optimizers only); the first rollout, before any
    optimizer step, is then skipped and logs ``gns/skipped`` = 1. With one environment
    (``n_envs=1``) only the time split is possible, and the callback warns: use n_envs >= 2.

    Logged keys (``logger.record``, written at SB3's next dump): for term in total, policy,
    value, ``gns/{term}/g2``, ``trace_sigma``, ``b_simple`` (this rollout), ``b_simple_ema``,
    ``b_simple_mean``, ``b_simple_lo``, ``b_simple_hi``; and ``gns/small_batch_size``,
    ``gns/big_batch_size``, ``gns/groups``, ``gns/split_envs``, ``gns/preconditioned``,
    ``gns/seconds``. The smoothing is in ``self.trackers`` (one ``GNSTracker`` per term); the
    last logged values in ``self.last_row``.
    """

    def __init__(self, groups: int = 8, every: int = 1, preconditioned: bool = False, *,
                 beta: float = 0.99, window: int = 100, verbose: int = 0):
        super().__init__(verbose)
        check_settings(every, groups)
        self.groups = groups
        self.every = every
        self.preconditioned = bool(preconditioned)
        self.trackers = {term: GNSTracker(beta=beta, window=window) for term in TERMS}
        self.rollouts = 0
        self.last_row: dict[str, float] = {}

    def _init_callback(self) -> None:
        from stable_baselines3 import A2C, PPO  # lazy: slow import, SB3 runs only

        if not isinstance(self.model, (PPO, A2C)):
            raise TypeError(f"NoiseScaleCallback supports SB3's PPO and A2C, got "
                            f"{type(self.model).__name__}")
        if self.preconditioned and not isinstance(self.model.policy.optimizer,
                                                  (torch.optim.Adam, torch.optim.AdamW)):
            raise ValueError(
                f"preconditioned=True needs an Adam/AdamW optimizer, the policy uses "
                f"{type(self.model.policy.optimizer).__name__} (A2C: use_rms_prop=False)")
        split = plan_split(self.model.n_envs, self.model.n_steps, self.groups)  # fail early
        if split.axis == "time":
            warnings.warn(
                f"NoiseScaleCallback: SB3 runs a single environment (n_envs=1), so each "
                f"rollout can only be split by time, into {split.num_groups} blocks of "
                f"{split.steps_per_group} consecutive steps of one trajectory; correlated "
                "steps bias B_simple low. Fix: train on n_envs >= 2 environments (e.g. "
                "make_vec_env(env_id, n_envs=8)) so that the noise scale splits the rollout "
                "by environment.", UserWarning, stacklevel=2)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        index, self.rollouts = self.rollouts, self.rollouts + 1
        if self.every == 0 or index % self.every:
            return
        row = self.measure_now()
        for key, value in row.items():
            self.logger.record(key, value)
        self.last_row = row

    def measure_now(self) -> dict[str, float]:
        """Measure on the current rollout buffer, update the trackers, return the entries."""
        from stable_baselines3 import PPO  # lazy: slow import, SB3 runs only
        from stable_baselines3.common.buffers import (  # lazy: slow import, SB3 runs only
            DictRolloutBuffer,
        )

        start = time.perf_counter()
        model, policy, buf = self.model, self.model.policy, self.model.rollout_buffer
        preconditioner = None
        if self.preconditioned:
            if not adam_has_state(policy.optimizer):
                return {"gns/skipped": 1}
            preconditioner = adam_preconditioner(policy.optimizer)
        num_steps, num_envs = buf.buffer_size, buf.n_envs
        split = plan_split(num_envs, num_steps, self.groups)

        def steps_by_envs(x: np.ndarray, per_sample: bool = False) -> torch.Tensor:
            """(num_steps, num_envs, ...) tensor; per_sample fields become (num_steps, num_envs)."""
            if buf.generator_ready:  # get() has swapped and flattened: (envs * steps, ...)
                x = x.reshape(num_envs, num_steps, *x.shape[1:]).swapaxes(0, 1)
            if per_sample:  # flattening gave scalar fields a trailing axis of 1
                x = x.reshape(num_steps, num_envs)
            return torch.as_tensor(np.ascontiguousarray(x), device=policy.device)

        fields = {"actions": steps_by_envs(buf.actions),
                  "old_values": steps_by_envs(buf.values, per_sample=True),
                  "old_log_prob": steps_by_envs(buf.log_probs, per_sample=True),
                  "returns": steps_by_envs(buf.returns, per_sample=True)}
        dict_obs = isinstance(buf, DictRolloutBuffer)
        if dict_obs:
            fields.update({f"obs.{k}": steps_by_envs(v) for k, v in buf.observations.items()})
        else:
            fields["obs"] = steps_by_envs(buf.observations)
        adv = steps_by_envs(buf.advantages, per_sample=True)
        if model.normalize_advantage and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        fields["advantages"] = adv

        is_ppo = isinstance(model, PPO)
        progress = model._current_progress_remaining
        clip = model.clip_range(progress) if is_ppo else None
        clip_vf = (model.clip_range_vf(progress)
                   if is_ppo and model.clip_range_vf is not None else None)
        discrete = isinstance(model.action_space, spaces.Discrete)

        def loss_fn(pol, g):
            obs = ({k[4:]: v for k, v in g.items() if k.startswith("obs.")} if dict_obs
                   else g["obs"])
            actions = g["actions"].float()
            actions = actions.long().flatten() if discrete else actions
            values, log_prob, entropy = pol.evaluate_actions(obs, actions)
            values = values.flatten()
            adv = g["advantages"]
            if is_ppo:
                ratio = torch.exp(log_prob - g["old_log_prob"])
                policy_loss = -torch.min(adv * ratio,
                                         adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
            else:
                policy_loss = -(adv * log_prob).mean()
            values_pred = values
            if clip_vf is not None:
                old = g["old_values"]
                values_pred = old + torch.clamp(values - old, -clip_vf, clip_vf)
            value_loss = F.mse_loss(g["returns"], values_pred)
            entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
            total = policy_loss + model.ent_coef * entropy_loss + model.vf_coef * value_loss
            return {"total": total, "policy": policy_loss, "value": value_loss}

        was_training = policy.training
        policy.set_training_mode(True)  # the mode SB3's train() computes its loss in
        try:
            samples = measure_rollout(policy, loss_fn, split.split(fields), split,
                                      preconditioner=preconditioner)
        finally:
            policy.set_training_mode(was_training)
        row = tracker_columns(self.trackers, samples)
        row.update(split_columns(split, preconditioner is not None, start))
        return row
