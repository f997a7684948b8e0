"""Exercises of chapter 8: PPO on a tiny language model.

Five exercises, each checked against the library's reference:

- ``gather_logprobs``: the log-probabilities of the response tokens (the shift by one);
  its value *and* its gradient w.r.t. the logits are checked (it feeds the PPO ratio);
- ``per_token_rewards``: -beta * KL on every real token, plus the score on the last one;
- ``bradley_terry_loss``: the reward model's loss, value and gradients (a loss);
- ``masked_whiten``: whitening over the real tokens only, with the unbiased std;
- ``adaptive_kl_update``: Ziegler et al. (2019)'s proportional controller for beta.

Inputs are torch tensors; masks are float tensors of 0.0 / 1.0, as
:func:`ppo_lib.rlhf.model.generate` returns them. A tensor is required back where the
next cell needs one (``loss.backward()``, GAE over tokens); the adaptive beta is a number.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ppo_lib.teaching.checks.core import Case, Exercise, Mistake, format_value, compare
from ppo_lib.rlhf.kl import adaptive_kl_update
from ppo_lib.rlhf.model import gather_logprobs
from ppo_lib.rlhf.reward_model import bradley_terry_loss
from ppo_lib.rlhf.token_advantages import masked_whiten, per_token_rewards

D = torch.float64


def tensor_of(*rows, dtype=D) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


# ---------------------------------------------------------------- return types


@dataclasses.dataclass(frozen=True)
class NotATensor:
    """What a ``run`` hook hands on when the function returned something other than a tensor."""

    value: Any


@dataclasses.dataclass(frozen=True)
class ChangedInput:
    """What a ``run`` hook hands on when the function changed one of its input tensors in place."""

    name: str


def tracked_leaf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A leaf that tracks gradients, and the copy of it handed to the learner's function: an in-place
    change of the copy is then allowed by autograd, seen (the leaf keeps the original values), and
    the gradient w.r.t. the leaf is the gradient w.r.t. the input."""
    leaf = x.detach().clone().requires_grad_(True)
    return leaf, leaf.clone()


def tensor_changed(given: torch.Tensor, leaf: torch.Tensor) -> bool:
    return given.shape != leaf.shape or not torch.equal(given.detach(), leaf.detach())


def watching_inputs(*names: str):
    """A ``run`` hook that reports an input tensor changed in place (named, whatever the answer), so
    that no known mistake's hint is matched against a right answer computed by mutating an input."""

    def run(fn, *args):
        before = [a.clone() if isinstance(a, torch.Tensor) else None for a in args]
        out = fn(*args)
        for name, a, b in zip(names, args, before):
            if b is not None and tensor_changed(a, b):
                return ChangedInput(name)
        return out

    return run


def _type_name(x: Any) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"


def _show(x: Any) -> str:
    """``format_value``, made safe for anything a learner may return (a tuple of tensors that track gradients
    makes numpy raise a RuntimeError)."""
    if isinstance(x, (tuple, list)):
        inner = ", ".join(f"a tensor of shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else _show(v)
                          for v in x[:5])
        inner += ", ..." if len(x) > 5 else ""
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    try:
        return format_value(x)
    except Exception:
        text = repr(x)
        return text if len(text) <= 200 else text[:200] + "..."


def _safe(check):
    """A compare function that answers in words, never with a traceback."""

    def safe_check(expected: Any, got: Any) -> str | None:
        try:
            return check(expected, got)
        except Exception as exc:  # an odd return value: report it, do not crash the checker
            return f"could not read what your function returned ({_type_name(got)}: {_show(got)}): {exc}"

    return safe_check


def _not_a_tensor(got: Any, wanted: str) -> str:
    if got is None:
        return "your function returned None: did you forget the `return` statement?"
    why = ""
    if isinstance(got, (tuple, list)):
        why = " (return the one tensor, not a tuple or list)"
    elif isinstance(got, np.ndarray):
        why = " (keep computing with torch operations, or convert with torch.as_tensor)"
    elif isinstance(got, (numbers.Number, np.generic)):
        why = " (a plain number: did you call .item() or float()?)"
    return f"expected {wanted}, got a {_type_name(got)}{why}: {_show(got)}"


def tensor_compare(wanted: str, how: dict | None = None):
    """``compare``, after checking that a torch tensor came back; ``wanted`` says what is expected. ``how``:
    {a compared key: how its value is computed}, said after a difference there, so that a learner can
    reproduce a gradient dump."""

    def check(expected: Any, got: Any) -> str | None:
        problem = check_values(expected, got)
        for key, text in (how or {}).items():
            if problem is not None and problem.startswith(key + ":"):
                return f"{problem} (how it is computed: {text})"
        return problem

    def check_values(expected: Any, got: Any) -> str | None:
        if isinstance(got, ChangedInput):
            return (f"your function changed its input `{got.name}` in place (with -=, *=, an indexed assignment "
                    f"or a method ending in _): work on a copy, the caller still needs it")
        if isinstance(expected, ChangedInput):
            return "not the same"
        if isinstance(expected, NotATensor) or isinstance(got, NotATensor):
            if isinstance(expected, NotATensor) and isinstance(got, NotATensor):
                return compare(expected.value, got.value)
            if isinstance(got, NotATensor):
                return _not_a_tensor(got.value, wanted)
            return "a tensor is not what was expected here"
        if isinstance(expected, torch.Tensor) and not isinstance(got, torch.Tensor):
            return _not_a_tensor(got, wanted)
        if isinstance(expected, dict) and isinstance(got, dict) and set(got) - set(expected):
            # only when diagnosing: a known mistake without a gradient is not one whose gradient exists
            return f"{sorted(set(got) - set(expected))[0]}: present, but not expected"
        return compare(expected, got)

    return _safe(check)


def grad_or_zero(x: torch.Tensor) -> torch.Tensor:
    return x.grad if x.grad is not None else torch.zeros_like(x)


# ---------------------------------------------------------------- gather_logprobs

_GRAD_WEIGHTS_SEED = 1234


def _run_gather(fn, logits, tokens, prompt_len):
    """Call fn with logits that track gradients; report the log-probs and d(sum w * logp)/d logits."""
    leaf, given = tracked_leaf(logits)
    tokens_before = tokens.clone()
    out = fn(given, tokens, prompt_len)
    if tensor_changed(given, leaf):
        return ChangedInput("logits")
    if tensor_changed(tokens, tokens_before):
        return ChangedInput("tokens")
    if not isinstance(out, torch.Tensor):
        return NotATensor(out)
    shape = (tokens.shape[0], tokens.shape[1] - prompt_len)
    result = {"log-probabilities": out.detach()}
    if tuple(out.shape) != shape or not out.requires_grad:
        return result  # a wrong shape is reported on the value; no graph: the gradient is "not available"
    # a fixed, non-uniform weighting so every entry of the gradient matters
    w = torch.rand(shape, generator=torch.Generator().manual_seed(_GRAD_WEIGHTS_SEED), dtype=D) + 0.5
    try:
        (out * w.to(out.dtype)).sum().backward()
    except Exception as exc:  # e.g. an in-place change of a tensor autograd still needed
        result["gradient w.r.t. logits"] = f"backward() failed: {exc}"
        return result
    result["gradient w.r.t. logits"] = grad_or_zero(leaf)
    return result


def _logits(seed: int, B: int, T: int, V: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(B, T, V, generator=torch.Generator().manual_seed(seed), dtype=D) * scale


def _tokens(seed: int, B: int, T: int, V: int) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _confident_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits where the scored token is 120 below the favourite: softmax underflows to 0."""
    logits = _logits(7, 2, 4, 3).float()
    tokens = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 1]])
    logits[0, 1] = torch.tensor([20.0, 0.0, -100.0])  # scores tokens[0, 2] = 2: log-prob -120
    return logits, tokens


def _gather(logits, tokens, prompt_len, logit_slice, token_slice, how="log_softmax", dim=-1):
    z = logits[:, logit_slice]
    if how == "log_softmax":
        z = F.log_softmax(z, dim=dim)
    elif how == "softmax":
        z = F.softmax(z, dim=dim)
    elif how == "log(softmax)":
        z = torch.log(F.softmax(z, dim=dim))
    return z.gather(-1, tokens[:, token_slice].unsqueeze(-1)).squeeze(-1)


def _gather_ok(logits, tokens, P, **kw):
    return _gather(logits, tokens, P, slice(P - 1, -1), slice(P, None), **kw)


_WRONG_DIM = ("log_softmax must normalise over the vocabulary, the last dimension (dim=-1): "
              "each position's logits are a distribution over the V words.")
_SHIFT = ("the logits at position i predict token i + 1: the response token at P + t is scored by the logits "
          "at P + t - 1, so use logits[:, P - 1:-1] with tokens[:, P:].")
_CONFIDENT_LOGITS, _CONFIDENT_TOKENS = _confident_logits()

check_gather_logprobs = Exercise(
    "gather_logprobs",
    reference=gather_logprobs,
    reference_name="ppo_lib.rlhf.model.gather_logprobs",
    run=_run_gather,
    compare=tensor_compare("a torch.Tensor of shape (B, L) (the PPO ratio exp(new - old) is computed from it)",
                           how={"gradient w.r.t. logits": "(out * w).sum().backward() with fixed weights w = torch.rand("
                                "B, L, generator=torch.Generator().manual_seed(1234), dtype=torch.float64) + 0.5, "
                                "so that every entry matters; the gradient lands on the logits you were given"}),
    cases=[
        Case((_logits(0, 2, 5, 4), _tokens(0, 2, 5, 4), 2),
             "B=2 sequences of T=5 tokens, a vocabulary of V=4, prompt_len=2: L=3 response tokens; random logits"),
        Case((_logits(1, 3, 6, 5), _tokens(1, 3, 6, 5), 3),
             "B=3, T=6, V=5, prompt_len=3 (L=3); random logits"),
        Case((_logits(2, 2, 4, 6, 3.0), _tokens(2, 2, 4, 6), 1),
             "B=2, T=4, V=6, prompt_len=1: the first response token (position 1) is scored by the logits at "
             "position 0"),
        Case((_logits(3, 2, 5, 3), _tokens(3, 2, 5, 3), 4),
             "B=2, T=5, V=3, prompt_len=4: a single response token (L=1)"),
        Case((_logits(4, 12, 16, 11), _tokens(4, 12, 16, 11), 5),
             "B=12 sequences of T=16 tokens, V=11, prompt_len=5 (L=11): sizes beyond the small cases"),
        Case((_CONFIDENT_LOGITS, _CONFIDENT_TOKENS, 1),
             "a confident model in float32 (the chapter's dtype): B=2, T=4, V=3, prompt_len=1, and "
             "tokens[0, 2] has a logit 120 below the favourite's (its log-prob is -120)"),
    ],
    mistakes=[
        Mistake("no shift", lambda lg, tk, P: _gather(lg, tk, P, slice(P, None), slice(P, None)), _SHIFT),
        Mistake("both shifted", lambda lg, tk, P: _gather(lg, tk, P, slice(P - 1, -1), slice(P - 1, -1)),
                "you shifted the tokens too: the tokens to score are the response tokens tokens[:, P:]; only "
                "the logits move back by one (logits[:, P - 1:-1])."),
        Mistake("shift the wrong way", lambda lg, tk, P: _gather(lg, tk, P, slice(P, None), slice(P - 1, -1)),
                "the shift goes the other way: the logits at position i predict the *next* token i + 1, so "
                "tokens[:, P:] is scored by logits[:, P - 1:-1]."),
        Mistake("with the prompt", lambda lg, tk, P: _gather(lg, tk, P, slice(0, -1), slice(1, None)),
                "you also scored the prompt tokens: return the response tokens only, L = T - prompt_len "
                "columns (tokens[:, P:] with logits[:, P - 1:-1])."),
        Mistake("probabilities", lambda lg, tk, P: _gather_ok(lg, tk, P, how="softmax"),
                "these are probabilities (softmax); PPO needs log-probabilities: use log_softmax."),
        Mistake("raw logits", lambda lg, tk, P: _gather_ok(lg, tk, P, how="raw"),
                "these are raw logits (unnormalised scores): normalise them with log_softmax over the "
                "vocabulary before gathering."),
        Mistake("negative log-likelihood", lambda lg, tk, P: -_gather_ok(lg, tk, P),
                "the sign is flipped: that is the negative log-likelihood (what cross_entropy returns); the "
                "log-probability is its negative, log_softmax(...) gathered at the token."),
        Mistake("log_softmax over positions", lambda lg, tk, P: _gather_ok(lg, tk, P, dim=1), _WRONG_DIM),
        Mistake("log_softmax over the batch", lambda lg, tk, P: _gather_ok(lg, tk, P, dim=0), _WRONG_DIM),
        Mistake("log(softmax)", lambda lg, tk, P: _gather_ok(lg, tk, P, how="log(softmax)"),
                "log(softmax(...)) underflows: an unlikely token's probability rounds to 0 and its log to -inf "
                "(in float32 once it is about 100 below the favourite). Use log_softmax, which is computed stably."),
        Mistake("not squeezed", lambda lg, tk, P: _gather_ok(lg, tk, P).unsqueeze(-1),
                "gather leaves a last dimension of size 1: squeeze(-1) to get shape (B, L)."),
        Mistake("no gradient", lambda lg, tk, P: gather_logprobs(lg, tk, P).detach(),
                "the values are right but carry no gradient (computed under torch.no_grad(), or detached): "
                "PPO differentiates the ratio exp(logp_new - logp_old) through these log-probs, so keep the graph."),
    ],
)

# ---------------------------------------------------------------- per-token rewards


def _ptr(kl, scores, mask, beta, *, sign=-1.0, use_beta=True, mask_kl=True, use_kl=True, where="last",
         replace=False):
    kl, mask, scores = torch.as_tensor(kl), torch.as_tensor(mask), torch.as_tensor(scores)
    B, L = kl.shape
    coef = beta if use_beta else 1.0
    rewards = sign * coef * kl * (mask if mask_kl else 1.0) if use_kl else torch.zeros_like(kl)
    rewards = rewards.clone()
    rows = torch.arange(B)
    last = mask.sum(1).long() - 1
    if where == "every":
        return rewards + scores[:, None] * mask
    if where == "every (padding too)":
        return rewards + scores[:, None]
    idx = {"last": last, "slot L-1": torch.full_like(last, L - 1), "first": torch.zeros_like(last),
           "after eos": torch.clamp(last + 1, max=L - 1)}.get(where)
    if where == "columns":
        rewards[:, last] += scores
        return rewards
    if replace:
        rewards[rows, idx] = scores.to(rewards.dtype)
    else:
        rewards[rows, idx] += scores.to(rewards.dtype)
    return rewards


# row 0 ends at slot 2, row 1 has its <eos> on the last slot, row 2 is a single token
_KL1 = tensor_of([0.3, -0.2, 0.5, 0.7, 0.9], [0.1, 0.4, -0.3, 0.2, 0.6], [0.8, 0.5, -0.4, 0.3, 0.2])
_M1 = tensor_of([1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0])
_KL2 = tensor_of([0.2, -0.1, 0.3, 0.05, -0.4, 0.6], [0.25, 0.15, 0.35, 0.45, 0.55, 0.65])
_M2 = tensor_of([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0])
_g12 = torch.Generator().manual_seed(12)
_KL12 = torch.randn(12, 14, generator=_g12, dtype=D)
_SCORES12 = torch.randn(12, generator=_g12, dtype=D) * 2
_LEN12 = torch.tensor([1, 14, 7, 3, 14, 9, 2, 11, 5, 13, 6, 10])
_M12 = (torch.arange(14)[None, :] < _LEN12[:, None]).to(D)
_SHIFTED_SCORE = ("one slot too far: the score goes on the last real token, the <eos> itself (index "
                  "mask.sum(1) - 1), not on the padding slot after it, which the mask then zeroes out so the "
                  "score never reaches the policy (TRL issue 3750).")
_EVERY_TOKEN = ("the score is given once per response, on its last real token; you added it to every token.")

check_per_token_rewards = Exercise(
    "per_token_rewards",
    reference=per_token_rewards,
    reference_name="ppo_lib.rlhf.token_advantages.per_token_rewards",
    run=watching_inputs("kl", "scores", "mask"),
    compare=tensor_compare("a torch.Tensor of shape (B, L) (GAE over the tokens runs on it next)"),
    cases=[
        Case((_KL1, tensor_of(1.0, -2.0, 0.5), _M1, 0.1),
             "B=3 responses of L=5 slots, beta=0.1, scores=[1, -2, 0.5]: row 0 ends (<eos>) at slot 2, row 1 has "
             "its <eos> on the last slot (mask all ones), row 2 is a single token (<eos> at slot 0); kl has "
             "negative values and is not zero on padding (the mask must remove it)"),
        Case((_KL2, tensor_of(3.0, -1.5), _M2, 2.0),
             "B=2, L=6, beta=2 (> 1), scores=[3, -1.5]: row 0 never produced <eos> (mask all ones: its score goes "
             "on slot L-1), row 1 ends at slot 3"),
        Case((_KL1, tensor_of(0.7, 1.3, -0.9), _M1, 0.0),
             "the same masks as case 1 with beta=0: the rewards are the scores alone, on each last real token"),
        Case((tensor_of([0.4], [-0.6]), tensor_of(2.0, -1.0), tensor_of([1], [1]), 0.5),
             "L=1: one slot per response, B=2, beta=0.5, scores=[2, -1]"),
        Case((tensor_of([-0.3, 0.2, 0.1, 0.9]), tensor_of(0.25), tensor_of([1, 1, 0, 0]), 1.5),
             "B=1, L=4, the response ends at slot 1, beta=1.5, score=0.25"),
        Case((_KL12, _SCORES12, _M12, 0.05),
             "B=12 responses of L=14 slots (sizes beyond the small cases), random lengths from 1 to 14, beta=0.05"),
    ],
    mistakes=[
        Mistake("slot L-1", lambda *a: _ptr(*a, where="slot L-1"),
                "the score goes on each row's last *real* token (index mask.sum(1) - 1), not on slot L - 1 for "
                "every row: after <eos> the slots are padding."),
        Mistake("after eos", lambda *a: _ptr(*a, where="after eos"), _SHIFTED_SCORE),
        Mistake("first token", lambda *a: _ptr(*a, where="first"),
                "the score goes on the last real token (the one that completes the response), not the first."),
        Mistake("score on every token", lambda *a: _ptr(*a, where="every"), _EVERY_TOKEN),
        Mistake("score on every slot", lambda *a: _ptr(*a, where="every (padding too)"), _EVERY_TOKEN),
        Mistake("columns", lambda *a: _ptr(*a, where="columns"),
                "rewards[:, last] picks those columns in *every* row; index row by row: "
                "rewards[torch.arange(B), last] (or scatter_add along dim 1)."),
        Mistake("KL not masked", lambda *a: _ptr(*a, mask_kl=False),
                "the KL penalty must be 0 on padding (after <eos>): multiply it by the mask."),
        Mistake("plus beta", lambda *a: _ptr(*a, sign=1.0),
                "the KL is a penalty: the per-token reward is -beta * kl (moving away from the reference costs)."),
        Mistake("no beta", lambda *a: _ptr(*a, use_beta=False), "multiply the KL by beta."),
        Mistake("no KL", lambda *a: _ptr(*a, use_kl=False),
                "the KL penalty is missing: every real token gets -beta * kl, plus the score on the last one."),
        Mistake("score overwrites KL", lambda *a: _ptr(*a, replace=True),
                "at the last real token *add* the score to the KL penalty (-beta * kl + score); you overwrote it."),
    ],
)

# ---------------------------------------------------------------- Bradley-Terry loss


def _run_bt(fn, r_chosen, r_rejected):
    """Call fn on rewards that track gradients; report the loss and both gradients."""
    (chosen, given_chosen), (rejected, given_rejected) = tracked_leaf(r_chosen), tracked_leaf(r_rejected)
    loss = fn(given_chosen, given_rejected)
    for name, given, leaf in (("r_chosen", given_chosen, chosen), ("r_rejected", given_rejected, rejected)):
        if tensor_changed(given, leaf):
            return ChangedInput(name)
    return loss_and_gradients(loss, {"r_chosen": chosen, "r_rejected": rejected})


def loss_and_gradients(loss, leaves: dict):
    """What a pair loss's checker compares: the loss and its gradient w.r.t. each tracked input
    (``leaves``: name -> leaf tensor), or why they cannot be had."""
    if not isinstance(loss, torch.Tensor):
        return NotATensor(loss)
    if loss.numel() != 1 or not loss.requires_grad:
        return {"loss": loss.detach()}
    first = next(iter(leaves))
    try:
        loss.backward()
    except Exception as exc:  # e.g. an in-place change of a tensor autograd still needed
        return {"loss": loss.detach(), f"gradient w.r.t. {first}": f"backward() failed: {exc}"}
    return {"loss": loss.detach(), **{f"gradient w.r.t. {name}": grad_or_zero(leaf) for name, leaf in leaves.items()}}


_STABLE = ("for a large gap, log(sigmoid(d)) and log(1 + exp(-d)) written by hand break down in floating point "
           "(sigmoid(-120) rounds to 0 in float32, so log gives -inf; exp(120) overflows to inf). Use "
           "torch.nn.functional.logsigmoid(r_chosen - r_rejected), which is computed stably.")

check_bradley_terry_loss = Exercise(
    "bradley_terry_loss",
    reference=bradley_terry_loss,
    reference_name="ppo_lib.rlhf.reward_model.bradley_terry_loss",
    run=_run_bt,
    compare=tensor_compare("a torch.Tensor holding the loss (the next cell calls loss.backward() on it)",
                           how={f"gradient w.r.t. {k}": f"loss.backward() on the loss you returned; {k}.grad"
                                for k in ("r_chosen", "r_rejected")}),
    cases=[
        Case((tensor_of(0.9), tensor_of(0.4)), "one pair: r_chosen=[0.9], r_rejected=[0.4]"),
        Case((tensor_of(2.0, -0.5, 0.3, 1.0), tensor_of(0.5, 1.0, 0.3, -2.0)),
             "four pairs, r_chosen=[2, -0.5, 0.3, 1], r_rejected=[0.5, 1, 0.3, -2]: gaps +1.5, -1.5 (the model "
             "prefers the rejected one), 0 (a tie, as at the start of training when the head outputs 0) and +3"),
        Case((tensor_of(50.0, -20.0, 0.0), tensor_of(0.0, 30.0, 0.0)),
             "large gaps in float64: r_chosen - r_rejected = +50, -50 and 0"),
        Case((tensor_of(-60.0, 70.0, dtype=torch.float32), tensor_of(60.0, -50.0, dtype=torch.float32)),
             "float32 (the reward model's dtype): gaps -120 (badly wrong) and +120; the loss is (120 + 0) / 2 = 60"),
    ],
    mistakes=[
        Mistake("swapped", lambda c, r: -F.logsigmoid(r - c).mean(),
                "chosen and rejected are swapped: the model should score the chosen response higher, "
                "-log sigma(r_chosen - r_rejected)."),
        Mistake("no minus", lambda c, r: F.logsigmoid(c - r).mean(),
                "the loss is the *negative* log-likelihood: minimise -log sigma(r_chosen - r_rejected)."),
        Mistake("sum", lambda c, r: -F.logsigmoid(c - r).sum(),
                "average over the pairs (mean), do not sum: the learning rate should not depend on the batch size."),
        Mistake("no mean", lambda c, r: -F.logsigmoid(c - r),
                "return one number, the mean over the pairs, not one loss per pair."),
        Mistake("no log", lambda c, r: -torch.sigmoid(c - r).mean(),
                "take the log of the probability: -log sigma(r_chosen - r_rejected), not -sigma(...)."),
        Mistake("linear", lambda c, r: -(c - r).mean(),
                "-(r_chosen - r_rejected) has no minimum: squash the gap with log sigma, "
                "-log sigma(r_chosen - r_rejected)."),
        Mistake("hinge", lambda c, r: torch.relu(1.0 - (c - r)).mean(),
                "that is a margin (hinge) loss; Bradley-Terry is the negative log-likelihood "
                "-log sigma(r_chosen - r_rejected), averaged over the pairs."),
        Mistake("log(sigmoid)", lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), _STABLE),
        Mistake("softplus by hand", lambda c, r: torch.log1p(torch.exp(r - c)).mean(), _STABLE),
        Mistake("log(1 + exp) by hand", lambda c, r: torch.log(1 + torch.exp(r - c)).mean(), _STABLE),
        Mistake("binary_cross_entropy on sigmoid", lambda c, r: F.binary_cross_entropy(
            torch.sigmoid(c - r), torch.ones_like(c)), _STABLE),
        Mistake("rejected detached", lambda c, r: bradley_terry_loss(c, r.detach()),
                "no gradient reaches r_rejected: both rewards come from the model being trained, so neither "
                "is detached."),
        Mistake("no gradient", lambda c, r: bradley_terry_loss(c, r).detach(),
                "the value is right but carries no gradient (computed under torch.no_grad(), detached, or rebuilt "
                "with torch.tensor(...)): the reward model learns through loss.backward(), so keep the graph."),
    ],
)

# ---------------------------------------------------------------- masked whitening


def _whiten(x, mask, *, stats="masked", ddof=1, zero_padding=True, centre=True, scale="std", eps=1e-8,
            single=True, per_row=False, keep_padding=False):
    x, mask = torch.as_tensor(x, dtype=D), torch.as_tensor(mask, dtype=D)
    if per_row:
        return torch.stack([_whiten(x[i:i + 1], mask[i:i + 1])[0] for i in range(len(x))])
    numel = torch.tensor(float(x.numel()), dtype=D)
    m, n = {"masked": (mask, mask.sum()), "all": (torch.ones_like(mask), numel), "numel": (mask, numel)}[stats]
    mean = (x * m).sum() / n
    centred = (x - mean) * m
    if single and m.sum() < 2:
        out = centred
    else:
        var = (centred ** 2).sum() / (n - ddof)
        div = {"std": torch.sqrt(var + eps), "var": var + eps, "none": torch.ones((), dtype=D)}[scale]
        out = ((x - mean) if centre else x) / div
    if keep_padding:
        return torch.where(mask > 0, out, x)
    return out * mask if zero_padding else out


def _whiten_eps_on_std(x, mask):
    x, mask = torch.as_tensor(x, dtype=D), torch.as_tensor(mask, dtype=D)
    n = mask.sum()
    mean = (x * mask).sum() / n
    centred = (x - mean) * mask
    if n < 2:
        return centred
    return centred / (torch.sqrt((centred ** 2).sum() / (n - 1)) + 1e-8)


_WHITEN_STATS = ("the mean and the std must come from the real tokens only: the padding values are not "
                 "advantages (here they are large on purpose). Use sums weighted by the mask, divided by "
                 "mask.sum().")
_PADDING = "the result must be 0 on padding (outside the mask): multiply by the mask at the end."

_gw = torch.Generator().manual_seed(21)
_WX = torch.randn(6, 16, generator=_gw, dtype=D) * 3 + 1
_WM = (torch.arange(16)[None, :] < torch.tensor([16, 1, 9, 4, 12, 7])[:, None]).to(D)
_X1 = tensor_of([1.0, 2.0, 3.0, 100.0], [4.0, 5.5, 100.0, 100.0])
_MW1 = tensor_of([1, 1, 1, 0], [1, 1, 0, 0])
check_masked_whiten = Exercise(
    "masked_whiten",
    reference=masked_whiten,
    reference_name="ppo_lib.rlhf.token_advantages.masked_whiten",
    run=watching_inputs("x", "mask"),
    compare=tensor_compare("a torch.Tensor of the shape of x (the advantages of the next cells)"),
    cases=[
        Case((_X1, _MW1),
             "x of shape (2, 4) with 5 real tokens [1, 2, 3] and [4, 5.5]; the padding holds 100 (the mask is a "
             "float tensor: 1.0 on real tokens, 0.0 on padding)"),
        Case((tensor_of([0.5, -1.5, 2.0, -3.0, 1.0, 0.0]), tensor_of([1, 1, 1, 1, 1, 1])),
             "one row, every token real: plain whitening with the unbiased std (divide by n - 1, like torch.std)"),
        Case((tensor_of([2.0, 50.0, -50.0], [-1.0, 80.0, 80.0]), tensor_of([1, 0, 0], [1, 0, 0])),
             "two real tokens (x = 2 and -1), the rest padding: n - 1 = 1"),
        Case((tensor_of([3.0, 40.0, 40.0], [20.0, 20.0, 20.0]), tensor_of([1, 0, 0], [0, 0, 0])),
             "a single real token (x = 3): its std is undefined, so only centre it (the result is 0 there)"),
        Case((tensor_of([2.0, 2.0, 9.0], [2.0, 2.0, 2.0]), tensor_of([1, 1, 0], [1, 1, 1])),
             "every real token has the same value (std 0): with eps = 1e-8 inside the square root the result "
             "is 0, not nan"),
        Case((tensor_of([1.0, 1.0001, 0.9999, 7.0], [1.00005, 0.99995, 5.0, 5.0]), tensor_of([1, 1, 1, 0], [1, 1, 0, 0])),
             "real tokens that differ by about 1e-4 (variance about 1e-8, as large as eps): the text puts eps "
             "= 1e-8 under the square root, sqrt(var + 1e-8); added to the std instead, it gives other values"),
        Case((_WX, _WM), "x of shape (6, 16), random, rows of 1 to 16 real tokens (sizes beyond the small cases)"),
        Case((tensor_of([-0.2, 0.4, 1.1, -30.0], [0.9, -0.7, 30.0, -30.0], [0.3, 0.0, 0.0, 0.0]),
              tensor_of([1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0])),
             "x of shape (3, 4), rows of 3, 2 and 1 real tokens, padding of +-30"),
    ],
    mistakes=[
        Mistake("unmasked statistics", lambda x, m: _whiten(x, m, stats="all"), _WHITEN_STATS),
        Mistake("nothing masked", lambda x, m: _whiten(x, m, stats="all", zero_padding=False),
                "nothing is masked: compute the mean and std over the real tokens only, and set the padding to 0."),
        Mistake("divided by numel", lambda x, m: _whiten(x, m, stats="numel"),
                "divide the masked sums by the number of real tokens, mask.sum(), not by x.numel() (which "
                "counts the padding: (x * mask).mean() is not the mean of the real tokens)."),
        Mistake("biased std", lambda x, m: _whiten(x, m, ddof=0),
                "use the unbiased std, as the chapter asks: divide the sum of squares by n - 1 (like torch.std "
                "and torch.var, whose default is unbiased), not by n."),
        Mistake("padding not zeroed", lambda x, m: _whiten(x, m, zero_padding=False), _PADDING),
        Mistake("padding left as is", lambda x, m: _whiten(x, m, keep_padding=True), _PADDING),
        Mistake("only centred", lambda x, m: _whiten(x, m, scale="none"),
                "you only centred x: also divide by the (masked, unbiased) standard deviation."),
        Mistake("only scaled", lambda x, m: _whiten(x, m, centre=False),
                "subtract the (masked) mean before dividing by the std: whitened values have mean 0."),
        Mistake("variance", lambda x, m: _whiten(x, m, scale="var"),
                "divide by the standard deviation, sqrt(var + eps), not by the variance."),
        Mistake("per row", lambda x, m: _whiten(x, m, per_row=True),
                "whiten over all the real tokens of the batch together (one mean, one std), not row by row."),
        Mistake("single element divided", lambda x, m: _whiten(x, m, single=False),
                "with a single real token the unbiased std is undefined (n - 1 = 0): only centre it."),
        Mistake("eps on the std", lambda x, m: _whiten_eps_on_std(x, m),
                "eps = 1e-8 goes under the square root, sqrt(var + 1e-8), as the text writes it, not on the std "
                "(std + 1e-8): the two differ when the real tokens are close together."),
        Mistake("no eps", lambda x, m: _whiten(x, m, eps=0.0),
                "when every real token has the same value the std is 0: add eps = 1e-8 inside the square root, "
                "sqrt(var + 1e-8), so nothing divides by 0."),
    ],
)

# ---------------------------------------------------------------- adaptive KL coefficient


@_safe
def _number_compare(expected: Any, got: Any) -> str | None:
    """The new beta must be one number: a Python or NumPy scalar. The chapter's next cell does
    ``round(beta, 5)``, which a 0-d tensor or a 0-d array cannot do, so those are refused with that reason."""
    is_bool = isinstance(got, (bool, np.bool_)) or getattr(got, "dtype", None) in (torch.bool, np.bool_)
    scalar = isinstance(got, (numbers.Real, np.number))
    if got is not None and not is_bool and isinstance(got, (np.ndarray, torch.Tensor)) and got.ndim == 0:
        return (f"expected a number (the new beta, a float), got a 0-d {_type_name(got)} ({_show(got)}): the "
                f"chapter's next cell does round(beta, 5), which a {_type_name(got)} cannot do; return "
                f"float(...) or .item()")
    if got is not None and (is_bool or not scalar):
        why = " (return only the new beta)" if isinstance(got, (tuple, list)) else ""
        return f"expected a number (the new beta, a float), got a {_type_name(got)}{why}: {_show(got)}"
    return compare(expected, got)


def _akl(beta, kl, target, n, horizon, *, lo=-0.2, hi=0.2, error="relative", scale=True, update="mult",
         clip_after=False):
    e = {"relative": kl / target - 1.0, "reversed": target / kl - 1.0 if kl else float("inf"),
         "sign": 1.0 - kl / target, "absolute": kl - target}[error]
    step = n / horizon if scale else 1.0
    if clip_after:
        e = min(max(e * step, lo), hi)
        step = 1.0
    else:
        e = min(max(e, lo), hi)
    if update == "mult":
        return beta * (1.0 + e * step)
    if update == "add":
        return beta + e * step
    return 1.0 + e * step  # "factor": forgot the old beta


_DIRECTION = ("the error goes the wrong way: e = KL / KL_target - 1 is positive when the KL is above target, "
              "so beta grows and the penalty pulls the policy back.")

check_adaptive_kl_update = Exercise(
    "adaptive_kl_update",
    reference=adaptive_kl_update,
    reference_name="ppo_lib.rlhf.kl.adaptive_kl_update",
    compare=_number_compare,
    cases=[
        Case((0.5, 0.0595, 0.05, 64, 100),
             "beta=0.5, kl=0.0595, kl_target=0.05 (ratio 1.19: just inside the clip, e=0.19), n_steps=64, "
             "horizon=100"),
        Case((0.3, 0.023, 0.02, 2000, 1000),
             "beta=0.3, kl=0.023, kl_target=0.02 (ratio 1.15, e=0.15), n_steps=2000 > horizon=1000: "
             "beta * (1 + 0.15 * 2)"),
        Case((0.5, 0.0605, 0.05, 128, 100),
             "beta=0.5, kl=0.0605, kl_target=0.05 (ratio 1.21: just outside, e clipped to 0.2), n_steps=128, "
             "horizon=100"),
        Case((0.2, 9.0, 6.0, 5000, 10000),
             "beta=0.2, kl=9, kl_target=6 (ratio 1.5: the error 0.5 is clipped to 0.2), n_steps=5000, horizon=10000"),
        Case((1.0, 3.0, 6.0, 256, 1024),
             "beta=1, kl=3, kl_target=6 (ratio 0.5: the error -0.5 is clipped to -0.2), n_steps=256, horizon=1024"),
        Case((2.5, 0.405, 0.5, 300, 1000),
             "beta=2.5, kl=0.405, kl_target=0.5 (ratio 0.81: just inside, e=-0.19), n_steps=300, horizon=1000"),
        Case((2.5, 0.395, 0.5, 300, 1000),
             "beta=2.5, kl=0.395, kl_target=0.5 (ratio 0.79: just outside, e clipped to -0.2), n_steps=300, "
             "horizon=1000"),
        Case((0.1, 6.0, 6.0, 512, 10000), "beta=0.1, kl=kl_target=6 (on target: beta stays), n_steps=512, "
                                          "horizon=10000"),
        Case((0.2, 0.0, 6.0, 512, 10000),
             "beta=0.2, kl=0 (the policy still equals the reference: e=-1, clipped to -0.2), n_steps=512, "
             "horizon=10000"),
    ],
    mistakes=[
        Mistake("no clipping", lambda *a: _akl(*a, lo=-float("inf"), hi=float("inf")),
                "clip the error to [-0.2, 0.2] before using it: e = clip(KL / KL_target - 1, -0.2, 0.2), so one "
                "update moves beta by at most 20% x n_steps / horizon."),
        Mistake("clipped from above only", lambda *a: _akl(*a, lo=-float("inf")),
                "clip the error to [-0.2, 0.2] on both sides: you capped it from above only (a min without a "
                "max), so a KL far below the target still moves beta by more than 20% x n_steps / horizon."),
        Mistake("clipped from below only", lambda *a: _akl(*a, hi=float("inf")),
                "clip the error to [-0.2, 0.2] on both sides: you bounded it from below only (a max without a "
                "min), so a KL far above the target still moves beta by more than 20% x n_steps / horizon."),
        Mistake("clip after scaling", lambda *a: _akl(*a, clip_after=True),
                "clip the error e itself to [-0.2, 0.2], then scale it by n_steps / horizon; you clipped the "
                "product."),
        Mistake("reversed error", lambda *a: _akl(*a, error="reversed"), _DIRECTION),
        Mistake("error sign", lambda *a: _akl(*a, error="sign"), _DIRECTION),
        Mistake("absolute error", lambda *a: _akl(*a, error="absolute"),
                "the error is relative: KL / KL_target - 1, not KL - KL_target."),
        Mistake("no n_steps / horizon", lambda *a: _akl(*a, scale=False),
                "scale the error by n_steps / horizon: beta * (1 + e * n_steps / horizon)."),
        Mistake("additive", lambda *a: _akl(*a, update="add"),
                "the update is multiplicative: beta * (1 + e * n_steps / horizon), not beta + e * n_steps / horizon."),
        Mistake("forgot beta", lambda *a: _akl(*a, update="factor"),
                "that is the factor (1 + e * n_steps / horizon): multiply it by the old beta."),
    ],
)

RLHF_EXERCISES = [check_gather_logprobs, check_per_token_rewards, check_bradley_terry_loss, check_masked_whiten,
                  check_adaptive_kl_update]
