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
# **Your time:** about 120 minutes to read, run and do the exercises.
#
# **Learning objectives.** After this chapter you can:
#
# - Show that a too-large policy-gradient step can collapse training, and measure the KL divergence of each step.
# - State the trust-region problem: maximise the surrogate subject to a bound on the mean KL.
# - Derive the natural-gradient step from a quadratic model of the KL (the Fisher matrix).
# - Implement conjugate gradient and the Fisher-vector product by double backpropagation.
# - Explain the backtracking line search, and check on CartPole that every accepted step respects the KL radius.
# - State the performance-difference lemma, the surrogate's state-distribution mismatch and TRPO's max-KL lower bound, and why TRPO turns it into a mean-KL constraint.

# %%
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch

from ppo_lib.algos import A2C, TRPO, A2CConfig, TRPOConfig
from ppo_lib.algos.trpo import fisher_vector_product as library_fvp
from ppo_lib.algos.trpo import flat_grad
from ppo_lib.teaching.checks import check_conjugate_gradient, check_fisher_vector_product
from ppo_lib.envs import VecEnv
from ppo_lib.teaching.plots import learning_curves
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

# %%
# what the next paragraph claims, checked on every seed
final_entropy = [h.diagnostics["entropy"][-1] for h in collapse[1e-1]]
fell_back = [h.smoothed_returns()[-1] < 0.5 * h.smoothed_returns().max() for h in collapse[1e-1]]
kl_ratio = np.median([max(h.diagnostics["kl"]) for h in collapse[1e-1]]) / np.median(
    [max(h.diagnostics["kl"]) for h in collapse[1e-3]])
assert max(final_entropy) < 0.05 and sum(fell_back) >= 2 and kl_ratio > 1000, (final_entropy, fell_back, kl_ratio)
print(f"large step: final entropies {np.round(final_entropy, 4)}; ended below half its best return: "
      f"{sum(fell_back)} of {len(fell_back)} seeds; largest KL of an update {kl_ratio:.0f} x the small step's")

# %% [markdown]
# With the large step the entropy of every run goes to nearly 0 within a few updates:
# the policy becomes deterministic, and the data it then collects can no longer teach
# it otherwise. Where it lands is luck. In most seeds it locks into a poor policy,
# pushing the same way whatever it sees, and the return falls back to the random
# policy's level or below; a seed may also happen to lock into a good one and stay
# there (the printout says how many did not fall back). Either way, the step size is
# not in control. The right-hand
# plot shows why: single updates move the policy by KL values thousands of times larger
# than the small learning rate's.
#
# A learning rate is the wrong knob: the same $\|\Delta\theta\|$ can barely change the
# policy in one state and flip it in another. We want to bound the change in behaviour.

# %% [markdown]
# ## Why a trust region: the theory
#
# **The performance-difference lemma** (Kakade and Langford, 2002) says exactly how much
# better a new policy $\pi'$ is than the old one $\pi$:
#
# $$J(\pi') - J(\pi) = \frac{1}{1-\gamma}\; \mathbb E_{s \sim d^{\pi'}}\, \mathbb E_{a \sim \pi'(\cdot|s)}\big[A^{\pi}(s,a)\big],$$
#
# where $d^{\pi'}(s) = (1-\gamma)\sum_t \gamma^t P(s_t = s \mid \pi')$ is the discounted
# state distribution of the **new** policy. The advantages are the old policy's, which
# we can estimate; the states are the ones the new policy would visit, which we cannot
# sample without running it. (Proof sketch: write $A^\pi(s_t,a_t) = \mathbb E[r_t + \gamma V^\pi(s_{t+1}) - V^\pi(s_t)]$
# along a trajectory of $\pi'$; the sum telescopes to $J(\pi') - J(\pi)$.)
#
# **The surrogate** swaps in the state distribution we have, the old one's, and
# reweights the actions by importance sampling:
#
# $$L_{\pi}(\pi') = \frac{1}{1-\gamma}\; \mathbb E_{s \sim d^{\pi}}\, \mathbb E_{a \sim \pi}\Big[\frac{\pi'(a|s)}{\pi(a|s)}\,A^{\pi}(s,a)\Big]
#   \;\approx\; \hat{\mathbb E}_t\Big[\frac{\pi_\theta(a_t|s_t)}{\pi_{old}(a_t|s_t)}\,\hat A_t\Big] \text{ (up to a constant factor)}.$$
#
# So the surrogate is *not* "how much better the new policy is": it is how much better
# it would be **if it visited the same states as the old one**. At $\pi' = \pi$ the two
# agree in value and in gradient (the surrogate's gradient there is exactly the policy
# gradient), so the approximation is good for small changes and gets worse as the new
# policy drifts to states the old one rarely saw. That state-distribution mismatch is
# the whole reason for a trust region.
#
# **How wrong can it be?** TRPO's Theorem 1 (Schulman et al., 2015, extending Kakade
# and Langford's bound for mixture policies) bounds the mismatch by the *largest* KL over
# states:
#
# $$J(\pi') \;\ge\; J(\pi) + L_\pi(\pi') - C\, D^{\max}_{KL}(\pi, \pi'), \qquad
#   C = \frac{4\,\epsilon\,\gamma}{(1-\gamma)^2},\quad \epsilon = \max_{s,a} |A^\pi(s,a)|,$$
#
# with $D^{\max}_{KL} = \max_s \mathrm{KL}[\pi(\cdot|s)\,\|\,\pi'(\cdot|s)]$ (here $L_\pi$ is
# written as the improvement over $J(\pi)$). Maximising the right-hand side never makes
# the policy worse (a minorise-maximise argument: the bound is tight at $\pi' = \pi$).
#
# **Why a constraint instead.** The theory's penalty is hopelessly conservative: with
# $\gamma = 0.99$, $C = 39\,600\,\epsilon$, so the steps it allows are tiny. And a maximum
# over all states cannot be estimated from samples. TRPO therefore makes two practical
# changes, both heuristics rather than consequences of the theorem: it replaces the
# penalty by a **constraint** with a tunable radius $\delta$ (a step size that means the
# same thing in every state and at every point of training), and the maximum KL by the
# **mean** KL over the visited states:
#
# $$\max_\theta L(\theta) \quad \text{subject to} \quad \bar D_{KL}(\theta_{old}, \theta) \le \delta .$$
#
# ### Two pictures of "distance between policies"
#
# *Left:* a one-parameter policy, $\pi(\text{right}) = \sigma(\theta)$. The same step
# $\Delta\theta = 1$ changes the behaviour a lot near $\theta = 0$ and hardly at all where
# the policy is already nearly deterministic. *Right:* a three-action softmax policy with
# two free logits. The set of steps with KL $\le \delta$ is an ellipse (exactly: a
# slightly curved one), not the Euclidean ball that a learning rate implicitly uses; the
# natural gradient $F^{-1}g$ is the steepest direction *within the ellipse*.

# %%
def bernoulli_kl(p, q):
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
thetas = np.linspace(-6, 6, 241)
step_kl = bernoulli_kl(sigmoid(thetas), sigmoid(thetas + 1.0))


def softmax3(z1, z2):
    z = np.stack([z1, z2, np.zeros_like(z1)])
    e = np.exp(z - z.max(0))
    return e / e.sum(0)


z0 = np.array([1.0, -1.0])
p0 = softmax3(*z0[:, None])[:, 0]
fisher = np.diag(p0[:2]) - np.outer(p0[:2], p0[:2])  # Fisher matrix of the two free logits
grid = np.linspace(-2.5, 2.5, 301)
D1, D2 = np.meshgrid(grid, grid)
P = softmax3(z0[0] + D1, z0[1] + D2)
kl_grid = sum(p0[k] * np.log(p0[k] / P[k]) for k in range(3))
DELTA_PICTURE = 0.05
g_picture = np.array([1.0, 1.0])  # a gradient of the surrogate, for the picture
nat = np.linalg.solve(fisher, g_picture)
nat_step = np.sqrt(2 * DELTA_PICTURE / (nat @ fisher @ nat)) * nat
euclid_step = np.sqrt(2 * DELTA_PICTURE / (g_picture @ fisher @ g_picture)) * g_picture

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
ax1.plot(thetas, step_kl)
ax1.set_xlabel(r"$\theta$ (policy: $\pi(\mathrm{right}) = \sigma(\theta)$)")
ax1.set_ylabel(r"KL[$\pi_\theta \| \pi_{\theta+1}$]")
ax1.set_yscale("log")
ax1.set_title(r"the same step $\Delta\theta = 1$, different KLs")
ax2.contour(D1, D2, kl_grid, levels=[DELTA_PICTURE], colors="tab:blue")
r_ball = np.sqrt(2 * DELTA_PICTURE / np.linalg.eigvalsh(fisher).max())
ax2.add_patch(plt.Circle((0, 0), r_ball, fill=False, color="gray", ls="--"))
ax2.arrow(0, 0, *euclid_step, color="gray", width=0.01, length_includes_head=True)
ax2.arrow(0, 0, *nat_step, color="tab:red", width=0.01, length_includes_head=True)
ax2.set_aspect("equal")
ax2.set_xlim(-2.5, 2.5)
ax2.set_ylim(-2.5, 2.5)
ax2.set_xlabel(r"$\Delta z_1$")
ax2.set_ylabel(r"$\Delta z_2$")
ax2.set_title(f"KL = {DELTA_PICTURE} (blue) vs a Euclidean ball (gray)")
ax2.plot([], [], color="gray", label="gradient direction, scaled to the KL")
ax2.plot([], [], color="tab:red", label="natural gradient, scaled to the KL")
ax2.legend(fontsize="small", loc="lower left")
plt.tight_layout()
plt.show()
kl_at = {t: float(bernoulli_kl(sigmoid(t), sigmoid(t + 1.0))) for t in (-0.5, 5.0)}
print(f"step 1 at theta=-0.5: KL {kl_at[-0.5]:.3f}; at theta=5: KL {kl_at[5.0]:.5f} "
      f"({kl_at[-0.5] / kl_at[5.0]:.0f} times smaller)")
print(f"Fisher eigenvalues {np.linalg.eigvalsh(fisher).round(3)}: the KL ellipse's axes differ by a factor "
      f"{np.sqrt(np.linalg.eigvalsh(fisher).max() / np.linalg.eigvalsh(fisher).min()):.1f}")
assert kl_at[-0.5] > 20 * kl_at[5.0]

# %% [markdown]
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
# positive-definite $A$ (torch tensors, float64); `b` is a 1-D tensor. Return an
# approximate solution of $Ax = b$.
#
# Solving $Ax = b$ is the same as minimising $f(x) = \tfrac12 x^\top A x - b^\top x$, whose
# negative gradient is the **residual** $r = b - Ax$. Conjugate gradient keeps three
# vectors: the iterate $x$ (start at 0), the residual $r$ (so at the start, $r = b$) and a
# search direction $p$ (start along the residual). Each iteration:
#
# 1. **Step length.** Move $x$ along $p$ by the $\alpha$ that minimises $f(x + \alpha p)$.
#    Derive it: $f$ is a parabola in $\alpha$. Your formula will need $Ap$; call `Avp`
#    once per iteration and reuse the result.
# 2. **Residual.** Update $r$ *without* computing $Ax$ again: how does $b - A(x + \alpha p)$
#    relate to the old residual?
# 3. **Next direction.** Start from the new residual and add a multiple $\beta$ of the old
#    direction, with $\beta$ chosen so that the new direction is $A$-conjugate to the old
#    one: $p_{new}^\top A\, p = 0$. Solve that condition for $\beta$ (everything in it is
#    already computed). Textbooks rewrite it, using the orthogonality of successive
#    residuals, as a ratio of squared residual norms; either form passes.
#
# Run exactly `iters` iterations, except stop early as soon as $r^\top r < 10^{-10}$ (then
# the system is solved, and the next step length would divide by almost 0), and return $x$.
#
# *Hint:* on an $n \times n$ system, exact arithmetic reaches the solution in at most $n$
# iterations: try yours on a random $3 \times 3$ SPD matrix against `torch.linalg.solve`.

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
assert np.median(kls[accepted]) > 0.01 / 2 and h.first_step_reaching(475) is not None
print(f"median KL of an accepted step: {np.median(kls[accepted]):.4f}")

# %% [markdown]
# Every update moves the policy by a KL of the order of $\delta$ (the median accepted step
# is more than half of it) and never beyond it, while the return climbs to the 475
# threshold: the step size adapts to the geometry of the policy, not to a learning rate.
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
