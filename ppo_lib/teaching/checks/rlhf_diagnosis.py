"""Chapter 8's diagnosis: the learner names each of three logged PPO runs (a healthy one, a
reward-hacked one, a collapsed one; ``benchmarks/results/rlhf_diagnosis.json``, shown under neutral
ids) and the checker says, run by run, right or wrong and why.

Unlike chapter 10's ``check_diagnosis`` (a function of the guess and the record, called in a cell of
its own), this one is an :class:`~ppo_lib.teaching.checks.core.Exercise` on a function of no argument,
``diagnosis() -> {run id: verdict}``, so its checker cell has the ``name = check_name(name)`` form and
the isolated grader can grade it like any other exercise: the guess travels as data, the verdict is
computed outside the student's process.

The reasons are the signature each verdict leaves on the logged curves; the chapter asserts, on the
file's data, that each run shows its own signature (``signature_holds``).
"""

from __future__ import annotations

import base64

from ppo_lib.teaching.checks.core import Case, Exercise, Mistake

VERDICTS = {
    "healthy": "the proxy and the gold reward rise together and stay up, the KL settles at a few nats, the "
               "answers stay grammatical",
    "reward hacking": "the proxy keeps rising (to the highest of the three) while the gold reward falls to the "
                      "floor of -2 and the answers turn ungrammatical; the KL keeps growing, since nothing holds "
                      "the policy near the SFT model",
    "collapse": "the policy degenerates within the first iterations: (almost) every response the same, the "
                "length and the proxy drop far below a healthy run's and stay there, the gold reward at the "
                "floor from then on",
}

#: The three runs under neutral ids; which run each id is, base64-encoded (read the curves instead).
RUN_IDS = {k: base64.b64decode(v).decode() for k, v in {
    "X": b"aGFja2Vk", "Y": b"Y29sbGFwc2Vk", "Z": b"aGVhbHRoeQ=="}.items()}
RUN_VERDICT = {"healthy": "healthy", "hacked": "reward hacking", "collapsed": "collapse"}


def diagnosis_curves(record: dict) -> dict:
    """``{run id: its per-iteration history}`` from ``rlhf_diagnosis.json``'s record, the names hidden."""
    return {rid: record["runs"][name]["history"] for rid, name in RUN_IDS.items()}


def signature_holds(record: dict) -> dict:
    """For each run of the record, whether its curves show its verdict's signature (``VERDICTS``), as
    numbers over the last 20 iterations (the collapse: also within the first 10): ``{run name: bool}``."""
    h = {name: r["history"] for name, r in record["runs"].items()}

    def late(name, key):
        xs = h[name][key][-20:]
        return sum(xs) / len(xs)

    healthy, hacked, collapsed = "healthy", "hacked", "collapsed"
    sft_gold = h[healthy]["gold"][0]
    return {
        healthy: (late(healthy, "gold") > sft_gold + 0.5 and late(healthy, "proxy") > 1.0
                  and late(healthy, "ungrammatical") < 0.1 and late(healthy, "kl") < 10),
        hacked: (late(hacked, "proxy") > late(healthy, "proxy") and late(hacked, "gold") < sft_gold
                 and late(hacked, "ungrammatical") > 0.5 and late(hacked, "kl") > 2 * late(healthy, "kl")),
        collapsed: (min(h[collapsed]["distinct"][:10]) < 0.1 and late(collapsed, "distinct") < 0.1
                    and late(collapsed, "length") < 0.5 * late(healthy, "length")
                    and late(collapsed, "proxy") < 0.5 * late(healthy, "proxy")
                    and late(collapsed, "gold") < sft_gold),
    }


def answer_key() -> dict:
    """The right verdict of every run id."""
    return {rid: RUN_VERDICT[name] for rid, name in RUN_IDS.items()}


def _compare(expected: dict, got) -> str | None:
    options = ", ".join(repr(v) for v in VERDICTS)
    if not isinstance(got, dict):
        return f"diagnosis() must return a dict {{run id: verdict}}, it returned {type(got).__name__}"
    lines, right = [], 0
    for rid, truth in expected.items():
        g = got.get(rid)
        if g is None:
            lines.append(f"○ run {rid}: no verdict yet (one of: {options})")
        elif not isinstance(g, str) or g not in VERDICTS:
            lines.append(f"✗ run {rid}: {g!r} is not one of the verdicts: {options}")
        elif g == truth:
            right += 1
            lines.append(f"✓ run {rid}: {g}.")
        else:
            lines.append(f"✗ run {rid}: not {g!r}, which would look like this: {VERDICTS[g]}. Run {rid}'s curves do "
                         f"not; look again at its proxy, gold, length and distinct share")
    extra = sorted(str(k) for k in got if k not in expected)
    if extra:
        lines.append(f"(no run is called {', '.join(extra)}: the ids are {', '.join(expected)})")
    if right == len(expected) and not extra:
        return None
    return f"{right} of {len(expected)} right.\n  " + "\n  ".join(lines)


def _swap(a: str, b: str):
    def impl():
        key = answer_key()
        return {rid: (b if v == a else a if v == b else v) for rid, v in key.items()}

    impl.__name__ = f"swap_{a}_{b}".replace(" ", "_")
    return impl


check_rlhf_diagnosis = Exercise(
    "diagnosis",
    reference=answer_key,
    reference_name="the answer key, ppo_lib.teaching.checks.rlhf_diagnosis",
    compare=_compare,
    cases=[Case((), "the three logged runs X, Y and Z of benchmarks/results/rlhf_diagnosis.json")],
    mistakes=[
        Mistake("hacking and collapse swapped", _swap("reward hacking", "collapse"),
                "both end with gold at -2; the difference is the proxy. A hacked policy found strings the reward "
                "model scores *higher* than anything else; a collapsed one lost its language and the proxy fell "
                "with the gold."),
        Mistake("hacking taken for healthy", _swap("reward hacking", "healthy"),
                "a rising proxy is not health: the gold reward (and the grammar) tell a hacked run from a healthy "
                "one; real systems, with no gold, watch samples, KL and length."),
        Mistake("collapse taken for healthy", _swap("collapse", "healthy"),
                "a flat curve with every response the same is not a converged policy: compare the length, the "
                "distinct share and the proxy with the other runs."),
    ],
)
