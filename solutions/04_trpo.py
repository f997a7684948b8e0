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
# # Chapter 4 — Trust Region Policy Optimization
#
# A policy gradient says which way to go, not how far. Go too far and the new policy
# collects worse data, the next gradient is worse still, and training can fall off a
# cliff from which it does not recover. TRPO measures the step in the only units that
# matter — how much the *policy's behaviour* changes — and caps it.
#
# **Learning objectives.** After this chapter you can:
#
# - Show that a too-large policy-gradient step can collapse training, and measure the KL divergence of each step.
# - State the trust-region problem: maximise the surrogate subject to a bound on the mean KL.
# - Derive the natural-gradient step from a quadratic model of the KL (the Fisher matrix).
# - Implement conjugate gradient and the Fisher-vector product by double backpropagation.
# - Explain the backtracking line search, and check on CartPole that every accepted step respects the KL radius.

# %%
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch

from ppo_lib.algos import A2C, TRPO, A2CConfig, TRPOConfig
from ppo_lib.algos.trpo import fisher_vector_product as library_fvp
from ppo_lib.algos.trpo import flat_grad
from ppo_lib.checks import check_conjugate_gradient, check_fisher_vector_product
from ppo_lib.envs import VecEnv
from ppo_lib.plots import learning_curves
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout
from ppo_lib.train import train

torch.set_num_threads(1)
env = gym.make("CartPole-v1")

# %% [markdown]
# ## Too far, too fast
#
# The vanilla policy gradient of chapter 2 (A2C, 8 x 64 steps per update, advantages
# normalised) with a modest and with a large learning rate, three seeds each. After
# each update we measure how far the policy moved: the mean KL divergence
# $\bar D_{KL} = \hat{\mathbb E}_s\,\mathrm{KL}[\pi_{old}(\cdot|s) \,\|\, \pi_{new}(\cdot|s)]$ over the batch.
# **Predict:** what happens with the large step?

# %%
collapse = {}
for lr in (1e-3, 1e-1):
    config = A2CConfig(rollout_steps=64, num_envs=8, gae_lambda=0.95, lr=lr, normalize_advantages=True,
                       max_grad_norm=0.0)
    collapse[lr] = [train(A2C(env.observation_space, env.action_space, config, seed=seed), "CartPole-v1", 40_000,
                          seed=seed).history for seed in (0, 1, 2)]

fig, (ax, ax_kl) = plt.subplots(1, 2, figsize=(11, 3.4))
learning_curves(ax, {f"lr = {lr:g}": hs for lr, hs in collapse.items()}, title="A2C on CartPole-v1")
for lr, hs in collapse.items():
    ax_kl.plot(hs[0].update_steps, hs[0].diagnostics["kl"], lw=0.8, label=f"lr = {lr:g} (seed 0)")
ax_kl.set_yscale("log")
ax_kl.set_xlabel("environment steps")
ax_kl.set_title("KL(old || new) of each update")
ax_kl.legend()
plt.tight_layout()
plt.show()
for lr, hs in collapse.items():
    for seed, h in enumerate(hs):
        s = h.smoothed_returns()
        print(f"lr={lr:g} seed {seed}: best {s.max():5.1f}, final {s[-1]:5.1f}, "
              f"final entropy {h.diagnostics['entropy'][-1]:.3f} (log 2 = {np.log(2):.3f} is a coin flip), "
              f"largest KL of an update {max(h.diagnostics['kl']):.2g}")

# %% [markdown]
# With the large step every run climbs a little, then falls back to returns near those
# of the random policy, and its entropy goes to nearly 0: the policy became
# deterministic, pushing the same way whatever it sees, and the data it now collects
# cannot teach it otherwise. The right-hand plot shows why: single updates move the
# policy by KL values thousands of times larger than the small learning rate's.
#
# A learning rate is the wrong knob: the same $\|\Delta\theta\|$ can barely change the
# policy in one state and flip it in another. We want to bound the change in behaviour.

# %% [markdown]
# ## The trust-region problem
#
# Around the current policy $\pi_{old}$, the **surrogate objective**
#
# $$L(\theta) = \hat{\mathbb E}_t\Big[\frac{\pi_\theta(a_t|s_t)}{\pi_{old}(a_t|s_t)}\,\hat A_t\Big]$$
#
# estimates how much better $\pi_\theta$ would be, using data from $\pi_{old}$ (the ratio
# reweights the samples; at $\theta = \theta_{old}$ its gradient is exactly the policy
# gradient). The estimate is only trustworthy near $\pi_{old}$, so TRPO solves
#
# $$\max_\theta L(\theta) \quad \text{subject to} \quad \bar D_{KL}(\theta_{old}, \theta) \le \delta .$$
#
# ## The natural gradient
#
# Take $L$ to first order, $L \approx g^\top \Delta\theta$, and the KL to second: it is 0 with
# zero gradient at $\theta_{old}$, so $\bar D_{KL} \approx \tfrac12 \Delta\theta^\top F \Delta\theta$ with $F$
# the Hessian of the mean KL — the **Fisher information matrix**. The Lagrangian gives
#
# $$\Delta\theta = \sqrt{\frac{2\delta}{x^\top F x}}\; x, \qquad x = F^{-1} g .$$
#
# $x$ is the **natural gradient**: the steepest ascent direction when distance is
# measured by KL instead of by Euclidean length in parameter space.
#
# $F$ has (number of parameters)$^2$ entries: 5 000 parameters would already mean 25
# million. We never build it. **Conjugate gradient** solves $Fx = g$ using only products
# $Fv$, and those come from autograd at the cost of two backward passes.

# %% [markdown]
# ### Exercise 4.1 — conjugate gradient
#
# Write `conjugate_gradient(Avp, b, iters)`: `Avp(v)` returns $Av$ for a symmetric
# positive-definite $A$ (torch tensors, float64); `b` is a 1-D tensor. Start from
# $x = 0$, residual $r = b$, direction $p = r$; each iteration:
#
# $\alpha = \dfrac{r^\top r}{p^\top A p},\quad x \leftarrow x + \alpha p,\quad r_{new} = r - \alpha A p,\quad
# p \leftarrow r_{new} + \dfrac{r_{new}^\top r_{new}}{r^\top r}\,p .$
#
# Run exactly `iters` iterations (stop early only if $r^\top r < 10^{-10}$) and return $x$.

# %% nbgrader={"grade": false, "grade_id": "conjugate_gradient", "locked": false, "schema_version": 3, "solution": true}
def conjugate_gradient(Avp, b, iters):
    ### BEGIN SOLUTION
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x
    ### END SOLUTION


# %%
conjugate_gradient = check_conjugate_gradient(conjugate_gradient)

# %% [markdown]
# ### Exercise 4.2 — the Fisher-vector product
#
# Write `fisher_vector_product(mean_kl, params, v)`: `mean_kl(params)` returns the
# scalar mean KL as a function of a list of parameter tensors; `v` is a flat vector as
# long as all parameters together. Return $Fv$ flattened, by **double backprop**:
# take the gradient of the KL with `create_graph=True` (so it can be differentiated
# again), flatten it, dot it with $v$, and take the gradient of that scalar.
# `torch.autograd.grad(y, params, create_graph=True)` returns one gradient per tensor.

# %% nbgrader={"grade": false, "grade_id": "fisher_vector_product", "locked": false, "schema_version": 3, "solution": true}
def fisher_vector_product(mean_kl, params, v):
    ### BEGIN SOLUTION
    grads = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    hv = torch.autograd.grad(flat @ v, params)
    return torch.cat([h.reshape(-1) for h in hv])
    ### END SOLUTION


# %%
fisher_vector_product = check_fisher_vector_product(fisher_vector_product)

# %% [markdown]
# ## Checked on a real (small) policy network
#
# A policy for CartPole with one hidden layer of 8 units has 58 parameters: small enough
# to build $F$ column by column ($F e_i$ for every unit vector) and solve $F x = g$ exactly.
# We compare that exact natural gradient with conjugate gradient after $k$ iterations.

# %%
torch.manual_seed(0)
venv = VecEnv("CartPole-v1", num_envs=4, seed=0)
small = ActorCritic(venv.single_observation_space, venv.single_action_space, hidden=(8,)).double()
batch, _ = collect_rollout(venv, small.float(), 64, venv.reset())
small = small.double()
obs, actions = batch.obs.flatten(0, 1).double(), batch.actions.flatten(0, 1)
actor = small.actor
params = list(actor.parameters())
with torch.no_grad():
    old_params = actor.params(obs)


def mean_kl(ps):
    # KL(pi_old || pi_theta) as a function of the parameters (functional_call swaps them in)
    names = [n for n, _ in actor.named_parameters()]
    logits = torch.func.functional_call(actor.logits, dict(zip([n.split(".", 1)[1] for n in names], ps)), (obs,))
    return actor.kl(actor.from_params(old_params), actor.from_params(logits)).mean()


n_params = sum(p.numel() for p in params)
F = torch.stack([fisher_vector_product(mean_kl, params, e) for e in torch.eye(n_params, dtype=torch.float64)], 1)
print(f"{n_params} parameters; F symmetric: {torch.allclose(F, F.T, atol=1e-10)}; "
      f"your Fisher-vector product == the library's: "
      f"{torch.allclose(F[:, 0], library_fvp(actor, obs, old_params, torch.eye(n_params, dtype=torch.float64)[0]))}")

adv = torch.randn(len(obs), dtype=torch.float64)
logp_old = actor.log_prob(actor.distribution(obs), actions).detach()
surrogate = (torch.exp(actor.log_prob(actor.distribution(obs), actions) - logp_old) * adv).mean()
g = flat_grad(surrogate, params)
damping = 0.1
A = F + damping * torch.eye(n_params, dtype=torch.float64)
exact = torch.linalg.solve(A, g)
ks = list(range(1, 31))
errors = [float((conjugate_gradient(lambda v: A @ v, g, k) - exact).norm() / exact.norm()) for k in ks]
fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(ks, errors, marker=".")
ax.axvline(10, color="gray", ls=":", label="TRPO's default: 10 iterations")
ax.set_xlabel("conjugate-gradient iterations")
ax.set_ylabel("relative error vs exact solve")
ax.legend()
plt.show()
print(f"relative error after 1 iteration {errors[0]:.1e}, after 5 {errors[4]:.1e}, after 10 {errors[9]:.1e}, "
      f"after 30 {errors[-1]:.1e}")
assert errors[9] < 1e-2 and errors[-1] <= errors[0]

# %% [markdown]
# A handful of iterations already gives a direction close to the exact natural gradient,
# at the cost of a handful of Fisher-vector products instead of building and inverting a
# matrix. The curve flattens once the squared residual drops below the tolerance
# ($10^{-10}$) and the iterations stop. (The damping $0.1 I$ keeps the system well
# conditioned: directions the batch says nothing about get a finite step.)
#
# ## The line search
#
# The step $\Delta\theta$ comes from *approximations* of $L$ and of the KL. So TRPO checks the
# real thing: it tries $\theta_{old} + \Delta\theta$, and if the measured mean KL exceeds
# $\delta$ or the surrogate did not improve, it shrinks the step by a factor 0.8 and tries
# again, up to 10 times. If nothing passes, the policy stays where it was. The value
# function is fitted separately, by ordinary regression. All of this is
# `ppo_lib/algos/trpo.py`.
#
# ## TRPO on CartPole
#
# $\delta = 0.01$, 8 environments x 256 steps per update. We plot the measured KL of
# every update against $\delta$.

# %%
trpo = TRPO(env.observation_space, env.action_space, TRPOConfig(delta=0.01), seed=0)
h = train(trpo, "CartPole-v1", 60_000, seed=0).history
fig, (ax, ax_kl) = plt.subplots(1, 2, figsize=(11, 3.4))
ax.plot(h.episode_steps, h.smoothed_returns())
ax.axhline(475, color="gray", ls=":")
ax.set_xlabel("environment steps")
ax.set_title("TRPO on CartPole-v1")
ax_kl.bar(range(len(h.diagnostics["kl"])), h.diagnostics["kl"], color="tab:blue")
ax_kl.axhline(0.01, color="tab:red", ls="--", label=r"$\delta$ = 0.01")
ax_kl.set_xlabel("update")
ax_kl.set_title("measured mean KL of each accepted step")
ax_kl.legend()
plt.tight_layout()
plt.show()
accepted = np.array(h.diagnostics["accepted"], dtype=bool)
kls = np.array(h.diagnostics["kl"])
print(f"{accepted.sum()} of {len(accepted)} updates accepted; largest KL {kls.max():.4f} <= delta; "
      f"line-search steps used: {sorted(set(int(x) for x in h.diagnostics['line_search_steps']))}; "
      f"first reached 475 at {h.first_step_reaching(475)} steps")
assert (kls[accepted] <= 0.01 + 1e-9).all()

# %% [markdown]
# Every update moves the policy by a KL of the order of $\delta$ and never beyond it,
# while the return climbs steadily: the step size adapts to the geometry of the policy,
# not to a learning rate.
#
# TRPO works, and it is principled; it is also complicated (conjugate gradient, a line
# search, double backprop), it does one policy step per batch, and it does not combine
# well with networks that share layers between actor and critic. Chapter 5 keeps the
# idea — stay close to $\pi_{old}$ — and drops the machinery.
#
# ## What we learned
#
# - A step that is small in parameter space can be huge in behaviour; the mean KL
#   between old and new policy measures the step where it matters.
# - TRPO maximises the importance-sampled surrogate under $\bar D_{KL} \le \delta$; to
#   second order the answer is the natural gradient $F^{-1} g$, scaled to the radius.
# - Conjugate gradient + Fisher-vector products (double backprop) solve for it without
#   ever forming $F$; a line search enforces the real constraint.
#
# ## Further reading
#
# - J. Schulman, S. Levine, P. Moritz, M. Jordan, P. Abbeel, *Trust region policy
#   optimization*, ICML 2015.
# - S. Kakade, *A natural policy gradient*, NeurIPS 2001.
# - J. Nocedal and S. Wright, *Numerical Optimization*, chapter 5 (conjugate gradient).
