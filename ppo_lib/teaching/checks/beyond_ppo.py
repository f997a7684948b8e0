"""Exercises of chapter 9: beyond PPO (DPO, GRPO, RLOO).

Four exercises, each checked against the library's reference:

- ``dpo_loss``: the DPO loss (Rafailov et al. 2023, eq. 7) on sequence log-probs ``(B,)``;
  its value *and* its gradients w.r.t. the two policy inputs are checked (it is a loss);
- ``group_advantages``: GRPO's advantages, per group (r - mean) / (sample std + 1e-4);
- ``k3_kl``: Schulman's k3 estimator of the KL, per token, and its gradient w.r.t. the
  policy's log-probs (GRPO puts it in the loss);
- ``rloo_advantages``: REINFORCE leave-one-out, r_i minus the mean of the other G - 1 rewards.

A torch tensor is required back: the DPO loss and k3 feed ``loss.backward()``; the advantages
``(n_prompts, G)`` go on into the clipped loss. The reference log-probs of ``dpo_loss`` and
``k3_kl`` are handed over as constants (no gradient), as the chapter computes them (under
``torch.no_grad()``, from the frozen reference model): whether a function detaches them makes no
difference to training, so it is not checked. The advantages are constants too (computed under
``torch.no_grad()`` in the rollout): only their values are checked.

The helpers that run a function on tracked inputs and explain odd return values are chapter 8's
(:mod:`ppo_lib.teaching.checks.rlhf`), so that the two chapters' checkers answer alike.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ppo_lib.teaching.checks.core import Case, Exercise, Mistake
from ppo_lib.teaching.checks.rlhf import (ChangedInput, tensor_changed, grad_or_zero, NotATensor, tensor_of, tensor_compare, tracked_leaf,
                                 watching_inputs, loss_and_gradients)
from ppo_lib.rlhf.dpo import dpo_loss
from ppo_lib.rlhf.grpo import group_advantages, rloo_advantages
from ppo_lib.rlhf.kl import kl_per_token

D = torch.float64
_GRAD_WEIGHTS_SEED = 4321

# ---------------------------------------------------------------- DPO loss

_DPO_INPUTS = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _run_dpo(fn, policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """Call fn with policy log-probs that track gradients (the reference ones are constants, as in
    the chapter); report the loss and its gradients w.r.t. the two policy inputs."""
    (chosen, given_chosen), (rejected, given_rejected) = tracked_leaf(policy_chosen), tracked_leaf(policy_rejected)
    refs_before = (ref_chosen.clone(), ref_rejected.clone())
    loss = fn(given_chosen, given_rejected, ref_chosen, ref_rejected, beta)
    for name, given, before in zip(_DPO_INPUTS, (given_chosen, given_rejected, ref_chosen, ref_rejected),
                                   (chosen, rejected) + refs_before):
        if tensor_changed(given, before):
            return ChangedInput(name)
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.ndim > 0:
        # the text asks for "a torch tensor holding one number": shape (1,) is one, and the next cells'
        # loss.backward() and .item() work on it; compared as the number it holds
        loss = loss.reshape(())
    return loss_and_gradients(loss, {"policy_chosen_logps": chosen, "policy_rejected_logps": rejected})


def _margin(pc, pr, rc, rr, beta):
    """beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]: the argument of the sigmoid."""
    return beta * ((pc - rc) - (pr - rr))


_DPO_STABLE = ("for a large margin, log(sigmoid(u)) and log(1 + exp(-u)) written by hand break down in floating "
               "point (sigmoid(-130) rounds to 0 in float32, so log gives -inf; exp(130) overflows to inf). Use "
               "torch.nn.functional.logsigmoid(u), which is computed stably.")
_DPO_DIRECTION = ("the margin points the wrong way: the loss must fall when the policy raises the chosen response "
                  "relative to the rejected one, u = beta * [(pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)] "
                  "(you have -u: chosen and rejected swapped, or reference minus policy in both log-ratios).")

check_dpo_loss = Exercise(
    "dpo_loss",
    reference=dpo_loss,
    reference_name="ppo_lib.rlhf.dpo.dpo_loss",
    run=_run_dpo,
    compare=tensor_compare("a torch.Tensor holding the loss, one number (the next cell calls loss.backward() "
                            "on it)",
                           how={f"gradient w.r.t. {k}": f"loss.backward() on the loss you returned; {k}.grad (the "
                                f"reference log-probs are constants)" for k in _DPO_INPUTS[:2]}),
    cases=[
        Case((tensor_of(-20.5, -35.0, -12.25), tensor_of(-24.0, -30.5, -18.0), tensor_of(-22.0, -33.0, -14.0), tensor_of(-23.0, -31.0, -15.5),
              0.1),
             "B=3 pairs, beta=0.1: policy_chosen_logps=[-20.5, -35, -12.25], policy_rejected_logps=[-24, -30.5, -18], "
             "ref_chosen_logps=[-22, -33, -14], ref_rejected_logps=[-23, -31, -15.5]: chosen log-ratios "
             "[1.5, -2, 1.75], rejected log-ratios [-1, 0.5, -2.5]"),
        Case((tensor_of(-10.0, -25.0, -7.5, -40.0), tensor_of(-12.0, -20.0, -30.0, -8.0), tensor_of(-10.0, -25.0, -7.5, -40.0),
              tensor_of(-12.0, -20.0, -30.0, -8.0), 0.1),
             "the first step of training: the policy still equals the reference (policy_chosen_logps = "
             "ref_chosen_logps = [-10, -25, -7.5, -40], policy_rejected_logps = ref_rejected_logps = "
             "[-12, -20, -30, -8]), beta=0.1: every margin is 0 and the loss is log 2"),
        Case((tensor_of(-30.0, -14.0), tensor_of(-18.0, -22.0), tensor_of(-28.0, -15.0), tensor_of(-22.0, -21.0), 0.5),
             "B=2, beta=0.5: in the first pair the policy prefers the rejected response (chosen log-ratio -2, "
             "rejected +4: margin -6), in the second the chosen one (margin +2)"),
        Case((tensor_of(-300.0, -40.0, dtype=torch.float32), tensor_of(-30.0, -250.0, dtype=torch.float32),
              tensor_of(-50.0, -150.0, dtype=torch.float32), tensor_of(-40.0, -100.0, dtype=torch.float32), 0.5),
             "float32 (the chapter's dtype), long responses, beta=0.5: log-ratio differences -260 and +260, so "
             "beta times them is -130 (badly wrong) and +130; the loss is (130 + 0) / 2 = 65"),
        Case((tensor_of(-8.0), tensor_of(-9.5), tensor_of(-8.25), tensor_of(-9.0), 2.0),
             "a single pair (B=1), beta=2: chosen log-ratio 0.25, rejected -0.5"),
    ],
    mistakes=[
        Mistake("no beta", lambda pc, pr, rc, rr, b: -F.logsigmoid((pc - rc) - (pr - rr)).mean(),
                "multiply the difference of log-ratios by beta inside the sigmoid: "
                "-log sigma(beta * [(pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)])."),
        Mistake("beta on one log-ratio", lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - rc) - (pr - rr)).mean(),
                "beta multiplies both log-ratios (the whole difference): "
                "beta * [(pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)]."),
        Mistake("beta outside", lambda pc, pr, rc, rr, b: -b * F.logsigmoid((pc - rc) - (pr - rr)).mean(),
                "beta goes inside the sigmoid, on the margin: -log sigma(beta * [...]), not "
                "beta * (-log sigma([...]))."),
        Mistake("references swapped",
                lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rr) - (pr - rc))).mean(),
                "each response is compared with the reference's log-prob of *the same* response: "
                "(pi_chosen - ref_chosen) - (pi_rejected - ref_rejected); you crossed the reference terms."),
        Mistake("no reference", lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(),
                "the reference is missing: the implicit reward is beta * (log pi - log pi_ref), so subtract "
                "ref_chosen_logps and ref_rejected_logps from the policy's log-probs."),
        Mistake("probability ratios",
                lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (torch.exp(pc - rc) - torch.exp(pr - rr))).mean(),
                "use the log-ratios log pi - log pi_ref themselves, not the probability ratios exp(log pi - "
                "log pi_ref)."),
        Mistake("margin reversed", lambda pc, pr, rc, rr, b: -F.logsigmoid(-_margin(pc, pr, rc, rr, b)).mean(),
                _DPO_DIRECTION),
        Mistake("no minus", lambda pc, pr, rc, rr, b: F.logsigmoid(_margin(pc, pr, rc, rr, b)).mean(),
                "the loss is the *negative* log-likelihood: minimise -log sigma(u)."),
        Mistake("sum", lambda pc, pr, rc, rr, b: -F.logsigmoid(_margin(pc, pr, rc, rr, b)).sum(),
                "average over the pairs (mean), do not sum: the learning rate should not depend on the batch size."),
        Mistake("no mean", lambda pc, pr, rc, rr, b: -F.logsigmoid(_margin(pc, pr, rc, rr, b)),
                "return one number, the mean over the pairs, not one loss per pair."),
        Mistake("no log", lambda pc, pr, rc, rr, b: -torch.sigmoid(_margin(pc, pr, rc, rr, b)).mean(),
                "take the log of the probability: -log sigma(u), not -sigma(u)."),
        Mistake("log(sigmoid)", lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(_margin(pc, pr, rc, rr, b))).mean(),
                _DPO_STABLE),
        Mistake("log(1 + exp) by hand",
                lambda pc, pr, rc, rr, b: torch.log(1 + torch.exp(-_margin(pc, pr, rc, rr, b))).mean(), _DPO_STABLE),
        Mistake("rejected detached", lambda pc, pr, rc, rr, b: dpo_loss(pc, pr.detach(), rc, rr, b),
                "no gradient reaches policy_rejected_logps: both policy log-probs come from the model being "
                "trained (DPO pushes the rejected one down), so neither is detached."),
        Mistake("no gradient", lambda pc, pr, rc, rr, b: dpo_loss(pc, pr, rc, rr, b).detach(),
                "the value is right but carries no gradient (computed under torch.no_grad(), detached, or rebuilt "
                "with torch.tensor(...)): the policy learns through loss.backward(), so keep the graph."),
    ],
)

# ---------------------------------------------------------------- GRPO's group advantages

_EPS = 1e-4  # the chapter's (and TRL's) eps, added to the std


def _group(r, *, mean_dim=1, std_dim=1, ddof=1, scale="std", eps=_EPS, eps_where="outside", zero_equal=True,
           keepdim=True):
    """GRPO's advantages and their usual variants; ``dim=None`` means over the whole batch."""
    r = torch.as_tensor(r)

    def over(f, dim):
        return f(r) if dim is None else f(r, dim) if not keepdim else f(r, dim, keepdim=True)

    mean = over(lambda x, *a, **k: x.mean(*a, **k), mean_dim)
    centred = r - mean
    if scale == "none":
        out = centred
    else:
        var = over(lambda x, *a, **k: x.var(*a, correction=ddof, **k), std_dim)
        if scale == "var":
            div = var + eps
        elif eps_where == "inside":
            div = torch.sqrt(var + eps)
        else:
            div = torch.sqrt(var) + eps
        out = centred / div
    if zero_equal:
        out = out.masked_fill(r.amax(1, keepdim=True) == r.amin(1, keepdim=True), 0.0)
    return out


_GROUP_AXIS = ("the G samples of one prompt are one row of rewards (n_prompts, G): take the mean and the std of "
               "each row, dim=1 (with keepdim=True), not of each column.")
_GROUP_EPS = ("add eps = 1e-4 to the standard deviation: (r - mean) / (std + 1e-4), as TRL's GRPOTrainer does.")

def _zero_where_std_is_zero(r):
    std = r.std(dim=1, keepdim=True)
    adv = (r - r.mean(dim=1, keepdim=True)) / (std + _EPS)
    return torch.where(std == 0, torch.zeros_like(adv), adv)


def _zero_where_std_is_zero_no_eps(r):
    std = r.std(dim=1, keepdim=True)
    return torch.where(std == 0, torch.zeros_like(r), (r - r.mean(dim=1, keepdim=True)) / std)


def _small_std_zeroed(r):
    std = r.std(dim=1, keepdim=True)
    adv = (r - r.mean(dim=1, keepdim=True)) / (std + _EPS)
    return torch.where(std < 1e-6, torch.zeros_like(adv), adv)


def _run_group(fn, rewards):
    """The advantages; and, for every group whose rewards are all equal, whether they are exactly 0 (the text
    says "exactly 0": the comparison's tolerance would let 1e-7 pass)."""
    out = watching_inputs("rewards")(fn, rewards)
    if fn in _GROUP_MISTAKES:  # a catalogued mistake is matched on its values alone (exact or not)
        return MistakeValues(out)
    if not isinstance(out, torch.Tensor) or out.shape != rewards.shape:
        return out
    equal = (rewards.amax(dim=1) == rewards.amin(dim=1)).nonzero().flatten().tolist()
    bad = [k for k in equal if not bool((out[k].detach() == 0).all())]
    if bad:
        return NotExactlyZero(out, bad[0], float(out[bad[0]].detach().abs().max()))
    return out


class MistakeValues:
    """A catalogued mistake's output: a learner's answer matches it when the values agree."""

    def __init__(self, out):
        self.out = out


_GROUP_MISTAKES: set = set()


class NotExactlyZero:
    """A group of equal rewards whose advantages are near 0 but not exactly 0."""

    def __init__(self, out, row, worst):
        self.out, self.row, self.worst = out, row, worst


def _group_compare_factory(wanted):
    inner = tensor_compare(wanted)

    def check(expected, got):
        if isinstance(got, MistakeValues):  # a catalogued mistake checked as if a learner wrote it
            got = got.out
        if isinstance(expected, MistakeValues):
            return inner(expected.out, got.out if isinstance(got, NotExactlyZero) else got)
        if isinstance(got, NotExactlyZero):
            if isinstance(expected, NotExactlyZero):
                return inner(expected.out, got.out)
            return (f"group {got.row}'s rewards are all equal, and its advantages must be exactly 0 (the text): "
                    f"yours reach {got.worst:.3g} (rounding: the mean of equal rewards is not always exactly "
                    f"that value, in float32 or float64, so r - mean is not exactly 0: set such groups to 0 "
                    f"explicitly)")
        if isinstance(expected, NotExactlyZero):
            return "not exactly 0 where the rewards are equal"
        return inner(expected, got)  # answers in words, never raises

    return check


check_group_advantages = Exercise(
    "group_advantages",
    reference=group_advantages,
    reference_name="ppo_lib.rlhf.grpo.group_advantages",
    run=_run_group,
    compare=_group_compare_factory("a torch.Tensor of shape (n_prompts, G), the shape of rewards (one advantage "
                                   "per response)"),
    cases=[
        Case((tensor_of([1, 0, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], dtype=torch.float32),),
             "rewards of shape (4, 4) in float32: 4 prompts, G=4 answers each, scored 1 (right) or 0 (wrong); "
             "the third group is all right and the fourth all wrong (equal rewards: advantage 0)"),
        Case((tensor_of([0.3, -1.2, 0.8, 2.1, -0.4, 0.0, 1.5, -0.9], [5.2, 4.8, 5.0, 5.5, 4.9, 5.1, 4.7, 5.3]),),
             "rewards of shape (2, 8): G=8 (the chapter's group size), reward-model scores; the second group sits "
             "around 5, the first around 0.3"),
        Case((tensor_of([1.0, -1.0], [0.2, 0.9], [-2.5, 4.0]),),
             "rewards of shape (3, 2): G=2, the smallest group"),
        Case((tensor_of([0.5, 1.5, -0.5, 2.0, 0.0, 1.0]),),
             "rewards of shape (1, 6): a single prompt (n_prompts=1), G=6"),
        Case((tensor_of([0.7] * 8, [0.3, 0.9, 0.7, 0.7, 0.1, 0.5, 0.7, 0.2], dtype=torch.float32),),
             "rewards of shape (2, 8) in float32 (the chapter's dtype): the first group's rewards are all 0.7; "
             "in float32 their mean is not exactly 0.7, and (r - mean) / (std + 1e-4) is about 1e-3 there, not "
             "the exact 0 the text asks for"),
        Case((tensor_of([0.7, 0.7, 0.7, 0.7, 0.7], [0.1, 0.1, 0.1, 0.1, 2.0]),),
             "rewards of shape (2, 5): the first group's rewards are all 0.7 (advantage 0, not nan), the second "
             "has one outlier"),
        Case((tensor_of([1200.0, 800.0, 1500.0, 950.0], [-3000.0, -2500.0, -4100.0, -2800.0]),),
             "rewards of shape (2, 4) on a large scale (hundreds to thousands): the advantages are still about +-1"),
        Case((tensor_of([0.001, 0.003, 0.002, 0.0], [-0.0002, 0.0002, -0.0001, 0.0004]),),
             "rewards of shape (2, 4) that differ very little within each group (std 1.3e-3 and 2.8e-4): here "
             "eps = 1e-4 is a sizeable part of std + eps"),
        Case((tensor_of([0.7] * 8, dtype=torch.float32),),
             "a single prompt (rewards of shape (1, 8)) in float32 whose eight rewards are all 0.7: rounding can "
             "leave both r - mean and std(dim=1) a little above 0 (about 6e-8), so a test std == 0 misses this "
             "group; its advantages must still be exactly 0"),
        Case((tensor_of([-2.8, -2.8, -2.8]),),
             "a single prompt, G=3, in float64, three equal rewards -2.8: again the std of equal rewards can come "
             "out a little above 0 (about 5e-16), and the advantages must be exactly 0"),
        Case((tensor_of([0.5, 0.5000002, 0.4999999, 0.5], [1.0, 0.0, 0.5, 0.2]),),
             "rewards of shape (2, 4): the first group's rewards differ, by about 1e-7 (std 1.3e-7): not all equal, "
             "so (r - mean) / (std + 1e-4) gives them small advantages (about +-1e-3), not 0"),
    ],
    mistakes=[
        Mistake("whole batch", lambda r: _group(r, mean_dim=None, std_dim=None),
                "normalise each group on its own: the mean and the std of the G rewards of the same prompt (each "
                "row, dim=1), not of the whole batch; an easy prompt must not make every answer to it look good."),
        Mistake("wrong axis", lambda r: _group(r, mean_dim=0, std_dim=0), _GROUP_AXIS),
        Mistake("mean over the wrong axis", lambda r: _group(r, mean_dim=0), _GROUP_AXIS),
        Mistake("std over the wrong axis", lambda r: _group(r, std_dim=0), _GROUP_AXIS),
        Mistake("no keepdim", lambda r: _group(r, keepdim=False),
                "rewards.mean(dim=1) has shape (n_prompts,), which broadcasts against the *columns* of (n_prompts, "
                "G): keep the group dimension with keepdim=True (shape (n_prompts, 1))."),
        Mistake("population std", lambda r: _group(r, ddof=0),
                "use the sample standard deviation, as the chapter asks: divide the sum of squares by G - 1 (like "
                "torch.std, whose default is unbiased), not by G."),
        Mistake("only centred", lambda r: _group(r, scale="none"),
                "you only subtracted the group mean: that is Dr. GRPO's advantage (Liu et al. 2025; RLOO's, up to "
                "a factor G / (G - 1)). The chapter asks for GRPO's form, which also divides by the group's std + "
                "1e-4."),
        Mistake("variance", lambda r: _group(r, scale="var"),
                "divide by the standard deviation (plus 1e-4), not by the variance."),
        Mistake("nan for equal rewards", lambda r: _group(r, eps=0.0, zero_equal=False),
                "a group whose rewards are all equal has std 0, and 0 / 0 = nan: add eps = 1e-4 to the std "
                "(std + 1e-4), and such a group gets advantage 0 (no learning signal)."),
        Mistake("no eps", lambda r: _group(r, eps=0.0), _GROUP_EPS),
        Mistake("equal groups not set to 0", lambda r: _group(r, zero_equal=False),
                "a group whose rewards are all equal must get advantages of exactly 0: in float32, r - mean is "
                "not always exactly 0 there (the mean of eight 0.7s is not exactly 0.7), and divided by std + "
                "1e-4 it becomes about 1e-3; set such groups to 0 (masked_fill where max == min)."),
        Mistake("zeroed where std == 0", _zero_where_std_is_zero,
                "you find the groups of equal rewards by std == 0, but rounding can leave the std of equal "
                "rewards a little above 0 (about 6e-8 for eight 0.7s in float32, in a single row): compare the "
                "rewards themselves, rewards.amax(dim=1) == rewards.amin(dim=1), and set those groups to 0."),
        Mistake("zeroed where std == 0, and no eps", _zero_where_std_is_zero_no_eps,
                "add eps = 1e-4 to the standard deviation, (r - mean) / (std + 1e-4), as TRL's GRPOTrainer does; "
                "and find the groups of equal rewards by comparing the rewards (rewards.amax(dim=1) == "
                "rewards.amin(dim=1)), not by std == 0: rounding can leave the std of equal rewards a little above "
                "0, and then r - mean divided by it is of order 1."),
        Mistake("small std zeroed", _small_std_zeroed,
                "only a group whose rewards are all *equal* gets 0; a group whose rewards differ, by however "
                "little, gets (r - mean) / (std + 1e-4). A threshold on the std also zeroes those: compare the "
                "rewards themselves, rewards.amax(dim=1) == rewards.amin(dim=1)."),
        Mistake("chapter 8's eps", lambda r: _group(r, eps=1e-8, eps_where="inside"), _GROUP_EPS),
        Mistake("eps under the square root", lambda r: _group(r, eps_where="inside"),
                "add eps to the standard deviation, std + 1e-4, not to the variance under the square root "
                "(sqrt(var + 1e-4)): the two differ when the rewards of a group are close."),
    ],
)

_GROUP_MISTAKES.update(m.impl for m in check_group_advantages.mistakes)

# ---------------------------------------------------------------- the k3 estimator of the KL


def _run_k3(fn, logprobs, ref_logprobs):
    """Call fn with log-probs that track gradients (the reference's are constants, as in the chapter);
    report k3 per token and d(sum w * k3)/d logprobs for a fixed, non-uniform weighting w."""
    leaf, given = tracked_leaf(logprobs)
    ref_before = ref_logprobs.clone()
    out = fn(given, ref_logprobs)
    if tensor_changed(given, leaf):
        return ChangedInput("logprobs")
    if tensor_changed(ref_logprobs, ref_before):
        return ChangedInput("ref_logprobs")
    if not isinstance(out, torch.Tensor):
        return NotATensor(out)
    result = {"k3 per token": out.detach()}
    if out.shape != logprobs.shape or not out.requires_grad:
        return result  # a wrong shape is reported on the value; no graph: the gradient is "not available"
    w = torch.rand(logprobs.shape, generator=torch.Generator().manual_seed(_GRAD_WEIGHTS_SEED), dtype=D) + 0.5
    try:
        (out * w.to(out.dtype)).sum().backward()
    except Exception as exc:  # e.g. an in-place change of a tensor autograd still needed
        result["gradient w.r.t. logprobs"] = f"backward() failed: {exc}"
        return result
    result["gradient w.r.t. logprobs"] = grad_or_zero(leaf)
    return result


def _k3_inputs_float32() -> tuple[torch.Tensor, torch.Tensor]:
    """Token log-probs (B=3, L=4) in float32; the last slots are padding, 0 in both (logprobs * mask)."""
    g = torch.Generator().manual_seed(11)
    logprobs = -torch.rand(3, 4, generator=g) * 3
    ref = logprobs + torch.randn(3, 4, generator=g) * 0.8
    ref = ref.clamp(max=-0.01)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    return logprobs * mask, ref * mask


_K3_LP32, _K3_REF32 = _k3_inputs_float32()
_K3_PER_TOKEN = ("k3 is computed per token: return a tensor of the shape of logprobs (B, L); GRPO's loss averages "
                 "it over each response's real tokens later, with the mask.")


def _lr(lp, ref):
    return lp - ref


check_k3_kl = Exercise(
    "k3_kl",
    reference=functools.partial(kl_per_token, estimator="k3"),
    reference_name="ppo_lib.rlhf.kl.kl_per_token(logprobs, ref_logprobs, 'k3')",
    run=_run_k3,
    compare=tensor_compare("a torch.Tensor of the shape of logprobs (B, L), one k3 per token (GRPO's loss "
                            "differentiates it)",
                           how={"gradient w.r.t. logprobs": "(out * w).sum().backward() with fixed weights w = "
                                "torch.rand(logprobs.shape, generator=torch.Generator().manual_seed(4321), "
                                "dtype=torch.float64) + 0.5; the gradient lands on the logprobs you were given"}),
    cases=[
        Case((tensor_of([-1.2, -0.3, -2.5, -0.05], [-0.7, -3.0, -1.1, -0.2]),
              tensor_of([-1.0, -0.9, -2.0, -0.05], [-1.5, -2.2, -1.1, -0.6])),
             "B=2 responses of L=4 tokens: logprobs=[[-1.2, -0.3, -2.5, -0.05], [-0.7, -3, -1.1, -0.2]], "
             "ref_logprobs=[[-1, -0.9, -2, -0.05], [-1.5, -2.2, -1.1, -0.6]]: l = logprobs - ref_logprobs is "
             "[[-0.2, 0.6, -0.5, 0], [0.8, -0.8, 0, 0.4]]"),
        Case((tensor_of([-0.1, -6.0, -2.0, -0.5, -9.0]), tensor_of([-4.1, -2.0, -2.0, -3.0, -5.0])),
             "B=1, L=5, far from the reference: l = [4, -4, 0, 2.5, -4] (k3 is large where the policy gives the "
             "token much less probability than the reference, l = -4)"),
        Case((_K3_LP32, _K3_REF32),
             "float32 (the chapter's dtype), B=3, L=4, random log-probs; the padding slots after each response "
             "are 0 in both tensors (l = 0 there, so k3 = 0)"),
        Case((tensor_of([-0.5, -1.0, -2.0], dtype=torch.float32), tensor_of([-0.51, -0.97, -2.002], dtype=torch.float32)),
             "float32, one dimension (3 tokens), close to the reference: l = [0.01, -0.03, 0.002]"),
    ],
    mistakes=[
        Mistake("k1", lambda lp, ref: _lr(lp, ref),
                "that is k1, the log-ratio l itself (unbiased, but negative on some tokens); k3 = exp(-l) - 1 + l, "
                "with l = logprobs - ref_logprobs, is unbiased and never negative."),
        Mistake("k2", lambda lp, ref: 0.5 * _lr(lp, ref) ** 2,
                "that is k2 = l^2 / 2 (biased); the exercise asks for k3 = exp(-l) - 1 + l."),
        Mistake("log-ratio reversed", lambda lp, ref: torch.expm1(_lr(lp, ref)) - _lr(lp, ref),
                "the log-ratio goes the other way: with l = logprobs - ref_logprobs, k3 = exp(-l) - 1 + l, i.e. "
                "pi_ref / pi - 1 - log(pi_ref / pi); you used pi / pi_ref (or ref_logprobs - logprobs)."),
        Mistake("signs mixed", lambda lp, ref: torch.expm1(-_lr(lp, ref)) - _lr(lp, ref),
                "the exponent and the linear term have opposite signs: k3 = exp(-l) - 1 + l (its minimum, 0, is at "
                "l = 0); exp(-l) - 1 - l is not a KL estimate."),
        Mistake("no -1", lambda lp, ref: torch.exp(-_lr(lp, ref)) + _lr(lp, ref),
                "the -1 is missing: k3 = exp(-l) - 1 + l, which is 0 when the policy equals the reference."),
        Mistake("mean", lambda lp, ref: kl_per_token(lp, ref, "k3").mean(), _K3_PER_TOKEN),
        Mistake("sum over tokens", lambda lp, ref: kl_per_token(lp, ref, "k3").sum(-1), _K3_PER_TOKEN),
        Mistake("no gradient", lambda lp, ref: kl_per_token(lp, ref, "k3").detach(),
                "the values are right but carry no gradient (computed under torch.no_grad(), or detached): GRPO "
                "subtracts beta * k3 in its loss, and the policy learns through its gradient, so keep the graph."),
    ],
)

# ---------------------------------------------------------------- RLOO advantages


def _rloo(r, *, dim=1, divisor="G-1", keepdim=True, whole_batch=False, std=False, sign=1.0):
    r = torch.as_tensor(r)
    if whole_batch:
        others = (r.sum() - r) / (r.numel() - 1)
    else:
        G = r.shape[dim]
        if divisor == "self":
            others = r.mean(dim, keepdim=True)
        else:
            others = (r.sum(dim, keepdim=keepdim) - r) / (G - 1 if divisor == "G-1" else G)
    adv = sign * (r - others)
    if std:
        adv = adv / (r.std(1, keepdim=True) + _EPS)
    return adv


check_rloo_advantages = Exercise(
    "rloo_advantages",
    reference=rloo_advantages,
    reference_name="ppo_lib.rlhf.grpo.rloo_advantages",
    run=watching_inputs("rewards"),
    compare=tensor_compare("a torch.Tensor of shape (n_prompts, G), the shape of rewards (one advantage per "
                            "response)"),
    cases=[
        Case((tensor_of([1.0, 0.0, 0.5], [2.0, 2.0, -1.0], [0.3, 0.9, 0.6]),),
             "rewards of shape (3, 3): 3 prompts, G=3 samples each; e.g. the first sample of the first group gets "
             "1 - (0 + 0.5) / 2 = 0.75"),
        Case((tensor_of([0.3, -1.2, 0.8, 2.1, -0.4, 0.0, 1.5, -0.9], [5.2, 4.8, 5.0, 5.5, 4.9, 5.1, 4.7, 5.3]),),
             "rewards of shape (2, 8): G=8 (the chapter's group size); the second group sits around 5, the first "
             "around 0.3"),
        Case((tensor_of([1.0, -1.0], [0.2, 0.9], [-2.5, 4.0]),),
             "rewards of shape (3, 2): G=2, each sample's baseline is the other one's reward"),
        Case((tensor_of([0.5, 1.5, -0.5, 2.0, 0.0]),),
             "rewards of shape (1, 5): a single prompt (n_prompts=1), G=5"),
        Case((tensor_of([1, 1, 1, 1], [0, 1, 0, 0], dtype=torch.float32),),
             "rewards of shape (2, 4) in float32, scored 1 (right) or 0 (wrong): the first group is all right "
             "(advantage 0)"),
        Case((tensor_of([1200.0, 800.0, 1500.0, 950.0], [-3000.0, -2500.0, -4100.0, -2800.0]),),
             "rewards of shape (2, 4) on a large scale (hundreds to thousands)"),
    ],
    mistakes=[
        Mistake("includes itself", lambda r: _rloo(r, divisor="self"),
                "the baseline of r_i is the mean of the *other* G - 1 rewards of its group, not of all G: a "
                "baseline that contains r_i itself (the group mean) gives exactly (G - 1) / G times the leave-one-out "
                "advantage, so the same gradient direction scaled by (G - 1) / G: that is Dr. GRPO's mean baseline, "
                "not RLOO's."),
        Mistake("divided by G", lambda r: _rloo(r, divisor="G"),
                "the other rewards are G - 1: divide their sum by G - 1, not by G."),
        Mistake("whole batch", lambda r: _rloo(r, whole_batch=True),
                "the baseline comes from the same prompt's samples only: the other G - 1 rewards of the row "
                "(dim=1), not every other reward of the batch."),
        Mistake("divided by the std", lambda r: _rloo(r, std=True),
                "RLOO does not divide by a standard deviation: the advantage is r_i minus the mean of the other "
                "G - 1 rewards, nothing more (the std is GRPO's)."),
        Mistake("wrong axis", lambda r: _rloo(r, dim=0),
                "the G samples of one prompt are one row of rewards (n_prompts, G): leave one out along dim=1 "
                "(with keepdim=True), not along the columns."),
        Mistake("no keepdim", lambda r: _rloo(r, keepdim=False),
                "rewards.sum(dim=1) has shape (n_prompts,), which broadcasts against the *columns* of (n_prompts, "
                "G): keep the group dimension with keepdim=True (shape (n_prompts, 1))."),
        Mistake("sign flipped", lambda r: _rloo(r, sign=-1.0),
                "the sign is flipped: a sample better than the others of its group gets a positive advantage, "
                "r_i - mean of the others."),
    ],
)

# in the chapter's order: exercises 9.1 to 9.4
BEYOND_PPO_EXERCISES = [check_dpo_loss, check_group_advantages, check_rloo_advantages, check_k3_kl]
