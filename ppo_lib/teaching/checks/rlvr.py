"""Exercises of chapter 10: RL with verifiable rewards (RLVR), GRPO and its 2025 successors.

Three exercises, each checked against the library's reference, and a diagnosis:

- ``pass_at_k``: the unbiased pass@k of one prompt, ``c`` right among ``n`` samples (Chen et al.
  2021, eq. 1), one float;
- ``aggregate_loss``: the three ways of turning per-token loss terms ``(B, L)`` into one number,
  ``kind`` one of ``"grpo"`` (mean per response, then over responses; Shao et al. 2024),
  ``"dr_grpo"`` (token sum over B x L, Liu et al. 2025) and ``"dapo"`` (mean over the real tokens
  of the batch, Yu et al. 2025). Its value *and* its gradient w.r.t. the per-token terms (the
  per-token weights, what the chapter predicts first) are checked;
- ``format_reward``: a reward for correctness plus a format bonus (the worked style) that a
  degenerate response (the scratchpad marker alone, a scratchpad with no answer, an unfinished
  one) does not get; run on crafted responses, the checker says which one was over- or
  under-rewarded;
- ``check_diagnosis``: the learner names the cause of each of five logged GRPO runs (chapter 10's
  "Why doesn't my reward go up?", ``benchmarks/results/rlvr_diagnosis.json``), as chapter 7's
  bug hunt does: right, or why the evidence does not fit. The answer is stored encoded.

The three exercises are in :data:`ppo_lib.teaching.checks.ALL_EXERCISES` (see :data:`RLVR_EXERCISES`).
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import torch

from ppo_lib.teaching.checks.core import Case, Exercise, GuessCheck, Mistake, compare, one_number
from ppo_lib.teaching.checks.rlhf import loss_and_gradients, tensor_compare, tracked_leaf
from ppo_lib.rlhf import addition
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
        Case((200, 17, 50), "n=200, c=17, k=50: 200! overflows a float (every n! from 171! on does), so factorials "
                            "in floating point fail here"),
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
    # the text asks for "a torch tensor holding one number": shape (1,) is one, and the training loop's
    # backward() works on it; compared as the number it holds
    return loss_and_gradients(one_number(out), {"per_token": leaf})


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


def _nonzero_counted(x, m, kind):
    real = ((x * m) != 0).to(x.dtype)
    if kind == "grpo":
        return ((x * m).sum(1) / real.sum(1).clamp(min=1)).mean()
    if kind == "dr_grpo":
        return _dr(x, m)
    return (x * m).sum() / real.sum()


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
        Case((_terms(3, 6, 4) * torch.tensor([[1.0], [0.0], [1.0]], dtype=D), _lengths(4, 5, 2, L=6), _kind),
             f"kind={_kind!r}, B=3 responses in L=6 slots, lengths [4, 5, 2]; every term of the second response is "
             f"exactly 0 (its group had equal rewards, so its advantage is 0): its 5 tokens still count"),
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
        Mistake("tokens counted where the terms are not 0", _nonzero_counted,
                "count the real tokens with the mask (mask.sum(1), mask.sum()), not where the terms are non-zero: "
                "a token whose term is exactly 0 (every token of a response whose advantage is 0) is still a "
                "token of the batch."),
        Mistake("no gradient", lambda x, m, kind: reference_aggregate_loss(x, m, kind).detach(),
                "the value is right but carries no gradient (detached, .item(), or built with torch.tensor): "
                "the loss must stay connected to the per-token terms."),
    ],
)

# ---------------------------------------------------------------- a format bonus that cannot be hacked

FORMAT_BONUS = 0.1


def reference_format_reward(prompt, response) -> float:
    """1 for a right answer (the verifier), plus ``FORMAT_BONUS`` for a *complete* worked answer
    (``: n , ... , n so N <eos>``, well formed, right or wrong); a degenerate one gets nothing."""
    parsed = addition.parse_response(response)
    correct = addition.verify(prompt, response)
    return correct + (FORMAT_BONUS if parsed is not None and parsed[1] else 0.0)


def _ids(text: str) -> list[int]:
    """``": 1 3 , 9 <eos>"`` -> token ids, right-padded with ``<pad>`` to the 20 response slots."""
    ids = [addition.TOKEN_ID[w] for w in text.split()]
    return ids + [addition.PAD_ID] * (addition.MAX_RESPONSE_LEN - len(ids))


_PROMPT = addition.prompt_ids(725, 368)   # 725 + 368 = 1093; columns 13, 9, 10
_RESPONSES = [   # (text, what it is), the honest ones first, then the degenerate ones
    (": 1 3 , 9 , 1 0 so 1 0 9 3 <eos>", "a right worked answer"),
    ("1 0 9 3 <eos>", "a right direct answer"),
    (": 1 3 , 9 , 1 0 so 1 0 9 4 <eos>", "a wrong but complete worked answer"),
    ("1 0 9 4 <eos>", "a wrong direct answer"),
    (": <eos>", "degenerate: the scratchpad marker alone, then <eos>"),
    (" ".join([":"] * 20), "degenerate: the marker 20 times, never finished"),
    (": 1 3 , 9 , 1 0 so <eos>", "degenerate: a scratchpad and 'so', but no answer"),
    (": 1 3 , 9 , 1 0 <eos>", "degenerate: a scratchpad, no 'so', no answer"),
    (": 1 3 , 9 , 1 0 so 1 0 9 3", "degenerate: the right worked answer, unfinished (no <eos>)"),
    ("so 1 0 9 3 <eos>", "degenerate: 'so' and the answer with no scratchpad"),
    (": 1 3 , 9 , 1 0 so 0 1 0 9 3 <eos>", "malformed: the answer with a leading zero"),
]


def _reward_compare(expected, got):
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"expected a number (the reward), got {type(got).__name__}: {got!r}"
    if not math.isfinite(got):
        return f"expected a finite reward, got {got}"
    if got > expected + 1e-9:
        return f"over-rewarded: expected {expected:g}, got {got:g}"
    if got < expected - 1e-9:
        return f"under-rewarded: expected {expected:g}, got {got:g}"
    return None


def _first_token_bonus(p, r):
    return addition.verify(p, r) + (FORMAT_BONUS if r and r[0] == addition.WORK else 0.0)


def _marker_and_so_bonus(p, r):
    return addition.verify(p, r) + (FORMAT_BONUS if r and r[0] == addition.WORK and addition.SO in r else 0.0)


def _any_well_formed_bonus(p, r):
    return addition.verify(p, r) + (FORMAT_BONUS if addition.is_well_formed(r) else 0.0)


def _unfinished_bonus(p, r):
    ids = [i for i in r if i != addition.PAD_ID]
    ids = ids if addition.EOS_ID in ids else ids + [addition.EOS_ID]
    parsed = addition.parse_response(ids)
    return addition.verify(p, r) + (FORMAT_BONUS if parsed is not None and parsed[1] else 0.0)


def _bonus_instead(p, r):
    parsed = addition.parse_response(r)
    return max(addition.verify(p, r), FORMAT_BONUS if parsed is not None and parsed[1] else 0.0)


def _bonus_if_right(p, r):
    return addition.verify(p, r) * (1 + (FORMAT_BONUS if addition.is_worked(r) else 0.0))


check_format_reward = Exercise(
    "format_reward",
    reference=reference_format_reward,
    reference_name="ppo_lib.teaching.checks.rlvr.reference_format_reward",
    compare=_reward_compare,
    cases=[Case((_PROMPT, _ids(text)), f"725 + 368 = 1093, {what}: {text!r}") for text, what in _RESPONSES],
    mistakes=[
        Mistake("first-token bonus", _first_token_bonus,
                "the bonus is paid for the first token ':' alone. Writing ':' costs nothing: a policy whose "
                "groups are all wrong learns to answer ': <eos>' and collect the bonus forever. Pay it for a "
                "*complete* worked answer: addition.parse_response(response) is not None and says worked."),
        Mistake("marker and 'so' bonus", _marker_and_so_bonus,
                "':' and 'so' somewhere is not a worked answer: ': 13 , 9 , 10 so <eos>' has no answer, and a "
                "policy would learn to stop there. Pay the bonus only when the whole response parses "
                "(addition.parse_response) as a worked answer."),
        Mistake("bonus for any well-formed answer", _any_well_formed_bonus,
                "the bonus is for the worked style, not for answering at all: a wrong direct answer "
                "('1 0 9 4 <eos>') must get 0. Check that the parsed response is worked (its second item)."),
        Mistake("bonus without <eos>", _unfinished_bonus,
                "a response that never writes <eos> is unfinished: it gets no bonus (nor, from the verifier, "
                "any credit), else the policy learns that stopping does not matter."),
        Mistake("bonus instead of the reward", _bonus_instead,
                "the bonus is *added* to the verifier's 1 or 0 (1.1 for a right worked answer), not the larger "
                "of the two: with max(), a right worked answer and a right direct one score the same."),
        Mistake("bonus only when right", _bonus_if_right,
                "the bonus is paid for a complete worked answer right *or wrong*: that is what gives a group "
                "whose answers are all wrong a spread of rewards, hence a gradient towards the scratchpad."),
        Mistake("no bonus", lambda p, r: addition.verify(p, r),
                "that is the verifier alone: a complete worked answer gets FORMAT_BONUS on top (0.1 when it is "
                "wrong, 1.1 when it is right)."),
    ],
)

# ---------------------------------------------------------------- why doesn't my reward go up?

#: The causes a learner can name for each logged run.
CAUSES = {
    "healthy": "nothing is wrong: the reward goes up",
    "prompts too hard": "the prompts are beyond the SFT model: every answer in every group is wrong",
    "temperature too low": "sampling is nearly greedy: the G answers to a prompt are identical",
    "format nobody produces": "the verifier demands a format the SFT model never writes",
    "learning rate too high": "the steps are too large: the policy collapses",
}

#: What each cause would show in the logged curves.
SIGNATURE = {
    "healthy": "a healthy run's accuracy rises from the SFT model's within a few iterations, its groups mostly "
               "have a spread of rewards, and its KL to the SFT model grows slowly (about a nat)",
    "prompts too hard": "prompts beyond the model give answers that are well formed (the format is known) and "
                        "diverse but all wrong, every group from the first iteration on, so the policy never "
                        "moves: KL exactly 0",
    "temperature too low": "near-greedy sampling makes the answers of a group (nearly) identical from the first "
                           "iteration on: a distinct share far below the other runs' (1/8 when all 8 are the same), almost every group zero-variance, and the "
                           "rare groups that differ give huge jumps (the logits are divided by the temperature)",
    "format nobody produces": "a format nobody produces shows as (almost) *no* well-formed answer at all, from the "
                              "first iteration on, with the answers still diverse and the policy not moving",
    "learning rate too high": "too large steps show as a run that starts like a healthy one (the same SFT model: "
                              "the same accuracy at iteration 0) and then falls, its all-wrong groups growing, with "
                              "a KL several times the healthy run's within a few iterations",
}

#: The five runs under anonymous ids; which run each id is, base64-encoded (read the curves instead).
DIAGNOSIS_RUNS = {k: base64.b64decode(v).decode() for k, v in {
    "A": b"Y29sZA==", "B": b"bHJfaGlnaA==", "C": b"aGVhbHRoeQ==", "D": b"Zm9ybWF0", "E": b"dG9vX2hhcmQ="}.items()}
RUN_CAUSE = {"healthy": "healthy", "too_hard": "prompts too hard", "cold": "temperature too low",
             "format": "format nobody produces", "lr_high": "learning rate too high"}


def diagnosis_curves(record: dict) -> dict:
    """``{run id: its per-iteration history}`` from ``rlvr_diagnosis.json``'s record, the names hidden."""
    return {rid: record["runs"][name]["history"] for rid, name in DIAGNOSIS_RUNS.items()}


def load_diagnosis(path) -> dict:
    """The record of ``benchmarks/results/rlvr_diagnosis.json`` (``path``)."""
    with open(path) as f:
        return json.load(f)


def evidence(record: dict, rid: str) -> str:
    """What run ``rid``'s curves show, in numbers from the record (the text of a wrong guess's reply)."""
    h = record["runs"][DIAGNOSIS_RUNS[rid]]["history"]

    def mean(key, sl=slice(None)):
        xs = h[key][sl]
        return sum(xs) / len(xs)
    return (f"run {rid}: accuracy {h['accuracy'][0]:.2f} at iteration 0, {mean('accuracy', slice(-10, None)):.2f} "
            f"over the last 10; well formed {mean('well_formed'):.2f}; all-wrong groups "
            f"{mean('all_wrong'):.0%}; distinct share over the first 5 iterations {mean('distinct', slice(0, 5)):.2f}; "
            f"largest KL "
            f"{max(h['kl']):.3g}")


def _check_diagnosis(guess, record: dict) -> bool:
    """Say, for each run id of ``DIAGNOSIS_RUNS``, whether ``guess[id]`` (a key of ``CAUSES``) is its
    cause, and if not why the evidence does not fit; True when all five are right."""
    options = ", ".join(repr(c) for c in CAUSES)
    if not guess:
        print(f"○ diagnosis: no guess yet. Make `diagnosis()` return a dict {{run id: cause}} for the runs "
              f"{', '.join(DIAGNOSIS_RUNS)}, each cause one of: {options}")
        return False
    if not isinstance(guess, dict):
        print(f"✗ diagnosis: expected a dict {{run id: cause}}, got {type(guess).__name__}")
        return False
    right = 0
    for rid, name in DIAGNOSIS_RUNS.items():
        g, truth = guess.get(rid), RUN_CAUSE[name]
        if g is None:
            print(f"○ run {rid}: no guess yet (one of: {options})")
        elif not isinstance(g, str) or g not in CAUSES:
            print(f"✗ run {rid}: {g!r} is not one of the causes: {options}")
        elif g == truth:
            right += 1
            print(f"✓ run {rid}: {g}. {SIGNATURE[g][0].upper()}{SIGNATURE[g][1:]}.")
        else:
            print(f"✗ run {rid}: not {g!r}: {SIGNATURE[g]}; but {evidence(record, rid)}.")
    extra = sorted(set(guess) - set(DIAGNOSIS_RUNS))
    if extra:
        print(f"  (no run is called {', '.join(map(repr, extra))}: the ids are {', '.join(DIAGNOSIS_RUNS)})")
    print(f"{'✓' if right == len(DIAGNOSIS_RUNS) else '○'} diagnosis: {right} of {len(DIAGNOSIS_RUNS)} right.")
    return right == len(DIAGNOSIS_RUNS)


#: the record the chapter's diagnosis reads (the chapter loads the same file)
DIAGNOSIS_RECORD = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "rlvr_diagnosis.json"


def _diagnosis_context() -> tuple:
    return (load_diagnosis(DIAGNOSIS_RECORD),)


#: The diagnosis's checker (a guess, not a function): ``check_diagnosis(guess, record)`` prints the
#: reply per run and returns True when all five are right; graded in isolation from the value of the
#: learner's ``diagnosis()``, with the record read from ``DIAGNOSIS_RECORD``.
check_diagnosis = GuessCheck(_check_diagnosis, guess_function="diagnosis", name="diagnosis",
                             context=_diagnosis_context)


# in the chapter's order: exercises 10.1, 10.2 and 10.4 (10.3, the diagnosis, is check_diagnosis)
RLVR_EXERCISES = [check_pass_at_k, check_aggregate_loss, check_format_reward]
