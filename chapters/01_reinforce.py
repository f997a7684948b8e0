# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 1 — REINFORCE
#
# The simplest policy-gradient method: play some episodes, then make each action more
# likely in proportion to the reward that followed it.
#
# **Your time:** about 75 minutes to read, run and do the exercises.
#
# **Learning objectives.** After this chapter you can:
#
# - Derive the policy-gradient theorem with the log-derivative trick.
# - Explain why reward-to-go and a baseline reduce the variance of the gradient without adding bias.
# - Compute the discounted reward-to-go of a batch with episode boundaries.
# - Write the REINFORCE surrogate loss whose gradient is the policy gradient.
# - Train REINFORCE on CartPole-v1 over several seeds and read the learning curves.

# %%
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch

from ppo_lib.advantages import reward_to_go as library_reward_to_go
from ppo_lib.algos import REINFORCE, ReinforceConfig
from ppo_lib.teaching.animation import animate_cartpole, run_episode
from ppo_lib.teaching.checks import check_reinforce_loss, check_reward_to_go
from ppo_lib.teaching.plots import learning_curves
from ppo_lib.teaching.toy_problems import ChoiceSequence, estimator_statistics
from ppo_lib.train import train

torch.set_num_threads(1)  # tiny networks: one thread is faster than two fighting
SEEDS = [0, 1, 2]

# %% [markdown]
# ## The objective
#
# A policy $\pi_\theta(a \mid s)$ and the environment together define a distribution
# over trajectories $\tau = (s_0, a_0, r_0, s_1, a_1, r_1, \dots)$:
#
# $$P_\theta(\tau) = p(s_0) \prod_{t} \pi_\theta(a_t \mid s_t)\, p(s_{t+1} \mid s_t, a_t).$$
#
# We want to maximise the expected return $J(\theta) = \mathbb E_{\tau \sim P_\theta}[R(\tau)]$,
# where $R(\tau) = \sum_t \gamma^t r_t$. The trouble: $\theta$ sits inside the
# distribution we average over, and we cannot differentiate the environment.
#
# ## The log-derivative trick
#
# For any density, $\nabla_\theta P_\theta(\tau) = P_\theta(\tau)\, \nabla_\theta \log P_\theta(\tau)$
# (that is just the chain rule for $\log$). So
#
# $$\nabla_\theta J = \int \nabla_\theta P_\theta(\tau)\, R(\tau)\, d\tau
#   = \mathbb E_{\tau}\big[\nabla_\theta \log P_\theta(\tau)\; R(\tau)\big].$$
#
# Take the log of the product above: the initial-state and transition terms do not
# depend on $\theta$ and vanish under the gradient. What remains is the
# **policy-gradient theorem** in its simplest form:
#
# $$\nabla_\theta J = \mathbb E_\tau\Big[\sum_t \nabla_\theta \log \pi_\theta(a_t \mid s_t)\; R(\tau)\Big].$$
#
# We never need a model of the environment — only the log-probabilities of the
# actions we took, which our network gives us, and the rewards we saw. Averaging the
# bracket over sampled episodes gives an **unbiased** estimate of the gradient.
#
# ## Two ways to cut the noise, for free
#
# 1. **Reward-to-go.** An action cannot influence rewards that came before it. The
#    terms $\nabla \log \pi(a_t|s_t)\, \gamma^k r_k$ with $k < t$ average to zero, so we may
#    drop them and weight each action by the rewards *from* $t$ on only:
#    $\gamma^t \hat G_t$ with $\hat G_t = \sum_{k \ge t} \gamma^{k-t} r_k$. Practically every
#    implementation also drops the factor $\gamma^t$ (so that late steps are not ignored);
#    strictly, that makes the estimate biased for $\gamma < 1$ — $\gamma$ then acts as a
#    variance-reducing horizon rather than part of the objective. The measurement below
#    uses $\gamma = 1$, where both agree.
# 2. **A baseline.** For any $b(s_t)$ that does not depend on the action,
#    $\mathbb E_{a \sim \pi}[\nabla \log \pi(a|s)\, b(s)] = b(s) \nabla \sum_a \pi(a|s) = b(s) \nabla 1 = 0$.
#    Subtracting a baseline keeps the estimate unbiased; a good one, $b(s) \approx V(s)$,
#    makes it much less noisy.
#
# $$\nabla_\theta J \approx \frac1B \sum_{i=1}^{B} \nabla_\theta \log \pi_\theta(a_i \mid s_i)\,\big(\hat G_i - b(s_i)\big),$$
#
# where $i$ runs over the $B$ steps of a batch and $b(\cdot)$ is the baseline.

# %% [markdown]
# ### Exercise 1.1 — the reward-to-go
#
# Write `reward_to_go(rewards, dones, gamma)`. The inputs are NumPy arrays of shape
# `(T,)` or `(T, N)` — T steps of N environments, time on axis 0. `dones[t]` is True
# when the episode ended right after step t; the next row then belongs to a new
# episode. Return an array of the same shape with
# $\hat G_t = r_t + \gamma\,(1 - \mathrm{done}_t)\,\hat G_{t+1}$ and $\hat G_T = 0$ after the
# last row.
#
# *Hint:* loop backwards over t, carrying a running sum.

# %% nbgrader={"grade": false, "grade_id": "reward_to_go", "locked": false, "schema_version": 3, "solution": true}
def reward_to_go(rewards, dones, gamma):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
reward_to_go = check_reward_to_go(reward_to_go)

# %% [markdown]
# The function the checker hands back agrees with the library's, which the training
# code below uses:

# %%
rng = np.random.default_rng(0)
r_batch, d_batch = rng.normal(size=(50, 4)), rng.random((50, 4)) < 0.1
np.testing.assert_allclose(reward_to_go(r_batch, d_batch, 0.99),
                           library_reward_to_go(r_batch, d_batch, 0.99).numpy(), rtol=1e-5, atol=1e-5)
print("your reward_to_go matches ppo_lib.advantages.reward_to_go on a random batch")

# %% [markdown]
# ## Is the estimator really unbiased? Is it really noisy?
#
# Claims about estimators deserve a measurement. Here is a problem small enough to
# know the true gradient exactly: an episode is 4 two-way choices; choice $t$ pays
# $2 + a_t w_t$ with $w = (1, -0.5, 0.5, 1)$. The policy has two logits per step, so
# $J(\theta)$ has a closed form and autograd gives the exact $\nabla J$.
#
# We sample 20 000 episodes and build three per-episode estimates:
# the whole return $R$ for every action, the reward-to-go $\hat G_t$, and
# $\hat G_t - V(t)$ with the exact value as baseline.
#
# **Predict first:** which has the smallest variance? Are any of them biased?

# %%
problem = ChoiceSequence(bonus=(1.0, -0.5, 0.5, 1.0), base_reward=2.0)
theta = torch.zeros(4, 2, dtype=torch.float64)
theta[:, 1] = torch.tensor([0.5, -0.3, 0.2, 0.0])
stats = estimator_statistics(problem, theta, n=20_000, seed=0)

names = {"total": "whole return R", "reward_to_go": "reward-to-go G_t", "baseline": "G_t - V(t)"}
print(f"{'estimator':18s} {'max |bias|':>10s} {'4 x std error':>14s} {'variance':>10s}")
for key, label in names.items():
    s = stats[key]
    print(f"{label:18s} {s['max_abs_bias']:10.4f} {4 * s['std_error']:14.4f} {s['variance']:10.3f}")
    # unbiased: every component of the mean lies within 4 standard errors of the truth
    assert s["max_abs_bias"] < 4 * s["std_error"] + 1e-9
assert stats["total"]["variance"] > stats["reward_to_go"]["variance"] > stats["baseline"]["variance"]
to_go_gain = stats["total"]["variance"] / stats["reward_to_go"]["variance"]
baseline_gain = stats["reward_to_go"]["variance"] / stats["baseline"]["variance"]
print(f"variance divided by {to_go_gain:.1f} with reward-to-go, then by {baseline_gain:.0f} with the baseline")
assert 1.5 < to_go_gain < 3 and baseline_gain > 100  # the next paragraph's "about two" and "more than a hundred"

fig, ax = plt.subplots(figsize=(6, 2.6))
ax.barh(list(names.values()), [stats[k]["variance"] for k in names], color=["tab:red", "tab:orange", "tab:green"])
ax.set_xscale("log")
ax.set_xlabel("variance of one episode's gradient estimate (log scale)")
ax.set_title("same mean, very different noise")
plt.show()

# %% [markdown]
# All three agree with the true gradient up to sampling error — none is biased — but
# the variance drops by a factor of about two with reward-to-go and by more than a
# hundred with the baseline. The constant $+2$ per step is what hurts the naive
# estimator: it adds the same large number to every weight, pushing all sampled
# actions up and relying on cancellation across many episodes. A baseline removes it.

# %% [markdown]
# ### Exercise 1.2 — the REINFORCE loss
#
# Autograd computes gradients of a loss, so we write a *surrogate* loss whose gradient
# is the (negated) policy gradient estimate:
#
# $$L(\theta) = -\frac1B \sum_i \log \pi_\theta(a_i|s_i)\; \Psi_i .$$
#
# Write `reinforce_loss(logprobs, weights)`: both are torch tensors of shape `(B,)`;
# return a scalar tensor. The weights $\Psi$ (returns or advantages) are constants for
# this step: no gradient may flow into them. The checker looks at the value *and* at
# the gradients.

# %% nbgrader={"grade": false, "grade_id": "reinforce_loss", "locked": false, "schema_version": 3, "solution": true}
def reinforce_loss(logprobs, weights):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
reinforce_loss = check_reinforce_loss(reinforce_loss)

# %% [markdown]
# The gradient of that loss is the estimator from above. On the small problem, with
# the reward-to-go weights, autograd reproduces the closed-form estimate exactly:

# %%
actions, rewards = problem.sample(theta, 5, seed=1)
theta_var = theta.clone().requires_grad_(True)
logp = torch.log_softmax(theta_var, -1).gather(1, actions.T).T  # (5 episodes, 4 steps)
G = torch.flip(torch.cumsum(torch.flip(rewards, [1]), 1), [1])
loss = reinforce_loss(logp.reshape(-1), G.reshape(-1))
loss.backward()
closed_form = problem.gradient_estimates(theta, actions, rewards, "reward_to_go").mean(0)
# the loss averages over B = 5 x 4 steps while the estimator sums over the 4 steps of an episode
np.testing.assert_allclose(-theta_var.grad.numpy() * 4, closed_form.numpy(), rtol=1e-10)
print("autograd of the surrogate loss == the policy-gradient estimate")

# %% [markdown]
# ## REINFORCE on CartPole
#
# The library's `REINFORCE` does exactly this on batches from 4 CartPole copies:
# collect 500 steps per copy, compute the reward-to-go of every step, standardise the
# weights over the batch (a cheap baseline), and take one Adam step on the loss above.
# Steps of an episode still running when the batch ends have no complete reward-to-go
# yet; they are left out of this update (the episode finishes in the next batch).
# Read it in `ppo_lib/algos/reinforce.py`: it is 20 lines.
#
# We train three seeds, with and without a learned value baseline, for 30 000 steps
# each (about 20 s in all). The learned baseline is a small network $V_\phi(s)$ fitted
# by regression to the reward-to-go; here it is only a baseline, subtracted from
# $\hat G_t$. Chapter 2 turns such a value network into a *critic* that also
# bootstraps, and explains it properly; for now, treat it as a black box.
#
# The dotted line is CartPole-v1's "solved" threshold: an average return of **475**
# over 100 consecutive episodes (Gymnasium's `spec.reward_threshold`; the 195 often
# quoted belongs to the older CartPole-v0, whose episodes end at 200 steps).

# %%
env = gym.make("CartPole-v1")
runs = {"REINFORCE": [], "REINFORCE + value baseline": []}
for seed in SEEDS:
    for label, baseline in (("REINFORCE", False), ("REINFORCE + value baseline", True)):
        algo = REINFORCE(env.observation_space, env.action_space, ReinforceConfig(baseline=baseline), seed=seed)
        result = train(algo, "CartPole-v1", total_steps=30_000, seed=seed)
        runs[label].append(result.history)
        print(f"{label:27s} seed {seed}: last 20 episodes average {np.mean(result.history.episode_returns[-20:]):6.1f}"
              f"  ({result.history.wall_time:.1f} s)")
trained_agent = result.agent

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
SOLVED = gym.spec("CartPole-v1").reward_threshold
assert SOLVED == 475, SOLVED
learning_curves(ax, runs, threshold=SOLVED, title="REINFORCE on CartPole-v1")
plt.show()
for label, histories in runs.items():
    reached = [h.first_step_reaching(SOLVED) for h in histories]
    print(f"{label:27s} first reached {SOLVED:g} (mean of 20 episodes) at: {[r if r else 'never' for r in reached]}")

# %% [markdown]
# The curves rise from the random policy's ~20 (chapter 0) towards the 500-step limit. The band
# (min to max over seeds) is wide: even with the tricks above, REINFORCE's gradient is
# noisy, and each batch is used for a single step and then thrown away. Chapter 2
# attacks the first problem with a learned critic, chapter 5 the second.
#
# Here is the last trained agent, acting greedily:

# %%
episode = run_episode(env, policy=lambda obs: int(trained_agent.greedy(torch.as_tensor(obs).unsqueeze(0))[0]),
                      seed=123, max_steps=500)
print(f"greedy episode: {episode.length} steps")
animate_cartpole(episode.observations, every=4)

# %% [markdown]
# ## What we learned
#
# - The log-derivative trick turns $\nabla \mathbb E[R]$ into $\mathbb E[R\,\nabla\log P]$,
#   and the environment's dynamics drop out: only $\nabla \log \pi(a_t|s_t)$ remains.
# - Reward-to-go and a state-dependent baseline keep the estimate unbiased and cut
#   its variance — we measured both claims on a problem with a known gradient.
# - In code, REINFORCE is one surrogate loss, $-\mathrm{mean}(\log\pi \cdot \Psi)$,
#   with $\Psi$ detached.
#
# ## Further reading
#
# - R. J. Williams, *Simple statistical gradient-following algorithms for
#   connectionist reinforcement learning*, Machine Learning 8, 1992.
# - R. S. Sutton, D. McAllester, S. Singh, Y. Mansour, *Policy gradient methods for
#   reinforcement learning with function approximation*, NeurIPS 1999.
# - R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed.,
#   chapter 13.
