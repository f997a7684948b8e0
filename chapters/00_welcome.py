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
# # Chapter 0 — Welcome
#
# This course builds Proximal Policy Optimization (PPO) from the ground up, one
# idea per chapter, and lets you poke at every idea while you read.
#
# **Your time:** about 30 minutes to read, run, do the exercises and play with the widgets.
#
# **Learning objectives.** After this chapter you can:
#
# - Say what reinforcement learning optimises and where PPO fits among policy-gradient methods.
# - Run a notebook of this course: read, execute, fill in an exercise, and read the checker's feedback.
# - Watch an agent act in CartPole-v1 and read its return.
# - Explain how the discount factor gamma weighs future rewards, and compute a discounted return.

# %% [markdown]
# ## What this course is about
#
# In reinforcement learning an **agent** acts in an **environment** one step at a
# time. At step $t$ it sees an observation $s_t$, picks an action $a_t$ from its
# **policy** $\pi_\theta(a \mid s)$ — a neural network with weights $\theta$ — and the
# environment answers with a reward $r_t$ and the next observation. Nobody tells the
# agent which action was right; it only learns how much reward followed. The goal is
# a policy whose episodes collect as much (discounted) reward as possible.
#
# **Policy-gradient methods** adjust $\theta$ directly: make the actions that were
# followed by more reward than expected a little more likely, and the others a little
# less likely. That simple recipe is noisy and fragile. The chapters ahead fix it
# piece by piece:
#
# | chapter | idea | what it fixes |
# |---|---|---|
# | 1 REINFORCE | the policy-gradient theorem | how to get a gradient from sampled episodes at all |
# | 2 actor-critic | a learned value baseline | most of the noise of that gradient |
# | 3 GAE | mixing multi-step estimates with $\lambda$ | the balance between bias and noise |
# | 4 TRPO | a trust region on the policy change | steps so large they wreck the policy |
# | 5 PPO-Clip | a clipped probability ratio | TRPO's cost: a similar brake on each update, first-order, a few lines |
# | 6 PPO-Penalty | an adaptive KL penalty | an alternative way to stay close |
# | 7 details | normalisation, clipping, annealing… | the gap between "the algorithm" and "it works" |
#
# **Why PPO?** It is the workhorse of modern policy optimisation. It is simple
# (plain stochastic gradient ascent on a carefully shaped objective) and it reuses each
# batch of experience for several epochs. It is *not* forgiving about its settings:
# large studies (Engstrom et al. 2020, Andrychowicz et al. 2021) found its results
# hinge on hyperparameters and on code-level details that papers rarely mention, and
# chapter 7 measures some of that spread on our own runs. Knowing which knob does what
# is a large part of using PPO well, and this course spends time on exactly that.
# The same algorithm balances a pole, drives simulated robots, and fine-tunes language
# models from a reward signal — the "RL" in RLHF, which chapter 8 shows on a tiny model.

# %% [markdown]
# ## How to use these notebooks
#
# - **Run** a cell with `Shift+Enter`; run everything with *Run → Run All Cells*.
#   Every chapter runs top to bottom on a laptop CPU in a minute or two.
# - **Exercises** are cells that contain `raise NotImplementedError()` under a
#   `# YOUR CODE HERE` comment. Replace those two lines with your code and run the cell.
# - The **checker** in the next cell tests your function on hand-made cases and
#   tells you what is wrong, like a teaching assistant would. Until your code passes,
#   the notebook carries on with the library's reference version, so nothing later
#   breaks while you are still working.
# - **Widgets** are sliders wired to plots. Before you move one, make a prediction;
#   then move it and see whether you were right.
# - Worked solutions are in the `solutions/` folder — try first, peek later.
# - Your notebooks live in `workspace/`. They are never overwritten; delete one to
#   start that chapter afresh.
#
# Everything a chapter computes comes from `ppo_lib`, the course's companion
# library; the tests prove that what a chapter derives and what the library holds agree.

# %%
import gymnasium as gym
import numpy as np
from IPython.display import display

from ppo_lib.advantages import discounted_return as reference_discounted_return
from ppo_lib.teaching.animation import animate_cartpole, run_episode
from ppo_lib.teaching.checks import check_discounted_return
from ppo_lib.teaching.widgets import SAMPLE_REWARDS, discount_view, gamma_widget

SEED = 0

# %% [markdown]
# ## A first environment: CartPole
#
# `CartPole-v1` is the "hello world" of reinforcement learning. A pole stands on a
# cart that moves along a track. The observation has four numbers: the cart position
# and velocity, the pole angle and its angular velocity. There are two actions: push
# the cart left (0) or right (1). Every step the pole stays up earns a reward of $+1$.
#
# An episode ends in one of two ways, and the difference will matter a great deal
# later:
#
# - it is **terminated** when the pole leans more than 12° or the cart leaves the
#   track ($|x| > 2.4$): a real end, nothing more can be earned;
# - it is **truncated** after 500 steps by a time limit: the pole could have stayed
#   up, we just stopped watching.
#
# Let us watch an agent that pushes left or right at random.

# %%
env = gym.make("CartPole-v1")
print("observation space:", env.observation_space)
print("action space:     ", env.action_space)

episode = run_episode(env, policy=None, seed=SEED)  # policy=None: uniformly random actions
print(f"random policy: {episode.length} steps, total reward {episode.total_reward:.0f}, "
      f"terminated={episode.terminated}, truncated={episode.truncated}")
animate_cartpole(episode.observations)

# %% [markdown]
# The pole falls within a couple of dozen steps. One episode is a noisy measurement,
# so let us look at a hundred of them.

# %%
lengths = np.array([run_episode(env, seed=SEED + i).length for i in range(100)])
print(f"random policy over 100 episodes: mean length {lengths.mean():.1f}, "
      f"min {lengths.min()}, max {lengths.max()} (the best possible is 500)")
assert 15 < lengths.mean() < 30  # "about 20 steps", as the summary below says

# %% [markdown]
# By chapter 7, a PPO agent trained for a few seconds holds the pole past CartPole-v1's
# "solved" threshold of 475 steps on average (a cell there checks it).

# %% [markdown]
# ## Returns and the discount factor
#
# What exactly does the agent maximise? Not the next reward but the **return**, the
# sum of rewards from now on. We usually discount it with a factor
# $\gamma \in [0, 1]$:
#
# $$G_0 = r_0 + \gamma r_1 + \gamma^2 r_2 + \dots = \sum_{t=0}^{T-1} \gamma^t r_t .$$
#
# A reward $t$ steps ahead counts $\gamma^t$ times as much as one received now. Three
# reasons to discount:
#
# - with $\gamma < 1$ the sum stays finite even if the episode never ends: for a
#   constant reward 1 it is at most $1 / (1 - \gamma)$;
# - rewards far away are less certain and less under the agent's control;
# - $1/(1-\gamma)$ acts as an **effective horizon**: $\gamma = 0.99$ looks about 100
#   steps ahead, $\gamma = 0.9$ about 10.
#
# The PPO paper uses $\gamma = 0.99$.

# %% [markdown]
# ### Exercise 0.1 — the discounted return
#
# Write `discounted_return(rewards, gamma)`: given a list (or NumPy array) of rewards
# $r_0, \dots, r_{T-1}$ and $\gamma$, return the single number $G_0$ above. An
# empty list has return 0. Do not change the list you are given.

# %% nbgrader={"grade": false, "grade_id": "discounted_return", "locked": false, "schema_version": 3, "solution": true}
def discounted_return(rewards, gamma):
    # YOUR CODE HERE
    raise NotImplementedError()


# %% [markdown]
# Run the checker. It tries your function on seven cases, from a single step to an
# empty episode, and explains the first one that fails.

# %%
discounted_return = check_discounted_return(discounted_return)

# %% [markdown]
# For CartPole every reward is 1, so the discounted return of an episode of length
# $T$ has a closed form, a geometric series:
# $G_0 = \sum_{t=0}^{T-1} \gamma^t = \dfrac{1 - \gamma^T}{1 - \gamma}$.
# Whichever function the checker handed back must agree with it:

# %%
gamma = 0.99
G_random = discounted_return(episode.rewards, gamma)
closed_form = (1 - gamma**episode.length) / (1 - gamma)
print(f"G_0 of the random episode ({episode.length} steps) with gamma={gamma}: "
      f"{G_random:.4f}; closed form: {closed_form:.4f}")
assert np.isclose(G_random, closed_form)
assert np.isclose(G_random, reference_discounted_return(episode.rewards, gamma))
print(f"A pole held for all 500 steps would be worth {(1 - gamma**500) / (1 - gamma):.2f}; "
      f"the upper bound 1/(1-gamma) is {1 / (1 - gamma):.0f}.")

# %% [markdown]
# ## Experiment: how far ahead does the agent look?
#
# Here is an episode with a cost and a prize: every step on the way costs $-0.1$, and
# after 30 steps the agent collects $+5$. Undiscounted, the trip is worth
# $-3 + 5 = +2$. With discounting, the prize at the end shrinks by $\gamma^{30}$.
#
# **Predict first.** At $\gamma = 0.90$ the discounted return is negative: an agent
# with that $\gamma$ would rather not make the trip. What is the smallest $\gamma$ for
# which $G_0 > 0$? Write down your guess, then move the slider (click the handle and
# use the arrow keys for steps of 0.01).
#
# The left plot shows the weights $\gamma^t$ and the effective horizon; the right plot
# shows each discounted reward and the running sum, whose last value is $G_0$.

# %%
gamma_explorer = gamma_widget(gamma=0.9)
display(gamma_explorer)

# %% [markdown]
# Check your guess against a fine scan of $\gamma$ (computed with the same pure
# function that feeds the plot):

# %%
gammas = np.round(np.arange(0.0, 1.0001, 0.001), 3)
worth_it = [g for g in gammas if discount_view(g, SAMPLE_REWARDS).G0 > 0]
print(f"The trip is worth it for gamma >= {worth_it[0]:.3f} "
      f"(an effective horizon of about {1 / (1 - worth_it[0]):.0f} steps).")
print(f"The slider is at gamma = {gamma_explorer.values['gamma']:.2f}.")

# %% [markdown]
# A small $\gamma$ makes an agent short-sighted: it will not pay a small cost now for a
# large reward later. A $\gamma$ close to 1 makes it patient, but the sum of many
# future rewards is also harder to estimate. That tension returns in chapter 3, where
# a second knob, $\lambda$, trades bias against noise in the same way.

# %% [markdown]
# ## What we learned
#
# - An agent's policy maps observations to action probabilities; policy-gradient
#   methods, PPO among them, improve that policy from the rewards it collects.
# - CartPole gives $+1$ per step; episodes end by **termination** (the pole fell) or
#   **truncation** (the time limit). A random policy lasts about 20 steps.
# - The discounted return $G_0 = \sum_t \gamma^t r_t$ weighs a reward $t$ steps ahead
#   by $\gamma^t$; $1/(1-\gamma)$ is the horizon the agent effectively looks over.
#
# **Next:** chapter 1 turns "make good actions more likely" into a gradient.
#
# ## Further reading
#
# - R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed.,
#   2018, chapter 3 (returns, episodes, discounting).
# - J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov, *Proximal Policy
#   Optimization Algorithms*, arXiv:1707.06347, 2017.
# - A. G. Barto, R. S. Sutton, C. W. Anderson, *Neuronlike adaptive elements that can
#   solve difficult learning control problems*, 1983 (the cart-pole task).
