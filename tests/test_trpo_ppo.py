"""TRPO and PPO: conjugate gradient, Fisher-vector products, the trust region,
the PPO losses by hand, adaptive KL, the update mechanics, learning tests,
bad input, and discrete/continuous smoke runs.

Reference quantities (explicit Fisher matrices, KLs, surrogates) are computed
here independently of ``ppo_lib``, by hand formulas or plain autograd.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ppo_lib.advantages import rollout_advantages
from ppo_lib.algos import CARTPOLE_PRESET, PENDULUM_PRESET, PPO, TRPO, PPOConfig, TRPOConfig, adaptive_kl_beta
from ppo_lib.algos.trpo import conjugate_gradient, fisher_vector_product
from ppo_lib.envs import VecEnv
from ppo_lib.losses import approx_kl, clipped_surrogate, clipped_value_loss, kl_penalty_surrogate
from ppo_lib.policies import ActorCritic
from ppo_lib.rollout import collect_rollout
from ppo_lib.train import TrainingDiverged, train

CARTPOLE = gym.make("CartPole-v1")
PENDULUM = gym.make("Pendulum-v1")


def make_ppo(env=CARTPOLE, seed=0, **kw) -> PPO:
    return PPO(env.observation_space, env.action_space, PPOConfig(**kw), seed=seed)


def make_trpo(env=CARTPOLE, seed=0, **kw) -> TRPO:
    return TRPO(env.observation_space, env.action_space, TRPOConfig(**kw), seed=seed)


def rollouts(algo, env_id="CartPole-v1", n=1, seed=0):
    """Yield ``n`` successive rollouts of ``algo.policy`` (the caller may update in between)."""
    venv = VecEnv(env_id, algo.config.num_envs, seed=seed)
    obs = venv.reset()
    for _ in range(n):
        rollout, obs = collect_rollout(venv, algo.policy, algo.rollout_steps, obs)
        yield rollout


# Independent reference formulas --------------------------------------------------------


def kl_categorical_logits(old_logits, new_logits):
    """KL(old || new) per row, from logits, by hand: sum_a p_old (log p_old - log p_new)."""
    lp_old, lp_new = torch.log_softmax(old_logits, -1), torch.log_softmax(new_logits, -1)
    return (lp_old.exp() * (lp_old - lp_new)).sum(-1)


def kl_diag_gaussian(old_params, new_params):
    """KL(old || new) per row for diagonal Gaussians given as [mean, log_std], by hand."""
    mu_o, ls_o = old_params.chunk(2, -1)
    mu_n, ls_n = new_params.chunk(2, -1)
    var_o, var_n = (2 * ls_o).exp(), (2 * ls_n).exp()
    return (ls_n - ls_o + (var_o + (mu_o - mu_n) ** 2) / (2 * var_n) - 0.5).sum(-1)


def normalized(x):
    return (x - x.mean()) / (x.std() + 1e-8)


# ========================================================================================
# 1. Conjugate gradient
# ========================================================================================


def spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return M @ M.T + n * torch.eye(n, dtype=torch.float64), b


class CountingAvp:
    def __init__(self, A):
        self.A, self.calls = A, 0

    def __call__(self, v):
        self.calls += 1
        return self.A @ v


@pytest.mark.parametrize("n", [1, 2, 5, 20, 60])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conjugate_gradient_solves_random_spd_systems(n, seed):
    A, b = spd(n, seed)
    b_before = b.clone()
    x = conjugate_gradient(lambda v: A @ v, b, iters=2 * n + 10, residual_tol=1e-22)
    expected = torch.linalg.solve(A, b)
    torch.testing.assert_close(x, expected, rtol=1e-9, atol=1e-10)
    assert torch.linalg.norm(A @ x - b) < 1e-9 * torch.linalg.norm(b)
    assert torch.equal(b, b_before), "conjugate_gradient must not modify b in place"


def test_conjugate_gradient_solves_a_float32_system_to_float32_accuracy():
    A, b = spd(30, 7)
    x = conjugate_gradient(lambda v: A.float() @ v, b.float(), iters=50, residual_tol=1e-12)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.double(), torch.linalg.solve(A, b), rtol=1e-4, atol=1e-5)


def krylov_minimiser(A, b, k):
    """The k-th CG iterate minimises the A-norm error over span{b, Ab, ..., A^(k-1) b}."""
    K = torch.stack([torch.linalg.matrix_power(A, i) @ b for i in range(k)], dim=1)
    c = torch.linalg.solve(K.T @ A @ K, K.T @ b)
    return K @ c


@pytest.mark.parametrize("seed", [0, 3])
def test_conjugate_gradient_respects_the_iteration_cap(seed):
    A, b = spd(10, seed)
    # one iteration: a step along b of length (r.r / r.A r), r = b
    avp = CountingAvp(A)
    x1 = conjugate_gradient(avp, b, iters=1, residual_tol=0.0)
    torch.testing.assert_close(x1, (b @ b) / (b @ (A @ b)) * b, rtol=1e-12, atol=1e-14)
    assert avp.calls == 1
    # k iterations: exactly k matrix-vector products and the Krylov-space optimum, not the solution
    for k in (2, 3, 4):
        avp = CountingAvp(A)
        xk = conjugate_gradient(avp, b, iters=k, residual_tol=0.0)
        assert avp.calls == k
        torch.testing.assert_close(xk, krylov_minimiser(A, b, k), rtol=1e-8, atol=1e-10)
        assert torch.linalg.norm(A @ xk - b) > 1e-6, "capped CG should not have converged yet"


def test_conjugate_gradient_stops_early_once_the_residual_is_small():
    n = 8
    # A = 3 I: exact after one step, then the residual is 0 < tol
    avp = CountingAvp(3.0 * torch.eye(n, dtype=torch.float64))
    b = torch.arange(1.0, n + 1, dtype=torch.float64)
    x = conjugate_gradient(avp, b, iters=50, residual_tol=1e-10)
    assert avp.calls == 1
    torch.testing.assert_close(x, b / 3)
    # two distinct eigenvalues: CG is exact after two steps
    A = torch.diag(torch.tensor([1.0, 1, 1, 4, 4, 4, 4, 1], dtype=torch.float64))
    avp = CountingAvp(A)
    x = conjugate_gradient(avp, b, iters=50, residual_tol=1e-10)
    assert avp.calls == 2
    torch.testing.assert_close(x, b / torch.diag(A))
    # b = 0: already solved, no product at all
    avp = CountingAvp(A)
    x = conjugate_gradient(avp, torch.zeros(n, dtype=torch.float64), iters=50, residual_tol=1e-10)
    assert avp.calls == 0 and torch.equal(x, torch.zeros(n, dtype=torch.float64))
    # a tolerance above |b|^2 stops before any step
    avp = CountingAvp(A)
    x = conjugate_gradient(avp, b, iters=50, residual_tol=(b @ b).item() + 1)
    assert avp.calls == 0 and torch.equal(x, torch.zeros_like(b))
    # a random SPD system stops strictly before the cap once |r|^2 < tol
    A, b = spd(40, 5)
    avp = CountingAvp(A)
    x = conjugate_gradient(avp, b, iters=200, residual_tol=1e-10)
    assert 0 < avp.calls < 40
    assert (torch.linalg.norm(A @ x - b) ** 2).item() < 1e-10


# ========================================================================================
# 2. Fisher-vector products against explicit Fisher matrices
# ========================================================================================


class _ParamsOf(torch.nn.Module):
    """forward(obs) = actor.params(obs), so that functional_call can swap the actor's weights."""

    def __init__(self, actor):
        super().__init__()
        self.actor = actor

    def forward(self, obs):
        return self.actor.params(obs)


def tiny_actor(action_space, obs_dim, hidden, seed):
    torch.manual_seed(seed)
    obs_space = gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
    actor = ActorCritic(obs_space, action_space, hidden=hidden).actor.double()
    with torch.no_grad():  # away from the near-uniform initialisation: a generic Fisher matrix
        for p in actor.parameters():
            p.copy_(0.8 * torch.randn_like(p))
    obs = torch.randn(7, obs_dim, dtype=torch.float64)
    return actor, obs


def hessian_of_mean_kl(actor, obs, kl_fn):
    """The Hessian of theta -> mean_s KL(pi_old(.|s) || pi_theta(.|s)) at theta_old, by autograd."""
    wrapper = _ParamsOf(actor)
    names = [n for n, _ in actor.named_parameters()]
    shapes = [p.shape for _, p in actor.named_parameters()]
    theta0 = parameters_to_vector(actor.parameters()).detach()
    old = actor.params(obs).detach()

    def mean_kl(theta):
        tensors, i = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            tensors["actor." + name] = theta[i:i + n].view(shape)
            i += n
        return kl_fn(old, functional_call(wrapper, tensors, (obs,))).mean()

    return torch.autograd.functional.hessian(mean_kl, theta0)


def categorical_fisher_by_scores(actor, obs):
    """F = E_s sum_a pi(a|s) grad log pi(a|s) grad log pi(a|s)^T."""
    params = list(actor.parameters())
    P = sum(p.numel() for p in params)
    F = torch.zeros(P, P, dtype=torch.float64)
    for s in obs:
        logp = torch.log_softmax(actor.params(s), -1)
        for a in range(logp.shape[-1]):
            g = torch.autograd.grad(logp[a], params, retain_graph=True)
            g = torch.cat([x.reshape(-1) for x in g])
            F += logp[a].exp().detach() * torch.outer(g, g)
    return F / len(obs)


def gaussian_fisher_by_jacobian(actor, obs):
    """For N(mu, sigma^2) per dimension, the Fisher matrix in (mu, log sigma) is
    diag(1/sigma^2, 2); F = E_s J_s^T diag(...) J_s with J_s = d(mu, log sigma)/d theta."""
    theta0 = parameters_to_vector(actor.parameters()).detach()
    wrapper = _ParamsOf(actor)
    names = [n for n, _ in actor.named_parameters()]
    shapes = [p.shape for _, p in actor.named_parameters()]
    F = 0
    for s in obs:
        def out(theta):
            tensors, i = {}, 0
            for name, shape in zip(names, shapes):
                n = math.prod(shape)
                tensors["actor." + name] = theta[i:i + n].view(shape)
                i += n
            return functional_call(wrapper, tensors, (s,))

        J = torch.autograd.functional.jacobian(out, theta0)  # (2 * act_dim, P)
        mean, log_std = actor.params(s).detach().chunk(2, -1)
        w = torch.cat([(-2 * log_std).exp(), torch.full_like(log_std, 2.0)])
        F = F + J.T @ (w[:, None] * J)
    return F / len(obs)


@pytest.mark.parametrize("seed", [0, 1])
def test_fisher_vector_product_matches_the_explicit_fisher_matrix_categorical(seed):
    actor, obs = tiny_actor(gym.spaces.Discrete(3), 4, (5,), seed)
    H = hessian_of_mean_kl(actor, obs, kl_categorical_logits)
    F = categorical_fisher_by_scores(actor, obs)
    P = sum(p.numel() for p in actor.parameters())
    assert H.shape == (P, P) == (4 * 5 + 5 + 5 * 3 + 3,) * 2
    torch.testing.assert_close(H, F, rtol=1e-8, atol=1e-10)  # the Hessian of the KL is the Fisher matrix
    old_params = actor.params(obs).detach()
    g = torch.Generator().manual_seed(100 + seed)
    for damping in (0.0, 0.1):
        for _ in range(3):
            v = torch.randn(P, generator=g, dtype=torch.float64)
            Fv = fisher_vector_product(actor, obs, old_params, v, damping=damping)
            torch.testing.assert_close(Fv, F @ v + damping * v, rtol=1e-8, atol=1e-10)
    # the product leaves no gradients behind on the actor
    assert all(p.grad is None for p in actor.parameters())


@pytest.mark.parametrize("seed", [0, 1])
def test_fisher_vector_product_matches_the_explicit_fisher_matrix_gaussian(seed):
    actor, obs = tiny_actor(gym.spaces.Box(-2.0, 2.0, (2,), np.float32), 3, (4,), seed)
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-0.3, 0.4]))
    H = hessian_of_mean_kl(actor, obs, kl_diag_gaussian)
    F = gaussian_fisher_by_jacobian(actor, obs)
    P = sum(p.numel() for p in actor.parameters())
    assert P == 3 * 4 + 4 + 4 * 2 + 2 + 2  # log_std is part of the policy
    torch.testing.assert_close(H, F, rtol=1e-8, atol=1e-10)
    # the log_std block is exactly 2 I (independent of the state); log_std is the actor's own
    # parameter, so parameters() lists it first, before those of the mean network
    assert [n for n, _ in actor.named_parameters()][0] == "log_std"
    torch.testing.assert_close(F[:2, :2], 2 * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(F[:2, 2:], torch.zeros(2, P - 2, dtype=torch.float64))
    old_params = actor.params(obs).detach()
    g = torch.Generator().manual_seed(200 + seed)
    for damping in (0.0, 0.1):
        for _ in range(3):
            v = torch.randn(P, generator=g, dtype=torch.float64)
            Fv = fisher_vector_product(actor, obs, old_params, v, damping=damping)
            torch.testing.assert_close(Fv, F @ v + damping * v, rtol=1e-8, atol=1e-10)


def test_conjugate_gradient_on_fisher_products_gives_the_natural_gradient():
    actor, obs = tiny_actor(gym.spaces.Discrete(3), 4, (5,), 3)
    F = categorical_fisher_by_scores(actor, obs)
    old_params = actor.params(obs).detach()
    P = F.shape[0]
    b = torch.randn(P, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = conjugate_gradient(lambda v: fisher_vector_product(actor, obs, old_params, v, 0.1), b,
                           iters=4 * P, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(F + 0.1 * torch.eye(P, dtype=torch.float64), b),
                               rtol=1e-6, atol=1e-8)


# ========================================================================================
# 3. TRPO: every accepted step lies in the trust region and improves the surrogate
# ========================================================================================

TRPO_SETTINGS = {
    "defaults": dict(),
    "backtracking": dict(delta=0.2, damping=0.01),          # full steps often leave the region
    "rejections": dict(delta=0.5, damping=0.0, backtrack_iters=1, cg_iters=30),  # F is singular: wild steps
}


def _measure(actor, obs, actions, logp_old, adv, old_logits):
    """Mean KL(old || actor) and the surrogate mean(ratio * adv), computed by hand."""
    with torch.no_grad():
        logits = actor.params(obs)
        kl = kl_categorical_logits(old_logits, logits).mean().item()
        logp = torch.log_softmax(logits, -1).gather(-1, actions.long()[:, None]).squeeze(-1)
        surrogate = (torch.exp(logp - logp_old) * adv).mean().item()
    return kl, surrogate


@pytest.mark.parametrize("setting", list(TRPO_SETTINGS))
def test_every_accepted_trpo_step_satisfies_the_kl_constraint(setting):
    algo = make_trpo(rollout_steps=64, num_envs=4, **TRPO_SETTINGS[setting])
    c = algo.config
    outcomes = []
    for rollout in rollouts(algo, n=4):
        actor = algo.policy.actor
        obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
        logp_old = rollout.logprobs.flatten()
        adv = normalized(rollout_advantages(rollout, c.gamma, c.gae_lambda)[0].flatten())
        actor_before = copy.deepcopy(actor)
        theta_old = parameters_to_vector(actor.parameters()).detach().clone()
        with torch.no_grad():
            old_logits = actor.params(obs).clone()
        _, surr_before = _measure(actor, obs, actions, logp_old, adv, old_logits)

        info = algo.update(rollout)

        theta_new = parameters_to_vector(actor.parameters()).detach()
        kl_after, surr_after = _measure(actor, obs, actions, logp_old, adv, old_logits)
        steps = int(info["line_search_steps"])
        outcomes.append((bool(info["accepted"]), steps))
        if info["accepted"]:
            assert kl_after <= c.delta + 1e-6, f"accepted step has KL {kl_after} > delta {c.delta}"
            assert kl_after > 0 and not torch.equal(theta_new, theta_old)
            assert surr_after > surr_before, "an accepted step must improve the surrogate"
            assert info["kl"] == pytest.approx(kl_after, rel=1e-4, abs=1e-9)
            assert 1 <= steps <= c.backtrack_iters
            # the full step s is scaled so that 1/2 s^T (F + damping I) s = delta, and the
            # accepted step is s shrunk by backtrack_coef^(steps - 1)
            full_step = (theta_new - theta_old) / c.backtrack_coef ** (steps - 1)
            Fs = fisher_vector_product(actor_before, obs, old_logits, full_step, c.damping)
            assert 0.5 * (full_step @ Fs).item() == pytest.approx(c.delta, rel=2e-3)
            assert info["step_norm"] == pytest.approx(full_step.norm().item(), rel=1e-3)
            # and s is the natural-gradient direction: CG on (F + damping I) x = g, g the
            # gradient of the surrogate at theta_old (computed here by plain autograd)
            logp = torch.log_softmax(actor_before.params(obs), -1).gather(-1, actions.long()[:, None]).squeeze(-1)
            g = torch.autograd.grad((torch.exp(logp - logp_old) * adv).mean(), list(actor_before.parameters()))
            g = torch.cat([x.reshape(-1) for x in g])
            Fvp = lambda v: fisher_vector_product(actor_before, obs, old_logits, v, c.damping)  # noqa: E731
            x = conjugate_gradient(Fvp, g, c.cg_iters, c.cg_residual_tol)
            x_scaled = (2 * c.delta / (x @ Fvp(x))) ** 0.5 * x
            cos = (x_scaled @ full_step) / (x_scaled.norm() * full_step.norm())
            assert cos.item() > 0.9999 and full_step.norm().item() == pytest.approx(x_scaled.norm().item(), rel=1e-2)
            # every larger step tried before was rightly refused
            for j in range(steps - 1):
                candidate = copy.deepcopy(actor_before)
                vector_to_parameters(theta_old + c.backtrack_coef ** j * full_step, candidate.parameters())
                kl_j, surr_j = _measure(candidate, obs, actions, logp_old, adv, old_logits)
                assert kl_j > c.delta - 1e-7 or surr_j <= surr_before + 1e-7, (
                    f"line search refused step {j} though KL {kl_j} <= delta and the surrogate improved")
        else:
            assert torch.equal(theta_new, theta_old), "a rejected step must leave the actor unchanged"
            assert kl_after <= 1e-12
            assert info["kl"] == 0.0 and info["surrogate_improvement"] == 0.0
            assert steps == c.backtrack_iters
    # each setting exercises the branch it is here for
    if setting == "rejections":
        assert any(not a for a, _ in outcomes), outcomes
    else:
        assert all(a for a, _ in outcomes), outcomes
    if setting == "backtracking":
        assert any(s > 1 for _, s in outcomes), outcomes


def test_trpo_rejects_a_step_that_cannot_improve_and_leaves_the_actor_unchanged():
    """All advantages equal: the normalised advantages (and g) are 0, no step improves."""
    algo = make_trpo(rollout_steps=16, num_envs=2)
    rollout = next(rollouts(algo))
    zeros = torch.zeros_like(rollout.rewards)
    rollout = dataclasses.replace(rollout, rewards=zeros, values=zeros, final_values=zeros,
                                  last_value=torch.zeros(rollout.N),
                                  terminated=torch.zeros_like(rollout.terminated),
                                  truncated=torch.zeros_like(rollout.truncated))
    actor_before = parameters_to_vector(algo.policy.actor.parameters()).detach().clone()
    critic_before = parameters_to_vector(algo.policy.critic.parameters()).detach().clone()
    info = algo.update(rollout)
    assert info["accepted"] == 0.0 and info["kl"] == 0.0
    assert torch.equal(parameters_to_vector(algo.policy.actor.parameters()), actor_before)
    # the critic is still fitted (towards targets 0)
    assert not torch.equal(parameters_to_vector(algo.policy.critic.parameters()), critic_before)


# ========================================================================================
# 4. The PPO losses by hand
# ========================================================================================

# (advantage, ratio, L^CLIP, d L^CLIP / d ratio) with eps = 0.2
CLIP_CASES = [
    (2.0, 0.5, 1.0, 2.0),     # A > 0, r < 1 - eps: r A = 1.0 < 0.8 A = 1.6, unclipped term, grad A
    (2.0, 1.0, 2.0, 2.0),     # A > 0, inside: grad A
    (2.0, 1.5, 2.4, 0.0),     # A > 0, r > 1 + eps: clipped 1.2 A = 2.4 < 3.0, grad 0
    (-2.0, 0.5, -1.6, 0.0),   # A < 0, r < 1 - eps: clipped 0.8 A = -1.6 < -1.0, grad 0
    (-2.0, 1.0, -2.0, -2.0),  # A < 0, inside: grad A
    (-2.0, 1.5, -3.0, -2.0),  # A < 0, r > 1 + eps: r A = -3.0 < 1.2 A = -2.4, unclipped, grad A
]


@pytest.mark.parametrize("adv,r,value,grad", CLIP_CASES,
                         ids=["A+r<", "A+in", "A+r>", "A-r<", "A-in", "A-r>"])
def test_clipped_surrogate_single_elements_by_hand(adv, r, value, grad):
    ratio = torch.tensor([r], requires_grad=True)
    advantages = torch.tensor([adv], requires_grad=True)
    out = clipped_surrogate(ratio, advantages, 0.2)
    assert out.item() == pytest.approx(value, abs=1e-6)
    out.backward()
    assert ratio.grad.item() == grad  # exactly 0 where the clip is active and chosen
    assert advantages.grad is None, "advantages must be treated as constants"


def test_clipped_surrogate_batch_is_the_mean_and_its_gradient_is_a_over_b():
    adv = torch.tensor([a for a, *_ in CLIP_CASES])
    ratio = torch.tensor([r for _, r, *_ in CLIP_CASES], requires_grad=True)
    out = clipped_surrogate(ratio, adv, 0.2)
    assert out.item() == pytest.approx(np.mean([v for *_, v, _ in CLIP_CASES]), abs=1e-6)
    out.backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([g for *_, g in CLIP_CASES]) / len(CLIP_CASES))
    # a different eps moves the kinks: eps = 0.6 puts 0.5 and 1.5 inside the range
    ratio = torch.tensor([0.5, 1.5], requires_grad=True)
    clipped_surrogate(ratio, torch.tensor([2.0, 2.0]), 0.6).backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_clipped_surrogate_rejects_clip_eps_outside_0_1(eps):
    with pytest.raises(ValueError, match="clip_eps"):
        clipped_surrogate(torch.ones(3), torch.ones(3), eps)


@pytest.mark.parametrize("shapes", [((3,), (4,)), ((3,), (3, 1)), ((2, 3), (3,))])
def test_clipped_surrogate_rejects_mismatched_shapes(shapes):
    with pytest.raises(ValueError, match="shape"):
        clipped_surrogate(torch.ones(shapes[0]), torch.ones(shapes[1]), 0.2)


def test_kl_penalty_surrogate_by_hand():
    ratio = torch.tensor([0.5, 1.5], requires_grad=True)
    adv = torch.tensor([1.0, -2.0], requires_grad=True)
    kl = torch.tensor([0.1, 0.3], requires_grad=True)
    out = kl_penalty_surrogate(ratio, adv, kl, beta=2.0)
    # mean(0.5, -3.0) - 2 * mean(0.1, 0.3) = -1.25 - 0.4
    assert out.item() == pytest.approx(-1.65, abs=1e-6)
    out.backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(kl.grad, torch.tensor([-1.0, -1.0]))
    assert adv.grad is None
    # beta = 0: the plain surrogate, no clipping at all
    assert kl_penalty_surrogate(torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([5.0]), 0.0).item() == 6.0
    with pytest.raises(ValueError, match="beta=-1"):
        kl_penalty_surrogate(ratio, adv, kl, beta=-1)


def test_kl_penalty_surrogate_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        kl_penalty_surrogate(torch.ones(3), torch.ones(3, 1), torch.zeros(3), 1.0)


def test_clipped_value_loss_by_hand_both_branches():
    values = torch.tensor([1.0, 3.0, 2.1], requires_grad=True)
    old = torch.tensor([2.0, 2.0, 2.0])
    targets = torch.tensor([0.0, 0.0, 2.5])
    out = clipped_value_loss(values, old, targets, 0.2)
    # 1: clipped 1.8, errors 1.0 vs 3.24 -> the clipped branch (3.24), gradient 0
    # 2: clipped 2.2, errors 9.0 vs 4.84 -> the plain branch (9.0), gradient (3 - 0)
    # 3: inside the clip range, both 0.16 -> gradient (2.1 - 2.5)
    assert out.item() == pytest.approx(0.5 * (3.24 + 9.0 + 0.16) / 3, abs=1e-6)
    out.backward()
    torch.testing.assert_close(values.grad, torch.tensor([0.0, 3.0, -0.4]) / 3)
    # when the target is on the far side of the old value, clipping cannot help: plain branch
    v = torch.tensor([2.5], requires_grad=True)
    out = clipped_value_loss(v, torch.tensor([2.0]), torch.tensor([1.0]), 0.2)
    assert out.item() == pytest.approx(0.5 * 1.5 ** 2)  # max(2.25, 1.44)
    out.backward()
    torch.testing.assert_close(v.grad, torch.tensor([1.5]))


def test_clipped_value_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        clipped_value_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3, 1), 0.2)


def test_approx_kl_k1_k3_by_hand():
    logp_old = torch.log(torch.tensor([0.5, 0.25]))
    logp_new = torch.log(torch.tensor([0.25, 0.5]))
    k1, k3 = approx_kl(logp_old, logp_new)
    # log r = [-ln 2, ln 2]: k1 = mean(-log r) = 0; k3 = mean(r - 1 - log r) = ((-0.5 + ln2) + (1 - ln2)) / 2
    assert k1 == pytest.approx(0.0, abs=1e-7)
    assert k3 == pytest.approx(0.25, abs=1e-7)
    k1, k3 = approx_kl(torch.tensor([-1.0]), torch.tensor([-3.0]))
    assert k1 == pytest.approx(2.0) and k3 == pytest.approx(math.exp(-2) - 1 + 2)
    # identical policies: both 0; k3 is never negative, k1 can be
    assert approx_kl(logp_old, logp_old) == (0.0, 0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
        assert approx_kl(a, b)[1] >= 0
    assert approx_kl(torch.tensor([-2.0]), torch.tensor([-1.0]))[0] < 0


def test_approx_kl_estimates_the_true_kl_from_samples_of_old():
    g = torch.Generator().manual_seed(0)
    p_old, p_new = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.4, 0.4, 0.2])
    a = torch.multinomial(p_old, 200_000, replacement=True, generator=g)
    k1, k3 = approx_kl(p_old.log()[a], p_new.log()[a])
    exact = (p_old * (p_old / p_new).log()).sum().item()
    assert k1 == pytest.approx(exact, abs=5e-3) and k3 == pytest.approx(exact, abs=5e-3)


# ========================================================================================
# 5. Adaptive KL coefficient
# ========================================================================================


@pytest.mark.parametrize("kl,factor", [
    (0.02, 2.0), (0.1, 2.0), (0.0151, 2.0),        # above 1.5 target: double
    (0.001, 0.5), (0.0, 0.5), (0.0066, 0.5),       # below target / 1.5: halve
    (0.01, 1.0), (0.015, 1.0), (0.01 / 1.5, 1.0), (0.012, 1.0), (0.008, 1.0),  # inside, boundaries kept
])
def test_adaptive_kl_beta_follows_the_paper(kl, factor):
    assert adaptive_kl_beta(3.0, kl, 0.01) == 3.0 * factor


def test_adaptive_kl_beta_scripted_sequence():
    beta, seen = 1.0, []
    for kl in [0.02, 0.02, 0.001, 0.01, 0.015, 0.0, 0.05]:
        beta = adaptive_kl_beta(beta, kl, 0.01)
        seen.append(beta)
    assert seen == [2.0, 4.0, 2.0, 2.0, 2.0, 1.0, 2.0]


@pytest.mark.parametrize("kl_target,expected", [(1e-9, [1, 2, 4, 8]), (10.0, [1, 0.5, 0.25, 0.125]), (0.01, None)])
def test_ppo_penalty_applies_the_adaptive_rule_after_each_update(kl_target, expected, monkeypatch):
    import ppo_lib.algos.ppo as ppo_module

    used = []  # the beta each minibatch's loss was built with
    original = ppo_module.kl_penalty_surrogate
    monkeypatch.setattr(ppo_module, "kl_penalty_surrogate",
                        lambda ratio, adv, kl, beta: (used.append(beta), original(ratio, adv, kl, beta))[1])
    algo = make_ppo(variant="penalty", rollout_steps=32, num_envs=4, minibatch_size=64, epochs=3,
                    kl_target=kl_target, lr=1e-3)
    infos = []
    for r in rollouts(algo, n=4):
        used.clear()
        infos.append(algo.update(r))
        assert used == [infos[-1]["beta"]] * 6  # 3 epochs x 2 minibatches, all with the current beta
    betas = [i["beta"] for i in infos]
    assert betas[0] == 1.0
    for prev, nxt in zip(infos, infos[1:]):
        assert nxt["beta"] == adaptive_kl_beta(prev["beta"], prev["kl"], kl_target)
    assert algo.beta == adaptive_kl_beta(infos[-1]["beta"], infos[-1]["kl"], kl_target)
    if expected is not None:
        assert betas == expected


def test_ppo_penalty_uses_the_measured_exact_kl(monkeypatch):
    """The rule is fed the update's exact mean KL(old || new) on the batch, and the target."""
    import ppo_lib.algos.ppo as ppo_module

    calls = []
    original = ppo_module.adaptive_kl_beta

    def spy(beta, kl, target):
        calls.append((beta, kl, target))
        return original(beta, kl, target)

    monkeypatch.setattr(ppo_module, "adaptive_kl_beta", spy)
    algo = make_ppo(variant="penalty", rollout_steps=32, num_envs=2, minibatch_size=32, epochs=4, kl_target=0.02,
                    lr=1e-2, beta=0.1)
    actor = algo.policy.actor
    for rollout in rollouts(algo, n=2):
        obs = rollout.obs.flatten(0, 1)
        with torch.no_grad():
            old_logits = actor.params(obs).clone()
        info = algo.update(rollout)
        with torch.no_grad():
            kl = kl_categorical_logits(old_logits, actor.params(obs)).mean().item()
        assert calls[-1][0] == info["beta"] and calls[-1][2] == 0.02
        assert kl > 1e-4  # a real step, not float noise
        assert calls[-1][1] == pytest.approx(kl, rel=1e-3) and info["kl"] == pytest.approx(kl, rel=1e-3)
    assert len(calls) == 2


@pytest.mark.parametrize("variant,adaptive", [("penalty", False), ("clip", True), ("none", True)])
def test_beta_stays_fixed_without_the_adaptive_penalty(variant, adaptive):
    with warnings.catch_warnings(record=True) as caught:  # clip and none say that beta is ignored
        warnings.simplefilter("always")
        algo = make_ppo(variant=variant, adaptive_beta=adaptive, beta=0.7, kl_target=1e-9,
                        rollout_steps=32, num_envs=2, minibatch_size=32, epochs=2)
    assert any("ignored with variant" in str(w.message) for w in caught) == (variant != "penalty")
    betas = [algo.update(r)["beta"] for r in rollouts(algo, n=3)]
    assert betas == [0.7, 0.7, 0.7] and algo.beta == 0.7


def test_a_larger_kl_penalty_keeps_the_new_policy_closer():
    kls = {}
    for beta in (0.0, 30.0):
        algo = make_ppo(variant="penalty", beta=beta, adaptive_beta=False, lr=3e-3, rollout_steps=64,
                        num_envs=2, minibatch_size=32, epochs=8, max_grad_norm=0.0)
        kls[beta] = algo.update(next(rollouts(algo)))["kl"]
    assert kls[30.0] < 0.5 * kls[0.0], kls


# ========================================================================================
# 6. PPO update mechanics
# ========================================================================================


def count_optimizer_steps(algo):
    counter = {"n": 0}
    original = algo.optimizer.step

    def step(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    algo.optimizer.step = step
    return counter


@pytest.mark.parametrize("E,M,T,N", [(3, 16, 20, 2), (2, 40, 20, 2), (4, 1, 5, 2), (1, 7, 10, 3), (10, 64, 64, 1)])
def test_ppo_takes_epochs_times_b_over_m_optimizer_steps(E, M, T, N):
    """An incomplete last minibatch is left out of each epoch (chapter 5's text), with a warning
    at construction (SB3 warns too; silently dropping samples was a surprise)."""
    if (T * N) % M:
        with pytest.warns(UserWarning, match=f"minibatch_size={M} does not divide .* = {T * N}: each epoch "
                                             f"leaves {(T * N) % M} randomly chosen samples out") as seen:
            algo = make_ppo(epochs=E, minibatch_size=M, rollout_steps=T, num_envs=N)
        assert seen[0].filename == __file__  # the warning points at the line that built the config
    else:
        algo = make_ppo(epochs=E, minibatch_size=M, rollout_steps=T, num_envs=N)
    rollout = next(rollouts(algo))
    counter = count_optimizer_steps(algo)
    # record the observations of each minibatch (policy.value sees each minibatch and nothing else:
    # the explained variance uses the rollout's own values)
    seen = []
    value = algo.policy.value
    algo.policy.value = lambda obs: (seen.append(obs.detach().clone()), value(obs))[1]
    info = algo.update(rollout)
    B = T * N
    assert counter["n"] == E * (B // M)
    assert info["epochs"] == E and info["early_stop"] == 0.0
    minibatches = seen
    assert len(minibatches) == E * (B // M) and all(len(m) == M for m in minibatches)
    # within an epoch the minibatches are disjoint samples of the batch (a shuffled partition)
    all_obs = rollout.obs.flatten(0, 1)
    for e in range(E):
        rows = torch.cat(minibatches[e * (B // M):(e + 1) * (B // M)])
        idx = [int(torch.nonzero((all_obs == row).all(-1))[0]) for row in rows]
        assert len(set(idx)) == len(idx) == (B // M) * M


def test_target_kl_stops_the_epochs_early():
    algo = make_ppo(epochs=6, minibatch_size=32, rollout_steps=64, num_envs=2, target_kl=1e-9, lr=1e-3)
    rollout = next(rollouts(algo))
    counter = count_optimizer_steps(algo)
    info = algo.update(rollout)
    assert info["early_stop"] == 1.0 and info["epochs"] == 1.0
    assert counter["n"] == 128 // 32
    assert info["approx_kl_k3"] > 1e-9
    # a loose target never stops
    algo = make_ppo(epochs=6, minibatch_size=32, rollout_steps=64, num_envs=2, target_kl=10.0, lr=1e-3)
    counter = count_optimizer_steps(algo)
    info = algo.update(rollout)
    assert info["early_stop"] == 0.0 and info["epochs"] == 6.0 and counter["n"] == 6 * 4


def test_target_kl_stops_after_the_first_epoch_whose_k3_exceeds_it():
    """Replay: the same seed gives the same minibatches, so the k3 after each epoch of a
    full run tells after which epoch a given target must stop."""
    common = dict(epochs=6, minibatch_size=32, rollout_steps=64, num_envs=2, lr=3e-3)
    probe = make_ppo(**common)
    rollout = next(rollouts(probe))
    actor, obs, actions = probe.policy.actor, rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    logp_old = rollout.logprobs.flatten()
    k3s, original, steps = [], probe.optimizer.step, [0]

    def step(*a, **k):
        out = original(*a, **k)
        steps[0] += 1
        if steps[0] % 4 == 0:  # B // M = 4 steps per epoch: the KL after each epoch, computed by hand
            with torch.no_grad():
                log_r = actor.log_prob(actor.distribution(obs), actions) - logp_old
                k3s.append(((log_r.exp() - 1) - log_r).mean().item())
        return out

    probe.optimizer.step = step
    probe.update(rollout)
    assert len(k3s) == 6
    e = next(e for e in range(1, 6) if k3s[e] > max(k3s[:e]))
    target = (max(k3s[:e]) + k3s[e]) / 2
    info = make_ppo(target_kl=target, **common).update(rollout)
    assert info["epochs"] == e + 1 and info["early_stop"] == 1.0, (k3s, target)
    assert info["approx_kl_k3"] == pytest.approx(k3s[e], rel=1e-4)


def test_anneal_lr_and_clip_follow_set_progress():
    algo = make_ppo(lr=1e-3, anneal_lr=True, anneal_clip=True, rollout_steps=16, num_envs=2, minibatch_size=16,
                    epochs=1)
    for progress, factor in [(0.0, 1.0), (0.25, 0.75), (0.9, 0.1), (1.0, 0.0), (1.7, 0.0), (-0.5, 1.0)]:
        algo.set_progress(progress)
        assert algo.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)
        assert algo.clip_eps == pytest.approx(0.2 * factor)
    algo.set_progress(0.25)
    info = algo.update(next(rollouts(algo)))
    assert info["lr"] == pytest.approx(0.75e-3) and info["clip_eps"] == pytest.approx(0.15)
    # without annealing, progress changes nothing
    algo = make_ppo(lr=1e-3, rollout_steps=16, num_envs=2, minibatch_size=16)
    algo.set_progress(0.5)
    assert algo.optimizer.param_groups[0]["lr"] == 1e-3 and algo.clip_eps == 0.2


def test_train_anneals_the_learning_rate_linearly_over_the_run():
    algo = make_ppo(lr=1e-3, anneal_lr=True, rollout_steps=16, num_envs=2, minibatch_size=16, epochs=1)
    h = train(algo, "CartPole-v1", 128, progress=False).history
    assert h.update_steps == [32, 64, 96, 128]
    np.testing.assert_allclose(h.diagnostics["lr"], [1e-3, 0.75e-3, 0.5e-3, 0.25e-3], rtol=1e-6)


def test_minibatch_of_one_with_advantage_normalisation_stays_finite():
    algo = make_ppo(minibatch_size=1, normalize_advantages=True, rollout_steps=8, num_envs=1, epochs=2)
    info = algo.update(next(rollouts(algo)))
    assert all(math.isfinite(v) for k, v in info.items() if k != "explained_variance"), info
    assert all(torch.isfinite(p).all() for p in algo.policy.parameters())
    # one element is only centred: its normalised advantage, and the policy objective, are 0
    assert info["policy_loss"] == 0.0


def rollout_with_ratios(algo, ratios):
    """A real rollout whose stored log pi_old is shifted so that pi_theta / pi_old = ratios at the start."""
    rollout = next(rollouts(algo))
    shift = torch.log(torch.tensor(ratios)).repeat(rollout.T * rollout.N // len(ratios)).view(rollout.T, rollout.N)
    return dataclasses.replace(rollout, logprobs=rollout.logprobs - shift), shift.exp().flatten()


@pytest.mark.parametrize("variant", ["none", "clip", "penalty"])
@pytest.mark.parametrize("normalize_advantages", [False, True])
def test_the_ppo_objective_by_variant(variant, normalize_advantages):
    """One minibatch of the whole batch, one epoch: the reported policy loss is -objective before the step."""
    cfg = dict(variant=variant, rollout_steps=16, num_envs=2, minibatch_size=32, epochs=1,
               normalize_advantages=normalize_advantages, beta=5.0)
    with warnings.catch_warnings(record=True) as caught:  # beta is set on purpose: only 'penalty' reads it
        warnings.simplefilter("always")
        algo = make_ppo(**cfg)
    assert any("beta=5.0: ignored" in str(w.message) for w in caught) == (variant != "penalty")
    rollout, ratio = rollout_with_ratios(algo, [0.5, 1.0, 1.5, 2.0])
    adv = rollout_advantages(rollout, algo.config.gamma, algo.config.gae_lambda)[0].flatten()
    if normalize_advantages:
        adv = normalized(adv)
    info = algo.update(rollout)
    clipped = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean().item()
    unclipped = (ratio * adv).mean().item()
    assert abs(clipped - unclipped) > 1e-3  # the case distinguishes the variants
    expected = clipped if variant == "clip" else unclipped  # penalty: the KL to pi_old is 0 before the step
    assert info["policy_loss"] == pytest.approx(-expected, rel=1e-4, abs=1e-6)
    assert info["clip_fraction"] == pytest.approx(0.75)


def test_variant_none_never_calls_the_clipped_or_penalised_losses(monkeypatch):
    import ppo_lib.algos.ppo as ppo_module

    def boom(*args, **kwargs):
        raise AssertionError("variant='none' must use the plain surrogate")

    monkeypatch.setattr(ppo_module, "clipped_surrogate", boom)
    monkeypatch.setattr(ppo_module, "kl_penalty_surrogate", boom)
    algo = make_ppo(variant="none", rollout_steps=16, num_envs=2, minibatch_size=16, epochs=2)
    info = algo.update(next(rollouts(algo)))
    assert math.isfinite(info["policy_loss"])


def test_minibatch_larger_than_the_batch_is_rejected():
    with pytest.raises(ValueError, match=r"minibatch_size=17: must be <= rollout_steps x num_envs = 16"):
        PPOConfig(rollout_steps=8, num_envs=2, minibatch_size=17)
    PPOConfig(rollout_steps=8, num_envs=2, minibatch_size=16)  # the whole batch is fine
    with pytest.raises(ValueError, match="minibatch_size=64"):
        PPOConfig(rollout_steps=32)  # the default minibatch of 64 with one env


def test_ppo_config_defaults_are_the_papers():
    c = PPOConfig()
    assert (c.clip_eps, c.gamma, c.gae_lambda, c.lr, c.rollout_steps, c.epochs, c.minibatch_size, c.value_coef,
            c.entropy_coef, c.max_grad_norm) == (0.2, 0.99, 0.95, 3e-4, 2048, 10, 64, 1.0, 0.0, 0.5)
    assert c.variant == "clip"


# ========================================================================================
# 7. Learning tests
# ========================================================================================

LEARNERS = {
    "TRPO": (lambda: make_trpo(), "CartPole-v1", 475),
    "PPO-Clip": (lambda: make_ppo(variant="clip", **CARTPOLE_PRESET), "CartPole-v1", 475),
    "PPO-Penalty": (lambda: make_ppo(variant="penalty", **CARTPOLE_PRESET), "CartPole-v1", 475),
    "PPO-Pendulum": (lambda: make_ppo(PENDULUM, **PENDULUM_PRESET), "Pendulum-v1", -250),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learns_within_100k_steps(name):
    make, env_id, threshold = LEARNERS[name]
    algo = make()
    h = train(algo, env_id, 100_000, seed=0, progress=False, stop_at=threshold).history
    reached = h.first_step_reaching(threshold, window=20)
    best = max(h.smoothed_returns(20)[19:], default=float("nan"))
    assert reached is not None and reached <= 100_000, f"{name}: best mean return over 20 episodes {best:.1f}"
    assert np.mean(h.episode_returns[-20:]) >= threshold
    assert h.total_steps - reached < algo.rollout_steps * algo.config.num_envs  # stop_at stopped it


# ========================================================================================
# 8. Bad input
# ========================================================================================


BAD_CONFIGS = [
    (PPOConfig, "clip_eps", 0, "(0, 1)"), (PPOConfig, "clip_eps", 1, "(0, 1)"),
    (PPOConfig, "clip_eps", -0.1, "(0, 1)"), (PPOConfig, "clip_eps", math.nan, "(0, 1)"),
    (PPOConfig, "beta", -1, "[0, inf)"), (PPOConfig, "kl_target", 0, "(0, inf)"),
    (PPOConfig, "target_kl", 0, "(0, inf)"),
    (PPOConfig, "gae_lambda", 1.1, "[0, 1]"), (PPOConfig, "gamma", -0.1, "[0, 1]"),
    (PPOConfig, "epochs", 0, "[1, inf)"), (PPOConfig, "minibatch_size", 0, "[1, inf)"),
    (TRPOConfig, "delta", 0, "(0, 1]"), (TRPOConfig, "delta", 1.5, "(0, 1]"), (TRPOConfig, "delta", -0.01, "(0, 1]"),
    (TRPOConfig, "gae_lambda", 1.1, "[0, 1]"), (TRPOConfig, "gamma", -0.1, "[0, 1]"),
    (TRPOConfig, "backtrack_coef", 1.0, "(0, 1)"), (TRPOConfig, "cg_iters", 0, "[1, inf)"),
    (TRPOConfig, "damping", -0.1, "[0, inf)"),
]


@pytest.mark.parametrize("cls,field,value,interval", BAD_CONFIGS)
def test_configs_reject_out_of_range_values(cls, field, value, interval):
    with pytest.raises(ValueError, match=rf"^{field}={re.escape(repr(value))}: must be in {re.escape(interval)}$"):
        cls(**{field: value})


def test_ppo_config_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match=r"^variant='bogus': must be one of 'clip', 'penalty', 'none'$"):
        PPOConfig(variant="bogus")


def test_configs_accept_the_edges():
    TRPOConfig(delta=1.0, gamma=0.0, gae_lambda=1.0, damping=0.0)
    PPOConfig(variant="penalty", adaptive_beta=False, clip_eps=0.999, beta=0.0, gamma=1.0, gae_lambda=0.0,
              target_kl=1e-6)


@pytest.mark.parametrize("cls", [PPO, TRPO])
def test_a_nan_loss_stops_training_naming_the_update_and_the_diagnostics(cls, monkeypatch):
    algo = cls(CARTPOLE.observation_space, CARTPOLE.action_space,
               (PPOConfig if cls is PPO else TRPOConfig)(rollout_steps=16, num_envs=2, **(
                   {"minibatch_size": 16} if cls is PPO else {})))
    original = algo.update

    def update(rollout):
        info = original(rollout)
        if algo.n_updates == 2:
            info = dict(info, policy_loss=float("nan"))
        return info

    monkeypatch.setattr(algo, "update", update)
    with pytest.raises(TrainingDiverged) as exc:
        train(algo, "CartPole-v1", 10_000, progress=False)
    msg = str(exc.value)
    assert re.match(r"^update 2 at env step 64: non-finite \['policy_loss'\]", msg), msg
    assert "diagnostics" in msg and "'policy_loss': nan" in msg


def test_a_nan_loss_from_a_patched_ppo_update_is_caught(monkeypatch):
    def update(self, rollout):
        self.n_updates += 1
        return {"policy_loss": float("nan"), "value_loss": 0.1, "kl": 0.0}

    monkeypatch.setattr(PPO, "update", update)
    algo = make_ppo(rollout_steps=8, num_envs=2, minibatch_size=8)
    with pytest.raises(TrainingDiverged, match=r"update 1 .*policy_loss.*diagnostics: \{'policy_loss': nan"):
        train(algo, "CartPole-v1", 1000, progress=False)


class NaNRewardAfter(gym.Wrapper):
    def __init__(self, env, after):
        super().__init__(env)
        self.after, self.t = after, 0

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        return obs, (float("nan") if self.t > self.after else r), term, trunc, info


def test_a_nan_reward_is_reported_by_the_env_not_deep_in_an_update():
    def factory():
        return NaNRewardAfter(gym.make("CartPole-v1"), after=5)

    algo = make_ppo(rollout_steps=8, num_envs=2, minibatch_size=8)
    with pytest.raises(ValueError, match=r"non-finite reward \[nan, nan\] at env step 10"):
        train(algo, VecEnv(factory, 2, seed=0), 1000, progress=False)


# ========================================================================================
# 9. Discrete and continuous, TRPO and PPO
# ========================================================================================


class RecordActions(gym.Wrapper):
    log: list = []

    def step(self, action):
        RecordActions.log.append(np.array(action, copy=True))
        return self.env.step(action)


@pytest.mark.parametrize("algo_name", ["TRPO", "PPO"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_short_runs_discrete_and_continuous(algo_name, env_id, monkeypatch):
    env = gym.make(env_id)
    T, N = 64, 2
    if algo_name == "TRPO":
        algo = TRPO(env.observation_space, env.action_space, TRPOConfig(rollout_steps=T, num_envs=N), seed=0)
    else:
        algo = PPO(env.observation_space, env.action_space,
                   PPOConfig(rollout_steps=T, num_envs=N, minibatch_size=32, epochs=2), seed=0)
    monkeypatch.setattr(RecordActions, "log", [])
    venv = VecEnv(lambda: RecordActions(gym.make(env_id)), N, seed=0)
    obs = venv.reset()
    params_before = parameters_to_vector(algo.policy.parameters()).detach().clone()
    raw = []
    for _ in range(2):
        rollout, obs = collect_rollout(venv, algo.policy, T, obs)
        raw.append(rollout.actions)
        info = algo.update(rollout)
        bad = {k: v for k, v in info.items() if not math.isfinite(v) and k != "explained_variance"}
        assert not bad, info
    assert all(torch.isfinite(p).all() for p in algo.policy.parameters())
    assert not torch.equal(parameters_to_vector(algo.policy.parameters()), params_before)
    sent = np.stack(RecordActions.log)  # (2 T N, ...) in step order
    raw = torch.cat(raw).flatten(0, 1).numpy()  # (2 T, N) -> step-major too
    assert len(sent) == 2 * T * N
    space = env.action_space
    assert all(space.contains(np.asarray(a, dtype=space.dtype)) for a in sent)
    if isinstance(space, gym.spaces.Box):
        assert sent.shape == (2 * T * N, 1)
        # the raw Gaussian samples are stored unclipped; only the copy sent to the env is clipped
        assert (np.abs(raw) > 2.0).any(), "expected some raw samples outside [-2, 2] with std 1"
        np.testing.assert_allclose(sent, np.clip(raw, -2.0, 2.0), rtol=0, atol=1e-6)
        assert "log_std" in dict(algo.policy.actor.named_parameters())
    else:
        assert np.issubdtype(sent.dtype, np.integer)
        np.testing.assert_array_equal(sent, raw)


@pytest.mark.parametrize("algo_name", ["TRPO", "PPO"])
def test_same_seed_same_updates(algo_name):
    def run():
        algo = make_trpo(rollout_steps=32, num_envs=2) if algo_name == "TRPO" else \
            make_ppo(rollout_steps=32, num_envs=2, minibatch_size=16, epochs=2)
        return [algo.update(r) for r in rollouts(algo, n=2)], parameters_to_vector(algo.policy.parameters())

    (i1, p1), (i2, p2) = run(), run()
    same = lambda a, b: a == b or (math.isnan(a) and math.isnan(b))  # noqa: E731
    assert [list(d) for d in i1] == [list(d) for d in i2]
    assert all(same(a[k], b[k]) for a, b in zip(i1, i2) for k in a), (i1, i2)
    assert torch.equal(p1, p2)
