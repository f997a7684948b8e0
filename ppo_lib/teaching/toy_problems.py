"""Small problems whose answers are known exactly, for checking estimators.

- :class:`ChoiceSequence` (chapter 1): H independent two-way choices with a
  tabular softmax policy; the exact policy gradient is available, so the bias
  and variance of REINFORCE-style estimators can be measured.
- :class:`RandomWalk` (chapter 3): a chain with a fixed random policy; the true
  values and advantages are solved exactly, so GAE estimates can be compared
  with the truth for every lambda.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ppo_lib.advantages import gae as gae_estimate


# --------------------------------------------------------------------------
# Chapter 1: the policy-gradient estimator
# --------------------------------------------------------------------------


class ChoiceSequence:
    r"""An episode is H steps; at step t the agent picks a in {0, 1} and gets
    :math:`r_t = c + a\,w_t`. The policy is a softmax over logits
    :math:`\theta_t \in \mathbb R^2` per step, so
    :math:`J(\theta) = \sum_t \big(c + \pi_t(1)\, w_t\big)` in closed form (gamma = 1).

    The constant c does not change the gradient but adds noise to the naive
    estimator -- exactly what reward-to-go and baselines remove.
    """

    def __init__(self, bonus=(1.0, -0.5, 0.5, 1.0), base_reward: float = 2.0):
        self.bonus = torch.tensor(bonus, dtype=torch.float64)
        self.base = float(base_reward)
        self.horizon = len(bonus)

    def probs(self, theta: torch.Tensor) -> torch.Tensor:
        """(H, 2) action probabilities."""
        return torch.softmax(theta, dim=-1)

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return (self.base + self.probs(theta)[:, 1] * self.bonus).sum()

    def true_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.objective(theta), theta)
        return grad

    def values(self, theta: torch.Tensor) -> torch.Tensor:
        """(H,) exact V(t): the expected reward-to-go from step t."""
        expected = self.base + self.probs(theta)[:, 1].detach() * self.bonus
        return torch.flip(torch.cumsum(torch.flip(expected, [0]), 0), [0])

    def sample(self, theta: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n episodes: actions (n, H) in {0, 1} and rewards (n, H)."""
        g = torch.Generator().manual_seed(seed)
        p1 = self.probs(theta)[:, 1].detach()
        actions = (torch.rand((n, self.horizon), generator=g, dtype=torch.float64) < p1).long()
        rewards = self.base + actions * self.bonus
        return actions, rewards

    def gradient_estimates(self, theta: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                           estimator: str) -> torch.Tensor:
        r"""One gradient estimate per episode, shape (n, H, 2):
        :math:`\sum_t \nabla_\theta \log\pi(a_t|t)\,\Psi_t` with

        - ``"total"``: :math:`\Psi_t = R` (the whole episode's return),
        - ``"reward_to_go"``: :math:`\Psi_t = G_t = \sum_{k \ge t} r_k`,
        - ``"baseline"``: :math:`\Psi_t = G_t - V(t)`.

        For a tabular softmax, :math:`\nabla_{\theta_t}\log\pi(a|t) = e_a - \pi_t`.
        """
        pi = self.probs(theta).detach()                               # (H, 2)
        score = torch.nn.functional.one_hot(actions, 2).double() - pi  # (n, H, 2)
        to_go = torch.flip(torch.cumsum(torch.flip(rewards, [1]), 1), [1])
        if estimator == "total":
            psi = rewards.sum(1, keepdim=True).expand_as(rewards)
        elif estimator == "reward_to_go":
            psi = to_go
        elif estimator == "baseline":
            psi = to_go - self.values(theta)
        else:
            raise ValueError(f"estimator={estimator!r}: must be 'total', 'reward_to_go' or 'baseline'")
        return score * psi.unsqueeze(-1)


def estimator_statistics(problem: ChoiceSequence, theta: torch.Tensor, n: int = 20_000, seed: int = 0) -> dict:
    """Mean, bias and total variance of each estimator over n sampled episodes."""
    from ppo_lib.config import check_number, check_seed

    n = check_number("n", n, 2, integer=True)  # a variance needs two samples
    seed = check_seed(seed)
    actions, rewards = problem.sample(theta, n, seed)
    truth = problem.true_gradient(theta)
    out = {"true_gradient": truth}
    for name in ("total", "reward_to_go", "baseline"):
        est = problem.gradient_estimates(theta, actions, rewards, name).reshape(n, -1)
        mean = est.mean(0)
        out[name] = {
            "mean": mean.reshape(truth.shape),
            "max_abs_bias": float((mean - truth.reshape(-1)).abs().max()),
            "std_error": float((est.std(0) / np.sqrt(n)).max()),
            "variance": float(est.var(0).sum()),  # trace of the covariance of one estimate
        }
    return out


# --------------------------------------------------------------------------
# Chapter 3: GAE against the truth
# --------------------------------------------------------------------------


class RandomWalk:
    """States 0..n+1 on a line; 0 and n+1 are terminal. Start in the middle;
    the fixed policy steps right (action 1) with probability ``p_right``.
    Entering the right end pays +1, every other step 0."""

    def __init__(self, n_states: int = 9, p_right: float = 0.5, gamma: float = 0.95):
        from ppo_lib.config import check_number

        n_states = check_number("n_states", n_states, 1, 10_000, integer=True)
        p_right = check_number("p_right", p_right, 0, 1)
        gamma = check_number("gamma", gamma, 0, 1)
        self.n, self.p, self.gamma = n_states, p_right, gamma
        self.start = (n_states + 1) // 2
        self.v_true = self._solve_values()

    def _reward(self, s_next: np.ndarray) -> np.ndarray:
        return (s_next == self.n + 1).astype(float)

    def _solve_values(self) -> np.ndarray:
        """Exact V for all n+2 states (terminals 0) from the Bellman equations."""
        n, p, g = self.n, self.p, self.gamma
        P = np.zeros((n, n))
        r = np.zeros(n)
        for i, s in enumerate(range(1, n + 1)):
            for s2, prob in ((s + 1, p), (s - 1, 1 - p)):
                r[i] += prob * float(s2 == n + 1)
                if 1 <= s2 <= n:
                    P[i, s2 - 1] += prob
        v = np.linalg.solve(np.eye(n) - g * P, r)
        return np.concatenate([[0.0], v, [0.0]])

    def true_advantage(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """A(s, a) = r + gamma V(s') - V(s): the transition is deterministic given a."""
        s2 = s + np.where(a == 1, 1, -1)
        return self._reward(s2) + self.gamma * self.v_true[s2] - self.v_true[s]

    def sample(self, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Concatenated episodes: s, a, r, s_next, done, each of shape (total steps,)."""
        from ppo_lib.config import check_number, check_seed

        episodes = check_number("episodes", episodes, 1, integer=True)
        seed = check_seed(seed)
        rng = np.random.default_rng(seed)
        S, Acts, S2 = [], [], []
        for _ in range(episodes):
            s = self.start
            while 1 <= s <= self.n:
                a = int(rng.random() < self.p)
                s2 = s + (1 if a else -1)
                S.append(s), Acts.append(a), S2.append(s2)
                s = s2
        s, a, s2 = np.array(S), np.array(Acts), np.array(S2)
        done = (s2 == 0) | (s2 == self.n + 1)
        return {"s": s, "a": a, "r": self._reward(s2), "s_next": s2, "done": done}


@dataclasses.dataclass(frozen=True)
class GAEStudy:
    lambdas: np.ndarray        # (L,)
    bias_sq: np.ndarray        # (L,) visit-weighted mean over (s, a) of bias^2 (up to a per-state shift)
    variance: np.ndarray       # (L,) visit-weighted mean over (s, a) of the variance
    estimates: np.ndarray      # (L, steps) A_hat for each lambda
    truth: np.ndarray          # (steps,) true A(s, a)
    states: np.ndarray         # (steps,)
    actions: np.ndarray        # (steps,)
    shifts: np.ndarray         # (L, n_states + 2) the per-state shift c(s) of the errors

    def centred(self, k: int) -> np.ndarray:
        """The estimates of lambda number k with the per-state shift removed."""
        return self.estimates[k] - self.shifts[k][self.states]

    @property
    def mse(self) -> np.ndarray:
        return self.bias_sq + self.variance


def critic_with_error(walk: RandomWalk, error: float = 1.0) -> np.ndarray:
    """A critic between the truth (``error=0``) and a badly wrong one (``error=1``:
    it gets the slope of V backwards, ``-0.5 V + 0.2``); terminals stay 0."""
    from ppo_lib.config import check_number

    error = check_number("error", error, 0, 1)
    bad = -0.5 * walk.v_true + 0.2
    v = walk.v_true + error * (bad - walk.v_true)
    v[0] = v[-1] = 0.0
    return v


def gae_study(walk: RandomWalk, v_hat: np.ndarray, lambdas, episodes: int = 300, seed: int = 0) -> GAEStudy:
    """GAE(gamma, lambda) on one fixed batch of episodes, against the true advantages."""
    lam_array = np.asarray(lambdas, dtype=float)
    if lam_array.ndim != 1 or len(lam_array) == 0 or not np.all((lam_array >= 0) & (lam_array <= 1)):
        raise ValueError(f"lambdas={lambdas!r}: allowed: a non-empty list of numbers in [0, 1]")
    if np.shape(v_hat) != walk.v_true.shape:
        raise ValueError(f"v_hat: shape {np.shape(v_hat)}; allowed: {walk.v_true.shape}, one value per state "
                         f"(e.g. critic_with_error(walk, error))")
    batch = walk.sample(episodes, seed)
    s, a, done = batch["s"], batch["a"], batch["done"]
    values = v_hat[s]
    next_values = np.where(done, 0.0, v_hat[batch["s_next"]])  # termination: no bootstrap
    truth = walk.true_advantage(s, a)
    pi = np.array([1 - walk.p, walk.p])
    lambdas = np.asarray(lambdas, dtype=float)
    est_all, bias_sq, var, shifts = [], [], [], []
    for lam in lambdas:
        shift_of = np.zeros(walk.n + 2)
        est = gae_estimate(batch["r"], values, next_values, done, walk.gamma, float(lam)).double().numpy()
        err = est - truth
        b_total = v_total = 0.0
        for state in np.unique(s):
            idx = [np.flatnonzero((s == state) & (a == act)) for act in (0, 1)]
            means = np.array([err[i].mean() if len(i) else 0.0 for i in idx])
            # A per-state shift c(s) moves every action's estimate alike: like a baseline,
            # it cancels in the policy gradient. Only the rest is bias that matters.
            shift = pi @ means
            shift_of[state] = shift
            for act, i in enumerate(idx):
                b_total += len(i) * (means[act] - shift) ** 2
                v_total += len(i) * est[i].var() if len(i) else 0.0
        est_all.append(est), bias_sq.append(b_total / len(est)), var.append(v_total / len(est))
        shifts.append(shift_of)
    return GAEStudy(lambdas, np.array(bias_sq), np.array(var), np.array(est_all), truth, s, a, np.array(shifts))


# --------------------------------------------------------------------------
# Chapter 2: an endless task under a time limit
# --------------------------------------------------------------------------


class ConstantRewardEnv:
    """Reward 1 on every step, the same observation forever, never terminates.

    Under a time limit (``VecEnv(..., max_episode_steps=H)``) every episode is
    *truncated*. The task itself is endless, so the true value is
    ``1 / (1 - gamma)``; treating the time limit as a termination would teach
    the critic the finite sum ``(1 - gamma**H) / (1 - gamma)`` averaged over the
    episode instead.
    """

    def __new__(cls):
        import gymnasium as gym

        class _Env(gym.Env):
            observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                return np.zeros(1, dtype=np.float32), {}

            def step(self, action):
                return np.zeros(1, dtype=np.float32), 1.0, False, False, {}

        return _Env()
