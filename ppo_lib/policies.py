r"""Policies (actors) and value functions (critics) as small MLPs.

- Discrete action spaces: a Categorical head, :math:`\pi(a|s) = \mathrm{softmax}(f_\theta(s))_a`.
- Box action spaces: a diagonal Gaussian, :math:`a \sim \mathcal N(\mu_\theta(s), \mathrm{diag}(\sigma^2))`
  with a state-independent, learned :math:`\log\sigma`. Log-probabilities and
  entropies **sum over the action dimensions**. The raw sample is stored and
  used for log-probs; only the copy sent to the environment is clipped to its
  bounds (clipping before computing log-probs would bias the gradient).

Orthogonal initialisation: hidden layers with gain :math:`\sqrt 2`, the actor's
output layer with gain 0.01 (the first policy is nearly uniform), the critic's
with gain 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal


def orthogonal_init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, out_gain: float = 1.0,
        activation: type[nn.Module] = nn.Tanh, ortho: bool = True) -> nn.Sequential:
    """Linear-tanh layers; ``out_dim=None`` leaves off the output layer (a shared body).
    ``ortho=False`` keeps PyTorch's default initialisation (an ablation of chapter 7)."""
    init = orthogonal_init if ortho else (lambda layer, gain: layer)
    layers: list[nn.Module] = []
    last = in_dim
    for h in hidden:
        layers += [init(nn.Linear(last, h), math.sqrt(2)), activation()]
        last = h
    if out_dim is not None:
        layers.append(init(nn.Linear(last, out_dim), out_gain))
    return nn.Sequential(*layers)


def _obs_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    if isinstance(space, gym.spaces.Box) and len(space.shape) >= 2:
        raise TypeError(f"observation_space: observation space {space}: image-like observations of shape "
                        f"{space.shape} are not supported; allowed: a 1-D Box (these policies are MLPs). "
                        f"Flatten them with gymnasium.wrappers.FlattenObservation, or use a CNN library")
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        raise TypeError(f"observation_space: observation space {space}: {type(space).__name__} observations are "
                        f"not supported; allowed: a 1-D Box. Wrap the env with gymnasium.wrappers.FlattenObservation")
    raise TypeError(f"observation_space: observation space {space}: {type(space).__name__} observations are not "
                    f"supported; allowed: a 1-D Box (e.g. gymnasium.wrappers.FlattenObservation turns Discrete and "
                    f"MultiDiscrete ones into one)")


def check_spaces(observation_space, action_space, who: str = "ActorCritic") -> None:
    """Clear errors for what is often passed instead of two Gymnasium spaces."""
    for name, space in (("observation_space", observation_space), ("action_space", action_space)):
        if isinstance(space, str) or isinstance(space, gym.Env) or hasattr(space, "single_action_space"):
            raise TypeError(f"{who}: {name}={space!r} is an environment, not a space; pass "
                            f"env.observation_space, env.action_space (for a VecEnv: env.single_observation_space, "
                            f"env.single_action_space)")
        if not isinstance(space, gym.Space):
            raise TypeError(f"{who}: {name}={space!r}: expected a gymnasium space, got a {type(space).__name__}")
    if isinstance(observation_space, gym.spaces.Discrete) and isinstance(action_space, gym.spaces.Box) \
            and len(action_space.shape) == 1:
        raise TypeError(f"{who}: observation_space={observation_space} and action_space={action_space}: did you "
                        f"swap them? The order is ({who}(observation_space, action_space))")
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        raise TypeError(f"{who}: action_space: action space {action_space}: MultiDiscrete actions are not "
                        f"supported; allowed: Discrete(n) or a 1-D Box")
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)) or \
            (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1):
        raise TypeError(f"{who}: action_space: action space {action_space}: {type(action_space).__name__} actions"
                        f"{' of shape ' + str(action_space.shape) if isinstance(action_space, gym.spaces.Box) else ''}"
                        f" are not supported; allowed: Discrete(n) or a 1-D Box")
    _obs_dim(observation_space)


def _net(obs_dim, hidden, out_dim, gain, ortho, body):
    """An MLP, or a head on a shared ``body`` (the same module object in actor and critic)."""
    if body is None:
        return mlp(obs_dim, hidden, out_dim, gain, ortho=ortho)
    return nn.Sequential(body, mlp(hidden[-1], (), out_dim, gain, ortho=ortho))


class CategoricalActor(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), ortho: bool = True,
                 body: nn.Module | None = None):
        super().__init__()
        self.logits = _net(obs_dim, hidden, n_actions, 0.01, ortho, body)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return Categorical(logits=self.logits(obs), validate_args=False)

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(actions.long())

    def entropy(self, dist: Distribution) -> torch.Tensor:
        return dist.entropy()

    def params(self, obs: torch.Tensor) -> torch.Tensor:
        """What determines the distribution at ``obs``: the logits, (B, n_actions)."""
        return self.logits(obs)

    def from_params(self, params: torch.Tensor) -> Distribution:
        return Categorical(logits=params, validate_args=False)

    def kl(self, old: Distribution, new: Distribution) -> torch.Tensor:
        """KL(old || new) per state, shape (B,)."""
        return torch.distributions.kl_divergence(old, new)


class GaussianActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64), init_log_std: float = 0.0,
                 ortho: bool = True, body: nn.Module | None = None):
        super().__init__()
        self.mean = _net(obs_dim, hidden, act_dim, 0.01, ortho, body)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    LOG_STD_RANGE = (-20.0, 2.0)  # keeps the scale positive and finite even after a wild update

    def distribution(self, obs: torch.Tensor) -> Distribution:
        mean = self.mean(obs)
        return Normal(mean, self.log_std.clamp(*self.LOG_STD_RANGE).exp().expand_as(mean), validate_args=False)

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(actions).sum(-1)  # independent dims: log-probs add

    def entropy(self, dist: Distribution) -> torch.Tensor:
        return dist.entropy().sum(-1)

    def params(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean and log-std side by side, (B, 2 * act_dim)."""
        mean = self.mean(obs)
        return torch.cat([mean, self.log_std.clamp(*self.LOG_STD_RANGE).expand_as(mean)], dim=-1)

    def from_params(self, params: torch.Tensor) -> Distribution:
        mean, log_std = params.chunk(2, dim=-1)
        return Normal(mean, log_std.exp(), validate_args=False)

    def kl(self, old: Distribution, new: Distribution) -> torch.Tensor:
        return torch.distributions.kl_divergence(old, new).sum(-1)  # independent dims: KLs add


class ActorCritic(nn.Module):
    """An actor and a separate critic for the given spaces.

    ``act(obs)`` samples (no gradient); ``evaluate(obs, actions)`` gives
    log-probs, entropies and values with gradients, for the losses.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 hidden: Sequence[int] = (64, 64), critic: bool = True, ortho_init: bool = True,
                 shared: bool = False):
        super().__init__()
        check_spaces(observation_space, action_space, "ActorCritic")
        obs_dim = _obs_dim(observation_space)
        if shared and (not critic or not hidden):
            raise ValueError("shared=True needs a critic and at least one hidden layer")
        body = mlp(obs_dim, hidden, None, ortho=ortho_init) if shared else None
        if isinstance(action_space, gym.spaces.Discrete):
            self.actor: nn.Module = CategoricalActor(obs_dim, int(action_space.n), hidden, ortho_init, body)
            self.continuous = False
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.actor = GaussianActor(obs_dim, int(action_space.shape[0]), hidden, ortho=ortho_init, body=body)
            self.continuous = True
        else:
            raise TypeError(f"action space {action_space}: supported are Discrete and 1-D Box")
        self.observation_space, self.action_space = observation_space, action_space
        self.shared, self.hidden, self.ortho_init = shared, tuple(hidden), ortho_init
        self.obs_dim = obs_dim
        self.critic = _net(obs_dim, hidden, 1, 1.0, ortho_init, body) if critic else None
        self.obs_rms = None  # set by training with observation normalisation (used by evaluate)

    def _obs(self, obs, who: str) -> torch.Tensor:
        """``obs`` as a float tensor of shape (..., obs_dim): a NumPy array or a list from the env is
        converted; anything else, or the wrong last dimension, is a clear error."""
        dim = self.obs_dim
        if not isinstance(obs, torch.Tensor):
            try:
                obs = torch.as_tensor(np.asarray(obs, dtype=np.float32))
            except (TypeError, ValueError):
                raise TypeError(f"ActorCritic.{who}: obs={obs!r:.80}: expected observations, an array or tensor of "
                                f"shape (batch, {dim}) (or ({dim},) for one)") from None
        elif not obs.is_floating_point():
            obs = obs.float()
        if obs.ndim == 0 or obs.shape[-1] != dim:
            raise ValueError(f"ActorCritic.{who}: obs of shape {tuple(obs.shape)}: expected shape (batch, {dim}) "
                             f"(or ({dim},) for one observation): {dim} = observation_space.shape[0]")
        return obs

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._value(self._obs(obs, "value"))

    def _value(self, obs: torch.Tensor) -> torch.Tensor:  # obs already checked by the caller
        if self.critic is None:
            return torch.zeros(obs.shape[:-1])
        return self.critic(obs).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions; return (raw actions, their log-probs, values)."""
        obs = self._obs(obs, "act")
        dist = self.actor.distribution(obs)
        actions = dist.sample()
        return actions, self.actor.log_prob(dist, actions), self._value(obs)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor):
        """(log-probs, entropies, values) of given actions, with gradients."""
        obs = self._obs(obs, "evaluate")
        dist = self.actor.distribution(obs)
        return self.actor.log_prob(dist, actions), self.actor.entropy(dist), self._value(obs)

    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """What is sent to the environment: clipped to the Box bounds (only here)."""
        a = actions.cpu().numpy()
        if self.continuous:
            return np.clip(a, self.action_space.low, self.action_space.high)
        # Discrete(n, start=s): the network's outputs 0..n-1 stand for s..s+n-1
        return a.astype(np.int64) + int(self.action_space.start)

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action (evaluation)."""
        obs = self._obs(obs, "greedy")
        dist = self.actor.distribution(obs)
        return dist.mean if self.continuous else dist.probs.argmax(-1)
