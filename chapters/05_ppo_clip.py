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
# # Chapter 5 — PPO-Clip
#
# TRPO keeps each update inside a KL ball with second-order machinery. PPO gets most of
# the benefit with a first-order trick: it changes the *objective* so that moving the
# probability ratio far from 1 stops paying off. Then it can safely reuse each batch for
# several epochs of ordinary minibatch SGD.
#
# **Learning objectives.** After this chapter you can:
#
# - Compute the probability ratio between the new and the old policy from log-probabilities.
# - Write the clipped surrogate objective and say where its gradient is zero, for positive and negative advantages.
# - Assemble PPO's full loss (clipped policy term, value loss, entropy bonus) and its epochs-of-minibatches loop.
# - Read PPO's diagnostics: approximate KL, clip fraction, explained variance.
# - Train PPO on CartPole-v1 for several clip ranges and see what removing the clipping does.

# %%
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from ppo_lib.algos import CARTPOLE_PRESET, PPO, PPOConfig
from ppo_lib.checks import check_clipped_surrogate, check_probability_ratio
from ppo_lib.losses import clipped_surrogate as library_clipped_surrogate
from ppo_lib.plots import learning_curves
from ppo_lib.train import train
from ppo_lib.widgets import clip_widget, training_widget

torch.set_num_threads(1)
env = gym.make("CartPole-v1")

# %% [markdown]
# ## The ratio
#
# All the data of an update was collected by $\pi_{old}$. To evaluate a candidate
# $\pi_\theta$ on it, weight each sample by how much more (or less) likely $\pi_\theta$ makes
# the action that was taken:
#
# $$r_t(\theta) = \frac{\pi_\theta(a_t|s_t)}{\pi_{old}(a_t|s_t)} = \exp\big(\log\pi_\theta(a_t|s_t) - \log\pi_{old}(a_t|s_t)\big).$$
#
# At the start of an update $r_t = 1$ everywhere. The surrogate of chapter 4,
# $\hat{\mathbb E}[r_t \hat A_t]$, rewards pushing $r_t$ up where $\hat A_t > 0$ and down where
# $\hat A_t < 0$ — without limit. Optimise it for ten epochs and the policy runs away.

# %% [markdown]
# ### Exercise 5.1 — the probability ratio
#
# Write `probability_ratio(logp_new, logp_old)` for torch tensors of log-probabilities.
# Work in log space: it is numerically safe where probabilities are tiny.

# %% nbgrader={"grade": false, "grade_id": "probability_ratio", "locked": false, "schema_version": 3, "solution": true}
def probability_ratio(logp_new, logp_old):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
probability_ratio = check_probability_ratio(probability_ratio)

# %% [markdown]
# ## The clipped objective
#
# $$L^{CLIP}(\theta) = \hat{\mathbb E}_t\Big[\min\big(r_t \hat A_t,\ \mathrm{clip}(r_t, 1-\epsilon, 1+\epsilon)\,\hat A_t\big)\Big], \qquad \epsilon = 0.2 .$$
#
# Read it case by case. If $\hat A_t > 0$ (a good action), raising its probability helps
# until $r_t = 1+\epsilon$; beyond, the clipped term is smaller, the min picks it, and it is
# constant: no more gradient, no incentive to go further. If $\hat A_t < 0$, lowering the
# probability helps until $r_t = 1-\epsilon$, and no further. The min also makes the
# objective *pessimistic*: if an earlier minibatch already moved $r_t$ the wrong way
# (say $r_t < 1-\epsilon$ for a good action), the unclipped term is the smaller one and its
# gradient pulls $r_t$ back. Clipping only ever removes incentives to move away.

# %% [markdown]
# ### Exercise 5.2 — the clipped surrogate
#
# Write `clipped_surrogate(ratio, advantages, eps)`: torch tensors of shape `(B,)`,
# returning the scalar $L^{CLIP}$ (the objective, to be maximised: the mean over the
# batch). The checker also compares your gradient with respect to the ratio.

# %% nbgrader={"grade": false, "grade_id": "clipped_surrogate", "locked": false, "schema_version": 3, "solution": true}
def clipped_surrogate(ratio, advantages, eps):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
clipped_surrogate = check_clipped_surrogate(clipped_surrogate)

# %% [markdown]
# ## Experiment: the shape of $L^{CLIP}$
#
# For a single sample with $A = +1$ (left) and $A = -1$ (right): $L^{CLIP}$ against the ratio,
# the unclipped $rA$ dashed, and the regions where the gradient is exactly zero shaded.
# The curves are computed by the library's `clipped_surrogate` and their gradients by
# autograd — the shading is measured, not drawn by hand.
#
# **Predict first:** as you increase $\epsilon$, where do the flat regions start? What does
# $\epsilon \to 0$ do to the update?

# %%
clip_explorer = clip_widget(eps=0.2)
display(clip_explorer)

# %% [markdown]
# And your function agrees with the library's on random data (ratios spread around 1):

# %%
g = torch.Generator().manual_seed(0)
ratio = torch.exp(0.3 * torch.randn(1000, generator=g, dtype=torch.float64))
adv = torch.randn(1000, generator=g, dtype=torch.float64)
assert torch.allclose(clipped_surrogate(ratio, adv, 0.2), library_clipped_surrogate(ratio, adv, 0.2))
print(f"L_CLIP on 1000 random samples: {float(clipped_surrogate(ratio, adv, 0.2)):.5f} (yours) == library")

# %% [markdown]
# ## The whole algorithm
#
# PPO's loss adds the critic and an optional entropy bonus:
#
# $$L(\theta) = -L^{CLIP}(\theta) + c_1\,\hat{\mathbb E}\big[\tfrac12(V_\theta(s_t) - \hat R_t)^2\big] - c_2\,\hat{\mathbb E}\big[\mathcal H[\pi_\theta(\cdot|s_t)]\big]$$
#
# and each update runs, on one rollout of $T \times N$ steps:
#
# 1. GAE advantages and value targets, computed once (chapter 3);
# 2. `epochs` passes over the batch, each in shuffled minibatches: recompute the
#    log-probs, the ratio against the *stored* $\log\pi_{old}$, normalise the minibatch's
#    advantages, one Adam step on $L$ with the global gradient norm clipped to 0.5;
# 3. diagnostics: the approximate KL between old and new policy (two estimators: $k_1 =
#    \hat{\mathbb E}[\log\pi_{old} - \log\pi_\theta]$, unbiased but can be negative, and $k_3 =
#    \hat{\mathbb E}[(r-1) - \log r]$, unbiased and never negative), the **clip fraction** (share
#    of samples with $|r - 1| > \epsilon$), and the explained variance of the critic.
#
# Read it top to bottom in `ppo_lib/algos/ppo.py`; the paper's defaults are in `PPOConfig`:

# %%
print(PPOConfig())
print("CartPole preset (rl-baselines3-zoo's tuned values):", CARTPOLE_PRESET)

# %% [markdown]
# ## Experiment: the clip range in a real run
#
# PPO on CartPole-v1 with the CartPole preset (8 envs x 32 steps, 20 epochs; the clip
# range starts at $\epsilon$ and is annealed to 0 together with the learning rate), for
# $\epsilon \in \{0.1, 0.2, 0.3\}$ and with **no clipping** at all (the plain surrogate,
# optimised for the same 20 epochs). Each setting trains once —
# 40 000 steps, about 8 s each, with a progress bar — and is kept, so the slider is instant.
#
# **Predict first:** which curve will show the largest KL per update?

# %%
EPS_OPTIONS = [("0.1", 0.1), ("0.2", 0.2), ("0.3", 0.3), ("no clipping", 0.0)]
eps_runs = {}


def train_with_eps(eps):
    if eps not in eps_runs:
        config = PPOConfig(variant="clip" if eps > 0 else "none", clip_eps=eps if eps > 0 else 0.2,
                           **CARTPOLE_PRESET)
        eps_runs[eps] = train(PPO(env.observation_space, env.action_space, config, seed=0), "CartPole-v1",
                              40_000, seed=0).history
    return eps


def label(eps):
    return "no clipping" if eps == 0 else f"eps = {eps:g}"


def draw_eps(eps, fig):
    ax, ax_kl, ax_cf = fig.subplots(1, 3)
    for other, h in eps_runs.items():
        if other != eps:
            ax.plot(h.episode_steps, h.smoothed_returns(), color="lightgray", lw=1)
    h = eps_runs[eps]
    ax.plot(h.episode_steps, h.smoothed_returns(), color="tab:blue", lw=2)
    ax.axhline(475, color="gray", ls=":")
    ax.set_title(f"return, {label(eps)} (others gray)")
    ax.set_xlabel("environment steps")
    for other, hh in eps_runs.items():
        ax_kl.plot(hh.update_steps, hh.diagnostics["kl"], lw=2 if other == eps else 0.6,
                   color="tab:red" if other == eps else "lightgray")
    ax_kl.set_yscale("log")
    ax_kl.set_title("KL(old || new) per update")
    ax_kl.set_xlabel("environment steps")
    ax_cf.plot(h.update_steps, h.diagnostics["clip_fraction"], color="tab:green")
    ax_cf.set_ylim(0, max(0.5, max(h.diagnostics["clip_fraction"])))
    ax_cf.set_title("share of samples with |r - 1| > eps (eps annealed from 0.2)" if eps == 0
                    else "clip fraction (eps annealed)", fontsize="small")
    ax_cf.set_xlabel("environment steps")
    fig.tight_layout()


def describe_eps(eps):
    h = eps_runs[eps]
    reached = h.first_step_reaching(475)
    return (f"<b>{label(eps)}</b>: 475 reached at {reached or 'never'} steps; largest KL of an update "
            f"{max(h.diagnostics['kl']):.3f}; mean clip fraction {np.mean(h.diagnostics['clip_fraction']):.2f}")


for _, eps in EPS_OPTIONS:
    train_with_eps(eps)
eps_explorer = training_widget(train_with_eps, EPS_OPTIONS, value=0.2, name="clip range", draw=draw_eps,
                               describe=describe_eps, figsize=(12.0, 3.4))
display(eps_explorer)

# %%
print(f"{'setting':12s} {'475 at':>8s} {'max KL':>8s} {'median KL':>10s}")
for _, eps in EPS_OPTIONS:
    h = eps_runs[eps]
    print(f"{label(eps):12s} {str(h.first_step_reaching(475)):>8s} {max(h.diagnostics['kl']):8.3f} "
          f"{np.median(h.diagnostics['kl']):10.4f}")
assert max(eps_runs[0.0].diagnostics["kl"]) > 5 * max(eps_runs[0.2].diagnostics["kl"])

# %% [markdown]
# Without clipping, 20 epochs on the same batch push single updates to KL values far
# beyond anything the clipped runs take — the "runaway" the ratio allows. On CartPole
# the damage is limited (the task is easy, and the learning rate anneals to zero), but
# the paper's Table 1 found the unclipped surrogate the *worst* of all variants on its
# MuJoCo benchmarks. Smaller $\epsilon$ means smaller, more frequently clipped steps.
#
# The clip range does not *guarantee* a KL bound the way TRPO's line search does —
# the ratio can still move outside $[1-\epsilon, 1+\epsilon]$, pushed by other samples sharing the
# same weights. That is why implementations also watch the approximate KL and can stop
# the epochs early (`PPOConfig(target_kl=...)`).
#
# ## What we learned
#
# - $r_t = \exp(\log\pi_\theta - \log\pi_{old})$ reweights old data for the new policy.
# - $L^{CLIP}$ takes the pessimistic minimum of the plain and the clipped surrogate: once
#   $r_t$ leaves $[1-\epsilon, 1+\epsilon]$ in the direction the advantage favours, the gradient is zero.
# - That makes several epochs of minibatch SGD on one batch safe enough — first-order,
#   simple, and as good as TRPO in practice.
#
# ## Further reading
#
# - J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov, *Proximal policy
#   optimization algorithms*, arXiv:1707.06347, 2017 (sections 3 and 5; Table 1).
# - J. Schulman, *Approximating KL divergence*, 2020 (the k1 and k3 estimators), blog note.
