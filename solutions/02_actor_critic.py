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
# # Chapter 2 — Actor-critic
#
# REINFORCE waits for the end of every episode and weighs each action by a noisy
# sum of everything that came after. An actor-critic learns a second network, the
# **critic** $V_\phi(s)$, that predicts that sum — and uses the prediction both as a
# baseline and as a stand-in for the rewards it has not seen yet.
#
# **Your time:** about 60 minutes to read, run and do the exercises.
#
# **Learning objectives.** After this chapter you can:
#
# - Explain how a learned value function serves as a baseline and as a bootstrap.
# - Compute TD errors and use them as one-step advantage estimates.
# - Handle episode ends correctly: no bootstrap after a termination, a bootstrap from the true final observation after a truncation.
# - Show with an endless task under a time limit why treating truncation as termination is a bug.
# - Train advantage actor-critic (A2C) on CartPole-v1 and compare it with REINFORCE on the same budget.

# %%
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch

from ppo_lib.advantages import bootstrap_values as library_bootstrap_values
from ppo_lib.algos import A2C, REINFORCE, A2CConfig, ReinforceConfig
from ppo_lib.teaching.checks import check_bootstrap_values, check_td_errors
from ppo_lib.envs import VecEnv
from ppo_lib.teaching.plots import learning_curves
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout
from ppo_lib.teaching.toy_problems import ConstantRewardEnv
from ppo_lib.train import train

torch.set_num_threads(1)
SEEDS = [0, 1, 2]

# %% [markdown]
# ## The critic, and the TD error
#
# The value of a state under the policy is the expected return from it,
# $V^\pi(s) = \mathbb E_\pi[\sum_{k\ge 0}\gamma^k r_{t+k} \mid s_t = s]$. It satisfies a
# one-step consistency (the Bellman equation):
# $V^\pi(s_t) = \mathbb E[r_t + \gamma V^\pi(s_{t+1})]$.
#
# The **TD error** $\delta_t$ measures, for one transition, how much better things went
# than the critic expected: the Bellman equation's right-hand side, evaluated on the one
# transition that happened and with the critic standing in for $V^\pi$, minus the
# critic's prediction at $s_t$ (exercise 2.1 has you write it down).
#
# If $V_\phi = V^\pi$, then $\mathbb E[\delta_t \mid s_t, a_t] = Q^\pi(s_t,a_t) - V^\pi(s_t) = A^\pi(s_t,a_t)$,
# the **advantage** of $a_t$: a one-step, low-variance estimate we can plug into the
# policy gradient instead of $\hat G_t - b(s_t)$. The price is bias: where the critic is
# wrong, so is $\delta_t$. Chapter 3 shows how to dial between the two.
#
# The critic itself is trained by regression, $\min_\phi \tfrac12 (V_\phi(s_t) - \hat R_t)^2$,
# on a **value target** $\hat R_t$ built the same way: the simplest is the one-step
# target $\hat R_t = r_t + \gamma V_\phi(s_{t+1})$, held fixed (no gradient flows
# through it); in general $\hat R_t = \hat A_t + V_\phi(s_t)$ for whatever advantage
# estimate $\hat A_t$ we use (a one-step one here, an n-step one in A2C below, GAE in
# chapter 3).

# %% [markdown]
# ### Exercise 2.1 — TD errors
#
# Write `td_errors(rewards, values, next_values, gamma)` for NumPy arrays of shape
# `(T,)` or `(T, N)`. `values[t]` is the critic's $V_\phi(s_t)$ and `next_values[t]`
# is the value of whatever follows step t (the next exercise builds it, with all the
# episode-end rules folded in, so you need no done mask here).
#
# Work it out from the Bellman equation: what did the critic *predict* at $s_t$, and
# what does one observed reward plus the critic's own (discounted) estimate of the rest
# say instead? Your function must not loop: it has to work
# unchanged for one environment `(T,)` and for N of them `(T, N)`.
#
# *Think first:* on the endless "+1 every step" task used below, where no action
# changes anything, what would every $\delta_t$ be if the critic were exact? And if the
# critic said 0 everywhere? The cell after the checker tests your predictions.

# %% nbgrader={"grade": false, "grade_id": "td_errors", "locked": false, "schema_version": 3, "solution": true}
def td_errors(rewards, values, next_values, gamma):
    ### BEGIN SOLUTION
    return rewards + gamma * next_values - values
    ### END SOLUTION


# %%
td_errors = check_td_errors(td_errors)

# %%
# Your prediction, tested: the endless +1 task below has V = 1/(1 - gamma) = 10 for gamma = 0.9.
exact = np.full(5, 10.0)
deltas_exact = td_errors(np.ones(5), exact, exact, 0.9)
deltas_zero_critic = td_errors(np.ones(5), np.zeros(5), np.zeros(5), 0.9)
print("exact critic:    ", deltas_exact, "\ncritic that says 0:", deltas_zero_critic)
assert np.allclose(deltas_exact, 0.0) and np.allclose(deltas_zero_critic, 1.0)

# %% [markdown]
# What you wrote is
#
# $$\delta_t = r_t + \gamma V_\phi(s_{t+1}) - V_\phi(s_t),$$
#
# one line for any number of environments. With an exact critic and deterministic
# dynamics, $\delta_t$ *is* the advantage $Q(s_t,a_t) - V(s_t)$ of the action taken; on a
# task where actions change nothing,
# every advantage, hence every TD error, is 0: nothing to learn, correctly. A critic
# that knows nothing ($V \equiv 0$) turns $\delta_t$ into the raw reward: no baseline
# and no bootstrap at all.

# %% [markdown]
# ## What follows the last step of an episode?
#
# In a batch of T steps from N environments, the value that follows step t is usually
# $V(s_{t+1})$, the next row. Three exceptions, and every one of them is a classic bug:
#
# - **Termination** (the pole fell): nothing follows. $V_{next} = 0$.
# - **Truncation** (a time limit): the episode was *cut*, the task was not over. The
#   future still had value, so bootstrap from $V$ of the **true final observation**.
#   Gymnasium's vector environments have already reset that copy: the next row holds
#   the first observation of a *new* episode, and its value is the wrong number. Our
#   `VecEnv` keeps the final observation, and the rollout stores
#   `final_values[t]` $= V(s_{\text{final}})$ for every truncated step.
# - **The end of the batch**: the episode goes on, so bootstrap from the value of the
#   observation after the batch, `last_value`.
#
# (CleanRL's PPO treats truncation as termination: it ORs the two flags. Spinning Up
# bootstraps in two places only, when an episode reaches *its own* `max_ep_len` and
# when the epoch's buffer ends; a time limit signalled by the environment itself
# (Gym's `TimeLimit` wrapper setting `done`) is treated as a termination.
# Stable-Baselines3 fixed it in its issue 633. Below we *measure* what that mistake costs.)

# %% [markdown]
# ### Exercise 2.2 — bootstrap values
#
# Write `bootstrap_values(values, last_value, terminated, truncated, final_values)`:
# `values`, `terminated`, `truncated`, `final_values` have shape `(T,)` or `(T, N)`;
# `last_value` has shape `()` or `(N,)`. Return `next_values` of the same shape as
# `values` following the rules above.

# %% nbgrader={"grade": false, "grade_id": "bootstrap_values", "locked": false, "schema_version": 3, "solution": true}
def bootstrap_values(values, last_value, terminated, truncated, final_values):
    ### BEGIN SOLUTION
    values = np.asarray(values, dtype=float)
    following = np.concatenate([values[1:], np.reshape(last_value, (1,) + values.shape[1:])])
    following = np.where(truncated, final_values, following)
    return np.where(terminated, 0.0, following)
    ### END SOLUTION


# %%
bootstrap_values = check_bootstrap_values(bootstrap_values)

# %% [markdown]
# ## Measured: an endless task under a time limit
#
# A tiny environment: the observation never changes, every step pays $+1$, and
# nothing ever terminates — but a time limit truncates each episode after 20 steps.
# The task is endless, so the true value of its (only) state is
# $\sum_k \gamma^k = 1/(1-\gamma) = 10$ for $\gamma = 0.9$.
#
# We fit a critic on rollouts, once with the rules above and once treating the time
# limit as a termination. **Predict** the second answer before you run the cell.

# %%
GAMMA = 0.9


def fit_critic(truncation_is_termination, iterations=150, seed=0):
    torch.manual_seed(seed)
    venv = VecEnv(ConstantRewardEnv, num_envs=4, seed=seed, max_episode_steps=20)
    agent = ActorCritic(venv.single_observation_space, venv.single_action_space, hidden=(16,))
    optimizer = torch.optim.Adam(agent.critic.parameters(), lr=0.05)
    obs = venv.reset()
    for _ in range(iterations):
        batch, obs = collect_rollout(venv, agent, 32, obs)
        terminated = batch.terminated | batch.truncated if truncation_is_termination else batch.terminated
        next_v = torch.as_tensor(bootstrap_values(batch.values.numpy(), batch.last_value.numpy(), terminated.numpy(),
                                                  batch.truncated.numpy(), batch.final_values.numpy()))
        # a few regression steps on the one-step targets r + gamma V_next (kept fixed)
        targets = (batch.rewards + GAMMA * next_v).float()
        for _ in range(5):
            loss = 0.5 * (agent.value(batch.obs) - targets).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float(agent.value(torch.zeros(1, 1)))


v_right = fit_critic(truncation_is_termination=False)
v_wrong = fit_critic(truncation_is_termination=True)
print(f"true value 1/(1-gamma)          = {1 / (1 - GAMMA):.2f}")
print(f"critic, truncation bootstrapped = {v_right:.2f}")
print(f"critic, truncation = termination = {v_wrong:.2f}")
assert abs(v_right - 10.0) < 0.5 and v_wrong < 9.0

# %% [markdown]
# Treating the time limit as a real end teaches the critic that the world is about to
# end — in the middle of a task that never ends. The critic settles on a blend of
# "10" and "1, because the episode is over", averaged over the positions in the
# episode it cannot see. In CartPole the same error makes states *near the time limit*
# look bad, although the agent did everything right.
#
# The library does this with `ppo_lib.advantages.bootstrap_values`, which agrees with
# yours:

# %%
cartpole = VecEnv("CartPole-v1", num_envs=4, seed=1, max_episode_steps=30)  # a short limit: some truncations
random_agent = ActorCritic(cartpole.single_observation_space, cartpole.single_action_space)
batch, _ = collect_rollout(cartpole, random_agent, 64, cartpole.reset())
args = (batch.values, batch.last_value, batch.terminated, batch.truncated, batch.final_values)
np.testing.assert_allclose(bootstrap_values(*(a.numpy() for a in args)), library_bootstrap_values(*args).numpy(),
                           rtol=1e-5, atol=1e-6)
print(f"agree on a CartPole batch with {int(batch.terminated.sum())} terminations "
      f"and {int(batch.truncated.sum())} truncations")

# %% [markdown]
# ## A2C: advantage actor-critic
#
# A2C runs N environments for a few steps (here 8 x 5), computes the advantages from
# the TD errors and the bootstrap rules above, and takes one step on
#
# $$L = -\frac1B\sum_i \log\pi_\theta(a_i|s_i)\,\hat A_i \;+\; c_v\,\frac1B\sum_i \tfrac12\big(V_\phi(s_i) - \hat R_i\big)^2 \;-\; c_e\,\mathcal H[\pi_\theta],$$
#
# policy loss, value loss and an optional entropy bonus, with $\hat R_i = \hat A_i + V_\phi(s_i)$.
# Here $\hat A_t$ is the discounted sum of rewards up to the end of the
# 5-step window plus the bootstrapped value, minus $V(s_t)$: an n-step advantage.
# (`A2CConfig` has a knob `gae_lambda` that chooses between such estimates; chapter 3
# explains it. Its value here, 1, gives exactly the n-step advantage just described.)
# The code is `ppo_lib/algos/a2c.py`.
#
# Same budget as REINFORCE in chapter 1: 30 000 steps, three seeds. The dotted line is
# again CartPole-v1's solved threshold, 475 (chapter 1).

# %%
env = gym.make("CartPole-v1")
SOLVED = gym.spec("CartPole-v1").reward_threshold
assert SOLVED == 475
runs = {"REINFORCE": [], "A2C": []}
for seed in SEEDS:
    reinforce = REINFORCE(env.observation_space, env.action_space, ReinforceConfig(), seed=seed)
    runs["REINFORCE"].append(train(reinforce, "CartPole-v1", 30_000, seed=seed).history)
    a2c = A2C(env.observation_space, env.action_space, A2CConfig(), seed=seed)
    runs["A2C"].append(train(a2c, "CartPole-v1", 30_000, seed=seed).history)
    for label in runs:
        h = runs[label][-1]
        first = h.first_step_reaching(SOLVED)
        print(f"{label:9s} seed {seed}: {SOLVED:g} reached at {first if first else '-':>6} steps; "
              f"last 20 episodes {np.mean(h.episode_returns[-20:]):6.1f}; {h.wall_time:.1f} s")

# %%
fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(11, 3.6))
learning_curves(ax, runs, threshold=SOLVED, title="same budget, CartPole-v1")
h = runs["A2C"][0]
smoothed = np.convolve(h.diagnostics["value_loss"], np.ones(25) / 25, mode="valid")
ax_d.plot(h.update_steps[24:], smoothed, label="value loss (mean of 25 updates)")
ax_d.set_yscale("log")
ax_d.set_xlabel("environment steps")
ax_d.set_title("A2C seed 0: the critic's loss (smoothed)")
ax_d.legend()
plt.tight_layout()
plt.show()
assert smoothed.max() > 2 * smoothed[0]  # the value loss grows while the policy improves

# %% [markdown]
# With these settings A2C updates every 40 steps instead of every 2 000, and its
# advantages lean on the critic instead of on long noisy sums. The value loss *grows*
# over most of the run: the returns grow as the policy improves, and the critic chases a
# moving target. That is the normal picture of an actor-critic, not a sign of a broken
# critic.

# %% [markdown]
# ## What we learned
#
# - A critic $V_\phi$ gives a baseline and a bootstrap; the TD error
#   $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$ is a one-step advantage estimate.
# - After a termination nothing follows; after a truncation the future still counts
#   and we bootstrap from $V$ of the true final observation; at the end of a batch we
#   bootstrap from the next observation. Getting truncation wrong biases the critic,
#   measurably.
# - A2C = those advantages in the policy-gradient loss, plus a value loss, on short
#   rollouts from parallel environments.
#
# ## Further reading
#
# - V. Mnih et al., *Asynchronous methods for deep reinforcement learning*, ICML 2016
#   (A3C; A2C is its synchronous variant).
# - F. Pardo, A. Tavakoli, V. Levdik, P. Kormushev, *Time limits in reinforcement
#   learning*, ICML 2018.
# - R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed.,
#   chapters 6 and 13.5.
