"""Exercises of chapter 10: RL with verifiable rewards (RLVR), GRPO and its 2025 successors.

Two exercises, each checked against the library's reference:

- ``pass_at_k``: the unbiased pass@k of one prompt, ``c`` right among ``n`` samples (Chen et al.
  2021, eq. 1), one float;
- ``aggregate_loss``: the three ways of turning per-token loss terms ``(B, L)`` into one number,
  ``kind`` one of ``"grpo"`` (mean per response, then over responses; Shao et al. 2024),
  ``"dr_grpo"`` (token sum over B x L, Liu et al. 2025) and ``"dapo"`` (mean over the real tokens
  of the batch, Yu et al. 2025). Its value *and* its gradient w.r.t. the per-token terms (the
  per-token weights, what the chapter predicts first) are checked.

Not registered in :data:`ppo_lib.teaching.checks.ALL_EXERCISES` (the chapter imports them from here);
see :data:`RLVR_EXERCISES`.
"""

from __future__ import annotations

import math

import torch

from ppo_lib.teaching.checks.core import Case, Exercise, Mistake, compare
from ppo_lib.teaching.checks.rlhf import loss_and_gradients, tensor_compare, tracked_leaf
from ppo_lib.rlhf.evaluate import pass_at_k
from ppo_lib.rlhf.grpo import aggregation_weights

D = torch.float64

# ---------------------------------------------------------------- pass@k

_PLUG_IN = ("1 - (1 - c/n)^k treats the k samples as drawn *with* replacement from the n: it is biased low "
            "(Chen et al. 2021). Draw k of the n without replacement: 1 - C(n-c, k) / C(n, k).")


def _reference_pass_at_k(n, c, k):
    return pass_at_k(int(n), int(c), int(k))


def _as_float(compare_fn):
    def check(expected, got):
        if isinstance(got, bool):
            return f"expected a number between 0 and 1, got the bool {got}"
        return compare_fn(expected, got)
    return check


check_pass_at_k = Exercise(
    "pass_at_k",
    reference=_reference_pass_at_k,
    reference_name="ppo_lib.rlhf.evaluate.pass_at_k",
    compare=_as_float(lambda e, g: compare(e, g, rtol=1e-7, atol=1e-9)),
    cases=[
        Case((10, 3, 1), "n=10 samples, c=3 right, k=1: pass@1 is the share of right samples"),
        Case((10, 3, 4), "n=10, c=3, k=4: draw 4 of the 10 samples without replacement"),
        Case((64, 5, 16), "n=64, c=5, k=16 (the chapter's n)"),
        Case((64, 0, 64), "n=64, c=0, k=64: never right, so 0 whatever k"),
        Case((8, 6, 4), "n=8, c=6, k=4: only 2 wrong samples, so any 4 contain a right one: exactly 1"),
        Case((64, 1, 64), "n=64, c=1, k=64: all samples drawn, so the right one is among them: exactly 1"),
        Case((200, 17, 50), "n=200, c=17, k=50: C(200, 50) is about 4.5e47, too large for float arithmetic of "
                            "the binomials"),
    ],
    mistakes=[
        Mistake("plug-in estimate", lambda n, c, k: 1 - (1 - c / n) ** k, _PLUG_IN),
        Mistake("share right", lambda n, c, k: c / n,
                "c / n is pass@1 only: pass@k asks whether *any* of k samples is right, so it grows with k."),
        Mistake("expected right", lambda n, c, k: min(1.0, k * c / n),
                "k c / n is the expected *number* of right answers among k samples (capped), not the chance of at "
                "least one: 1 - C(n-c, k) / C(n, k)."),
        Mistake("no 1 -", lambda n, c, k: math.comb(n - c, k) / math.comb(n, k),
                "C(n-c, k) / C(n, k) is the chance that all k samples are *wrong*; pass@k is one minus it."),
        Mistake("wrong denominator", lambda n, c, k: 1 - math.comb(n - c, k) / math.comb(n, c),
                "the denominator counts every way to draw the k samples: C(n, k), not C(n, c)."),
        Mistake("k + 1 factors", lambda n, c, k: 1.0 if n - c < k else
                1 - math.prod(1 - k / i for i in range(n - c, n + 1)),
                "the product has c factors, i = n-c+1 .. n: C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i); "
                "yours starts at n-c."),
    ],
)

# ---------------------------------------------------------------- the three loss aggregations

KINDS = ("grpo", "dr_grpo", "dapo")


def reference_aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """sum over tokens of ``aggregation_weights(mask, kind) * per_token``: one number."""
    return (aggregation_weights(mask, kind).to(per_token.dtype) * per_token).sum()


def _run_aggregate(fn, per_token, mask, kind):
    leaf, given = tracked_leaf(per_token)
    mask_before = mask.clone()
    out = fn(given, mask, kind)
    if not torch.equal(mask, mask_before) or not torch.equal(given.detach(), leaf.detach()):
        from ppo_lib.teaching.checks.rlhf import ChangedInput

        return ChangedInput("mask" if not torch.equal(mask, mask_before) else "per_token")
    return loss_and_gradients(out, {"per_token": leaf})


def _masked(per_token, mask):
    return per_token * mask


def _grpo(x, m):
    return ((_masked(x, m)).sum(1) / m.sum(1)).mean()


def _dr(x, m):
    return _masked(x, m).sum() / (m.shape[0] * m.shape[1])


def _dapo(x, m):
    return _masked(x, m).sum() / m.sum()


def _with(kind_impl: dict):
    """An aggregation right for the kinds not in ``kind_impl`` and wrong (as given) for those in it."""
    right = {"grpo": _grpo, "dr_grpo": _dr, "dapo": _dapo}

    def impl(x, m, kind):
        return {**right, **kind_impl}[kind](x, m)
    return impl


def _lengths(*ls, L):
    return (torch.arange(L)[None] < torch.tensor(ls)[:, None]).to(D)


def _terms(B, L, seed):
    return torch.randn(B, L, generator=torch.Generator().manual_seed(seed), dtype=D)


_CASES = []
for _kind in KINDS:
    _CASES += [
        Case((_terms(4, 6, 1), _lengths(2, 6, 2, 6, L=6), _kind),
             f"kind={_kind!r}, B=4 responses in L=6 slots, lengths [2, 6, 2, 6] (short and long), random "
             f"per-token terms; mask 1 on the real tokens"),
        Case((_terms(3, 5, 2), _lengths(5, 1, 3, L=5), _kind),
             f"kind={_kind!r}, B=3 responses in L=5 slots, lengths [5, 1, 3]: none is 5 long but the first"),
        Case((_terms(2, 8, 3), _lengths(3, 4, L=8), _kind),
             f"kind={_kind!r}, B=2 responses in L=8 slots, lengths [3, 4]: no response fills the slots"),
    ]

check_aggregate_loss = Exercise(
    "aggregate_loss",
    reference=reference_aggregate_loss,
    reference_name="ppo_lib.rlhf.grpo.aggregation_weights (weights times the terms, summed)",
    run=_run_aggregate,
    compare=tensor_compare("a torch.Tensor holding one number (the training loop calls backward() on it)"),
    cases=_CASES,
    mistakes=[
        Mistake("grpo as a token mean", _with({"grpo": _dapo}),
                "kind='grpo' averages each response over its own tokens first, then over responses: "
                "((x * mask).sum(1) / mask.sum(1)).mean(); yours is DAPO's mean over all the batch's tokens."),
        Mistake("grpo without 1/|o_i|", _with({"grpo": lambda x, m: _masked(x, m).sum(1).mean()}),
                "kind='grpo' divides each response's sum by its own length |o_i| (mask.sum(1)) before the mean "
                "over responses."),
        Mistake("grpo divided by L", _with({"grpo": lambda x, m: (_masked(x, m).sum(1) / m.shape[1]).mean()}),
                "kind='grpo' divides each response's sum by its length |o_i| = mask.sum(1), not by the number of "
                "slots L (that is Dr. GRPO's constant)."),
        Mistake("dr_grpo as a token mean", _with({"dr_grpo": _dapo}),
                "kind='dr_grpo' divides the token sum by a constant, B x L (mask.shape[0] * mask.shape[1]), not by "
                "the number of real tokens (that is DAPO's), which changes with the batch's lengths."),
        Mistake("dr_grpo by the longest response",
                _with({"dr_grpo": lambda x, m: _masked(x, m).sum() / (m.shape[0] * m.sum(1).max())}),
                "kind='dr_grpo' divides by B x L with L the response slots (the generation budget, "
                "mask.shape[1]), a constant; the longest response of the batch changes from batch to batch."),
        Mistake("dr_grpo as grpo", _with({"dr_grpo": _grpo}),
                "kind='dr_grpo' removes the per-response 1/|o_i| (Liu et al. 2025): sum every token's term and "
                "divide by B x L."),
        Mistake("dapo per response", _with({"dapo": _grpo}),
                "kind='dapo' is one mean over every real token of the batch: (x * mask).sum() / mask.sum(); yours "
                "averages per response first (GRPO's)."),
        Mistake("dapo over the slots", _with({"dapo": _dr}),
                "kind='dapo' divides by the number of real tokens, mask.sum(), not by B x L."),
        Mistake("padding counted", lambda x, m, kind: {"grpo": lambda: x.mean(1).mean(), "dr_grpo": lambda: x.mean(),
                                                       "dapo": lambda: x.mean()}[kind](),
                "multiply by the mask: the terms at padding (after <eos>) are not tokens of any response and "
                "must not count."),
        Mistake("no gradient", lambda x, m, kind: reference_aggregate_loss(x, m, kind).detach(),
                "the value is right but carries no gradient (detached, .item(), or built with torch.tensor): "
                "the loss must stay connected to the per-token terms."),
    ],
)

# in the chapter's order: exercises 10.1 and 10.2
RLVR_EXERCISES = [check_pass_at_k, check_aggregate_loss]
