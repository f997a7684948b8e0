"""The checkers of chapters 4-6 against independently written usual mistakes."""

import pytest
import torch

from ppo_lib.teaching.checks import (check_adaptive_kl_beta, check_clipped_surrogate, check_conjugate_gradient,
                            check_fisher_vector_product, check_kl_penalty_objective, check_probability_ratio)
from tests.catalogue import assert_accepted, assert_flagged, ids


def cg_correct(Avp, b, iters):
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    for _ in range(iters):
        rr = r @ r
        if rr < 1e-10:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        p = r + (r @ r) / rr * p
    return x


def cg_gradient_descent_fixed_step(Avp, b, iters):
    x = torch.zeros_like(b)
    for _ in range(iters):
        x = x + 0.1 * (b - Avp(x))
    return x


def cg_steepest(Avp, b, iters):
    x = torch.zeros_like(b)
    r = b.clone()
    for _ in range(iters):
        if r @ r < 1e-10:
            break
        Ar = Avp(r)
        alpha = (r @ r) / (r @ Ar)
        x = x + alpha * r
        r = r - alpha * Ar
    return x


def cg_off_by_one(Avp, b, iters):
    return cg_correct(Avp, b, max(iters - 1, 0))


def cg_returns_residual(Avp, b, iters):
    x = cg_correct(Avp, b, iters)
    return b - Avp(x)


def fvp_correct(mean_kl, params, v):
    g = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    flat = torch.cat([x.reshape(-1) for x in g])
    return torch.cat([x.reshape(-1) for x in torch.autograd.grad((flat * v).sum(), params)])


def fvp_no_create_graph(mean_kl, params, v):
    g = torch.autograd.grad(mean_kl(params), params)
    flat = torch.cat([x.reshape(-1) for x in g])
    return torch.cat([x.reshape(-1) for x in torch.autograd.grad(flat @ v, params)])


def fvp_not_flat(mean_kl, params, v):
    g = torch.autograd.grad(mean_kl(params), params, create_graph=True)
    flat = torch.cat([x.reshape(-1) for x in g])
    return torch.autograd.grad(flat @ v, params)[0]


def fvp_wrong_sign(mean_kl, params, v):
    return -fvp_correct(mean_kl, params, v)


def ratio_correct(new, old):
    return (new - old).exp()


def ratio_probs(new, old):
    return new.exp() - old.exp()


def clip_correct(ratio, adv, eps):
    return torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()


def clip_no_min(ratio, adv, eps):
    return (ratio * adv).mean()


def clip_wrong_bounds(ratio, adv, eps):
    return torch.minimum(ratio * adv, ratio.clamp(-eps, eps) * adv).mean()


def clip_detached_ratio(ratio, adv, eps):
    r = ratio.detach()
    return torch.minimum(r * adv, r.clamp(1 - eps, 1 + eps) * adv).mean()


def clip_loss_sign(ratio, adv, eps):
    return -clip_correct(ratio, adv, eps)


def kl_correct(ratio, adv, kl, beta):
    return (ratio * adv).mean() - beta * kl.mean()


def kl_plus(ratio, adv, kl, beta):
    return (ratio * adv).mean() + beta * kl.mean()


def kl_sum(ratio, adv, kl, beta):
    return (ratio * adv).sum() - beta * kl.sum()


def beta_correct(beta, kl, target):
    if kl > 1.5 * target:
        return 2 * beta
    if kl < target / 1.5:
        return 0.5 * beta
    return beta


def beta_inverted(beta, kl, target):
    return beta_correct(beta, target * target / kl, target)


def beta_strict(beta, kl, target):
    return 2 * beta if kl > target else beta / 2


def beta_never_halves(beta, kl, target):
    return 2 * beta if kl > 1.5 * target else beta


CATALOGUE = [
    (check_conjugate_gradient, cg_gradient_descent_fixed_step, "Case:"),
    (check_conjugate_gradient, cg_steepest, "steepest descent"),
    (check_conjugate_gradient, cg_off_by_one, "Case:"),
    (check_conjugate_gradient, cg_returns_residual, "Case:"),
    (check_fisher_vector_product, fvp_no_create_graph, "RuntimeError"),
    (check_fisher_vector_product, fvp_not_flat, "shape"),
    (check_fisher_vector_product, fvp_wrong_sign, "Case:"),
    (check_probability_ratio, ratio_probs, "Case:"),
    (check_clipped_surrogate, clip_no_min, "Case:"),
    (check_clipped_surrogate, clip_wrong_bounds, "Case:"),
    (check_clipped_surrogate, clip_detached_ratio, "do not detach"),
    (check_clipped_surrogate, clip_loss_sign, "not the loss"),
    (check_kl_penalty_objective, kl_plus, "penalty"),
    (check_kl_penalty_objective, kl_sum, "Case:"),
    (check_adaptive_kl_beta, beta_inverted, "inverted"),
    (check_adaptive_kl_beta, beta_strict, "factor 1.5 of the target"),
    (check_adaptive_kl_beta, beta_never_halves, "Case:"),
]


@pytest.mark.parametrize("exercise, impl, words", CATALOGUE, ids=ids(CATALOGUE))
def test_checker_flags_the_mistake_specifically(exercise, impl, words):
    assert_flagged(exercise, impl, words)


CORRECT = [(check_conjugate_gradient, cg_correct), (check_fisher_vector_product, fvp_correct),
           (check_probability_ratio, ratio_correct), (check_clipped_surrogate, clip_correct),
           (check_kl_penalty_objective, kl_correct), (check_adaptive_kl_beta, beta_correct)]


@pytest.mark.parametrize("exercise, impl", CORRECT, ids=ids(CORRECT))
def test_checker_accepts_correct_implementations(exercise, impl):
    assert_accepted(exercise, impl)
