"""Exercises of chapters 4-6: conjugate gradient, the Fisher-vector product,
the probability ratio, the clipped surrogate, the KL penalty and its adaptive beta."""

from __future__ import annotations

import torch

from ppo_lib import losses
from ppo_lib.algos.ppo import adaptive_kl_beta
from ppo_lib.algos.trpo import conjugate_gradient
from ppo_lib.checks.core import Case, Exercise, Mistake

D = torch.float64


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=D)
    return m @ m.T + n * torch.eye(n, dtype=D)


class MatVec:
    """``A v`` for a fixed matrix, printable in feedback (a plain lambda is not)."""

    def __init__(self, A: torch.Tensor, name: str):
        self.A, self.name, self.calls = A, name, 0

    def __call__(self, v):
        self.calls += 1
        return self.A @ torch.as_tensor(v, dtype=D)

    def __repr__(self):
        return self.name


# ---------------------------------------------------------------- conjugate gradient

def _cg_variant(Avp, b, iters, steepest=False, beta_inverted=False, no_residual_update=False):
    b = torch.as_tensor(b, dtype=D)
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        if not no_residual_update:
            r = r - alpha * Ap
        rr_new = r @ r
        if steepest:
            p = r.clone()
        else:
            p = r + ((rr / rr_new) if beta_inverted else (rr_new / rr)) * p
        rr = rr_new
    return x


_A2 = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=D)
check_conjugate_gradient = Exercise(
    "conjugate_gradient",
    reference=lambda Avp, b, iters: conjugate_gradient(Avp, torch.as_tensor(b, dtype=D), iters),
    reference_name="ppo_lib.algos.trpo.conjugate_gradient",
    cases=[
        Case((MatVec(_A2, "A=[[4,1],[1,3]]"), torch.tensor([1.0, 2.0], dtype=D), 1),
             "A=[[4, 1], [1, 3]], b=[1, 2], iters=1 (one step along b)"),
        Case((MatVec(_A2, "A=[[4,1],[1,3]]"), torch.tensor([1.0, 2.0], dtype=D), 2),
             "A=[[4, 1], [1, 3]], b=[1, 2], iters=2 (exact for a 2 x 2 system)"),
        Case((MatVec(_spd(6, 0), "a random 6 x 6 SPD matrix"), torch.arange(1.0, 7.0, dtype=D), 3),
             "a random 6 x 6 SPD matrix, b=[1..6], iters=3 (not converged yet: the iterates must match)"),
        Case((MatVec(_spd(6, 1), "a random 6 x 6 SPD matrix"), torch.ones(6, dtype=D), 6),
             "a random 6 x 6 SPD matrix, b=ones, iters=6"),
    ],
    mistakes=[
        Mistake("steepest descent", lambda Avp, b, it: _cg_variant(Avp, b, it, steepest=True),
                "your search direction is the residual itself (steepest descent): the next direction is "
                "p = r_new + (r_new.r_new / r.r) p, conjugate to the previous ones."),
        Mistake("beta inverted", lambda Avp, b, it: _cg_variant(Avp, b, it, beta_inverted=True),
                "beta is inverted: it is (r_new . r_new) / (r_old . r_old)."),
        Mistake("residual not updated", lambda Avp, b, it: _cg_variant(Avp, b, it, no_residual_update=True),
                "the residual must be updated each step: r <- r - alpha A p."),
    ],
)

# ---------------------------------------------------------------- Fisher-vector product


def _reference_fvp(mean_kl, params, v):
    kl = mean_kl(params)
    grads = torch.autograd.grad(kl, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    hv = torch.autograd.grad(flat @ v, params)
    return torch.cat([h.reshape(-1) for h in hv])


class Quadratic:
    """mean_kl(params) = 1/2 theta^T H theta with theta the flattened params: F v = H v."""

    def __init__(self, H: torch.Tensor, name: str):
        self.H, self.name = H, name

    def __call__(self, params):
        theta = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * theta @ self.H @ theta

    def __repr__(self):
        return self.name


class SoftmaxKL:
    """The mean KL(old || new) of a softmax policy over 3 actions, logits = params[0]."""

    def __init__(self, old_logits: torch.Tensor):
        self.old = old_logits

    def __call__(self, params):
        old = torch.distributions.Categorical(logits=self.old)
        return torch.distributions.kl_divergence(old, torch.distributions.Categorical(logits=params[0])).mean()

    def __repr__(self):
        return "mean KL of a softmax policy"


def _params(*shapes_values):
    return [torch.tensor(v, dtype=D, requires_grad=True) for v in shapes_values]


def _run_fvp(fn, mean_kl, param_values, v):
    params = _params(*param_values)
    return fn(mean_kl, params, torch.as_tensor(v, dtype=D))


_OLD = torch.tensor([[0.2, -0.1, 0.5], [1.0, 0.0, -1.0]], dtype=D)
check_fisher_vector_product = Exercise(
    "fisher_vector_product",
    reference=_reference_fvp,
    reference_name="ppo_lib.algos.trpo.fisher_vector_product (its core)",
    run=_run_fvp,
    cases=[
        Case((Quadratic(torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=D), "1/2 x^T [[2,1],[1,3]] x"),
              [[0.5, -1.0]], [1.0, 0.0]),
             "mean_kl = 1/2 theta^T H theta with H=[[2, 1], [1, 3]], one parameter tensor [0.5, -1], v=[1, 0]: "
             "F v = H v = [2, 1]"),
        Case((Quadratic(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=D)), "1/2 x^T diag(1,2,3) x"),
              [[1.0, 1.0], [2.0]], [1.0, 1.0, 1.0]),
             "two parameter tensors [1, 1] and [2], H=diag(1, 2, 3), v=[1, 1, 1]: the result is one flat vector"),
        Case((SoftmaxKL(_OLD), [_OLD.tolist()], [0.3, -0.2, 0.1, 0.0, 0.5, -0.5]),
             "the mean KL of a softmax policy at theta = theta_old, v of length 6"),
    ],
    mistakes=[
        Mistake("gradient only", lambda mean_kl, params, v: torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(mean_kl(params), params)]),
                "you returned the gradient of the KL; differentiate (gradient . v) once more to get F v."),
        Mistake("gradient times v", lambda mean_kl, params, v: torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(mean_kl(params), params)]) * v,
                "gradient * v (element-wise) is not F v: take the dot product of the gradient with v, "
                "then differentiate that scalar again."),
    ],
)

# ---------------------------------------------------------------- probability ratio

check_probability_ratio = Exercise(
    "probability_ratio",
    reference=lambda new, old: torch.exp(torch.as_tensor(new, dtype=D) - torch.as_tensor(old, dtype=D)),
    reference_name="torch.exp(logp_new - logp_old)",
    cases=[
        Case((torch.tensor([-1.0], dtype=D), torch.tensor([-1.0], dtype=D)), "logp_new = logp_old = [-1] (ratio 1)"),
        Case((torch.tensor([-0.5, -2.0, -1.2], dtype=D), torch.tensor([-1.0, -1.0, -1.2], dtype=D)),
             "logp_new=[-0.5, -2.0, -1.2], logp_old=[-1.0, -1.0, -1.2]"),
    ],
    mistakes=[
        Mistake("inverted", lambda new, old: torch.exp(old - new),
                "the ratio is inverted: r = pi_new / pi_old = exp(logp_new - logp_old)."),
        Mistake("log ratio", lambda new, old: new - old,
                "that is the log of the ratio: apply exp."),
        Mistake("ratio of logs", lambda new, old: new / old,
                "dividing log-probabilities is not dividing probabilities: exp(logp_new - logp_old)."),
    ],
)

# ---------------------------------------------------------------- clipped surrogate


def _run_objective(fn, ratio, adv, *rest):
    r = torch.tensor(ratio, dtype=D, requires_grad=True)
    a = torch.tensor(adv, dtype=D)
    out = fn(r, a, *rest)
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        return {"objective": out}
    if out.requires_grad:
        out.backward()
    return {"objective": out.detach(), "gradient w.r.t. ratio": r.grad if r.grad is not None else torch.zeros_like(r)}


def _clip_max(r, a, eps):
    return torch.max(r * a, torch.clamp(r, 1 - eps, 1 + eps) * a).mean()


check_clipped_surrogate = Exercise(
    "clipped_surrogate",
    reference=losses.clipped_surrogate,
    reference_name="ppo_lib.losses.clipped_surrogate",
    run=_run_objective,
    cases=[
        Case(([1.5], [2.0], 0.2), "ratio=[1.5], advantage=[+2], eps=0.2 (A > 0, ratio above 1 + eps)"),
        Case(([0.5], [-1.0], 0.2), "ratio=[0.5], advantage=[-1], eps=0.2 (A < 0, ratio below 1 - eps)"),
        Case(([0.5, 1.1, 1.5, 0.5, 0.9, 1.5], [2.0, 2.0, 2.0, -1.0, -1.0, -1.0], 0.2),
             "the six cases: A = +2 and A = -1, each with ratio 0.5, inside, 1.5; eps=0.2"),
        Case(([0.95, 1.05], [1.0, -3.0], 0.1), "ratio=[0.95, 1.05], advantage=[1, -3], eps=0.1 (inside the range)"),
    ],
    mistakes=[
        Mistake("loss sign", lambda r, a, eps: -losses.clipped_surrogate(r, a, eps),
                "this exercise returns the objective L_CLIP (to be maximised), not the loss -L_CLIP."),
        Mistake("max", _clip_max,
                "min, not max: the objective takes the *pessimistic* of the clipped and unclipped terms."),
        Mistake("clipped only", lambda r, a, eps: (torch.clamp(r, 1 - eps, 1 + eps) * a).mean(),
                "the clipped term alone also removes the gradient where clipping would make the objective "
                "*better* (A > 0 with r < 1 - eps, A < 0 with r > 1 + eps): take the min with r * A."),
        Mistake("clip the advantage", lambda r, a, eps: torch.min(r * a, r * torch.clamp(a, 1 - eps, 1 + eps)).mean(),
                "clip the ratio r to [1 - eps, 1 + eps], not the advantage."),
        Mistake("detached ratio", lambda r, a, eps: losses.clipped_surrogate(r.detach(), a, eps),
                "no gradient reaches the ratio: do not detach it (only the advantages are constants)."),
        Mistake("sum", lambda r, a, eps: torch.min(r * a, torch.clamp(r, 1 - eps, 1 + eps) * a).sum(),
                "average over the batch (mean), do not sum."),
    ],
)

# ---------------------------------------------------------------- KL penalty

def _run_kl_objective(fn, ratio, adv, kl, beta):
    kl_t = torch.tensor(kl, dtype=D, requires_grad=True)
    out = _run_objective(fn, ratio, adv, kl_t, beta)
    if "gradient w.r.t. ratio" in out:
        out["gradient w.r.t. kl (the penalty must reach the policy)"] = (
            kl_t.grad if kl_t.grad is not None else torch.zeros_like(kl_t))
    return out


check_kl_penalty_objective = Exercise(
    "kl_penalty_objective",
    reference=lambda r, a, kl, beta: losses.kl_penalty_surrogate(r, a, kl, beta),
    reference_name="ppo_lib.losses.kl_penalty_surrogate",
    run=_run_kl_objective,
    cases=[
        Case(([1.2], [1.0], [0.05], 1.0), "ratio=[1.2], advantage=[1], kl=[0.05], beta=1"),
        Case(([0.9, 1.3], [-1.0, 2.0], [0.01, 0.03], 3.0), "ratio=[0.9, 1.3], advantage=[-1, 2], kl=[0.01, 0.03], beta=3"),
    ],
    mistakes=[
        Mistake("penalty sign", lambda r, a, kl, beta: (r * a).mean() + beta * kl.mean(),
                "the KL is a *penalty*: subtract beta * KL from the surrogate."),
        Mistake("detached KL", lambda r, a, kl, beta: (r * a).mean() - beta * kl.detach().mean(),
                "the KL is detached (or turned into a number): no gradient reaches it, so the penalty does "
                "nothing to the update. Keep it a tensor in the graph."),
        Mistake("no beta", lambda r, a, kl, beta: (r * a).mean() - kl.mean(),
                "multiply the KL by beta."),
        Mistake("loss sign", lambda r, a, kl, beta: -((r * a).mean() - beta * kl.mean()),
                "return the objective (to be maximised), not its negative."),
    ],
)

# ---------------------------------------------------------------- adaptive beta

_NO_TOLERANCE = "the paper leaves beta alone while the KL is within a factor 1.5 of the target."
check_adaptive_kl_beta = Exercise(
    "adaptive_kl_beta",
    reference=adaptive_kl_beta,
    reference_name="ppo_lib.algos.ppo.adaptive_kl_beta",
    cases=[
        Case((1.0, 0.05, 0.01), "beta=1, kl=0.05, target=0.01 (KL far too large)"),
        Case((1.0, 0.001, 0.01), "beta=1, kl=0.001, target=0.01 (KL far too small)"),
        Case((1.0, 0.01, 0.01), "beta=1, kl=0.01, target=0.01 (on target)"),
        Case((2.0, 0.012, 0.01), "beta=2, kl=0.012, target=0.01 (above target, but within a factor 1.5)"),
        Case((2.0, 0.008, 0.01), "beta=2, kl=0.008, target=0.01 (below target, but within a factor 1.5)"),
    ],
    mistakes=[
        Mistake("inverted", lambda b, kl, t: b / 2 if kl > 1.5 * t else (b * 2 if kl < t / 1.5 else b),
                "the rule is inverted: a KL that is too large needs a *stronger* penalty (beta x 2)."),
        Mistake("no tolerance", lambda b, kl, t: b * 2 if kl > t else (b / 2 if kl < t else b), _NO_TOLERANCE),
        Mistake("no tolerance (two-way)", lambda b, kl, t: b * 2 if kl > t else b / 2, _NO_TOLERANCE),
        Mistake("factor 1.5", lambda b, kl, t: b * 1.5 if kl > 1.5 * t else (b / 1.5 if kl < t / 1.5 else b),
                "beta is doubled or halved (x 2, / 2); 1.5 is the tolerance on the KL, not the factor."),
    ],
)
