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
# # Chapter 3 — Generalized Advantage Estimation
#
# Chapter 1's Monte-Carlo weights were unbiased and noisy; chapter 2's TD error was
# calm and biased by the critic's mistakes. GAE is a single knob, $\lambda$, that slides
# between the two. PPO uses it with $\lambda = 0.95$.
#
# **Your time:** about 75 minutes to read, run, do the exercises and play with the widgets.
#
# **Learning objectives.** After this chapter you can:
#
# - Write the k-step advantage estimates and GAE as their exponentially weighted average.
# - Show numerically that lambda=0 gives the TD error and lambda=1 the Monte-Carlo advantage.
# - Implement GAE over a batch with episode ends, and normalise advantages safely.
# - Measure the bias and the variance of GAE against true advantages as lambda and the critic's error change.
# - Compare A2C with GAE for several lambdas on CartPole-v1.

# %%
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from ppo_lib.advantages import bootstrap_values, reward_to_go, td_errors
from ppo_lib.advantages import gae as library_gae
from ppo_lib.algos import A2C, A2CConfig
from ppo_lib.teaching.checks import check_gae, check_normalize_advantages
from ppo_lib.envs import VecEnv
from ppo_lib.teaching.plots import learning_curves
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout
from ppo_lib.teaching.toy_problems import RandomWalk, critic_with_error, gae_study
from ppo_lib.train import train
from ppo_lib.teaching.widgets import lambda_widget, training_widget

torch.set_num_threads(1)

# %% [markdown]
# ## From one step to many
#
# With $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$, look $k$ steps ahead before trusting
# the critic:
#
# $$\hat A^{(k)}_t = r_t + \gamma r_{t+1} + \dots + \gamma^{k-1} r_{t+k-1} + \gamma^k V(s_{t+k}) - V(s_t)
#   = \sum_{l=0}^{k-1} \gamma^l \delta_{t+l}.$$
#
# (The $V$ terms in between cancel: the sum telescopes.) $k = 1$ is the TD error —
# low variance, biased where $V$ is wrong; $k = \infty$ is the Monte-Carlo return minus
# $V(s_t)$ — unbiased, noisy. GAE averages all of them with weights
# $(1-\lambda)\lambda^{k-1}$:
#
# $$\hat A^{\mathrm{GAE}(\gamma,\lambda)}_t = (1-\lambda)\sum_{k\ge1}\lambda^{k-1}\hat A^{(k)}_t
#   = \sum_{l \ge 0} (\gamma\lambda)^l\, \delta_{t+l}.$$
#
# The right-hand form is what we compute, backwards in one pass:
# $\hat A_t = \delta_t + \gamma\lambda\,(1 - \mathrm{done}_t)\,\hat A_{t+1}$. As before, a done
# (termination *or* truncation) cuts the sum — the next row belongs to another episode
# — while the bootstrap rules of chapter 2 live inside $\delta_t$ through `next_values`.
#
# The weights $(1-\lambda)\lambda^{k-1}$ sum to 1 over $k \ge 1$; this is how they spread
# over the horizons $k$ (the mean horizon is $1/(1-\lambda)$ steps):

# %%
ks = np.arange(1, 61)
fig, ax = plt.subplots(figsize=(7, 3))
for lam_shown in (0.5, 0.9, 0.95, 0.99):
    weights = (1 - lam_shown) * lam_shown ** (ks - 1)
    assert abs(weights.sum() + lam_shown ** ks[-1] - 1.0) < 1e-12  # the tail beyond k=60 holds the rest
    ax.plot(ks, weights, marker=".", ms=3, label=f"lambda={lam_shown:g} (mean horizon {1 / (1 - lam_shown):g})")
ax.set_xlabel("k (steps looked ahead before trusting V)")
ax.set_ylabel("weight of the k-step estimate")
ax.set_title("GAE's weights $(1-\\lambda)\\lambda^{k-1}$")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# In a finite batch the sum stops at the end of the segment, where it bootstraps from
# the critic. So even $\lambda = 1$ is "Monte-Carlo" only up to the segment's end: for a
# step $t$ whose episode is still running when the batch stops, $\hat A_t$ still ends
# with $\gamma^{T-t} V(s_T)$ and inherits the critic's error there, discounted by the
# distance to the end. Only the steps of episodes that *terminate* inside the batch get
# a truly unbiased estimate.

# %% [markdown]
# ### Exercise 3.1 — GAE
#
# Write `gae(rewards, values, next_values, dones, gamma, lam)` for NumPy arrays of
# shape `(T,)` or `(T, N)` (time on axis 0), returning the advantages, same shape.

# %% nbgrader={"grade": false, "grade_id": "gae", "locked": false, "schema_version": 3, "solution": true}
def gae(rewards, values, next_values, dones, gamma, lam):
    ### BEGIN SOLUTION
    deltas = np.asarray(rewards, float) + gamma * np.asarray(next_values, float) - np.asarray(values, float)
    advantages = np.zeros_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in reversed(range(len(deltas))):
        running = deltas[t] + gamma * lam * (1.0 - dones[t]) * running
        advantages[t] = running
    return advantages
    ### END SOLUTION


# %%
gae = check_gae(gae)

# %% [markdown]
# ## The two ends of the dial, checked
#
# On a real CartPole batch (random policy and critic, 8 copies, 64 steps, a time limit of
# 20 steps so that both kinds of episode end occur): $\lambda=0$ must give exactly the TD
# errors, and $\lambda=1$ exactly the bootstrapped reward-to-go minus $V$. Your `gae`
# (or the reference, if the exercise is still open) and the library's must agree.

# %%
venv = VecEnv("CartPole-v1", num_envs=8, seed=3, max_episode_steps=20)
agent = ActorCritic(venv.single_observation_space, venv.single_action_space)
batch, _ = collect_rollout(venv, agent, 64, venv.reset())
next_v = bootstrap_values(batch.values, batch.last_value, batch.terminated, batch.truncated, batch.final_values)
r, v, nv, d = (x.double().numpy() for x in (batch.rewards, batch.values, next_v, batch.dones))
gamma = 0.99

assert np.allclose(gae(r, v, nv, d, gamma, 0.0), td_errors(r, v, nv, gamma).numpy(), atol=1e-5)
# lambda = 1: fold the bootstrap into the last reward of each segment, then reward-to-go.
cut = d.astype(bool).copy()
cut[-1] = True  # the batch end also closes a segment (bootstrapped from last_value)
bootstrapped_rewards = r + gamma * np.where(cut, nv, 0.0)
mc_advantage = reward_to_go(bootstrapped_rewards, cut, gamma).double().numpy() - v
assert np.allclose(gae(r, v, nv, d, gamma, 1.0), mc_advantage, atol=1e-4)
for lam in (0.0, 0.5, 0.95, 1.0):
    assert np.allclose(gae(r, v, nv, d, gamma, lam), library_gae(r, v, nv, d, gamma, lam).numpy(), atol=1e-4)
assert batch.terminated.any() and batch.truncated.any()
print(f"checked on a batch with {int(batch.terminated.sum())} terminations and {int(batch.truncated.sum())} "
      "truncations: lambda=0 == TD errors, lambda=1 == Monte-Carlo advantages, and your gae == the library's")

# %% [markdown]
# ## Experiment: bias and variance against the truth
#
# To *see* the trade-off we need a problem whose true advantages we know. A random
# walk: 9 states in a row, start in the middle, step left or right with probability
# 1/2; falling off the right end pays $+1$, the left end $0$; $\gamma = 0.95$. The true
# values solve a 9 x 9 linear system, and since a move is deterministic given the
# action, the true advantage is $A(s,a) = r + \gamma V(s') - V(s)$ exactly.
#
# We collect one fixed batch of 200 episodes and compute GAE for 21 values of
# $\lambda$, with a critic $\hat V$ that sits between the truth (`critic error` 0) and a badly
# wrong one (`critic error` 1, whose slope is backwards). For each (state, action) pair
# we compare the estimates with the truth: their **bias**, and their **variance**.
#
# One subtlety: an error that shifts the estimates of *every* action in a state by the
# same amount acts like a baseline and cancels in the policy gradient, so we measure
# bias after removing that per-state shift.
#
# **Predict first:** with a perfect critic, which $\lambda$ is best? With a bad one?
# Then move both sliders.

# %%
walk = RandomWalk(n_states=9, p_right=0.5, gamma=0.95)
lambdas = np.round(np.linspace(0.0, 1.0, 21), 2)
gae_explorer = lambda_widget(lambda error: gae_study(walk, critic_with_error(walk, error), lambdas, episodes=200),
                             lambdas, lam=0.95, error=1.0)
display(gae_explorer)

# %% [markdown]
# With a perfect critic, $\lambda = 0$ has no bias and no variance at all: every TD
# error is exactly the true advantage (moves are deterministic here). As the critic gets
# worse, small $\lambda$ inherits its error, and the best $\lambda$ moves up. Near
# $\lambda = 1$ the variance explodes: a single estimate then depends on every coin flip
# until the episode ends. In large problems no critic is perfect and episodes are long;
# $\lambda \approx 0.95$ is the usual compromise.

# %%
best_lambda = {}
for error in (0.0, 1.0):
    study = gae_study(walk, critic_with_error(walk, error), lambdas, episodes=200)
    best = best_lambda[error] = study.lambdas[int(np.argmin(study.mse))]
    if error == 0.0:  # a perfect critic: at lambda = 0 every TD error is the true advantage
        assert study.bias_sq[0] < 1e-12 and study.variance[0] < 1e-12
    print(f"critic error {error:.1f}: best lambda {best:.2f}; at lambda=0: bias^2 {study.bias_sq[0]:.5f}, "
          f"variance {study.variance[0]:.5f}; at lambda=1: bias^2 {study.bias_sq[-1]:.5f}, "
          f"variance {study.variance[-1]:.5f}")
assert best_lambda[1.0] > best_lambda[0.0]  # a worse critic moves the best lambda up

# %% [markdown]
# ### Exercise 3.2 — normalising advantages
#
# Policy-gradient methods usually standardise the advantages of a (mini)batch:
# $(\hat A - \mathrm{mean}) / \mathrm{std}$. It keeps the step size independent of the
# reward scale. One trap: a minibatch of a single element has no standard deviation.
# Write `normalize_advantages(advantages)` for a 1-D NumPy array; for one element,
# return it centred (that is, 0). Either the sample or the population std is accepted.
# A second trap: a minibatch whose advantages are all equal has std 0; add $10^{-8}$ to
# the std (as the library's `normalize` does), so that it gives zeros, not `nan`.

# %% nbgrader={"grade": false, "grade_id": "normalize_advantages", "locked": false, "schema_version": 3, "solution": true}
def normalize_advantages(advantages):
    ### BEGIN SOLUTION
    advantages = np.asarray(advantages, dtype=float)
    centred = advantages - advantages.mean()
    if len(advantages) < 2:
        return centred
    return centred / (advantages.std(ddof=1) + 1e-8)
    ### END SOLUTION


# %%
normalize_advantages = check_normalize_advantages(normalize_advantages)

# %% [markdown]
# ## Experiment: lambda in a real training run
#
# Now A2C with GAE on CartPole-v1, with 8 environments x 32 steps per update (long
# enough for $\lambda$ to matter), one seed per $\lambda$, 30 000 steps each. Each setting
# is trained once and kept: the first run of this cell trains all five (about 20 s,
# with a progress bar each); after that the slider only switches between stored runs.

# %%
env = gym.make("CartPole-v1")
LAMBDAS = [0.0, 0.5, 0.9, 0.95, 1.0]
lambda_runs = {}
SOLVED = gym.spec("CartPole-v1").reward_threshold  # CartPole-v1 is solved at 475 (195 is v0's)
assert SOLVED == 475


def train_with_lambda(lam):
    if lam not in lambda_runs:
        config = A2CConfig(gae_lambda=lam, rollout_steps=32, num_envs=8, lr=1e-3, normalize_advantages=True)
        algo = A2C(env.observation_space, env.action_space, config, seed=0)
        lambda_runs[lam] = train(algo, "CartPole-v1", 30_000, seed=0).history
    return lam


def draw_lambda_runs(lam, fig):
    ax, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    others = {f"lambda={k:g}": [h] for k, h in lambda_runs.items() if k != lam}
    for label, hs in others.items():
        h = hs[0]
        ax.plot(h.episode_steps, h.smoothed_returns(), color="lightgray", lw=1)
    learning_curves(ax, {f"lambda={lam:g}": [lambda_runs[lam]]}, threshold=SOLVED,
                    title="A2C + GAE on CartPole-v1 (others in gray)")
    keys = sorted(lambda_runs)
    finals = [np.mean(lambda_runs[k].episode_returns[-20:]) for k in keys]
    ax_bar.bar([f"{k:g}" for k in keys], finals, color=["tab:red" if k == lam else "tab:gray" for k in keys])
    ax_bar.set_xlabel("lambda")
    ax_bar.set_title("mean of the last 20 episodes")
    fig.tight_layout()


for lam in LAMBDAS:
    train_with_lambda(lam)
lambda_trainer = training_widget(train_with_lambda, LAMBDAS, value=0.95, name="lambda", draw=draw_lambda_runs,
                                 describe=lambda lam: f"<b>lambda = {lam:g}</b>: reached {SOLVED:g} at "
                                 f"{lambda_runs[lam].first_step_reaching(SOLVED) or 'never'} steps")
display(lambda_trainer)

# %% [markdown]
# One seed per setting is an anecdote, not a result: rerun with other seeds before you
# believe any ranking you see here. There is a structural reason to expect small
# $\lambda$ to struggle early, though. At first the critic knows nothing, and one-step TD
# errors inherit its ignorance (the random-walk study above measured that bias); the
# policy can lock into a poor habit before the critic has caught up. With $\lambda$ near 1
# the real rewards carry the signal until the critic is worth trusting.

# %% [markdown]
# ## What we learned
#
# - GAE is $\sum_l (\gamma\lambda)^l \delta_{t+l}$: an exponentially weighted average of
#   k-step advantages, computed backwards in one pass, cut at episode ends.
# - $\lambda = 0$ is the TD error, $\lambda = 1$ the Monte-Carlo advantage up to the
#   bootstrap at the end of a segment — checked to float32 precision on a real batch.
# - Small $\lambda$: low variance, bias from the critic; large $\lambda$: little bias (the
#   critic still enters where a segment is cut), high variance. We measured both against
#   exact advantages.
# - Normalising advantages must not divide by the std of a single element.
#
# **Next:** chapter 4 asks how *far* the policy may move on these advantages in one step.
#
# ## Further reading
#
# - J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, *High-dimensional
#   continuous control using generalized advantage estimation*, ICLR 2016.
# - R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed.,
#   chapter 12 (the lambda-return).
