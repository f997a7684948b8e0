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
# **Learning objectives.** After this chapter you can:
#
# - Name PPO's main implementation details, say why each helps, and find each in the library code.
# - Implement a running mean and variance for observation normalisation, and the clipped value loss.
# - Read an ablation: which details matter on a discrete and on a continuous task, and how much.
# - Train PPO with a Gaussian policy on Pendulum-v1 and watch the trained agent.
# - Explain what makes PPO fast on a CPU: vectorised environments, batched inference, few Python steps.

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
from ppo_lib.animation import animate_pendulum, run_episode
from ppo_lib.checks import check_clipped_value_loss, check_running_mean_std
from ppo_lib.course import REPO_ROOT
from ppo_lib.normalization import RunningMeanStd
from ppo_lib.train import evaluate, train
from ppo_lib.widgets import LiveFigure

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
# | value-function clipping | the critic may not move further than `clip_eps` from its old predictions in one update | `losses.clipped_value_loss` | `clip_value` (False) |
# | advantage normalisation | per minibatch: the step size no longer depends on the reward scale; safe for one element | `losses.normalize` | `normalize_advantages` (True) |
# | global gradient clipping | one outlier minibatch cannot throw the weights far | `algos.base.Algorithm._step` | `max_grad_norm` (0.5) |
# | Adam epsilon 1e-5 | the default 1e-8 lets Adam take huge steps on parameters whose gradients are nearly zero | `algos.base.Algorithm.__init__` | `adam_eps` (1e-5) |
# | entropy bonus | keeps the policy exploring; rarely needed on these tasks | `algos.ppo.PPO.update` | `entropy_coef` (0.0) |
# | truncation bootstrapping | a time limit is not the end of the task: bootstrap from V(final obs) (chapter 2) | `advantages.bootstrap_values`, `rollout.collect_rollout` | `bootstrap_truncation` (True) |
# | separate actor and critic | the value loss cannot disturb the policy's features (and vice versa) | `policies.ActorCritic` | `shared_network` (False) |
#
# The defaults follow the paper where it says something and OpenAI's baselines where it
# does not; the observation and reward normalisation are off by default because the
# earlier chapters work on raw CartPole, and switched on for continuous control below.

# %% [markdown]
# ### Exercise 7.1 — a running mean and variance
#
# Observation normalisation needs the mean and variance of *every observation seen so
# far*, updated batch by batch without keeping the data. Given the old statistics
# (`mean`, `var`, `count`) and a new `batch` of shape `(n, obs_dim)`, combine them:
#
# $$\delta = \bar x_{batch} - \mu,\quad N = c + n,\quad \mu' = \mu + \delta\,\frac{n}{N},\quad
# \sigma'^2 = \frac{c\,\sigma^2 + n\,\sigma^2_{batch} + \delta^2\,\frac{c\,n}{N}}{N}$$
#
# (population variances, `np.var`'s default). Return `(new_mean, new_var, new_count)`.

# %% nbgrader={"grade": false, "grade_id": "update_running_stats", "locked": false, "schema_version": 3, "solution": true}
def update_running_stats(mean, var, count, batch):
    # YOUR CODE HERE
    raise NotImplementedError()


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
# PPO2 in OpenAI's baselines also clips the critic: the new prediction may move at most
# $\epsilon$ from the old one, $V_{clip} = V_{old} + \mathrm{clip}(V - V_{old}, -\epsilon, \epsilon)$, and the loss
# takes the pessimistic (larger) of the two errors:
# $L^{VF} = \tfrac12\,\hat{\mathbb E}\big[\max\big((V - \hat R)^2,\ (V_{clip} - \hat R)^2\big)\big]$.
# Write `clipped_value_loss(values, old_values, targets, eps)` for torch tensors of shape `(B,)`.

# %% nbgrader={"grade": false, "grade_id": "clipped_value_loss", "locked": false, "schema_version": 3, "solution": true}
def clipped_value_loss(values, old_values, targets, eps):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
clipped_value_loss = check_clipped_value_loss(clipped_value_loss)

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
# One seed decides nothing. The full ablation — every detail, both tasks, three seeds —
# takes about ten minutes, so it is run by a benchmark script and its results are kept in
# a file with the command, the date and the machine. To regenerate it:
#
# ```bash
# .venv/bin/python benchmarks/ablation.py
# ```

# %%
results_path = REPO_ROOT / "benchmarks" / "results" / "ablation.json"
if not results_path.exists():
    raise FileNotFoundError(f"{results_path} is missing: run `.venv/bin/python benchmarks/ablation.py` to make it")
ablation = json.loads(results_path.read_text())
print(f"from {results_path.name}: `{ablation['command']}`, {ablation['date']}, {ablation['machine']['platform']}")
for env_id, rows in ablation["results"].items():
    base = rows["all details on"]["final_eval_mean"]
    print(f"\n{env_id} (budget {ablation['budgets'][env_id]:,} steps, seeds "
          f"{[r['seed'] for r in rows['all details on']['runs']]})")
    print(f"  {'configuration':45s} {'final eval':>10s} {'vs all on':>9s} {'mean train return':>18s}")
    for name, row in rows.items():
        print(f"  {name:45s} {row['final_eval_mean']:10.1f} {row['final_eval_mean'] - base:+9.1f} "
              f"{row['mean_training_return']:18.1f}")

# %% [markdown]
# Which changes hurt most, per task (computed from the file, not written by hand):

# %%
for env_id, rows in ablation["results"].items():
    base = rows["all details on"]["final_eval_mean"]
    drops = sorted(((row["final_eval_mean"] - base, name) for name, row in rows.items() if name != "all details on"))
    print(f"{env_id}: most harmful " + "; ".join(f"{name} ({d:+.0f})" for d, name in drops[:3]))
    print(f"{' ' * len(env_id)}  least harmful / helpful " + "; ".join(f"{name} ({d:+.0f})" for d, name in drops[-3:]))

# %% [markdown]
# Read such a table with care. Three seeds leave wide error bars, and details interact:
# the "all on" baseline is not the best configuration on every task (on Pendulum, whose
# preset was tuned on raw observations, several single removals *improve* the final
# score), so a removal that "helps" there says as much about the combination as about the
# detail. What tends to hold across tasks and seeds is the pattern of the literature:
# getting the value targets right (reward scale, truncation bootstrapping) matters most
# for continuous control, and no single detail is free everywhere.
#
# Pick a change to see its learning curves (mean over seeds) against the all-on baseline,
# on both tasks:

# %%
details = [name for name in next(iter(ablation["results"].values())) if name != "all details on"]


def ablation_curves(detail):
    out = {}
    for env_id, rows in ablation["results"].items():
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
# rewards are negative costs; a swing-up and balance scores around $-150$ to $-200$.
# Every episode is truncated at 200 steps, so truncation bootstrapping matters here. The
# preset (`PENDULUM_PRESET`: gamma 0.9, 4 envs x 512 steps, Adam 1e-3) trains on raw
# observations; the ablation above shows how the normalisation choices fare on this task.

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
#   update is the bottleneck, not the environment.
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

# %% [markdown]
# ## What we learned
#
# - "PPO" is the clipped objective *plus* a set of details: normalisation of inputs,
#   rewards and advantages, initialisation, annealing, clipping of the value loss and of
#   gradients, Adam's epsilon, bootstrapping at time limits, network layout.
# - Their effects are task-dependent; measure with several seeds, one detail at a time,
#   and keep the results with the command that made them.
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
