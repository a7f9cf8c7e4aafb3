"""Actor-critic networks for PPO: categorical policies (Discrete actions) and diagonal
Gaussian policies (Box actions).

Trunks
    ``NatureCNN``  Mnih et al. 2015: conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1, linear 512.
    ``ImpalaCNN``  Espeholt et al. 2018: stages of 16, 32, 32 channels; each stage is a 3x3 conv,
                   a 3x3 max-pool with stride 2 and two residual blocks; then ReLU, linear 256.
    ``SmallCNN``   Young and Tian 2019 (MinAtar): conv 16 3x3/1, linear 128. For tiny images
                   such as MinAtar's 10x10 grids, where the Nature CNN's strides do not fit.
    ``MLP``        two hidden layers of 64 units with tanh, for vector observations.

Observation handling (done by ``ObsPreprocessor``, the first module of every ``ActorCritic``)
    * Inputs are batched: shape ``(N, *observation_space.shape)``.
    * Integer and bool tensors are cast to float32 and divided by the observation space's
      largest ``high`` value: 1/255 for Atari frames (uint8, high 255), 1 for MinAtar (bool,
      or uint8 with high 1). Keep observations in their space's dtype until they reach the
      device; the network scales them.
    * Floating-point tensors are taken as already scaled and are only cast to float32. Do not
      feed raw 0..255 pixel values as floats.
    * 3-D image spaces may be channels-first ``(C, H, W)`` (Atari frame stacks) or
      channels-last ``(H, W, C)`` (MinAtar's ``(10, 10, C)``). The layout is inferred from the
      space (the channel axis is the smaller of the first and last axes; ties mean
      channels-first) or forced with ``channels_last=``; channels-last inputs are permuted
      inside the network, so callers pass observations exactly as the environment emits them.
    * The MLP flattens whatever Box it gets, so ``network="mlp"`` also works on images.

Network choice in ``build_actor_critic(..., network="auto")``
    1-D Box -> MLP (separate actor and critic MLPs); 3-D Box with both spatial sides >= 36 ->
    Nature CNN; smaller 3-D Box (MinAtar) -> SmallCNN. CNN trunks are shared by the policy
    and value heads.

Initialization: orthogonal weights with gain sqrt(2) for hidden layers, 0.01 for the policy
head, 1.0 for the value head; all biases zero.

Continuous actions (a 1-D ``gym.spaces.Box`` action space) get a ``GaussianActorCritic``:
the policy head outputs the mean of a diagonal Gaussian, and the log standard deviation is
a learned vector independent of the state (``log_std_init``, 0 by default: std 1, as in
stable-baselines3 and CleanRL), or, with ``state_dependent_std=True``, a second linear head
on the actor's features (clamped to [LOG_STD_MIN, LOG_STD_MAX]). Actions are the unbounded
samples; clipping them to the space's bounds is the caller's job when stepping the env (the
rollout does it), so the stored action and its log-probability stay the sample's.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "NETWORKS",
    "ActorCritic",
    "GaussianActorCritic",
    "ImpalaCNN",
    "MLP",
    "NatureCNN",
    "ObsPreprocessor",
    "SmallCNN",
    "build_actor_critic",
    "check_box_actions",
    "gaussian_entropy",
    "gaussian_log_prob",
    "infer_channels_last",
    "orthogonal_init_",
]

NETWORKS = ("auto", "nature", "impala", "small", "mlp")
"""Accepted values of ``build_actor_critic(network=...)``."""

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0
NATURE_MIN_SIZE = 36  # smallest H, W that survives the 8/4, 4/2, 3/1 convolutions
SMALL_MIN_SIZE = 3
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""Bounds of a state-dependent log standard deviation (as stable-baselines3's)."""
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def orthogonal_init_(module: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights with ``gain`` and zero biases for every Linear/Conv2d in ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def _flat_size(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *in_shape)).flatten(1).shape[1])


class NatureCNN(nn.Module):
    """Nature DQN trunk on float (N, C, H, W) input; outputs (N, 512) after ReLU."""

    def __init__(self, in_shape: tuple[int, int, int], out_features: int = 512):
        super().__init__()
        c, h, w = in_shape
        if min(h, w) < NATURE_MIN_SIZE:
            raise ValueError(
                f"NatureCNN needs images of at least {NATURE_MIN_SIZE}x{NATURE_MIN_SIZE}, "
                f"got {h}x{w}; use network='impala' or 'small' for small images"
            )
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Linear(_flat_size(self.convs, in_shape), out_features)
        self.out_features = out_features
        orthogonal_init_(self, HIDDEN_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.convs(x)))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _ImpalaStage(nn.Module):
    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res1 = _ResidualBlock(channels)
        self.res2 = _ResidualBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.res1(self.pool(self.conv(x))))


class ImpalaCNN(nn.Module):
    """IMPALA residual trunk on float (N, C, H, W) input; outputs (N, 256) after ReLU."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        channels: tuple[int, ...] = (16, 32, 32),
        out_features: int = 256,
    ):
        super().__init__()
        stages = []
        prev = in_shape[0]
        for ch in channels:
            stages.append(_ImpalaStage(prev, ch))
            prev = ch
        self.stages = nn.Sequential(*stages, nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(_flat_size(self.stages, in_shape), out_features)
        self.out_features = out_features
        orthogonal_init_(self, HIDDEN_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.stages(x)))


class SmallCNN(nn.Module):
    """MinAtar trunk (one 3x3 conv with 16 channels, linear 128) on float (N, C, H, W)."""

    def __init__(self, in_shape: tuple[int, int, int], out_features: int = 128):
        super().__init__()
        c, h, w = in_shape
        if min(h, w) < SMALL_MIN_SIZE:
            raise ValueError(
                f"SmallCNN needs images of at least {SMALL_MIN_SIZE}x{SMALL_MIN_SIZE}, "
                f"got {h}x{w}; use network='mlp'"
            )
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten()
        )
        self.fc = nn.Linear(_flat_size(self.conv, in_shape), out_features)
        self.out_features = out_features
        orthogonal_init_(self, HIDDEN_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x)))


class MLP(nn.Module):
    """Tanh MLP trunk on float (N, in_features) input; outputs (N, hidden[-1])."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for size in hidden:
            layers += [nn.Linear(prev, size), nn.Tanh()]
            prev = size
        self.net = nn.Sequential(*layers)
        # The Linear layers again, as a plain tuple (not registered twice), for forward.
        self._linears = tuple(layer for layer in layers if isinstance(layer, nn.Linear))
        self.out_features = prev
        orthogonal_init_(self, HIDDEN_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same as self.net(x), without a module call per layer: on the rollout's small
        # batches (one row per environment) the calls cost more than the arithmetic.
        for layer in self._linears:
            x = F.linear(x, layer.weight, layer.bias).tanh_()
        return x


def infer_channels_last(shape: tuple[int, ...]) -> bool:
    """True when a 3-D image shape looks like (H, W, C): the last axis is smaller than the first."""
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D image shape, got {shape}")
    return shape[-1] < shape[0]


class ObsPreprocessor(nn.Module):
    """Batched raw observations -> float32 network input (scaling, layout, flattening).

    ``scale`` multiplies integer/bool tensors only; floating tensors pass unscaled.

    ``to_channels_last`` (set by :class:`ActorCritic` when its convolution weights are in
    channels-last memory format) returns images in channels-last *memory* layout (the
    logical shape stays (N, C, H, W)); the copy is made in the observation's own dtype
    (uint8 frames: a quarter of the bytes of the float result), before the conversion.
    """

    def __init__(
        self, obs_shape: tuple[int, ...], scale: float, channels_last: bool, flatten: bool
    ):
        super().__init__()
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.scale = float(scale)
        self.channels_last = bool(channels_last)
        self.flatten = bool(flatten)
        self.to_channels_last = False

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if tuple(obs.shape[1:]) != self.obs_shape:
            raise ValueError(
                f"expected a batch of observations shaped (N, *{self.obs_shape}), got "
                f"{tuple(obs.shape)}; add the batch axis or check the observation layout"
            )
        x = obs
        if not self.flatten:
            if self.channels_last:
                x = x.permute(0, 3, 1, 2)  # a view: (N, C, H, W), channels-last in memory
            elif self.to_channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        integer = not x.is_floating_point()
        x = x.float()
        if integer and self.scale != 1.0:
            x.mul_(self.scale)  # x is a new tensor here (converted from the integer dtype)
        return x.flatten(1) if self.flatten else x

    def extra_repr(self) -> str:
        return (
            f"obs_shape={self.obs_shape}, scale={self.scale:.6g}, "
            f"channels_last={self.channels_last}, flatten={self.flatten}"
        )


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1)


class ActorCritic(nn.Module):
    """Categorical policy and state-value function.

    With ``critic_trunk=None`` the trunk is shared by both heads (CNNs); otherwise the actor
    and critic have separate trunks (the MLP setup). Every method takes a batch of raw
    observations (see the module docstring for dtypes and layouts).
    """

    def __init__(
        self,
        preprocess: nn.Module,
        actor_trunk: nn.Module,
        num_actions: int,
        critic_trunk: nn.Module | None = None,
    ):
        super().__init__()
        self.preprocess = preprocess
        self.actor_trunk = actor_trunk
        self.critic_trunk = critic_trunk
        self.num_actions = int(num_actions)
        critic_features = (critic_trunk or actor_trunk).out_features
        self.policy_head = orthogonal_init_(
            nn.Linear(actor_trunk.out_features, num_actions), POLICY_GAIN
        )
        self.value_head = orthogonal_init_(nn.Linear(critic_features, 1), VALUE_GAIN)

    @property
    def shared_trunk(self) -> bool:
        return self.critic_trunk is None

    def _apply(self, fn, recurse=True):
        # After .to(memory_format=torch.channels_last) (or any other conversion), feed the
        # convolutions input in the layout of their weights: oneDNN's channels-last kernels
        # are much faster on CPU when input and weights share the layout.
        out = super()._apply(fn, recurse)
        if isinstance(self.preprocess, ObsPreprocessor):
            w = next((p for p in self.parameters() if p.dim() == 4), None)
            self.preprocess.to_channels_last = (
                w is not None and not w.is_contiguous()
                and w.is_contiguous(memory_format=torch.channels_last))
        return out

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits (N, A), value (N,))``."""
        x = self.preprocess(obs)
        hidden = self.actor_trunk(x)
        critic_hidden = hidden if self.critic_trunk is None else self.critic_trunk(x)
        return self.policy_head(hidden), self.value_head(critic_hidden).squeeze(-1)

    @property
    def defers_value(self) -> bool:
        """Whether a rollout should sample with :meth:`act` ``(with_value=False)`` and get the
        values of all its observations from one batched :meth:`value` call afterwards.

        True for separate actor and critic trunks (the MLP) without forward hooks (hooks see
        only ``forward``): the values are the same, but one large matrix product replaces a
        small one per step, and small ones cost mostly call overhead.
        """
        return (self.critic_trunk is not None and not self._forward_hooks
                and not self._forward_pre_hooks)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """The policy's logits (N, A) alone (for separate trunks: without the critic)."""
        return self.policy_head(self.actor_trunk(self.preprocess(obs)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """The state values (N,) alone (for separate trunks: without the actor)."""
        x = self.preprocess(obs)
        return self.value_head((self.critic_trunk or self.actor_trunk)(x)).squeeze(-1)

    def sampling_noise(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """Standard Gumbel noise, ``shape + (num_actions,)``, for :meth:`act` ``(noise=...)``.

        A rollout draws the noise of all its steps in one call instead of one multinomial
        draw per step (a per-call cost that dominates small batches).
        """
        e = torch.empty(*shape, self.num_actions, device=device)
        e.exponential_(generator=generator).clamp_min_(torch.finfo(e.dtype).tiny)
        return e.log_().neg_()  # -log(Exp(1)) ~ Gumbel(0, 1)

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        with_value: bool = True,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Sample actions: ``(action int64 (N,), logprob (N,), value (N,))``.

        Wrap in ``torch.no_grad()`` when collecting rollouts. ``deterministic`` takes the
        argmax; ``generator`` makes sampling reproducible (it must live on the model's device).
        ``noise`` (N, A), standard Gumbel noise (:meth:`sampling_noise`), replaces the
        multinomial draw: ``argmax(log p + noise)`` is distributed as p (the Gumbel-max
        trick). ``with_value=False`` returns None for the value and, with separate trunks,
        skips the critic (see :attr:`defers_value`).
        """
        if with_value or self.critic_trunk is None:
            logits, value = self(obs)
            if not with_value:
                value = None
        else:
            logits, value = self.policy_logits(obs), None
        logp = _log_probs(logits)
        if deterministic:
            action = logp.argmax(dim=-1)
        elif noise is not None:
            action = (logp + noise).argmax(dim=-1)
        else:
            action = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
        return action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1), value

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(logprob of actions (N,), entropy (N,), value (N,))`` with gradients."""
        logits, value = self(obs)
        logp = _log_probs(logits)
        logprob = logp.gather(-1, actions.long().reshape(-1, 1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(dim=-1)
        return logprob, entropy, value


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor,
                      log_std: torch.Tensor) -> torch.Tensor:
    """Log-density (N,) of ``actions`` (N, A) under independent normals, summed over A."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(dim=-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy (N,) of independent normals with these log standard deviations (N, A)."""
    return (0.5 + _HALF_LOG_2PI + log_std).sum(dim=-1)


class GaussianActorCritic(ActorCritic):
    """Diagonal Gaussian policy over a 1-D Box action space and a state-value function.

    Same trunks, heads and methods as :class:`ActorCritic`; ``policy_head`` outputs the mean
    (N, A), ``forward`` returns ``(mean, value)``. The log standard deviation is the
    parameter ``log_std`` (A,) (state-independent, the default), or ``log_std_head``'s
    output clamped to [LOG_STD_MIN, LOG_STD_MAX] with ``state_dependent_std``. Actions are
    float32 (N, A) samples, unclipped.
    """

    def __init__(
        self,
        preprocess: nn.Module,
        actor_trunk: nn.Module,
        action_dim: int,
        critic_trunk: nn.Module | None = None,
        *,
        log_std_init: float = 0.0,
        state_dependent_std: bool = False,
    ):
        super().__init__(preprocess, actor_trunk, action_dim, critic_trunk)
        self.action_dim = int(action_dim)
        self.state_dependent_std = bool(state_dependent_std)
        if self.state_dependent_std:
            self.log_std_head = orthogonal_init_(
                nn.Linear(actor_trunk.out_features, action_dim), POLICY_GAIN)
            nn.init.constant_(self.log_std_head.bias, float(log_std_init))
        else:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def _log_std(self, hidden: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        if self.state_dependent_std:
            return self.log_std_head(hidden).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return self.log_std.to(mean.dtype).expand_as(mean)

    def _policy(self, obs: torch.Tensor, with_value: bool):
        """(mean, log_std, value or None) from one pass over the trunks."""
        x = self.preprocess(obs)
        hidden = self.actor_trunk(x)
        mean = self.policy_head(hidden).float()  # fp32 under autocast too: the densities
        value = None
        if with_value:
            critic_hidden = hidden if self.critic_trunk is None else self.critic_trunk(x)
            value = self.value_head(critic_hidden).squeeze(-1).float()
        return mean, self._log_std(hidden, mean).float(), value

    def sampling_noise(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """Standard normal noise, ``shape + (action_dim,)``, for :meth:`act` ``(noise=...)``."""
        return torch.randn(*shape, self.action_dim, generator=generator, device=device)

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        with_value: bool = True,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Sample actions: ``(action float32 (N, A), logprob (N,), value (N,))``.

        ``deterministic`` returns the mean; ``noise`` (N, A), standard normal
        (:meth:`sampling_noise`), gives ``mean + std * noise``; otherwise the noise is drawn
        from ``generator``. The action is not clipped to the action space's bounds.
        """
        need_value = with_value or self.critic_trunk is None
        mean, log_std, value = self._policy(obs, need_value)
        if not with_value:
            value = None
        if deterministic:
            action = mean
        else:
            if noise is None:
                noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                    dtype=mean.dtype)
            action = mean + log_std.exp() * noise.to(mean.dtype)
        return action, gaussian_log_prob(action, mean, log_std), value

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(logprob of actions (N,), entropy (N,), value (N,))`` with gradients."""
        mean, log_std, value = self._policy(obs, True)
        actions = actions.to(mean.dtype).reshape(mean.shape)
        return gaussian_log_prob(actions, mean, log_std), gaussian_entropy(log_std), value


def _input_scale(space: gym.spaces.Box) -> float:
    dtype = np.dtype(space.dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        return 1.0
    high = float(np.max(space.high))
    return 1.0 / high if np.isfinite(high) and high > 0 else 1.0


def check_box_actions(space: gym.spaces.Box) -> None:
    """ValueError naming the problem and the fix unless ``space`` is a Box a
    ``GaussianActorCritic`` can drive: 1-D, floating point, with low <= high."""
    shape = tuple(space.shape)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(
            f"continuous actions need a 1-D Box action space (one vector per step), got shape "
            f"{shape}; wrap the environment with a gymnasium.ActionWrapper that takes flat "
            "(n,) actions and reshapes them")
    if not np.issubdtype(np.dtype(space.dtype), np.floating):
        raise ValueError(
            f"a Box action space of dtype {space.dtype} is not continuous; use a floating-point "
            "Box, or a Discrete/MultiDiscrete wrapper for integer actions")
    if np.any(np.asarray(space.low) > np.asarray(space.high)):
        raise ValueError(f"the Box action space has low > high somewhere ({space}); fix the "
                         "environment's action bounds")


def build_actor_critic(
    observation_space: gym.Space,
    action_space: gym.Space,
    network: str = "auto",
    *,
    channels_last: bool | None = None,
    log_std_init: float = 0.0,
    state_dependent_std: bool = False,
) -> ActorCritic:
    """Build an actor-critic for a Box observation space: an ``ActorCritic`` for a Discrete
    action space, a ``GaussianActorCritic`` for a 1-D Box action space.

    ``network`` is one of ``NETWORKS``; see the module docstring for what "auto" picks.
    ``channels_last`` overrides the inferred layout of 3-D image spaces.
    ``log_std_init`` and ``state_dependent_std`` shape the Gaussian policy (Box actions only).
    """
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
    continuous = isinstance(action_space, gym.spaces.Box)
    if continuous:
        check_box_actions(action_space)
        if not math.isfinite(float(log_std_init)):
            raise ValueError(f"log_std_init must be a finite number, got {log_std_init!r}")
    elif not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(
            f"PPO here supports Discrete and 1-D Box action spaces, got {action_space}; "
            "wrap the environment with a gymnasium.ActionWrapper that maps a Discrete or a 1-D "
            "Box action onto its actions"
        )
    if not continuous and int(action_space.start) != 0:
        raise ValueError(
            f"Discrete action space starts at {int(action_space.start)}; the policy emits actions "
            "0..n-1, so wrap the environment to shift its actions to start at 0"
        )
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(
            f"observation space must be a Box, got {observation_space}; wrap the environment "
            "with gymnasium.wrappers.FlattenObservation and use network='mlp'"
        )
    shape = tuple(int(s) for s in observation_space.shape)
    num_actions = int(action_space.shape[0]) if continuous else int(action_space.n)
    scale = _input_scale(observation_space)

    def head(pre: nn.Module, trunk: nn.Module, critic: nn.Module | None = None) -> ActorCritic:
        if continuous:
            return GaussianActorCritic(pre, trunk, num_actions, critic,
                                       log_std_init=log_std_init,
                                       state_dependent_std=state_dependent_std)
        return ActorCritic(pre, trunk, num_actions, critic_trunk=critic)

    if network == "auto":
        if len(shape) == 1:
            network = "mlp"
        elif len(shape) == 3:
            cl = infer_channels_last(shape) if channels_last is None else channels_last
            h, w = (shape[0], shape[1]) if cl else (shape[1], shape[2])
            network = "nature" if min(h, w) >= NATURE_MIN_SIZE else "small"
        else:
            raise ValueError(
                f"network='auto' handles 1-D vectors and 3-D images, got observation shape "
                f"{shape}; use network='mlp' (flattens the input) or add a channel axis"
            )

    if network == "mlp":
        pre = ObsPreprocessor(shape, scale, channels_last=False, flatten=True)
        in_features = int(np.prod(shape))
        return head(pre, MLP(in_features), MLP(in_features))

    if len(shape) != 3:
        raise ValueError(
            f"network={network!r} needs 3-D image observations (C, H, W) or (H, W, C), got shape "
            f"{shape}; use network='mlp' for vector observations"
        )
    cl = infer_channels_last(shape) if channels_last is None else channels_last
    chw = (shape[2], shape[0], shape[1]) if cl else shape
    pre = ObsPreprocessor(shape, scale, channels_last=cl, flatten=False)
    h, w = chw[1], chw[2]
    if network == "nature":
        if min(h, w) < NATURE_MIN_SIZE:
            raise ValueError(
                f"network='nature' needs images of at least {NATURE_MIN_SIZE}x{NATURE_MIN_SIZE} "
                f"(its convolutions have strides 4 and 2), got {h}x{w} from shape {shape}; use "
                "network='small' or 'impala' (or 'auto', which picks 'small' here)"
            )
        trunk: nn.Module = NatureCNN(chw)
    elif network == "impala":
        trunk = ImpalaCNN(chw)
    else:  # small
        if min(h, w) < SMALL_MIN_SIZE:
            raise ValueError(
                f"network='small' needs images of at least {SMALL_MIN_SIZE}x{SMALL_MIN_SIZE}, got "
                f"{h}x{w} from shape {shape}; use network='mlp' or 'impala'"
            )
        trunk = SmallCNN(chw)
    return head(pre, trunk)
