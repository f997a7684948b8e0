"""Chapter 9's library: DPO, GRPO and RLOO (ppo_lib.rlhf.dpo, ppo_lib.rlhf.grpo).

Analytic checks first (hand-computed losses and advantages, the KL estimators on a small
categorical where the exact KL is known), then seeded learning tests on the session's
SFT and reward models (the ``rlhf_sft`` / ``rlhf_reward`` fixtures of conftest.py).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.dpo import DPOConfig, dpo_loss, pair_logprobs, sequence_logprobs, train_dpo
from ppo_lib.rlhf.evaluate import evaluate_policy
from ppo_lib.rlhf.grpo import (GROUP_STD_EPS, GRPOConfig, collect_groups, group_advantages, grpo_loss, rloo_advantages,
                               train_grpo)
from ppo_lib.rlhf.kl import kl_per_token
from ppo_lib.rlhf.model import frozen_copy, response_logprobs, response_mask
from ppo_lib.rlhf.reward_model import Pairs
from ppo_lib.rlhf.rloo import RLOOConfig, rloo_loss, train_rloo
from ppo_lib.rlhf.loop import trainable_copy
from ppo_lib.losses import approx_kl

# Learning-test budgets: shorter than the defaults (150 DPO steps, 60 GRPO iterations), long
# enough that every seed is well clear of the SFT model (measured: DPO gold 0.3-0.4 after 100 steps,
# GRPO 1.1-1.2 after 15 iterations, against -0.07 for the SFT model, 192 evaluation samples).
DPO_TEST_STEPS = 100
GRPO_TEST_ITERATIONS = 15
EVAL_N = 192


# ----------------------------------------------------------------------------
# DPO: the loss
# ----------------------------------------------------------------------------

def test_dpo_loss_equals_hand_computed_value():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    beta = 0.5
    # pair 1: 0.5 * ((-3 + 3.5) - (-4 + 3)) = 0.75;  pair 2: 0.5 * ((-5 + 4) - (-2 + 3)) = -1
    expected = 0.5 * (math.log1p(math.exp(-0.75)) + math.log1p(math.exp(1.0)))
    assert float(dpo_loss(pc, pr, rc, rr, beta)) == pytest.approx(expected, rel=1e-6)


def test_dpo_loss_is_stable_for_huge_margins():
    # log(sigmoid(-2000)) underflows to -inf; logsigmoid gives the exact 2000
    lp = torch.tensor([-2000.0], requires_grad=True)
    loss = dpo_loss(lp, torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), beta=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(2000.0)
    assert torch.isfinite(lp.grad).all() and float(lp.grad) == pytest.approx(-1.0)


def test_dpo_gradient_raises_chosen_relative_to_rejected():
    pc = torch.tensor([-3.0, -6.0], requires_grad=True)
    pr = torch.tensor([-4.0, -2.0], requires_grad=True)
    rc = torch.tensor([-3.5, -4.0], requires_grad=True)
    rr = torch.tensor([-3.0, -3.0], requires_grad=True)
    dpo_loss(pc, pr, rc, rr, 0.1).backward()
    assert (pc.grad < 0).all()          # descent raises log pi(y_w)
    assert (pr.grad > 0).all()          # and lowers log pi(y_l)
    assert torch.allclose(pc.grad, -pr.grad)  # by equal amounts: only the difference matters
    assert rc.grad is None and rr.grad is None  # the reference is a constant


def test_dpo_step_on_the_model_widens_the_log_ratio_gap(rlhf_sft, rlhf_reward):
    pairs = rlhf_reward.pairs
    policy, ref = frozen_copy(rlhf_sft.model), frozen_copy(rlhf_sft.model)
    for p in policy.parameters():
        p.requires_grad_(True)
    chosen, rejected = pairs.chosen[:64], pairs.rejected[:64]
    with torch.no_grad():
        ref_c, ref_r = sequence_logprobs(ref, chosen), sequence_logprobs(ref, rejected)

    def gap():
        with torch.no_grad():
            return float(((sequence_logprobs(policy, chosen) - ref_c) - (sequence_logprobs(policy, rejected) - ref_r))
                         .mean())

    assert gap() == pytest.approx(0.0, abs=1e-4)  # the policy starts as the reference
    loss = dpo_loss(sequence_logprobs(policy, chosen), sequence_logprobs(policy, rejected), ref_c, ref_r, 0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-4)  # -log sigmoid(0)
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            p -= 1e-3 * p.grad
    assert gap() > 0


@pytest.mark.parametrize("beta", [0, -0.1, float("nan"), float("inf"), True])
def test_dpo_beta_is_validated(beta):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta)
    with pytest.raises((ValueError, TypeError), match="beta"):
        DPOConfig(beta=beta)


@pytest.mark.parametrize("field, value, allowed", [("steps", 0, r"\[1, inf\)"), ("lr", 0.0, r"\(0, 1\]"),
                                                    ("batch_size", 0, r"\[1, inf\)"), ("seed", -1, r"\[0, inf\)"),
                                                    ("max_grad_norm", 0.0, r"\(0, inf\)")])
def test_dpo_config_errors_name_field_value_and_range(field, value, allowed):
    with pytest.raises(ValueError, match=rf"{field}={value!r}: must be in {allowed}"):
        DPOConfig(**{field: value})


def test_dpo_loss_rejects_per_token_logprobs():
    x = torch.zeros(4, 16)
    with pytest.raises(ValueError, match="sequence log-prob"):
        dpo_loss(x, x, x, x, 0.1)


@torch.no_grad()
def test_sequence_logprobs_sums_up_to_eos_and_ignores_padding(rlhf_sft):
    model = rlhf_sft.model
    tokens = lang.to_batch([["<bos>", "the", "food", "was", "very", "good", "!", "<eos>"]]).tokens
    P = lang.PROMPT_LEN
    per_token = response_logprobs(model, tokens, P)[0]
    expected = per_token[:4].sum()  # very good ! <eos>
    assert float(sequence_logprobs(model, tokens)[0]) == pytest.approx(float(expected), abs=1e-5)
    changed = tokens.clone()
    changed[0, P + 4:] = lang.TOKEN_ID["bad"]  # garbage after <eos> changes nothing
    assert float(sequence_logprobs(model, changed)[0]) == pytest.approx(float(expected), abs=1e-5)
    assert response_mask(tokens[:, P:])[0].sum() == 4


def test_train_dpo_needs_two_pairs_and_a_pairs_object(rlhf_sft, rlhf_reward):
    p = rlhf_reward.pairs
    one = Pairs(p.chosen[:1], p.rejected[:1], p.gold_chosen[:1], p.gold_rejected[:1])
    with pytest.raises(ValueError, match="at least 2"):
        train_dpo(rlhf_sft, one, progress=False)
    with pytest.raises(TypeError, match="reward.pairs"):
        train_dpo(rlhf_sft, rlhf_reward, progress=False)


# ----------------------------------------------------------------------------
# GRPO / RLOO: advantages and the loss
# ----------------------------------------------------------------------------

def test_group_advantages_zero_mean_unit_sample_std_and_equal_groups_give_zero():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, 8, generator=g) * 3 + 1
    rewards[2] = 0.7  # every sample of this group scored the same: std 0 (and a float32 mean that rounds)
    adv = group_advantages(rewards)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[2], torch.zeros(8))
    others = [0, 1, 3, 4]
    assert torch.allclose(adv[others].mean(1), torch.zeros(4), atol=1e-6)
    # the sample std (Bessel, G - 1), as TRL; eps 1e-4 makes it a hair below 1
    assert torch.allclose(adv[others].std(1), torch.ones(4), atol=1e-3)
    expected = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, unbiased=True, keepdim=True) + GROUP_STD_EPS)
    assert torch.allclose(adv[others], expected[others])


def test_group_baselines_need_two_samples_per_group():
    for fn in (group_advantages, rloo_advantages):
        with pytest.raises(ValueError, match="G >= 2"):
            fn(torch.ones(4, 1))
        with pytest.raises(ValueError, match="n_prompts, G"):
            fn(torch.ones(8))


def test_rloo_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    # sample 1: 1 - (2 + 3 + 6) / 3 = -8/3; sample 2: 2 - 10/3; sample 3: 3 - 9/3; sample 4: 6 - 6/3
    expected = torch.tensor([[-8 / 3, -4 / 3, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(rloo_advantages(rewards), expected)
    # the identity G / (G - 1) * (r - mean)
    assert torch.allclose(rloo_advantages(rewards), 4 / 3 * (rewards - rewards.mean(1, keepdim=True)))


def _grpo_inputs(seed=0, B=6, L=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 3, 7, 2, 5, 7])[:B]
    mask = (torch.arange(L)[None] < lengths[:, None]).float()
    old = -torch.rand(B, L, generator=g) * 3 * mask
    new = (old + 0.4 * torch.randn(B, L, generator=g)) * mask
    ref = (old + 0.3 * torch.randn(B, L, generator=g)) * mask
    adv = torch.randn(B, generator=g)
    return new.requires_grad_(True), old, ref, adv, mask


def test_grpo_loss_equals_the_papers_formula():
    """Shao et al. 2024, eq. 3, written out token by token, against the clipped_surrogate version."""
    new, old, ref, adv, mask = _grpo_inputs()
    eps, beta = 0.2, 0.04
    loss, info = grpo_loss(new, old, ref, adv, mask, eps, beta)
    (g_lib,) = torch.autograd.grad(loss, new)

    total = 0.0
    for i in range(new.shape[0]):
        n_i = int(mask[i].sum())
        seq = 0.0
        for t in range(n_i):
            rho = torch.exp(new[i, t] - old[i, t])
            surrogate = torch.min(rho * adv[i], torch.clamp(rho, 1 - eps, 1 + eps) * adv[i])
            k3 = torch.exp(ref[i, t] - new[i, t]) - (ref[i, t] - new[i, t]) - 1
            seq = seq + surrogate - beta * k3
        total = total + seq / n_i
    by_hand = -total / new.shape[0]
    (g_hand,) = torch.autograd.grad(by_hand, new)
    assert loss.item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert torch.allclose(g_lib, g_hand, atol=1e-6)
    assert 0 <= info["clip_fraction"] <= 1 and info["k3"] >= 0


def test_grpo_loss_without_kl_and_at_ratio_one_is_the_advantage_mean():
    new, old, ref, adv, mask = _grpo_inputs()
    loss, info = grpo_loss(old.clone().requires_grad_(True), old, ref, adv, mask, 0.2, 0.0)
    assert float(loss) == pytest.approx(float(-adv.mean()), abs=1e-6)
    assert "k3" not in info and info["clip_fraction"] == 0


@pytest.mark.parametrize("kwargs, match", [({"group_size": 1}, r"group_size=1: must be in \[2, inf\)"),
                                           ({"beta": -0.1}, r"beta=-0.1: must be in \[0, inf\)"),
                                           ({"kl": "k3"}, "kl='k3': must be one of 'loss_k3', 'reward_k1', 'none'"),
                                           ({"baseline": "median"}, "baseline='median': must be one of 'group', 'rloo', 'mean'"),
                                           ({"clip_eps": 1.0}, r"clip_eps=1.0: must be in \(0, 1\)"),
                                           ({"temperature": 0}, "temperature=0"),
                                           ({"num_minibatches": 65}, "num_minibatches=65: more than the 64 responses"),
                                           ({"prompts_per_iteration": 0}, "prompts_per_iteration=0")])
def test_grpo_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRPOConfig(**kwargs)


# ----------------------------------------------------------------------------
# The KL estimators on a small categorical, where the exact KL is known
# ----------------------------------------------------------------------------

def _categoricals(spread: float, seed: int = 0, V: int = 6):
    g = torch.Generator().manual_seed(seed)
    ref_logits = torch.randn(V, generator=g)
    theta = (ref_logits + spread * torch.randn(V, generator=g)).requires_grad_(True)
    return theta, torch.log_softmax(ref_logits, 0)


def test_k3_is_never_negative():
    log_ratio = torch.linspace(-30, 30, 10_001)
    k3 = kl_per_token(log_ratio, torch.zeros_like(log_ratio), "k3")
    assert (k3 >= 0).all()
    assert float(kl_per_token(torch.zeros(1), torch.zeros(1), "k3")) == 0.0


def test_k3_is_unbiased_for_the_kl():
    theta, logq = _categoricals(1.0)
    logp = torch.log_softmax(theta.detach(), 0)
    exact = float((logp.exp() * (logp - logq)).sum())
    tokens = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    k3 = kl_per_token(logp[tokens], logq[tokens], "k3")
    stderr = float(k3.std()) / math.sqrt(len(k3))
    assert (k3 >= 0).all()
    assert abs(float(k3.mean()) - exact) < 4 * stderr, (float(k3.mean()), exact, stderr)
    k1 = kl_per_token(logp[tokens], logq[tokens], "k1")
    assert (k1 < 0).any()  # k1 is unbiased too, but single tokens go negative


def _expected_gradient(theta, logq, estimator):
    """E_{a ~ pi_theta}[ d/dtheta  k(a) ] with the sampled tokens held fixed, as in a loss: exact."""
    logp = torch.log_softmax(theta, 0)
    per_token = kl_per_token(logp, logq, estimator)
    return torch.autograd.grad((logp.exp().detach() * per_token).sum(), theta)[0]


def _kl_gradients(theta, logq):
    logp = torch.log_softmax(theta, 0)
    forward = torch.autograd.grad((logp.exp() * (logp - logq)).sum(), theta)[0]    # grad KL(pi || ref)
    logp = torch.log_softmax(theta, 0)
    reverse = torch.autograd.grad((logq.exp() * (logq - logp)).sum(), theta)[0]    # grad KL(ref || pi)
    return forward, reverse


def test_k3_in_the_loss_follows_the_reverse_kl_gradient():
    """What we measure (TRL issues 2608, 3025, 4967): on tokens sampled from pi, the gradient of
    k3 in the loss is, in expectation, the gradient of KL(ref || pi), not of KL(pi || ref):
    d k3 / d log pi = 1 - pi_ref / pi, and E_pi[(1 - pi_ref/pi) grad log pi] = -E_ref[grad log pi].
    The two KLs agree to second order near the reference, so the relative bias grows with the
    distance (measured on this categorical: 0.013, 0.09, 0.43, 0.79 for the spreads below).
    k2 = l^2 / 2 in the loss has exactly the forward KL's gradient; k1 in the loss has none."""
    biases = []
    for spread in (0.05, 0.3, 1.0, 2.0):
        theta, logq = _categoricals(spread)
        forward, reverse = _kl_gradients(theta, logq)
        g_k3 = _expected_gradient(theta, logq, "k3")
        assert torch.allclose(g_k3, reverse, atol=1e-6)
        assert torch.allclose(_expected_gradient(theta, logq, "k2"), forward, atol=1e-6)
        assert torch.allclose(_expected_gradient(theta, logq, "k1"), torch.zeros_like(theta), atol=1e-6)
        assert float(F.cosine_similarity(g_k3, forward, 0)) > 0.5  # still a pull towards the reference
        biases.append(float((g_k3 - forward).norm() / forward.norm()))
    assert biases == sorted(biases)
    assert biases[0] < 0.05      # near the reference: unbiased for practical purposes
    assert biases[-1] > 0.5      # at KL 0.23 nats: a different direction and size


def test_k3_monte_carlo_gradient_matches_its_expectation():
    """The sampled version, as GRPO computes it: mean k3 over sampled tokens, backpropagated."""
    theta, logq = _categoricals(1.0)
    tokens = torch.multinomial(torch.softmax(theta.detach(), 0), 200_000, replacement=True,
                               generator=torch.Generator().manual_seed(2))
    logp = torch.log_softmax(theta, 0)
    g_mc = torch.autograd.grad(kl_per_token(logp[tokens], logq[tokens], "k3").mean(), theta)[0]
    g_exact = _expected_gradient(theta, logq, "k3")
    forward, _ = _kl_gradients(theta, logq)
    assert float((g_mc - g_exact).norm()) < 0.01 * float(g_exact.norm())
    assert float((g_mc - forward).norm()) > 0.25 * float(forward.norm())  # measured 0.42


# ----------------------------------------------------------------------------
# Training: determinism, interruption, learning
# ----------------------------------------------------------------------------

def test_dpo_same_seed_same_numbers(rlhf_sft, rlhf_reward):
    cfg = DPOConfig(steps=4, batch_size=16, seed=3)
    a = train_dpo(rlhf_sft, rlhf_reward.pairs, cfg, progress=False)
    b = train_dpo(rlhf_sft, rlhf_reward.pairs, cfg, progress=False)
    for key in ("loss", "accuracy", "chosen_logp", "rejected_logp", "margin"):
        assert getattr(a.history, key) == getattr(b.history, key), key
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)
    c = train_dpo(rlhf_sft, rlhf_reward.pairs, DPOConfig(steps=4, batch_size=16, seed=4), progress=False)
    assert c.history.loss != a.history.loss


@pytest.mark.parametrize("kl, baseline", [("loss_k3", "group"), ("reward_k1", "rloo"), ("none", "group")])
def test_grpo_same_seed_same_numbers(rlhf_sft, rlhf_reward, kl, baseline):
    cfg = GRPOConfig(iterations=2, prompts_per_iteration=2, group_size=4, kl=kl, baseline=baseline, seed=5)
    a = train_grpo(rlhf_sft, rlhf_reward, cfg, progress=False)
    b = train_grpo(rlhf_sft, rlhf_reward, cfg, progress=False)
    for key in ("proxy", "gold", "kl", "k3", "clip_fraction", "samples"):
        assert getattr(a.history, key) == getattr(b.history, key), key
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)
    assert len(a.history.gold) == 2 and a.tokens_generated > 0
    assert (np.array(a.history.k3) > 0).all() == (kl == "loss_k3")


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_interrupt_returns_partial_result_and_errors_carry_it(rlhf_sft, rlhf_reward, method):
    def run(callback):
        if method == "dpo":
            return train_dpo(rlhf_sft, rlhf_reward.pairs, DPOConfig(steps=10, batch_size=8), progress=False,
                             callback=callback)
        return train_grpo(rlhf_sft, rlhf_reward, GRPOConfig(iterations=10, prompts_per_iteration=2, group_size=2),
                          progress=False, callback=callback)

    def ctrl_c(history):
        if len(history) == 2:
            raise KeyboardInterrupt

    res = run(ctrl_c)
    assert res.interrupted and res.seconds > 0
    first = res.history.loss if method == "dpo" else res.history.gold
    assert len(first) == 2
    assert not res.policy.training

    assert len(run(lambda h: len(h) == 3).history.seconds) == 3  # a callback returning True stops
    assert len(run(lambda h: np.bool_(len(h) == 3)).history.seconds) == 3  # NumPy's True too
    with pytest.raises(TypeError, match="callback returned 'stop'"):  # never ignored silently
        run(lambda h: "stop")
    # the old form callback(step, history) works for one release, with a warning
    with pytest.warns(FutureWarning, match=r"callback\(step, history\) is the old form"):
        assert len(run(lambda i, h: i == 2).history.seconds) == 3

    def boom(history):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as info:
        run(boom)
    assert info.value.partial_result.policy is not None and not info.value.partial_result.interrupted


@pytest.fixture(scope="module")
def sft_eval(rlhf_sft, rlhf_reward):
    return evaluate_policy(rlhf_sft.model, rlhf_sft.model, rlhf_reward.model, n=EVAL_N)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpo_raises_gold_and_lowers_both_log_probs(rlhf_sft, rlhf_reward, sft_eval, seed):
    pairs = rlhf_reward.pairs
    res = train_dpo(rlhf_sft, pairs, DPOConfig(steps=DPO_TEST_STEPS, seed=seed), progress=False)
    ev = evaluate_policy(res.policy, rlhf_sft.model, rlhf_reward.model, n=EVAL_N)
    assert ev["gold"] > sft_eval["gold"] + 0.2, (ev["gold"], sft_eval["gold"])
    assert 0 < ev["kl"] < 5
    assert np.mean(res.history.accuracy[-10:]) > 0.55
    # the known effect (TRL issue 800): the chosen responses lose probability too, the rejected more
    c0, r0 = pair_logprobs(rlhf_sft.model, pairs)
    c1, r1 = pair_logprobs(res.policy, pairs)
    assert c1.mean() < c0.mean() and (r0.mean() - r1.mean()) > (c0.mean() - c1.mean())


@pytest.mark.parametrize("seed, baseline", [(0, "group"), (1, "group"), (2, "group"), (0, "rloo")])
def test_grpo_raises_gold(rlhf_sft, rlhf_reward, sft_eval, seed, baseline):
    cfg = GRPOConfig(iterations=GRPO_TEST_ITERATIONS, seed=seed, baseline=baseline)
    res = train_grpo(rlhf_sft, rlhf_reward, cfg, progress=False)
    ev = evaluate_policy(res.policy, rlhf_sft.model, rlhf_reward.model, n=EVAL_N)
    assert ev["gold"] > sft_eval["gold"] + 0.5, (ev["gold"], sft_eval["gold"])
    assert ev["proxy"] > sft_eval["proxy"] + 0.5
    assert np.mean(res.history.gold[-5:]) > np.mean(res.history.gold[:5])


# ----------------------------------------------------------------------------
# RLOO as Ahmadian et al. 2024 and TRL define it (ppo_lib.rlhf.rloo)
# ----------------------------------------------------------------------------

def _tiny_policy(seed=0, L=4, V=5, n=3, G=4):
    """A context-free policy: one softmax per response slot (logits (L, V)), B = n G sampled responses."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(L, V, generator=g).requires_grad_(True)
    tokens = torch.multinomial(torch.softmax(logits.detach(), -1), n * G, replacement=True, generator=g).T  # (B, L)
    lengths = torch.randint(1, L + 1, (n * G,), generator=g)
    mask = (torch.arange(L)[None] < lengths[:, None]).float()
    rewards = torch.randn(n, G, generator=g)
    return logits, tokens, mask, rewards


def _tiny_logprobs(logits, tokens):
    return torch.log_softmax(logits, -1).gather(1, tokens.T).T  # (B, L): log pi_t(o_{i,t})


def test_rloo_loss_gradient_is_reinforce_with_leave_one_out_advantages():
    """At ratio 1, the gradient of RLOO's sequence-level loss is -(1/B) sum_i A_i grad log pi(o_i), with
    grad_logits log softmax(logits_t)[a] = onehot(a) - pi_t written by hand, and A_i leave-one-out."""
    logits, tokens, mask, rewards = _tiny_policy()
    lp = _tiny_logprobs(logits, tokens)
    adv = rloo_advantages(rewards).reshape(-1)
    loss, info = rloo_loss(lp, lp.detach(), adv, mask, 0.2)
    (g_lib,) = torch.autograd.grad(loss, logits)
    pi = torch.softmax(logits.detach(), -1)
    B, (L, V) = tokens.shape[0], logits.shape
    g_hand = torch.zeros(L, V)
    for i in range(B):
        others = [float(rewards.reshape(-1)[j]) for j in range(B) if j // 4 == i // 4 and j != i]
        a_i = float(rewards.reshape(-1)[i]) - sum(others) / len(others)
        for t in range(int(mask[i].sum())):
            g_hand[t] -= a_i * (F.one_hot(tokens[i, t], V).float() - pi[t]) / B
    assert torch.allclose(g_lib, g_hand, atol=1e-6)
    assert float(loss.detach()) == pytest.approx(-float(adv.mean()), abs=1e-6) and info["clip_fraction"] == 0


def test_rloo_clips_the_ratio_of_the_whole_response_not_of_its_tokens():
    """Three tokens, each 0.1 nats more likely: the sequence ratio e^0.3 = 1.35 is past 1 + 0.2 (clipped,
    no gradient for A > 0) though each token's ratio e^0.1 = 1.105 is inside."""
    old = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    new = (old + 0.1 * mask).requires_grad_(True)
    loss, info = rloo_loss(new, old, torch.tensor([1.0]), mask, 0.2)
    (g,) = torch.autograd.grad(loss, new)
    assert info["clip_fraction"] == 1.0 and g.eq(0).all()
    assert float(loss.detach()) == pytest.approx(-1.2)
    # the same shift with A < 0 is not clipped: the gradient is -A * ratio on every real token
    loss, info = rloo_loss(new, old, torch.tensor([-1.0]), mask, 0.2)
    (g,) = torch.autograd.grad(loss, new)
    assert torch.allclose(g, math.exp(0.3) * mask)


def test_mean_baseline_rescales_the_leave_one_out_gradient_by_g_minus_one_over_g():
    """A baseline that includes the sample (the group mean) gives advantages (G-1)/G times the
    leave-one-out ones, so the same gradient direction, shrunk by (G-1)/G: a rescaling, not a bias."""
    logits, tokens, mask, rewards = _tiny_policy(seed=3)
    G = rewards.shape[1]
    lp = _tiny_logprobs(logits, tokens)
    grads = {}
    for name, adv in (("loo", rloo_advantages(rewards)), ("mean", rewards - rewards.mean(1, keepdim=True))):
        loss, _ = rloo_loss(lp, lp.detach(), adv.reshape(-1), mask, 0.2)
        (grads[name],) = torch.autograd.grad(loss, logits, retain_graph=True)
    assert torch.allclose(grads["mean"], (G - 1) / G * grads["loo"], atol=1e-7)


def test_rloo_rewards_are_the_score_minus_beta_times_the_summed_k1(rlhf_sft, rlhf_reward):
    cfg = RLOOConfig(beta=0.5, prompts_per_iteration=3, group_size=4)
    policy = trainable_copy(rlhf_sft.model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ro = collect_groups(policy, frozen_copy(rlhf_sft.model), rlhf_reward.model, cfg.sampling_config(),
                        torch.Generator().manual_seed(0), np.random.default_rng(0))
    k1_sum = ((ro.logprobs - ro.ref_logprobs) * ro.mask).sum(1)
    assert k1_sum.abs().max() > 1e-3  # the policy was moved, so the KL term is not trivially 0
    assert torch.allclose(ro.rewards.reshape(-1), ro.scores - 0.5 * k1_sum, atol=1e-6)
    assert torch.allclose(ro.advantages, rloo_advantages(ro.rewards).reshape(-1))
    assert cfg.sampling_config().kl == "reward_k1" and RLOOConfig(beta=0.0).sampling_config().kl == "none"


@pytest.mark.parametrize("kwargs, match", [({"group_size": 1}, r"group_size=1: must be in \[2, inf\)"),
                                           ({"beta": -0.1}, r"beta=-0.1: must be in \[0, inf\)"),
                                           ({"clip_eps": 1.0}, r"clip_eps=1.0: must be in \(0, 1\)"),
                                           ({"num_minibatches": 100}, r"num_minibatches=100: more than the 64")])
def test_rloo_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RLOOConfig(**kwargs)


def test_rloo_takes_numpy_numbers_and_refuses_what_grpo_refuses(rlhf_sft, rlhf_reward):
    cfg = RLOOConfig(lr=np.float32(1e-3), group_size=np.int64(4), beta=np.float64(0.1))
    assert type(cfg.lr) is float and type(cfg.group_size) is int and type(cfg.beta) is float
    with pytest.raises(ValueError, match="lr=nan"):
        RLOOConfig(lr=float("nan"))
    with pytest.raises((TypeError, ValueError), match="progress"):
        train_rloo(rlhf_sft, rlhf_reward, RLOOConfig(iterations=1), progress="no")
    with pytest.raises((TypeError, ValueError), match="n_samples_logged"):
        train_rloo(rlhf_sft, rlhf_reward, RLOOConfig(iterations=1), progress=False, n_samples_logged=2.5)


def test_rloo_same_seed_same_numbers(rlhf_sft, rlhf_reward):
    cfg = RLOOConfig(iterations=2, prompts_per_iteration=2, group_size=4, seed=5)
    a = train_rloo(rlhf_sft, rlhf_reward, cfg, progress=False)
    b = train_rloo(rlhf_sft, rlhf_reward, cfg, progress=False)
    for key in ("proxy", "gold", "kl", "clip_fraction", "approx_kl", "equal_score_groups", "samples"):
        assert getattr(a.history, key) == getattr(b.history, key), key
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)
    assert a.history.k3 == [0.0, 0.0] and a.tokens_generated > 0
    assert len(a.history.rollout_seconds) == len(a.history.update_seconds) == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_rloo_raises_gold(rlhf_sft, rlhf_reward, sft_eval, seed):
    res = train_rloo(rlhf_sft, rlhf_reward, RLOOConfig(iterations=GRPO_TEST_ITERATIONS, seed=seed), progress=False)
    ev = evaluate_policy(res.policy, rlhf_sft.model, rlhf_reward.model, n=EVAL_N)
    assert ev["gold"] > sft_eval["gold"] + 0.3, (ev["gold"], sft_eval["gold"])
    assert np.mean(res.history.gold[-5:]) > np.mean(res.history.gold[:5])


def test_logged_approx_kl_has_the_sign_convention_of_losses_approx_kl():
    """PPO, GRPO and RLOO log k3 of KL(old || new) as ppo_lib.losses.approx_kl does: (r - 1) - log r with
    r = p_new / p_old, never the mirrored (1/r - 1) + log r."""
    new, old, ref, adv, mask = _grpo_inputs()
    m = mask.bool()
    log_r = (new - old).detach()[m]
    by_hand = float(((log_r.exp() - 1) - log_r).mean())
    mirrored = float(((torch.exp(-log_r) - 1) + log_r).mean())
    assert abs(by_hand - mirrored) > 1e-3  # the two conventions differ on these inputs
    _, info = grpo_loss(new, old, ref, adv, mask, 0.2, 0.04)
    assert info["approx_kl"] == pytest.approx(by_hand, rel=1e-6)
    assert info["approx_kl"] == pytest.approx(approx_kl(old[m], new.detach()[m])[1], rel=1e-6)
    _, info = rloo_loss(new, old, adv, mask, 0.2)
    assert info["approx_kl"] == pytest.approx(by_hand, rel=1e-6)


def test_results_file_sweeps_every_online_method_over_the_same_betas_including_zero():
    import json
    from pathlib import Path

    from benchmarks.rlhf_methods import BETAS, KNOBS

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "rlhf_methods.json"
    record = json.loads(path.read_text())
    for method in ("PPO", "GRPO", "RLOO"):
        assert sorted(map(float, record["results"][method]["points"])) == sorted(BETAS), method
        assert 0.0 in BETAS
    assert min(KNOBS["DPO"][1]) > 0  # DPO's beta divides its implicit reward: it cannot be 0
    for method, row in record["timing"].items():
        assert row["load_max"] >= row["load_min"] >= 0, method
        if method in ("PPO", "GRPO", "RLOO"):
            assert 0 < row["rollout_share"] < 1 and row["update_seconds_per_update"] > 0
