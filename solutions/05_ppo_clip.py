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
# **Your time:** about 90 minutes to read, run, do the exercises and play with the widgets.
#
# **Learning objectives.** After this chapter you can:
#
# - Compute the probability ratio between the new and the old policy from log-probabilities.
# - Write the clipped surrogate objective and say where its gradient is zero, for positive and negative advantages.
# - Assemble PPO's full loss (clipped policy term, value loss, entropy bonus) and its epochs-of-minibatches loop.
# - Read PPO's diagnostics: approximate KL, clip fraction, explained variance.
# - Train PPO on CartPole-v1 for several clip ranges and see what removing the clipping does.
# - Write PPO's whole update yourself, check it against the library's on the same seed and batch, and train it on CartPole-v1.

# %%
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos import CARTPOLE_FAST_PRESET, CARTPOLE_PRESET, PPO, PPOConfig
from ppo_lib.teaching.checks import check_clipped_surrogate, check_ppo_update, check_probability_ratio
from ppo_lib.losses import approx_kl, normalize, value_loss
from ppo_lib.losses import clipped_surrogate as library_clipped_surrogate
from ppo_lib.teaching.plots import learning_curves
from ppo_lib.train import train
from ppo_lib.teaching.widgets import clip_widget, training_widget

torch.set_num_threads(1)
env = gym.make("CartPole-v1")

# %% [markdown]
# ## The ratio
#
# All the data of an update was collected by $\pi_{old}$. To evaluate a candidate
# $\pi_\theta$ on it, weight each sample by how much more (or less) likely $\pi_\theta$ makes
# the action that was taken:
#
# $$r_t(\theta) = \frac{\pi_\theta(a_t|s_t)}{\pi_{old}(a_t|s_t)}.$$
#
# At the start of an update $r_t = 1$ everywhere. The surrogate of chapter 4,
# $\hat{\mathbb E}[r_t \hat A_t]$, rewards pushing $r_t$ up where $\hat A_t > 0$ and down where
# $\hat A_t < 0$ — without limit. Optimise it for ten epochs and the policy runs away.

# %% [markdown]
# ### Exercise 5.1 — the probability ratio
#
# Write `probability_ratio(logp_new, logp_old)` for torch tensors of log-probabilities
# (any shape; the checker also differentiates through it).
#
# You are given *log*-probabilities, not probabilities, on purpose: a continuous policy's
# density, or the probability of a 20-token sentence, can be $10^{-40}$ or $10^{40}$, and a
# quotient of two such numbers overflows or divides by 0. Find the form that never
# leaves log space until the last operation. Only one of the two arguments should carry
# a gradient in PPO: which one, and does your function need to care?
#
# *Think before the next cell runs:* at the start of an update, $\theta = \theta_{old}$.
# What is every $r_t$, and what is $\nabla_\theta\, \hat{\mathbb E}[r_t \hat A_t]$ there, compared
# with the policy gradient of chapter 1?

# %% nbgrader={"grade": false, "grade_id": "probability_ratio", "locked": false, "schema_version": 3, "solution": true}
def probability_ratio(logp_new, logp_old):
    ### BEGIN SOLUTION
    return torch.exp(logp_new - logp_old)
    ### END SOLUTION


# %%
probability_ratio = check_probability_ratio(probability_ratio)

# %%
# Your answer, tested: at theta = theta_old the surrogate's gradient IS the policy gradient,
# because grad r = r * grad log pi and r = 1 there.
torch.manual_seed(0)
toy_policy = torch.nn.Linear(4, 2)
toy_obs, toy_adv = torch.randn(32, 4), torch.randn(32)
toy_actions = torch.randint(0, 2, (32,))
toy_logp = torch.distributions.Categorical(logits=toy_policy(toy_obs)).log_prob(toy_actions)
surrogate_grad = torch.autograd.grad((probability_ratio(toy_logp, toy_logp.detach()) * toy_adv).mean(),
                                     toy_policy.weight, retain_graph=True)[0]
pg_grad = torch.autograd.grad((toy_logp * toy_adv).mean(), toy_policy.weight)[0]
assert torch.allclose(surrogate_grad, pg_grad, atol=1e-6)
print("at theta_old: ratio == 1 everywhere, and the surrogate's gradient == the policy gradient "
      f"(largest difference {float((surrogate_grad - pg_grad).abs().max()):.1e})")

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
#
# All six cases in one table, computed below by the library's `clipped_surrogate` and
# autograd for one sample with $\epsilon = 0.2$ (so $1-\epsilon = 0.8$, $1+\epsilon = 1.2$):

# %%
six_cases = []
for where, r_value in (("r < 1-eps", 0.6), ("inside", 1.0), ("r > 1+eps", 1.5)):
    for a_value in (1.0, -1.0):
        r = torch.tensor([r_value], requires_grad=True)
        objective = library_clipped_surrogate(r, torch.tensor([a_value]), 0.2)
        (grad,) = torch.autograd.grad(objective, r)
        six_cases.append({"ratio": where, "advantage": "A > 0" if a_value > 0 else "A < 0",
                          "objective": f"{float(objective):+.2f}", "d objective / d r": f"{float(grad):+.1f}",
                          "what it does": ("no gradient: clipped" if float(grad) == 0
                                           else "pulls r back towards 1" if where != "inside"
                                           else "normal policy-gradient push")})
rows = ["| " + " | ".join(c.values()) + " |" for c in six_cases]
display(Markdown("\n".join(["| ratio | advantage | objective | d objective / d r | what it does |",
                             "|---|---|---|---|---|", *rows])))
zero_grad = {(c["ratio"], c["advantage"]) for c in six_cases if float(c["d objective / d r"]) == 0}
assert zero_grad == {("r < 1-eps", "A < 0"), ("r > 1+eps", "A > 0")}

# %% [markdown]
# Exactly two of the six cases have no gradient: a good action already made at least
# $1+\epsilon$ times likelier, and a bad action already made at most $1-\epsilon$ times as
# likely. In the other two cases outside the range the objective is the *unclipped*
# $r_t \hat A_t$ (the min picks it), so the gradient pulls the ratio back.

# %% [markdown]
# ### Exercise 5.2 — the clipped surrogate
#
# Write `clipped_surrogate(ratio, advantages, eps)`: torch tensors of shape `(B,)`,
# returning the scalar $L^{CLIP}$ (the objective, to be maximised: the mean over the
# batch). The checker also compares your gradient with respect to the ratio.

# %% nbgrader={"grade": false, "grade_id": "clipped_surrogate", "locked": false, "schema_version": 3, "solution": true}
def clipped_surrogate(ratio, advantages, eps):
    ### BEGIN SOLUTION
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps, 1.0 + eps) * advantages
    return torch.min(unclipped, clipped).mean()
    ### END SOLUTION


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
#    of samples with $|r - 1| > \epsilon$), and the **explained variance** of the critic,
#
#    $$\mathrm{EV} = 1 - \frac{\mathrm{Var}[\hat R - V]}{\mathrm{Var}[\hat R]},$$
#
#    the share of the value targets' variance that the critic's predictions account for:
#    1 is a perfect critic, 0 is no better than predicting the mean, negative is worse
#    than that. It should be computed with the values the critic predicted *during the
#    rollout*, before the update fits them to these very targets (as CleanRL and
#    Stable-Baselines3 do); computed after the update, on the training batch, it
#    measures the fit to data the critic has just been trained on, and is inflated.
#
# The whole data flow of one update:

# %%
fig, ax = plt.subplots(figsize=(11, 2.6))
ax.axis("off")
boxes = [(0.02, "rollout\n$\\pi_{old}$ acts in N envs\nfor T steps:\n$s, a, r$, done, $\\log\\pi_{old}$, $V_{old}$"),
         (0.24, "GAE (chapter 3)\n$\\hat A_t$, targets\n$\\hat R_t = \\hat A_t + V_{old}(s_t)$\ncomputed once"),
         (0.46, "K epochs x\nshuffled minibatches of M:\nratio, $L^{CLIP}$, value loss,\nentropy; one Adam step each\n(grad norm clipped)"),
         (0.70, "diagnostics\napprox. KL, clip fraction,\nexplained variance, entropy\n(optionally: stop the epochs\nonce KL > target)"),
         (0.90, "$\\pi_{new}$\nbecomes\n$\\pi_{old}$")]
for x, text in boxes:
    ax.text(x, 0.5, text, ha="left", va="center", fontsize=8.5, transform=ax.transAxes,
            bbox=dict(boxstyle="round,pad=0.5", fc="aliceblue", ec="tab:blue"))
for x0, x1 in ((0.185, 0.235), (0.405, 0.455), (0.655, 0.695), (0.865, 0.895)):
    ax.annotate("", xy=(x1, 0.5), xytext=(x0, 0.5), xycoords="axes fraction", arrowprops=dict(arrowstyle="->"))
ax.annotate("", xy=(0.06, 0.12), xytext=(0.93, 0.12), xycoords="axes fraction",
            arrowprops=dict(arrowstyle="->", connectionstyle="arc3,rad=-0.15", color="gray"))
ax.text(0.5, 0.0, "next update: collect fresh data with the new policy (the old batch is thrown away)",
        ha="center", transform=ax.transAxes, fontsize=8, color="gray")
ax.set_title("one PPO update: B = T x N samples, used K times in B / M minibatches per epoch")
plt.show()

# %% [markdown]
# Read it top to bottom in `ppo_lib/algos/ppo.py`. `PPOConfig`'s defaults do not all
# come from one place, and "the paper's defaults" would be wrong for several of them.
# Here is each with its true source, and the range in which tuned values usually land.
# The ranges are the course's design brief's summary of published configurations
# (the PPO paper's Tables 3-5, rl-baselines3-zoo, the searches of Andrychowicz et al.
# 2021); they are where to look first, not bounds.
#
# | knob | `PPOConfig` | where the default comes from | typical range |
# |---|---|---|---|
# | clip $\epsilon$ | 0.2 | PPO paper, section 6.1 (best in Table 1) | 0.1 - 0.3 |
# | discount $\gamma$ | 0.99 | PPO paper, Table 3 (MuJoCo) | 0.95 - 0.999 |
# | GAE $\lambda$ | 0.95 | PPO paper, Table 3 | 0.9 - 0.99 |
# | learning rate | 3e-4 | PPO paper, Table 3 (Adam) | 1e-5 - 5e-4 (CartPole's tuned 1e-3 is above it) |
# | horizon T (x N envs) | 2048 x 1 | PPO paper, Table 3 | 128 - 4096 per env |
# | epochs K | 10 | PPO paper, Table 3 | 3 - 30 |
# | minibatch M | 64 | PPO paper, Table 3 | 32 - 4096 |
# | value coefficient $c_1$ | 1.0 on $\tfrac12(V-\hat R)^2$ | ours; equals 0.5 on the unhalved $(V-\hat R)^2$. The paper's MuJoCo runs use separate networks (its $c_1$ then does not apply); on Atari it shares one and uses $c_1 = 1$ (Table 5) | 0.5 - 1 |
# | entropy coefficient $c_2$ | 0 | PPO paper, MuJoCo (no entropy bonus); Atari uses 0.01 | 0 - 0.01 |
# | gradient-norm clip | 0.5 | OpenAI baselines' `ppo2`, not the paper | 0.5 - 1 |
# | Adam $\epsilon$ | 1e-5 | OpenAI baselines' `ppo2` (PyTorch's default is 1e-8) | |
# | target KL (early stop) | off | off in the paper and in baselines; Spinning Up stops at 1.5 x 0.01 | 0.01 - 0.05 |
# | advantage normalisation | per minibatch | OpenAI baselines' `ppo2` (not in the paper) | |
#
# ("The paper's defaults" is a common shorthand for this mix, and a wrong one for
# several of its rows.) And the CartPole preset the experiments below use,
# rl-baselines3-zoo's tuned values:

# %%
print(PPOConfig())
print("CartPole preset (rl-baselines3-zoo's tuned values):", CARTPOLE_PRESET)

# %% [markdown]
# How much does each knob matter? `benchmarks/sensitivity.py` measured it on two tasks,
# CartPole-v1 (discrete actions, 30 000 steps) and Pendulum-v1 (continuous, 60 000 steps):
# starting from the task's preset, each knob of the table with a range (Adam's $\epsilon$
# and advantage normalisation are left to chapter 7's ablation) is set to three values
# around its typical range, the others staying at the preset, five seeds each. Where a
# preset's own value lies outside the table's range (CartPole's learning rate and
# $\lambda$, Pendulum's $\gamma$), so does part of its sweep. `rollout_steps` is the horizon
# per environment; "off" is no target KL or no gradient clipping; `value_coef` multiplies
# $\tfrac12(V-\hat R)^2$. The score is the mean training return (how fast it learns; on
# Pendulum it is negative and closer to 0 is better); the bars are 95% bootstrap
# intervals over the seeds, the gray line the preset's value.

# %%
import json  # noqa: E402

from ppo_lib.course import REPO_ROOT  # noqa: E402
from ppo_lib.stats import bootstrap_ci  # noqa: E402

sensitivity = json.loads((REPO_ROOT / "benchmarks" / "results" / "sensitivity.json").read_text())


def seed_ci(values):
    """95% bootstrap interval of the mean over seeds (chapter 7 derives it)."""
    return np.array(bootstrap_ci(values))


def knob_means(task, knob):
    """Mean training return over seeds, and its 95% interval, for each of the knob's values."""
    rows = []
    for v in task["sweeps"][knob]:
        scores = [r["mean_training_return"] for r in task["runs"] if r["knob"] == knob and r["value"] == v]
        rows.append((np.mean(scores), *seed_ci(scores)))
    return np.array(rows)


spread = {}  # task -> knob -> (range of the means across the knob's values, mean interval width)
for env_id, task in sensitivity["tasks"].items():
    assert task["complete"], f"{env_id}: the sweep in sensitivity.json did not finish"
    print(f"{env_id}, from sensitivity.json: `{task['command']}`, {task['date']}"
          + "".join(f"; {', '.join(a['knobs'])} added by `{a['command']}`" for a in task.get("added_by", [])))
    n_cols = (len(task["sweeps"]) + 1) // 2
    fig, axes = plt.subplots(2, n_cols, figsize=(2.6 * n_cols, 5.2), sharey=True)
    axes = axes.ravel()
    for ax in axes[len(task["sweeps"]):]:
        ax.set_visible(False)
    spread[env_id] = {}
    for ax, (knob, values) in zip(axes, task["sweeps"].items()):
        stats = knob_means(task, knob)
        xs = np.arange(len(values))
        ax.errorbar(xs, stats[:, 0], yerr=[stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]], marker="o", capsize=3)
        ax.set_xticks(xs, ["off" if v is None or v == 0 else f"{v:g}" for v in values])
        preset_value = getattr(PPOConfig(**task["preset"]), knob)  # the preset's, or PPOConfig's default
        if preset_value in values:
            ax.axvline(values.index(preset_value), color="gray", lw=1)
        ax.set_title(knob, fontsize="small")
        spread[env_id][knob] = (np.ptp(stats[:, 0]), np.mean(stats[:, 2] - stats[:, 1]))
    axes[0].set_ylabel("mean training return")
    axes[n_cols].set_ylabel("mean training return")
    fig.suptitle(f"PPO on {env_id}: one knob at a time (5 seeds, 95% intervals)", fontsize="small")
    plt.tight_layout()
    plt.show()
    print("  range of the mean score across each knob's three values (mean interval width): "
          + ", ".join(f"{k} {r:.0f} ({w:.0f})" for k, (r, w) in sorted(spread[env_id].items(), key=lambda kv: -kv[1][0])))

# %%
# the claims of the next paragraph, checked against the file
ranked = {env_id: sorted(s, key=lambda k: -s[k][0]) for env_id, s in spread.items()}
assert set(ranked) == {"CartPole-v1", "Pendulum-v1"}
for env_id, task in sensitivity["tasks"].items():
    assert {"epochs", "minibatch_size", "lr"} <= set(ranked[env_id][:4]), ranked[env_id]
    top = spread[env_id][ranked[env_id][0]]
    assert top[0] > top[1]  # the top knob moves the score by more than an interval is wide
    for knob in ("gae_lambda", "value_coef", "entropy_coef"):  # within noise: range below the interval width
        assert spread[env_id][knob][0] < spread[env_id][knob][1], (env_id, knob)
    means = {k: knob_means(task, k)[:, 0] for k in ("epochs", "minibatch_size", "target_kl", "rollout_steps")}
    best = {k: task["sweeps"][k][int(np.argmax(m))] for k, m in means.items()}
    worst_target_kl = task["sweeps"]["target_kl"][int(np.argmin(means["target_kl"]))]
    assert best["epochs"] == max(task["sweeps"]["epochs"])
    assert best["minibatch_size"] == min(task["sweeps"]["minibatch_size"])
    assert worst_target_kl == 0.01 and best["rollout_steps"] == task["preset"]["rollout_steps"]
pendulum_gamma = knob_means(sensitivity["tasks"]["Pendulum-v1"], "gamma")  # rows: gamma 0.9, 0.95, 0.99
assert np.argmin(pendulum_gamma[:, 0]) == 2 and pendulum_gamma[2, 2] < pendulum_gamma[0, 1]
for env_id, r in ranked.items():
    print(f"{env_id}, most to least: {', '.join(r)}")

# %% [markdown]
# The two tasks agree on the shape, not on the numbers. On both, the three knobs that set
# how hard each batch is optimised are among the four that matter most: the number of
# epochs, the minibatch size (the batch is fixed, so a smaller minibatch means more
# gradient steps per epoch) and the learning rate. Within these ranges more optimisation
# per batch learned faster: 20 epochs and minibatches of 64 scored best on both tasks,
# and an early stop at a target KL of 0.01, which cuts the epochs short, was the worst of
# its three values on both. Many passes over one batch are what the clip makes safe (the
# experiment below shows what happens without it); their price is compute. The horizon
# has a sweet spot: on both tasks the preset's own value beat a shorter and a longer one
# (in a fixed budget, a longer rollout means fewer updates). At the other end, GAE
# $\lambda$, $c_1$ and $c_2$ moved the mean score by less than the width of their own
# intervals on both tasks: within noise, at these budgets. Pendulum adds a lesson about
# the discount: its reward is dense (every step is charged for the angle, the speed and
# the torque), and $\gamma = 0.99$, the usual default, is by far the worst of its three
# values here, its interval clear of the preset's 0.9.
#
# Compare each range with the width of the intervals before believing it (the printout
# gives both). These are two small tasks, one budget each and one starting point: a knob
# that barely matters here can matter a lot elsewhere (Andrychowicz et al. 2021 found the
# learning rate among the most important choices on MuJoCo), which is why
# the ranges in the table are where to *start* a search, not answers.

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
no_clip_last = np.mean(eps_runs[0.0].episode_returns[-20:])
print(f"no clipping: mean of the last 20 episodes {no_clip_last:.0f}")
assert eps_runs[0.0].first_step_reaching(475) is None and eps_runs[0.2].first_step_reaching(475) is not None
assert no_clip_last > 100  # it still learns, far above a random policy's ~20

# %% [markdown]
# Without clipping, 20 epochs on the same batch push single updates to KL values far
# beyond anything the clipped runs take — the "runaway" the ratio allows. On CartPole
# the unclipped run still learns (the task is easy, and the learning rate anneals to
# zero), but it never reached 475 within the budget, while $\epsilon = 0.2$ did; the paper's Table 1 found the unclipped surrogate the *worst* of all variants on its
# MuJoCo benchmarks. Smaller $\epsilon$ means smaller, more frequently clipped steps.
#
# The clip range does not *guarantee* a KL bound the way TRPO's line search does —
# the ratio can still move outside $[1-\epsilon, 1+\epsilon]$, pushed by other samples sharing the
# same weights. That is why implementations also watch the approximate KL and can stop
# the epochs early (`PPOConfig(target_kl=...)`).
#
# ## Capstone: write the whole PPO update
#
# Until now the update has been prose and a pointer to `ppo.py`. Now you write it, all of
# it, and the checker runs your function and the library's `PPO.update` from the same
# weights, the same Adam state, the same rollout and the same random generator, and
# compares the parameters afterwards: they must be the same.
#
# ### Exercise 5.3 — `ppo_update(policy, optimizer, rollout, config, generator)`
#
# The inputs: `policy` is an `ActorCritic` (`policy.actor.distribution(obs)`,
# `policy.actor.log_prob(dist, actions)`, `policy.actor.entropy(dist)`,
# `policy.value(obs)`); `optimizer` is its Adam; `rollout` holds tensors of shape
# `(T, N, ...)` (`obs`, `actions`, `logprobs` $= \log\pi_{old}$, `values` $= V_{old}$, ...);
# `config` is a `PPOConfig`; `generator` is a `torch.Generator` for the shuffles. You may
# use the library's pieces you have already written yourself: `rollout_advantages`
# (chapters 2-3), `normalize` (3.2), `clipped_surrogate` (5.2, imported here as
# `library_clipped_surrogate`), `value_loss` and `approx_kl`. Return a dict of
# diagnostics.
#
# The steps, in the order the library takes them (the order matters for "the same
# parameters": every random draw and every Adam step must happen in the same sequence):
#
# 1. **Advantages and value targets, once**, for the whole rollout, with $\gamma$ and
#    $\lambda$ from the config (and truncations treated as terminations only if
#    `config.bootstrap_truncation` is False). Then flatten everything to $B = T N$ samples.
# 2. **`config.epochs` epochs.** Each epoch draws one permutation of the $B$ indices with
#    `torch.randperm(B, generator=generator)` and walks through it in minibatches of
#    `config.minibatch_size`, dropping an incomplete last one.
# 3. **Per minibatch:** the new log-probabilities and the ratio against the *stored*
#    old ones; the minibatch's advantages normalised if `config.normalize_advantages`;
#    the loss $-L^{CLIP} + c_1 L^{VF} - c_2\,\bar{\mathcal H}$ with `config.clip_eps`,
#    `config.value_coef` and `config.entropy_coef`; then zero the gradients, backpropagate,
#    clip the global gradient norm to `config.max_grad_norm` (0 means: no clipping) with
#    `torch.nn.utils.clip_grad_norm_`, and step.
# 4. **Early stopping:** after each epoch, if `config.target_kl` is set, estimate
#    $\mathrm{KL}(\pi_{old} \| \pi_\theta)$ with $k_3$ on the *whole* batch (no gradient); if it
#    exceeds the target (`k3 > config.target_kl`), stop the epochs.
# 5. **Diagnostics** of the whole update, returned as plain numbers (the training loop
#    stores each with `float()`) under these keys, at least: `"clip_fraction"` (the mean
#    over every minibatch step of the fraction of samples with $|r_t - 1| > \epsilon$),
#    `"approx_kl_k3"` (the $k_3$ KL on the whole batch at the end), `"epochs"` (the number
#    of epochs run, the one that triggered the early stop included) and
#    `"explained_variance"` computed the right way (with the rollout's values, see above).
#
# The checker runs your function and the library's on several configurations (every
# switch above, on and off), each from freshly built objects, records the gradients at
# every `optimizer.step()`, and compares the parameters afterwards and the four
# diagnostics. If something differs it says which part: the policy loss, the value
# loss, the gradient clipping, the number of steps (the minibatch loop, the epochs, the
# early stop) or a diagnostic; and, if your result matches a usual mistake, which one.

# %% nbgrader={"grade": false, "grade_id": "ppo_update", "locked": false, "schema_version": 3, "solution": true}
def ppo_update(policy, optimizer, rollout, config, generator):
    ### BEGIN SOLUTION
    actor = policy.actor
    advantages, targets = rollout_advantages(rollout, config.gamma, config.gae_lambda,
                                             truncation_as_termination=not config.bootstrap_truncation)
    obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    logp_old, values_old = rollout.logprobs.flatten(), rollout.values.flatten()
    advantages, targets = advantages.flatten(), targets.flatten()
    B, M = obs.shape[0], config.minibatch_size
    clip_fractions, epochs_run = [], 0
    for _ in range(config.epochs):
        perm = torch.randperm(B, generator=generator)
        for start in range(0, B - M + 1, M):
            mb = perm[start:start + M]
            dist = actor.distribution(obs[mb])
            ratio = torch.exp(actor.log_prob(dist, actions[mb]) - logp_old[mb])
            adv = normalize(advantages[mb]) if config.normalize_advantages else advantages[mb]
            loss = (-library_clipped_surrogate(ratio, adv, config.clip_eps)
                    + config.value_coef * value_loss(policy.value(obs[mb]), targets[mb])
                    - config.entropy_coef * actor.entropy(dist).mean())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm or float("inf"))
            optimizer.step()
            clip_fractions.append(((ratio - 1).abs() > config.clip_eps).float().mean().item())
        epochs_run += 1
        if config.target_kl is not None:
            with torch.no_grad():
                _, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
            if k3 > config.target_kl:
                break
    with torch.no_grad():
        _, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
    var_targets = targets.var().item()
    explained = float("nan") if var_targets == 0 else 1.0 - (targets - values_old).var().item() / var_targets
    return {"clip_fraction": float(np.mean(clip_fractions)), "approx_kl_k3": k3, "epochs": float(epochs_run),
            "explained_variance": explained}
    ### END SOLUTION


# %%
ppo_update = check_ppo_update(ppo_update)

# %% [markdown]
# Now train with *your* update: a `PPO` whose `update` calls your function (everything
# else, the rollouts, the learning-rate annealing, the logging, stays the library's).
# The fast CartPole preset, 30 000 steps, two seeds, against the library's own update
# on the same seeds: with the same parameters after every update, the curves should
# coincide (up to floating-point noise, which chaos in the environment can amplify late
# in training).

# %%
class MyPPO(PPO):
    def update(self, rollout):
        info = ppo_update(self.policy, self.optimizer, rollout, self.config, self._generator)
        self.n_updates += 1
        return info


capstone_runs = {"your update": [], "library's update": []}
for seed in (0, 1):
    for name, cls in (("your update", MyPPO), ("library's update", PPO)):
        agent = cls(env.observation_space, env.action_space, PPOConfig(**CARTPOLE_FAST_PRESET), seed=seed)
        capstone_runs[name].append(train(agent, "CartPole-v1", 30_000, seed=seed, progress=False).history)
fig, ax = plt.subplots(figsize=(8, 3.2))
learning_curves(ax, capstone_runs, threshold=475, title="PPO on CartPole-v1: your update vs the library's")
plt.show()
for name, hs in capstone_runs.items():
    print(f"{name:17s} first reached 475 at {[h.first_step_reaching(475) for h in hs]} steps")
first_updates = [np.allclose(a.diagnostics["approx_kl_k3"][:5], b.diagnostics["approx_kl_k3"][:5], rtol=1e-3, atol=1e-7)
                 for a, b in zip(capstone_runs["your update"], capstone_runs["library's update"])]
assert all(first_updates), "the first updates of your run and the library's should measure the same KL"

# %% [markdown]
# ## What we learned
#
# - $r_t = \exp(\log\pi_\theta - \log\pi_{old})$ reweights old data for the new policy.
# - $L^{CLIP}$ takes the pessimistic minimum of the plain and the clipped surrogate: once
#   $r_t$ leaves $[1-\epsilon, 1+\epsilon]$ in the direction the advantage favours, the gradient is zero.
# - That makes several epochs of minibatch SGD on one batch safe enough — first-order
#   and simple. The PPO paper found it as good as or better than TRPO on its benchmarks,
#   but Engstrom et al. (2020) showed that much of that edge comes from code-level
#   details (value clipping, reward scaling, orthogonal initialisation, learning-rate
#   annealing...) that PPO's implementation had and TRPO's did not, rather than from
#   the clipped objective itself; they also found that clipping does not keep the ratio
#   inside $[1-\epsilon, 1+\epsilon]$. Chapter 7 measures those details.
#
# ## Further reading
#
# - J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov, *Proximal policy
#   optimization algorithms*, arXiv:1707.06347, 2017 (sections 3 and 5; Table 1).
# - J. Schulman, *Approximating KL divergence*, 2020 (the k1 and k3 estimators), blog note.
# - L. Engstrom, A. Ilyas, S. Santurkar, D. Tsipras, F. Janoos, L. Rudolph, A. Madry,
#   *Implementation matters in deep policy gradients: a case study on PPO and TRPO*,
#   ICLR 2020.
