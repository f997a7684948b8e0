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
# # Chapter 7 — The implementation details that matter
#
# The PPO paper's pseudocode fits in ten lines; working implementations carry a dozen
# choices the paper mentions in passing or not at all. Engstrom et al. (2020) showed that
# much of PPO's advantage over TRPO in benchmarks came from such "code-level
# optimisations", and Huang et al. (2022) catalogued 37 of them. This chapter names the
# ones in `ppo_lib`, shows where each lives, and *measures* what switching each off costs.
#
# **Your time:** about 90 minutes to read, run, do the exercises and play with the widgets.
#
# **Learning objectives.** After this chapter you can:
#
# - Name PPO's main implementation details, say why each helps, and find each in the library code.
# - Implement a running mean and variance for observation normalisation, and the clipped value loss.
# - Read an ablation: which details matter on a discrete and on a continuous task, and how much.
# - Train PPO with a Gaussian policy on Pendulum-v1 and watch the trained agent.
# - Explain what makes PPO fast on a CPU: vectorised environments, batched inference, few Python steps.
# - Write the log-probability and entropy of a diagonal Gaussian policy, and say why the raw, not the clipped, action is stored.
# - Debug and evaluate PPO: healthy diagnostics, probe environments, several seeds with IQM and bootstrap intervals, a run against a reference band, and a bug hunt.

# %%
import json
import time

import gymnasium as gym
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from ppo_lib.algos import CARTPOLE_FAST_PRESET, PENDULUM_PRESET, PPO, PPOConfig
from ppo_lib.teaching.animation import animate_pendulum, run_episode
from ppo_lib.teaching.bug_hunt import BUGS, BuggyPPO, check_bug_guess
from ppo_lib.teaching.probes import PROBES, run_probe
from ppo_lib.teaching.checks import check_clipped_value_loss, check_gaussian_log_prob_entropy, check_running_mean_std
from ppo_lib.course import REPO_ROOT
from ppo_lib.normalization import RunningMeanStd
from ppo_lib.train import evaluate, train
from ppo_lib.teaching.widgets import LiveFigure

torch.set_num_threads(1)

# %% [markdown]
# ## The details, and where they live
#
# | detail | why it helps | where in `ppo_lib` | `PPOConfig` field (default) |
# |---|---|---|---|
# | observation normalisation | inputs of very different scales (Pendulum's angular velocity up to 8, its cos/sin within 1) make the first layer's job hard | `normalization.NormalizedVecEnv`, `RunningMeanStd` | `normalize_obs` (False) |
# | reward scaling | divides rewards by the running std of the *discounted return*, so value targets have a sane scale whatever the reward units | `normalization.NormalizedVecEnv.step` | `scale_rewards` (False) |
# | orthogonal initialisation | well-conditioned layers; the actor's last layer at gain 0.01 makes the first policy nearly uniform, so early data is diverse | `policies.mlp`, `policies.orthogonal_init` | `ortho_init` (True) |
# | learning-rate annealing | big steps early, small steps late: less noise once the policy is good | `algos.ppo.PPO.set_progress` | `anneal_lr` (False) |
# | value-function clipping | removes the gradient of samples whose prediction has already moved more than `clip_eps` from its old value towards the target (like $L^{CLIP}$, it does not stop the critic from moving further); `clip_eps` is in raw return units, so what it does depends on the reward scale | `losses.clipped_value_loss` | `clip_value` (False) |
# | advantage normalisation | per minibatch: the step size no longer depends on the reward scale; safe for one element | `losses.normalize` | `normalize_advantages` (True) |
# | global gradient clipping | one outlier minibatch cannot throw the weights far | `algos.base.Algorithm._step` | `max_grad_norm` (0.5) |
# | Adam epsilon 1e-5 | Adam's step is about $\mathrm{lr} \cdot \hat m / (\sqrt{\hat v} + \epsilon)$, bounded by roughly the learning rate whatever $\epsilon$ is; a larger $\epsilon$ only *shrinks* the steps of parameters whose gradients are as small as $\epsilon$, making Adam more like plain SGD there (OpenAI baselines' choice; the ablation measures it) | `algos.base.Algorithm.__init__` | `adam_eps` (1e-5) |
# | entropy bonus | keeps the policy exploring; rarely needed on these tasks | `algos.ppo.PPO.update` | `entropy_coef` (0.0) |
# | truncation bootstrapping | a time limit is not the end of the task: bootstrap from V(final obs) (chapter 2) | `advantages.bootstrap_values`, `rollout.collect_rollout` | `bootstrap_truncation` (True) |
# | separate actor and critic | the value loss cannot disturb the policy's features (and vice versa) | `policies.ActorCritic` | `shared_network` (False) |
#
# The defaults follow the paper where it says something and OpenAI's baselines where it
# does not (chapter 5's table gives the source of each); the observation and reward normalisation are off by default because the
# earlier chapters work on raw CartPole, and switched on for continuous control below.

# %% [markdown]
# ### Exercise 7.1 — a running mean and variance
#
# Observation normalisation needs the mean and variance of *every observation seen so
# far*, updated batch by batch without keeping the data. Given the old statistics
# (`mean` and `var` of shape `(obs_dim,)`, `count` a number) and a new `batch` of shape
# `(n, obs_dim)`, combine them:
#
# $$\delta = \bar x_{batch} - \mu,\quad N = c + n,\quad \mu' = \mu + \delta\,\frac{n}{N},\quad
# \sigma'^2 = \frac{c\,\sigma^2 + n\,\sigma^2_{batch} + \delta^2\,\frac{c\,n}{N}}{N}$$
#
# (population variances, `np.var`'s default). Return `(new_mean, new_var, new_count)`.

# %% nbgrader={"grade": false, "grade_id": "update_running_stats", "locked": false, "schema_version": 3, "solution": true}
def update_running_stats(mean, var, count, batch):
    ### BEGIN SOLUTION
    n = batch.shape[0]
    delta = batch.mean(axis=0) - mean
    total = count + n
    new_mean = mean + delta * n / total
    new_var = (var * count + batch.var(axis=0) * n + delta**2 * count * n / total) / total
    return new_mean, new_var, total
    ### END SOLUTION


# %%
update_running_stats = check_running_mean_std(update_running_stats)

# %% [markdown]
# Fed in chunks, the running statistics equal those of all the data at once — which is the
# whole point:

# %%
data = np.random.default_rng(0).normal([0.0, 5.0, -3.0], [1.0, 8.0, 0.1], size=(3000, 3))
mean, var, count = np.zeros(3), np.ones(3), 1e-12
for chunk in np.array_split(data, 30):
    mean, var, count = update_running_stats(mean, var, count, chunk)
print("running:", mean.round(4), var.round(4))
print("all    :", data.mean(0).round(4), data.var(0).round(4))
assert np.allclose(mean, data.mean(0)) and np.allclose(var, data.var(0))

# %% [markdown]
# ### Exercise 7.2 — the clipped value loss
#
# PPO2 in OpenAI's baselines also clips the critic (the PPO paper does not mention it).
# With $V_{clip} = V_{old} + \mathrm{clip}(V - V_{old}, -\epsilon, \epsilon)$, the loss takes the
# pessimistic (larger) of the two errors:
# $L^{VF} = \tfrac12\,\hat{\mathbb E}\big[\max\big((V - \hat R)^2,\ (V_{clip} - \hat R)^2\big)\big]$.
# Write `clipped_value_loss(values, old_values, targets, eps)` for torch tensors of shape `(B,)`.
#
# Despite its name, this does **not** keep the critic within $\epsilon$ of its old
# predictions. Like $L^{CLIP}$, it only switches off the gradient of a sample once its
# prediction has moved more than $\epsilon$ from $V_{old}$ *towards* the target (then the
# clipped error is the larger one, and it is constant); a prediction that moved away
# from the target keeps its gradient, and every sample can still be moved further by the
# gradients of the others, which share the weights. And $\epsilon$ here is the policy's
# clip range, a number meant for ratios, applied to values in **raw return units**:
# with returns in the hundreds (CartPole) or in the negative thousands (Pendulum),
# $\epsilon = 0.2$ stops a sample's learning almost as soon as it starts; with reward
# scaling, returns are of order 1-10 and the same $\epsilon$ means something else
# entirely. So its effect is tied to the reward scale; the ablation below separates the two.

# %% nbgrader={"grade": false, "grade_id": "clipped_value_loss", "locked": false, "schema_version": 3, "solution": true}
def clipped_value_loss(values, old_values, targets, eps):
    ### BEGIN SOLUTION
    clipped = old_values + torch.clamp(values - old_values, -eps, eps)
    return 0.5 * torch.max((values - targets) ** 2, (clipped - targets) ** 2).mean()
    ### END SOLUTION


# %%
clipped_value_loss = check_clipped_value_loss(clipped_value_loss)

# %%
# one sample: V_old = 0, target 10, eps = 0.2. Where is there a gradient?
for v_now, where in ((0.1, "moved 0.1 towards the target"), (0.5, "moved 0.5 towards the target"),
                     (-0.5, "moved 0.5 away from the target")):
    v = torch.tensor([v_now], requires_grad=True)
    (grad,) = torch.autograd.grad(clipped_value_loss(v, torch.tensor([0.0]), torch.tensor([10.0]), 0.2), v)
    print(f"V = {v_now:+.1f} ({where:30s}): dL/dV = {float(grad):+.2f}")
    assert (float(grad) == 0.0) == (v_now == 0.5)

# %% [markdown]
# ## A live ablation on CartPole
#
# The fast CartPole preset (8 vectorised envs x 64 steps, 8 epochs) as it is, and with
# one detail changed at a time; one seed, 30 000 steps each — about 10 s. **Predict
# first:** which change hurts most?

# %%
LIVE = {"fast preset as it is": {}, "no advantage normalisation": {"normalize_advantages": False},
        "no orthogonal init": {"ortho_init": False}, "truncation as termination": {"bootstrap_truncation": False},
        "shared actor/critic body": {"shared_network": True}}
env = gym.make("CartPole-v1")
live = {}
for name, overrides in LIVE.items():
    config = PPOConfig(**{**CARTPOLE_FAST_PRESET, **overrides})
    algo = PPO(env.observation_space, env.action_space, config, seed=0)
    h = train(algo, "CartPole-v1", 30_000, seed=0, progress=False).history
    live[name] = (h, float(np.mean(evaluate(algo.policy, "CartPole-v1", 10))))
    print(f"{name:28s} final evaluation {live[name][1]:6.1f}   mean training return {np.mean(h.episode_returns):6.1f}"
          f"   ({h.wall_time:.1f} s)")

fig, ax = plt.subplots(figsize=(8, 3.4))
for name, (h, _) in live.items():
    ax.plot(h.episode_steps, h.smoothed_returns(), label=name, lw=2.5 if name == "fast preset as it is" else 1)
ax.set_xlabel("environment steps")
ax.set_ylabel("return (mean of last 20)")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# One seed decides nothing. The full ablation — every detail, both tasks, five seeds —
# takes far longer than a chapter may, so it is run by a benchmark script and its
# results are kept in a file with the command, the date and the machine. To regenerate it:
#
# ```bash
# .venv/bin/python benchmarks/ablation.py --jobs 2
# ```
#
# Because value clipping's $\epsilon$ is in raw return units (above), "no reward scaling"
# alone would change two things at once. The row "no reward scaling, no value clipping"
# separates them: compare it with "no value-function clipping".
#
# **How to read it.** Each row's score is the mean over seeds of a deterministic
# 10-episode evaluation at the end of training. With five seeds a mean is fragile, so
# next to it: the **interquartile mean** (IQM, the mean of the middle 50% of the runs,
# robust to one lucky or unlucky seed; Agarwal et al. 2021 recommend it for few-run
# RL results), a 95% **bootstrap confidence interval** of the mean (resample the five
# seeds with replacement 10 000 times; the 2.5% and 97.5% quantiles of the resampled
# means), and the **paired difference** from "all details on" (same seeds, so the seed's
# own luck partly cancels), with its own bootstrap interval. Only a difference whose
# interval excludes 0 is called better or worse; everything else is "within noise".

# %%
def bootstrap_ci(values, statistic=np.mean, n_resamples=10_000, level=0.95, seed=0):
    """Percentile bootstrap interval of ``statistic`` over the runs in ``values``."""
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_resamples, len(x)))
    stats = np.array([statistic(x[i]) for i in idx]) if statistic is not np.mean else x[idx].mean(axis=1)
    return tuple(np.quantile(stats, [(1 - level) / 2, (1 + level) / 2]))


def iqm(values):
    """Interquartile mean: drop the lowest and highest quarter of the runs, average the rest."""
    x = np.sort(np.asarray(values, dtype=float))
    cut = int(0.25 * len(x))
    return float(x[cut:len(x) - cut].mean())


# the library holds the same two (ppo_lib.stats: chapter 5 and the benchmarks use it): they agree
from ppo_lib import stats  # noqa: E402

_runs = [212.0, 480.5, 35.0, 500.0, 311.25, 98.0, 402.0]
assert bootstrap_ci(_runs) == stats.bootstrap_ci(_runs) and iqm(_runs) == stats.iqm(_runs)
assert bootstrap_ci(_runs, np.median, n_resamples=500) == stats.bootstrap_ci(_runs, np.median, n_resamples=500)

results_path = REPO_ROOT / "benchmarks" / "results" / "ablation.json"
if not results_path.exists():
    raise FileNotFoundError(f"{results_path} is missing: run `.venv/bin/python benchmarks/ablation.py` to make it")
ablation = json.loads(results_path.read_text())
print(f"from {results_path.name}: `{ablation['command']}`, {ablation['date']}, {ablation['machine']['platform']}"
      + ("" if ablation.get("complete", True) else "\n(incomplete: " + ablation.get("note", "some rows were not run")
                                                    + ")"))
verdicts = {}
for env_id, rows in ablation["results"].items():
    base = np.array([r["final_eval"] for r in rows["all details on"]["runs"]])
    print(f"\n{env_id} (budget {ablation['budgets'][env_id]:,} steps, seeds "
          f"{[r['seed'] for r in rows['all details on']['runs']]})")
    print(f"  {'configuration':40s} {'mean':>7s} {'95% CI':>16s} {'IQM':>7s}   {'paired diff. [95% CI]':>24s}  verdict")
    for name, row in rows.items():
        x = np.array([r["final_eval"] for r in row["runs"]])
        lo, hi = bootstrap_ci(x)
        line = f"  {name:40s} {x.mean():7.1f} [{lo:6.1f}, {hi:6.1f}] {iqm(x):7.1f}"
        if name != "all details on":
            diff = x - base
            dlo, dhi = bootstrap_ci(diff)
            verdict = "better" if dlo > 0 else "worse" if dhi < 0 else "within noise"
            verdicts[env_id, name] = (float(diff.mean()), float(dlo), float(dhi), verdict)
            line += f"   {diff.mean():+7.1f} [{dlo:+7.1f}, {dhi:+7.1f}]  {verdict}"
        print(line)

# %%
def verdict_summary(env_id):
    mine = {name: v for (e, name), v in verdicts.items() if e == env_id}
    return {kind: [name for name, v in mine.items() if v[3] == kind] for kind in ("better", "worse", "within noise")}


for env_id in ablation["results"]:
    summary = verdict_summary(env_id)
    print(f"{env_id}: {len(summary['within noise'])} of {sum(map(len, summary.values()))} changes within noise; "
          f"better: {summary['better'] or 'none'}; worse: {summary['worse'] or 'none'}")

# %%
# the claims of the next paragraphs, checked against the file
cp, pe = "CartPole-v1", "Pendulum-v1"
assert verdict_summary(cp)["worse"] == ["Adam epsilon 1e-8 instead of 1e-5"]
assert verdict_summary(cp)["better"] == ["no observation normalisation"]
assert verdicts[cp, "no observation normalisation"][1] < 5  # "barely": the interval's lower end is near 0
assert verdicts[pe, "no reward scaling"][3] == "worse" and verdicts[pe, "no reward scaling"][0] < -500
assert verdicts[pe, "no reward scaling, no value clipping"][3] == "within noise"
assert all(verdicts[e, "no value-function clipping"][3] == "within noise" for e in (cp, pe))
small_worse = ["no global gradient clipping", "Adam epsilon 1e-8 instead of 1e-5"]
assert sorted(verdict_summary(pe)["worse"]) == sorted(["no reward scaling", *small_worse])
assert all(-60 < verdicts[pe, name][0] < 0 and verdicts[pe, name][2] > -15 for name in small_worse)  # small, edge near 0
assert verdict_summary(pe)["better"] == []
spread = [r["final_eval"] for r in ablation["results"][cp]["all details on"]["runs"]]
print(f"CartPole, all details on, five seeds: final evaluations from {min(spread):.0f} to {max(spread):.0f}")
print(f"Pendulum: no reward scaling {verdicts[pe, 'no reward scaling'][0]:+.0f}; no reward scaling and no value "
      f"clipping {verdicts[pe, 'no reward scaling, no value clipping'][0]:+.0f} (paired mean differences)")

# Pendulum, seed by seed: the paired differences of each row from "all details on"
pend_rows = ablation["results"][pe]
pend_base = np.array([r["final_eval"] for r in pend_rows["all details on"]["runs"]])
pend_diff = {name: np.array([r["final_eval"] for r in row["runs"]]) - pend_base
             for name, row in pend_rows.items() if name != "all details on"}
worst_seed = int(np.argmin(pend_base))
print(f"\nPendulum, all details on, by seed: {pend_base.round(0)}; the worst is seed "
      f"{pend_rows['all details on']['runs'][worst_seed]['seed']}")
print(f"  {'change':40s} {'mean diff.':>10s} {'without that seed':>18s}")
for name, diff in pend_diff.items():
    print(f"  {name:40s} {diff.mean():+10.1f} {np.delete(diff, worst_seed).mean():+18.1f}")
assert all((pend_diff[n] >= 0).any() for n in small_worse)  # neither is worse on all five seeds
lifted = [name for name, diff in pend_diff.items() if diff.mean() > 50]
assert len(lifted) >= 4 and all(abs(np.delete(pend_diff[n], worst_seed).mean()) < 40 for n in lifted)
truncation = pend_diff["truncation treated as termination"]
assert (truncation < 0).sum() == 4 and truncation[worst_seed] > 0 and np.delete(truncation, worst_seed).max() < -90
pendulum_means = sorted((v[0], name) for (e, name), v in verdicts.items() if e == pe)
assert pendulum_means[1][1] == "truncation treated as termination"
assert verdicts[pe, "truncation treated as termination"][3] == "within noise"

# %% [markdown]
# **What the data say.**
#
# - *The seeds disagree more than most details do.* On CartPole, the "all details on"
#   configuration alone ends anywhere between the two numbers printed above over its
#   five seeds. Of the twelve changes, ten are within noise. Only two have a paired
#   interval that excludes 0: Adam's epsilon at $10^{-8}$ is **worse** (with this preset's
#   large learning rate), and removing observation normalisation is **better**, but only
#   barely (the interval's lower end is close to 0). Whatever ranking the other point
#   estimates suggest is not a finding at five seeds.
# - *On Pendulum, one bad seed moves half the table.* Several changes show a mean gain of
#   more than 50 over "all details on", and none of them is called better. The seed-by-seed
#   printout says why: "all details on" failed to swing up on one seed (its worst run
#   above), the changed runs on that seed did not, and without that seed each of those
#   gains is within a few tens of return. Same seed does not mean same luck: changing any
#   detail changes every random draw after it, so a paired difference removes only part of
#   the seed's effect.
# - *Small "worse" verdicts.* On Pendulum, removing global gradient clipping and Adam's
#   epsilon at $10^{-8}$ come out **worse**, by a few tens of return, with intervals that end
#   just below 0. Treat them as hints to rerun with more seeds, not findings: a percentile
#   bootstrap over five seeds is too narrow (it can only reshuffle the five values it has),
#   and neither row is worse on all five seeds.
# - *Truncation treated as termination* has the worst mean on Pendulum after "no reward
#   scaling", and four of the five seeds are worse by 90 or more; its interval still
#   includes 0 because on the one remaining seed the baseline itself failed. Pendulum never
#   terminates, every episode is cut at 200 steps, so this change tells the critic that the
#   pendulum's future is worth nothing at every cut: the bias chapter 2 showed on an endless task.
# - *Value clipping and the reward scale.* On Pendulum, removing reward scaling alone is a
#   disaster, while removing it *together with value clipping* is within noise of "all
#   on". With raw rewards, Pendulum's returns are of order $-1000$, and value clipping's
#   $\epsilon = 0.2$, in raw return units, switches off the critic's gradient almost at
#   once. So the "no reward scaling" row measures value clipping's interaction with the
#   reward scale, not what reward scaling is worth by itself. With reward scaling on,
#   removing value clipping is within noise on both tasks.
# - *Compared with Andrychowicz et al. (2021).* Training over 250 000 agents on five
#   MuJoCo tasks, they found observation normalisation among the most important choices,
#   and PPO-style value clipping no help and often harmful. Our small tasks do not show
#   the first: CartPole's observations are already of order 1, and the Pendulum preset
#   was tuned on raw observations. They agree with the second: value clipping never
#   helped here, and it caused the one large failure we measured, once the rewards were
#   not scaled. What transfers from both studies is the method. The details interact,
#   their effects depend on the task, and a small study needs intervals before it can
#   say anything.

# Pick a change to see its learning curves (mean over seeds) against the all-on baseline,
# on both tasks:

# %%
details = [name for name in next(iter(ablation["results"].values())) if name != "all details on"]


def ablation_curves(detail):
    out = {}
    for env_id, rows in ablation["results"].items():
        if detail in rows:  # an interrupted benchmark run may lack some rows of a task
            out[env_id] = {k: rows[k]["runs"] for k in ("all details on", detail)}
    return detail, out


def mean_curve(runs):
    grid = np.linspace(0, max(r["curve_steps"][-1] for r in runs), 100)
    return grid, np.mean([np.interp(grid, r["curve_steps"], r["curve"]) for r in runs], axis=0)


def draw_ablation(data, fig):
    detail, per_env = data
    axes = fig.subplots(1, len(per_env))
    for ax, (env_id, runs) in zip(np.atleast_1d(axes), per_env.items()):
        for name, color in (("all details on", "black"), (detail, "tab:red")):
            grid, y = mean_curve(runs[name])
            ax.plot(grid, y, color=color, label=name)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.legend(fontsize="x-small")
    fig.tight_layout()


picker = widgets.Dropdown(options=details, value=details[0], description="change",
                          layout=widgets.Layout(width="60%"))
ablation_explorer = LiveFigure({"detail": picker}, ablation_curves, draw_ablation, figsize=(10.0, 3.2))
display(ablation_explorer)

# %% [markdown]
# ## Continuous control: Pendulum
#
# The same PPO with the library's diagonal Gaussian policy (a learned,
# state-independent log-std; log-probabilities summed over action dimensions; the raw
# sample stored, only the copy sent to the environment clipped to $[-2, 2]$). Pendulum
# rewards are negative costs; a good swing-up and balance scores about $-200$ or better
# per episode (the threshold `benchmarks/ppo_speed.py` uses).
# Every episode is truncated at 200 steps, so truncation bootstrapping matters here. The
# preset (`PENDULUM_PRESET`: gamma 0.9, 4 envs x 512 steps, Adam 1e-3) trains on raw
# observations; the ablation above shows how the normalisation choices fare on this task.

# %% [markdown]
# ### Exercise 7.3 — a diagonal Gaussian policy
#
# For continuous actions the policy outputs a mean $\mu_\theta(s) \in \mathbb R^D$ and keeps a
# learned log-standard-deviation $\log\sigma \in \mathbb R^D$ (one per action dimension, not
# depending on the state). The $D$ action dimensions are sampled **independently**.
#
# Write `gaussian_log_prob_entropy(mean, log_std, actions)`: `mean` and `actions` of shape
# `(B, D)`, `log_std` of shape `(D,)`, all torch tensors. Return `(log_prob, entropy)`,
# each of shape `(B,)`: the log-density of each whole action vector, and the entropy of
# each state's action distribution. Work from the one-dimensional normal density
# $\mathcal N(a; \mu, \sigma^2) = \frac{1}{\sqrt{2\pi}\,\sigma}\exp\big(-\frac{(a-\mu)^2}{2\sigma^2}\big)$ and its
# entropy $\tfrac12\log(2\pi e \sigma^2)$: what does independence do to the densities of
# the $D$ dimensions, and so to their logs? Gradients must flow to `mean` and `log_std`
# (the entropy's too: the entropy bonus trains `log_std` through it), and the inputs stay
# as they were. The checker also runs what the next cell does: 10 000 float32 samples,
# ratios `torch.exp(logp_new - logp_old)`, so return torch tensors.
# (You may use `torch.distributions.Normal`, but then say to yourself which axis you
# reduce over, and why.)

# %% nbgrader={"grade": false, "grade_id": "gaussian_log_prob_entropy", "locked": false, "schema_version": 3, "solution": true}
def gaussian_log_prob_entropy(mean, log_std, actions):
    ### BEGIN SOLUTION
    std = log_std.exp()
    log_prob = (-((actions - mean) ** 2) / (2 * std**2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    entropy = (log_std + 0.5 * (1.0 + np.log(2 * np.pi))).sum(-1).expand(mean.shape[0])
    return log_prob, entropy
    ### END SOLUTION


# %%
gaussian_log_prob_entropy = check_gaussian_log_prob_entropy(gaussian_log_prob_entropy)

# %% [markdown]
# **Raw versus clipped actions.** Pendulum accepts torques in $[-2, 2]$, but a Gaussian
# sample can fall outside. The environment must get a clipped copy; the rollout must
# store the **raw** sample, because the ratio $\pi_\theta(a)/\pi_{old}(a)$ is only meaningful
# for the action the Gaussian actually drew. Store the clipped value instead, and every
# sample beyond the bound is scored as if it had been drawn exactly at the bound: a point
# of density that has nothing to do with how often it happens (all the mass beyond the
# bound lands there). Measured on a policy whose mean sits near the bound:

# %%
g_mean, g_log_std = torch.full((10_000, 1), 1.8), torch.tensor([np.log(0.5)])
raw = g_mean + g_log_std.exp() * torch.randn(10_000, 1, generator=torch.Generator().manual_seed(0))
clipped = raw.clamp(-2.0, 2.0)
logp_raw, _ = gaussian_log_prob_entropy(g_mean, g_log_std, raw)
logp_clipped, _ = gaussian_log_prob_entropy(g_mean, g_log_std, clipped)
shifted = g_mean + 0.1  # a slightly changed policy: the ratios an update would see
ratio_raw = torch.exp(gaussian_log_prob_entropy(shifted, g_log_std, raw)[0] - logp_raw)
ratio_clipped = torch.exp(gaussian_log_prob_entropy(shifted, g_log_std, clipped)[0] - logp_clipped)
share = float((raw.abs() > 2).float().mean())
print(f"{share:.0%} of the samples are clipped; mean ratio for a +0.1 shift of the mean: raw {ratio_raw.mean():.4f}, "
      f"clipped {ratio_clipped.mean():.4f} (importance weights average to 1 exactly when they are right)")
assert abs(float(ratio_raw.mean()) - 1) < 0.02 and abs(float(ratio_clipped.mean()) - 1) > 0.02

# %% [markdown]
# $\mathbb E_{a\sim\pi_{old}}[\pi_\theta(a)/\pi_{old}(a)] = 1$ for any $\pi_\theta$: the raw samples give
# that; the clipped ones do not, so every ratio-weighted estimate of the update is
# biased. The library's `GaussianActor` computes exactly your log-probability and
# entropy (a sum over dimensions), and its `env_actions` clips only the copy sent to the
# environment.

# %%
penv = gym.make("Pendulum-v1")
pendulum = PPO(penv.observation_space, penv.action_space, PPOConfig(**PENDULUM_PRESET), seed=0)
t0 = time.perf_counter()
pend = train(pendulum, "Pendulum-v1", 60_000, seed=0).history
scores = evaluate(pendulum.policy, "Pendulum-v1", 10)
print(f"trained {pend.total_steps} steps in {time.perf_counter() - t0:.0f} s; deterministic evaluation "
      f"{np.mean(scores):.0f} +- {np.std(scores):.0f} over 10 episodes")
assert np.mean(scores) > -400

# %%
episode = run_episode(penv, seed=7, max_steps=200, policy=lambda obs: pendulum.policy.env_actions(
    pendulum.policy.greedy(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)))[0])
print(f"greedy episode: return {episode.total_reward:.0f}")
animate_pendulum(episode.observations, every=2)

# %% [markdown]
# ## Debugging and evaluating PPO
#
# PPO fails quietly: a bug rarely crashes, it just learns a bit worse, and five seeds of
# a correct PPO already spread widely (the ablation above). Four tools separate "my bug"
# from "bad luck".
#
# ### 1. What healthy diagnostics look like
#
# One healthy run (the fast CartPole preset with an early stop at a target KL of 0.02,
# so that the next sections can compare against it), and its diagnostics per update.
# The explained variance here is computed the right way, from the rollout's own
# values (chapter 5).

# %%
HUNT = PPOConfig(**{**CARTPOLE_FAST_PRESET, "target_kl": 0.02, "epochs": 10})
healthy_agent = BuggyPPO(env.observation_space, env.action_space, HUNT, seed=0, bug="none")
healthy = train(healthy_agent, "CartPole-v1", 30_000, seed=0, progress=False).history


def diagnostics_panels(histories, title):
    fig, axes = plt.subplots(1, 5, figsize=(15, 2.8))
    for label, h in histories.items():
        axes[0].plot(h.episode_steps, h.smoothed_returns(), label=label)
        for ax, key in zip(axes[1:], ("approx_kl_k3", "clip_fraction", "explained_variance", "entropy")):
            ax.plot(h.update_steps, h.diagnostics[key], lw=1, label=label)
    axes[1].axhline(HUNT.target_kl, color="gray", ls=":", lw=1)
    axes[1].set_yscale("log")
    for ax, name in zip(axes, ("return (mean of 20)", "approx. KL (k3) per update", "clip fraction",
                               "explained variance", "entropy")):
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("env steps", fontsize="small")
    axes[0].legend(fontsize="x-small")
    fig.suptitle(title, fontsize="small")
    plt.tight_layout()
    plt.show()


diagnostics_panels({"healthy": healthy}, "a healthy PPO run on CartPole-v1")
d = healthy.diagnostics
late = slice(len(d["entropy"]) // 2, None)
print(f"median approx. KL {np.median(d['approx_kl_k3']):.4f}; median clip fraction {np.median(d['clip_fraction']):.3f}; "
      f"explained variance, second half: median {np.nanmedian(d['explained_variance'][late]):.2f}; "
      f"entropy from {d['entropy'][0]:.3f} (log 2 = {np.log(2):.3f}) to {d['entropy'][-1]:.3f}; "
      f"epochs per update: mean {np.mean(d['epochs']):.1f} of {HUNT.epochs}")
assert np.median(d["approx_kl_k3"]) < 0.05 and np.median(d["clip_fraction"]) < 0.3
assert d["entropy"][-1] < d["entropy"][0] and np.mean(d["epochs"]) < HUNT.epochs
assert np.nanmedian(d["explained_variance"][late]) > 0.3  # well above 0 (the prose below)

# %% [markdown]
# Healthy, as measured here: an approximate KL of the order of $10^{-2}$ per update, a
# clip fraction of a few percent to a few tens of percent, an explained variance well above
# 0 in the second half (the critic explains a good part of the returns' spread; how much
# varies from run to run and even from one CPU to another: this same seeded run ends near
# 0.4 on one of our machines and above 0.9 on another), and an entropy that starts near $\log 2$ (a
# coin flip between two actions) and falls slowly as the policy becomes confident. The
# unhealthy shapes, and what each usually means:
#
# | you see | it usually means |
# |---|---|
# | KL of 0.1 or more per update, clip fraction above ~0.3 | steps too large: lower the learning rate or the epochs, or set a target KL |
# | KL ~0 and clip fraction ~0 throughout | the policy does not move: learning rate too small, advantages all ~0, or a detached loss |
# | explained variance stuck near 0 or negative | the critic is not learning: value loss off or mis-scaled, bad targets (e.g. bootstrapping bug) |
# | entropy collapses to ~0 early, return flat | premature determinism (too-large steps, a wrong-signed entropy term) |
# | entropy never falls, return flat | no learning signal reaches the policy (sign or masking bug) |
#
# ### 2. Probe environments
#
# Before a real task, run the agent on tiny tasks whose answer is known in closed form
# (`ppo_lib/probes.py`, also run as tests in `tests/test_probes_bug_hunt.py`): a constant
# reward (does the value loss work?), a reward equal to the observation (does the critic
# read $s$?), two steps with the reward at the end (does the bootstrap work? $V(0) = \gamma$),
# a reward for one action (does the policy loss have the right sign?), and a reward for
# matching the observation's sign (does the policy read $s$?). Each takes a second or two.
# The library's PPO, then the same with the critic switched off (`value_coef=0`):

# %%
def probe_ppo(value_coef=1.0):
    config = PPOConfig(num_envs=4, rollout_steps=64, minibatch_size=64, epochs=4, lr=3e-3, gamma=0.9,
                       gae_lambda=0.95, hidden=(16,), value_coef=value_coef)
    return lambda obs_space, act_space: PPO(obs_space, act_space, config)


probe_results = {name: run_probe(name, probe_ppo()) for name in PROBES}
for r in probe_results.values():
    print(r)
broken = run_probe("constant_reward", probe_ppo(value_coef=0.0))
print("critic switched off:", broken)
assert all(r.passed for r in probe_results.values()) and not broken.passed

# %% [markdown]
# ### 3. Evaluation: several seeds, robust statistics, and which policy
#
# Report at least five seeds, with an interval, as in the ablation above (IQM and
# bootstrap confidence intervals). Say which policy you evaluated: the **greedy** one
# (the most likely action; `evaluate(..., greedy=True)`, what the ablation uses) or the
# **stochastic** one that was trained (actions sampled). The two can differ, and the
# training curve shows the stochastic one. The healthy run's agent (section 1), both ways:

# %%
greedy_scores = evaluate(healthy_agent.policy, "CartPole-v1", 10, greedy=True)
sampled_scores = evaluate(healthy_agent.policy, "CartPole-v1", 10, greedy=False)
print(f"greedy: mean {np.mean(greedy_scores):.1f} (IQM {iqm(greedy_scores):.1f}); "
      f"sampled: mean {np.mean(sampled_scores):.1f} (IQM {iqm(sampled_scores):.1f}), over 10 episodes each")

# %% [markdown]
# ### 4. Is it my bug, or seed variance?
#
# Compare your run with a **band of reference runs** of the same configuration and
# budget over many seeds, precomputed: `benchmarks/reference_band.py` trained the
# ablation's "all details on" CartPole configuration on 20 seeds and kept each learning
# curve in `reference_band.json`. One run of the same configuration with a seed the
# reference did not use plays "your run" (replace it with yours).
#
# Read it with the band's size in mind. A band of $n$ reference runs is their min..max;
# a new run of the *same* code is a fresh draw from the same distribution, so at any
# point of training it falls outside that range with probability $2/(n+1)$ (one in
# three for $n = 5$, one in eleven for $n = 20$): stepping out of the band now and then
# is normal. What is not
# normal is a run *below* the band for most of training, or a summary (the mean
# training return) that ranks last against many reference runs.

# %%
band_file = json.loads((REPO_ROOT / "benchmarks" / "results" / "reference_band.json").read_text())
reference = band_file["runs"]
print(f"from reference_band.json: `{band_file['command']}`, {band_file['date']}: {len(reference)} seeds, "
      f"{band_file['budget']:,} steps each")
# the same configuration and budget as the ablation's "all details on", and the same runs on its seeds
assert band_file["config"] == {**CARTPOLE_FAST_PRESET, **ablation["all_on"]}
assert band_file["budget"] == ablation["budgets"]["CartPole-v1"]

def same_run(r):  # what a seeded run reproduces (its wall time aside)
    return r["seed"], r["final_eval"], r["mean_training_return"], tuple(r["curve"])


ablation_all_on = ablation["results"]["CartPole-v1"]["all details on"]["runs"]
assert {same_run(r) for r in ablation_all_on} <= {same_run(r) for r in reference}
band_grid = np.linspace(0, band_file["budget"], 100)
band = np.array([np.interp(band_grid, r["curve_steps"], r["curve"]) for r in reference])
mine_config = PPOConfig(**band_file["config"])
assert 123 not in [r["seed"] for r in reference]
mine = train(PPO(env.observation_space, env.action_space, mine_config, seed=123), "CartPole-v1",
             band_file["budget"], seed=123, progress=False).history
mine_curve = np.interp(band_grid, mine.episode_steps, mine.smoothed_returns())
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.fill_between(band_grid, band.min(0), band.max(0), color="gray", alpha=0.3,
                label=f"reference: min..max over {len(reference)} seeds")
ax.plot(band_grid, np.median(band, 0), color="gray", label="reference median")
ax.plot(band_grid, mine_curve, color="tab:red", label="your run (seed 123)")
ax.set_xlabel("environment steps")
ax.set_ylabel("return (mean of 20)")
ax.legend(fontsize="small")
plt.show()
inside = float(np.mean((mine_curve >= band.min(0) - 1e-9) & (mine_curve <= band.max(0) + 1e-9)))
below = float(np.mean(mine_curve < band.min(0) - 1e-9))
mine_auc = float(np.mean(mine.episode_returns))
reference_aucs = [r["mean_training_return"] for r in reference]
rank = 1 + sum(auc > mine_auc for auc in reference_aucs)
print(f"your run: inside the reference band for {inside:.0%} of the training steps, below it for {below:.0%}; "
      f"its mean training return {mine_auc:.1f} ranks {rank} of {len(reference) + 1} "
      f"(reference: from {min(reference_aucs):.1f} to {max(reference_aucs):.1f}, median {np.median(reference_aucs):.1f})")

# %% [markdown]
# ### 5. Bug hunt
#
# Below, the healthy run again, and a **mystery run**: the same configuration and seed,
# trained by `BuggyPPO` with one of these implementation bugs switched in (the library's one
# update, `ppo_lib.algos.ppo.ppo_update`, with the bug passed in as a wrong setting or a hook:
# see `ppo_lib/teaching/bug_hunt.py`; the mystery's name is stored encoded there, so read the
# curves, not the file):

# %%
for bug, what in BUGS.items():
    if bug != "none":
        print(f"- {bug!r}: {what}")
from ppo_lib.teaching.bug_hunt import MYSTERY as _mystery  # noqa: E402  (the run needs it; don't print it)

mystery = train(BuggyPPO(env.observation_space, env.action_space, HUNT, seed=0, bug=_mystery), "CartPole-v1", 30_000,
                seed=0, progress=False).history
diagnostics_panels({"healthy": healthy, "mystery": mystery}, "healthy vs mystery (same config, same seed)")
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.plot(healthy.update_steps, healthy.diagnostics["epochs"], label="healthy", lw=1)
ax.plot(mystery.update_steps, mystery.diagnostics["epochs"], label="mystery", lw=1)
ax.set_title("epochs run per update (target KL set)", fontsize="small")
ax.legend(fontsize="small")
plt.show()
early_stops = sum(e < HUNT.epochs for e in healthy.diagnostics["epochs"])
print(f"updates stopped early by the target KL: healthy {early_stops} of {len(healthy.update_steps)}, "
      f"mystery {sum(e < HUNT.epochs for e in mystery.diagnostics['epochs'])} of {len(mystery.update_steps)}")
print(f"largest KL of an update: healthy {max(healthy.diagnostics['approx_kl_k3']):.3f}, "
      f"mystery {max(mystery.diagnostics['approx_kl_k3']):.3f}; target {HUNT.target_kl}")
# the evidence the checker's answers rely on: the epoch count, not the size of the KL (the
# largest KL of the two runs compares one way on one CPU and the other way on another)
assert all(e == HUNT.epochs for e in mystery.diagnostics["epochs"]) and early_stops > 0
assert mystery.diagnostics["entropy"][-1] < mystery.diagnostics["entropy"][0] and HUNT.entropy_coef == 0

# %% [markdown]
# ### Exercise 7.4 — which bug?
#
# Read the panels: which diagnostic of the mystery run departs from the healthy run,
# and which bug in the list predicts exactly that departure (and nothing else that you
# don't see)? Make `bug_guess()` return its name, as printed above; the checker
# explains why a wrong guess does not fit the evidence.

# %% nbgrader={"grade": false, "grade_id": "bug_hunt", "locked": false, "schema_version": 3, "solution": true}
def bug_guess():
    ### BEGIN SOLUTION
    return "early stop on the wrong KL"
    ### END SOLUTION


# %%
try:
    my_guess = bug_guess()
except NotImplementedError:
    my_guess = None
found = check_bug_guess(my_guess)

# %% [markdown]
# ## Why this PPO is fast on a CPU
#
# Behind the sliders of earlier chapters, PPO trains in seconds. Three things make that so,
# none of them exotic:
#
# - **Vectorised environments.** `VecEnv("CartPole-v1", 8)` steps all 8 copies with a few
#   NumPy array operations (Gymnasium's vectorised CartPole, switched to same-step
#   autoreset), not 8 Python objects.
# - **Batched inference, little Python per step.** One forward pass acts for all copies;
#   the rollout writes into preallocated tensors; nothing is computed per environment.
# - **Fewer, larger gradient steps.** The fast preset takes 8 epochs of 2 minibatches of
#   256 per 512 env steps, with a large learning rate annealed to zero; on one core, the
#   update is the bottleneck, not the environment (measured by `benchmarks/ppo_speed.py`;
#   the cell below reads it).
#
# `benchmarks/ppo_speed.py` times it against Stable-Baselines3 with rl-zoo's tuned
# settings. One run here:

# %%
algo = PPO(env.observation_space, env.action_space, PPOConfig(**CARTPOLE_FAST_PRESET), seed=1)
h = train(algo, "CartPole-v1", 100_000, seed=1, progress=False, stop_at=475).history
reached = h.first_step_reaching(475)
print(f"the mean of the last 20 training episodes reached 475 after {reached:,} steps and {h.wall_time:.1f} s"
      if reached else f"475 not reached in {h.total_steps:,} steps ({h.wall_time:.1f} s)")
print(f"greedy evaluation: {np.mean(evaluate(algo.policy, 'CartPole-v1', 10)):.0f}")
assert reached is not None  # chapter 0's promise
speed = json.loads((REPO_ROOT / "benchmarks" / "results" / "ppo_speed.json").read_text())["throughput"][0]
collect_share = speed["ppo_iteration_steps_per_s"] / speed["rollout_steps_per_s"]
print(f"from ppo_speed.json ({speed['threads']} thread): collecting alone runs at {speed['rollout_steps_per_s']:,} "
      f"steps/s, whole PPO iterations at {speed['ppo_iteration_steps_per_s']:,}: the update takes "
      f"{1 - collect_share:.0%} of the time")
assert collect_share < 0.5  # "the update is the bottleneck"

# %% [markdown]
# ## What we learned
#
# - "PPO" is the clipped objective *plus* a set of details: normalisation of inputs,
#   rewards and advantages, initialisation, annealing, clipping of the value loss and of
#   gradients, Adam's epsilon, bootstrapping at time limits, network layout.
# - Their effects are task-dependent and often smaller than the spread between seeds;
#   measure with several seeds, one detail at a time, report intervals, and keep the
#   results with the command that made them.
# - Value clipping only removes gradients, in raw return units: its effect depends on
#   the reward scale.
# - Debugging PPO: know what healthy diagnostics look like, run probe environments
#   first, compare a run with a band of reference runs, and read the diagnostics to
#   locate a bug (the bug hunt).
# - Speed comes from vectorising the environment and batching the network, not from
#   cleverness in the algorithm.
#
# ## Further reading
#
# - L. Engstrom, A. Ilyas, S. Santurkar, D. Tsipras, F. Janoos, L. Rudolph, A. Madry,
#   *Implementation matters in deep policy gradients: a case study on PPO and TRPO*, ICLR 2020.
# - M. Andrychowicz et al., *What matters in on-policy reinforcement learning? A large-scale
#   empirical study*, ICLR 2021.
# - S. Huang, R. F. J. Dossa, A. Raffin, A. Kanervisto, W. Wang, *The 37 implementation
#   details of proximal policy optimization*, ICLR blog track, 2022.
# - R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville, M. G. Bellemare, *Deep
#   reinforcement learning at the edge of the statistical precipice*, NeurIPS 2021 (IQM,
#   bootstrap intervals).
# - A. Jones, *Debugging reinforcement learning systems without the agonizing pain*, 2021, blog
#   post (probe environments).
