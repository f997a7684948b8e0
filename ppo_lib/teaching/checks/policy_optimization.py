"""Exercises of chapters 4-6: conjugate gradient, the Fisher-vector product,
the probability ratio, the clipped surrogate, the KL penalty and its adaptive beta."""

from __future__ import annotations

import torch

from ppo_lib import losses
from ppo_lib.algos.ppo import adaptive_kl_beta
from ppo_lib.algos.trpo import conjugate_gradient
from ppo_lib.teaching.checks.core import Case, Exercise, InputChanged, Mistake, changed, tracked

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

def _cg_variant(Avp, b, iters, steepest=False, beta_inverted=False, no_residual_update=False, stop=True):
    b = torch.as_tensor(b, dtype=D)
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        if stop and rr < 1e-10:
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


def _run_cg(fn, Avp, b, iters):
    """The solution, and how many times it called ``Avp``: the text fixes one call per iteration (in TRPO
    each is a Fisher-vector product, a double backward pass: the expensive part)."""
    Avp = MatVec(Avp.A, Avp.name)  # a fresh counter for every call
    x = fn(Avp, b, iters)
    return {"x": x, "calls to Avp (the text: once per iteration, none after the residual is 0)": Avp.calls}


_A2 = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=D)
check_conjugate_gradient = Exercise(
    "conjugate_gradient",
    reference=lambda Avp, b, iters: conjugate_gradient(Avp, torch.as_tensor(b, dtype=D), iters),
    reference_name="ppo_lib.algos.trpo.conjugate_gradient",
    run=_run_cg,
    cases=[
        Case((MatVec(_A2, "A=[[4,1],[1,3]]"), torch.tensor([1.0, 2.0], dtype=D), 1),
             "A=[[4, 1], [1, 3]], b=[1, 2], iters=1 (one step along b)"),
        Case((MatVec(_A2, "A=[[4,1],[1,3]]"), torch.tensor([1.0, 2.0], dtype=D), 2),
             "A=[[4, 1], [1, 3]], b=[1, 2], iters=2 (exact for a 2 x 2 system)"),
        Case((MatVec(_spd(6, 0), "a random 6 x 6 SPD matrix"), torch.arange(1.0, 7.0, dtype=D), 3),
             "a random 6 x 6 SPD matrix, b=[1..6], iters=3 (not converged yet: the iterates must match)"),
        Case((MatVec(_spd(6, 1), "a random 6 x 6 SPD matrix"), torch.ones(6, dtype=D), 6),
             "a random 6 x 6 SPD matrix, b=ones, iters=6"),
        Case((MatVec(_A2, "A=[[4,1],[1,3]]"), torch.zeros(2, dtype=D), 3),
             "A=[[4, 1], [1, 3]], b=[0, 0], iters=3: the residual is 0 from the start, so stop at once (x = 0)"),
        Case((MatVec(_A2, "A=[[4,1],[1,3]]"), torch.tensor([-3.0, 0.5], dtype=D), 6),
             "A=[[4, 1], [1, 3]], b=[-3, 0.5], iters=6: more iterations than dimensions (stop once r.r < 1e-10)"),
        Case((MatVec(_spd(3, 2), "a random 3 x 3 SPD matrix"), torch.tensor([0.5, -1.0, 2.0], dtype=D), 0),
             "a random 3 x 3 SPD matrix, b=[0.5, -1, 2], iters=0 (no iteration: x = 0)"),
        Case((MatVec(_spd(4, 3), "a random 4 x 4 SPD matrix"), torch.tensor([1.0, -2.0, 0.0, 3.0], dtype=D), 2),
             "a random 4 x 4 SPD matrix, b=[1, -2, 0, 3], iters=2"),
    ],
    mistakes=[
        Mistake("steepest descent", lambda Avp, b, it: _cg_variant(Avp, b, it, steepest=True),
                "your search direction is the residual itself (steepest descent): the next direction is "
                "p = r_new + (r_new.r_new / r.r) p, conjugate to the previous ones."),
        Mistake("beta inverted", lambda Avp, b, it: _cg_variant(Avp, b, it, beta_inverted=True),
                "beta is inverted: it is (r_new . r_new) / (r_old . r_old)."),
        Mistake("residual not updated", lambda Avp, b, it: _cg_variant(Avp, b, it, no_residual_update=True),
                "the residual must be updated each step: r <- r - alpha A p."),
        Mistake("no early stop", lambda Avp, b, it: _cg_variant(Avp, b, it, stop=False),
                "stop as soon as r.r < 1e-10: once the residual is 0 (b = 0, or a solved system), "
                "alpha = 0 / 0 is nan."),
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


def _run_fvp(fn, mean_kl, param_values, v, v2=None):
    """Two calls on the same parameter tensors, as chapter 4 makes them (one per unit vector): a product
    that accumulates into ``.grad`` is right once and wrong the second time."""
    params = _params(*param_values)
    v = torch.as_tensor(v, dtype=D)
    v2 = torch.flip(v, (0,)) + 0.5 if v2 is None else torch.as_tensor(v2, dtype=D)
    before = [p.detach().clone() for p in params]
    first = fn(mean_kl, params, v.clone())
    if isinstance(first, torch.Tensor):
        first = first.detach().clone()
    second = fn(mean_kl, params, v2.clone())
    if any(changed(p, b) for p, b in zip(params, before)):
        return InputChanged("params")
    return {"F v (first call)": first, "F v2 (a second call on the same params)": second}


def _fvp_accumulating(mean_kl, params, v):
    grads = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    (torch.cat([g.reshape(-1) for g in grads]) @ v).backward()
    return torch.cat([p.grad.reshape(-1) for p in params]).clone()


_OLD = torch.tensor([[0.2, -0.1, 0.5], [1.0, 0.0, -1.0]], dtype=D)
check_fisher_vector_product = Exercise(
    "fisher_vector_product",
    reference=_reference_fvp,
    reference_name="ppo_lib.algos.trpo.fisher_vector_product (its core)",
    run=_run_fvp,
    cases=[
        Case((Quadratic(torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=D), "1/2 x^T [[2,1],[1,3]] x"),
              [[0.5, -1.0]], [1.0, 0.0], [0.0, 1.0]),
             "mean_kl = 1/2 theta^T H theta with H=[[2, 1], [1, 3]], one parameter tensor [0.5, -1], called with "
             "v=[1, 0] and then v=[0, 1] on the same params: F v = [2, 1], then [1, 3]"),
        Case((Quadratic(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=D)), "1/2 x^T diag(1,2,3) x"),
              [[1.0, 1.0], [2.0]], [1.0, 1.0, 1.0]),
             "two parameter tensors [1, 1] and [2], H=diag(1, 2, 3), v=[1, 1, 1], then a second v on the same "
             "params: the result is one flat vector"),
        Case((SoftmaxKL(_OLD), [_OLD.tolist()], [0.3, -0.2, 0.1, 0.0, 0.5, -0.5]),
             "the mean KL of a softmax policy at theta = theta_old, v of length 6"),
        Case((SoftmaxKL(_OLD), [(_OLD + torch.tensor([[0.4, -0.3, 0.0], [0.2, 0.1, -0.6]], dtype=D)).tolist()],
              [1.0, 0.0, -1.0, 0.5, 0.5, 2.0]),
             "the mean KL of a softmax policy away from theta_old (F depends on theta there), v of length 6"),
    ],
    mistakes=[
        Mistake("gradient only", lambda mean_kl, params, v: torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(mean_kl(params), params)]),
                "you returned the gradient of the KL; differentiate (gradient . v) once more to get F v."),
        Mistake("gradient times v", lambda mean_kl, params, v: torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(mean_kl(params), params)]) * v,
                "gradient * v (element-wise) is not F v: take the dot product of the gradient with v, "
                "then differentiate that scalar again."),
        Mistake("accumulates into .grad", _fvp_accumulating,
                "the first product is right, the second is not: .backward() *adds* into params[i].grad, so a "
                "second call returns the sum of both products. Use torch.autograd.grad (it returns the "
                "gradients without storing them), or set p.grad = None before and after."),
    ],
)

# ---------------------------------------------------------------- probability ratio

def _run_ratio(fn, logp_new, logp_old):
    """The ratio feeds the PPO loss: report it and the gradient of sum(w * ratio) w.r.t. logp_new (w fixed,
    uneven weights), so a ratio computed under no_grad, detached or through NumPy is caught."""
    dtype = logp_new.dtype
    leaf, given = tracked(logp_new, dtype)
    old = logp_old.detach().clone()
    out = fn(given, old)
    if changed(given, leaf):
        return InputChanged("logp_new")
    if changed(old, logp_old):
        return InputChanged("logp_old")
    if not isinstance(out, torch.Tensor):
        return {"ratio": out}
    result = {"ratio": out.detach()}
    if tuple(out.shape) != tuple(leaf.shape) or not out.requires_grad:
        return result  # a wrong shape is reported on the value; no graph: the gradient is "not available"
    w = torch.linspace(0.5, 1.5, leaf.numel(), dtype=out.dtype).reshape(leaf.shape)
    (out * w).sum().backward()
    result["gradient w.r.t. logp_new (the ratio feeds the loss)"] = (
        leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
    return result


def _ratio_reference(new, old):
    return torch.exp(new.double() - old.double())


_DETACHED_RATIO = ("no gradient reaches logp_new: the ratio feeds the loss, so compute it with torch operations "
                   "on the tensors you are given (no torch.no_grad(), no .detach(), no NumPy).")
check_probability_ratio = Exercise(
    "probability_ratio",
    reference=_ratio_reference,
    reference_name="torch.exp(logp_new - logp_old)",
    run=_run_ratio,
    cases=[
        Case((torch.tensor([-1.0], dtype=D), torch.tensor([-1.0], dtype=D)), "logp_new = logp_old = [-1] (ratio 1)"),
        Case((torch.tensor([-0.5, -2.0, -1.2], dtype=D), torch.tensor([-1.0, -1.0, -1.2], dtype=D)),
             "logp_new=[-0.5, -2.0, -1.2], logp_old=[-1.0, -1.0, -1.2]"),
        Case((torch.tensor([-0.1, -3.0, -0.7, -2.2]), torch.tensor([-0.3, -2.5, -0.7, -1.0])),
             "float32 log-probs (as the policy returns them): logp_new=[-0.1, -3, -0.7, -2.2], "
             "logp_old=[-0.3, -2.5, -0.7, -1]"),
        Case((torch.tensor([[-0.4, -1.0, -2.0], [-0.1, -3.0, -0.6]], dtype=D),
              torch.tensor([[-0.5, -1.0, -1.5], [-0.3, -2.0, -0.6]], dtype=D)),
             "log-probs of shape (2, 3) (any shape): logp_new=[[-0.4, -1, -2], [-0.1, -3, -0.6]], "
             "logp_old=[[-0.5, -1, -1.5], [-0.3, -2, -0.6]]"),
        Case((torch.tensor([-110.0, -0.5]), torch.tensor([-111.0, -0.2])),
             "float32, a very unlikely action: logp_new=[-110, -0.5], logp_old=[-111, -0.2] "
             "(exp(-110) underflows to 0 in float32: work in log space)"),
    ],
    mistakes=[
        Mistake("detached", lambda new, old: torch.exp(new.detach() - old), _DETACHED_RATIO),
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
    r, given = tracked(ratio, D)
    a = torch.tensor(adv, dtype=D)
    a_before = a.clone()
    tensors = [x for x in rest if isinstance(x, torch.Tensor)]
    before = [x.detach().clone() for x in tensors]
    out = fn(given, a, *rest)
    if changed(given, r):
        return InputChanged("ratio")
    if changed(a, a_before):
        return InputChanged("advantages")
    if any(changed(x, b) for x, b in zip(tensors, before)):
        return InputChanged("kl")
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
        Case(([0.85, 1.15, 0.7, 1.3, 1.05], [1.0, -1.0, -2.0, 0.5, 3.0], 0.1),
             "eps=0.1, ratios outside the range on both sides, with A > 0 and A < 0: ratio=[0.85, 1.15, 0.7, 1.3, "
             "1.05], advantage=[1, -1, -2, 0.5, 3]"),
        Case(([0.6, 1.4, 1.2, 0.75, 1.6], [2.0, 2.0, -1.0, -0.5, 0.0], 0.3),
             "eps=0.3: ratio=[0.6, 1.4, 1.2, 0.75, 1.6], advantage=[2, 2, -1, -0.5, 0]"),
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
        Mistake("upper side only", lambda r, a, eps: torch.min(r * a, torch.clamp(r, max=1 + eps) * a).mean(),
                "your ratio is never clipped at 1 - eps: where A < 0 and r < 1 - eps the objective must be flat, "
                "(1 - eps) * A. Clip the ratio to [1 - eps, 1 + eps] for every sample, whatever the sign of A."),
        Mistake("lower side only", lambda r, a, eps: torch.min(r * a, torch.clamp(r, min=1 - eps) * a).mean(),
                "your ratio is never clipped at 1 + eps: where A > 0 and r > 1 + eps the objective must be flat, "
                "(1 + eps) * A. Clip the ratio to [1 - eps, 1 + eps] for every sample, whatever the sign of A."),
        Mistake("eps fixed at 0.2", lambda r, a, eps: losses.clipped_surrogate(r, a, 0.2),
                "use the eps you are given, not a fixed 0.2."),
    ],
)

# ---------------------------------------------------------------- KL penalty

def _run_kl_objective(fn, ratio, adv, kl, beta):
    kl_t, kl_given = tracked(kl, D)
    out = _run_objective(fn, ratio, adv, kl_given, beta)
    if not isinstance(out, InputChanged) and changed(kl_given, kl_t):
        return InputChanged("kl")
    if isinstance(out, dict) and "gradient w.r.t. ratio" in out:
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
        Case(([1.1, 0.7, 1.0, 1.4], [0.5, -2.0, 1.0, -0.3], [0.2, 0.05, 0.0, 0.12], 0.5),
             "ratio=[1.1, 0.7, 1.0, 1.4], advantage=[0.5, -2, 1, -0.3], kl=[0.2, 0.05, 0, 0.12], beta=0.5"),
    ],
    mistakes=[
        Mistake("penalty sign", lambda r, a, kl, beta: (r * a).mean() + beta * kl.mean(),
                "the KL is a *penalty*: subtract beta * KL from the surrogate."),
        Mistake("detached ratio", lambda r, a, kl, beta: (r.detach() * a).mean() - beta * kl.mean(),
                "no gradient reaches the ratio: the surrogate r * A must stay in the graph (do not detach it)."),
        Mistake("sum of the KL", lambda r, a, kl, beta: (r * a).mean() - beta * kl.sum(),
                "average the KL over the batch (mean), like the surrogate."),
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
        Case((2.0, 0.0145, 0.01), "beta=2, kl=0.0145, target=0.01 (1.45 x the target: just inside, beta stays)"),
        Case((2.0, 0.0155, 0.01), "beta=2, kl=0.0155, target=0.01 (1.55 x the target: just above, beta doubles)"),
        Case((0.5, 0.0069, 0.01), "beta=0.5, kl=0.0069, target=0.01 (just above target / 1.5 = 0.00667: stays)"),
        Case((0.5, 0.0064, 0.01), "beta=0.5, kl=0.0064, target=0.01 (just below target / 1.5 = 0.00667: halves)"),
        Case((3.0, 0.029, 0.02), "beta=3, kl=0.029, target=0.02 (1.45 x the target: stays)"),
        Case((3.0, 0.031, 0.02), "beta=3, kl=0.031, target=0.02 (1.55 x the target: doubles)"),
        Case((0.2, 0.0034, 0.005), "beta=0.2, kl=0.0034, target=0.005 (just above target / 1.5: stays)"),
        Case((0.2, 0.0032, 0.005), "beta=0.2, kl=0.0032, target=0.005 (just below target / 1.5: halves)"),
        # exactly on the band's edges, which the exercise text puts inside the band; the numbers are exact in
        # binary, so kl > 1.5 * target, kl / target > 1.5 and kl * 1.5 < target all give the text's answer
        Case((4.0, 0.75, 0.5), "beta=4, kl=0.75, target=0.5 (exactly 1.5 x the target: inside the band, stays)"),
        Case((4.0, 0.5, 0.75), "beta=4, kl=0.5, target=0.75 (exactly target / 1.5: inside the band, stays)"),
    ],
    # one number must come back (compare rejects an array of shape (1,): the next cell compares it with ==)
    mistakes=[
        Mistake("inverted", lambda b, kl, t: b / 2 if kl > 1.5 * t else (b * 2 if kl < t / 1.5 else b),
                "the rule is inverted: a KL that is too large needs a *stronger* penalty (beta x 2)."),
        Mistake("no tolerance", lambda b, kl, t: b * 2 if kl > t else (b / 2 if kl < t else b), _NO_TOLERANCE),
        Mistake("no tolerance (two-way)", lambda b, kl, t: b * 2 if kl > t else b / 2, _NO_TOLERANCE),
        Mistake("factor 1.5", lambda b, kl, t: b * 1.5 if kl > 1.5 * t else (b / 1.5 if kl < t / 1.5 else b),
                "beta is doubled or halved (x 2, / 2); 1.5 is the tolerance on the KL, not the factor."),
    ],
)
