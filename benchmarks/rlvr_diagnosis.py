"""Why doesn't my reward go up? Real failing GRPO runs on the addition task, and a healthy one (chapter 10).

    .venv/bin/python benchmarks/rlvr_diagnosis.py                 # 5 runs x 40 iterations, seed 0 (~2-4 min, 2 cores)
    .venv/bin/python benchmarks/rlvr_diagnosis.py --jobs 2        # the 5 runs on 2 processes (--ray auto: on Ray)

Writes results/rlvr_diagnosis.json (the command, date and machine with it). One seed each: each
run shows its failure in its curves from the first iterations on; the seed spread is not what
is measured here. Every run starts from the same 3-digit SFT model (seed 0 of rlvr_presets,
cached in .ppo_cache) and uses the preset's GRPO settings (G 8 x 16 prompts, lr 1e-4, no KL),
except the one thing that breaks it:

- ``healthy``: the preset as it is;
- ``too_hard``: the training prompts have 4-digit operands, which the SFT model never saw;
- ``cold``: temperature 0.01 in rollouts and in training (nearly greedy sampling; 0.05 was tried
  first: it learns the worked style after ~12 iterations of 94% zero-variance groups, with a KL over 15);
- ``format``: a verifier that demands a format the SFT model never writes (the answer as
  ``so N <eos>``, after ``so`` with no scratchpad), with that format as the task's validity;
- ``lr_high``: lr 1e-3 instead of 1e-4 (RLVR.md: collapse to all-wrong groups).

Logged per iteration: accuracy (the verifier's mean on the rollouts), the share of well-formed
responses (the task's own ``is_valid``), mean length, worked share, the share of groups whose
rewards are all equal (zero-variance), split into all-wrong and all-right groups, the mean share
of *distinct* responses in a group (1 = all 8 different, 1/8 = all identical), the KL to the
SFT model and the gradient steps' clip fraction.

The five runs go through the sweep runner (``ppo_lib.sweep``; ``--jobs``, ``--ray``, a
resume file next to ``--out``): each job loads the SFT model from the cache, which this
script fills first, so every run starts from the same weights whatever the process.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.rlhf import addition, cache  # noqa: E402
from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo  # noqa: E402
from ppo_lib.rlhf.presets import rlvr_presets  # noqa: E402
from ppo_lib.rlhf.pretrain import pretrain  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402

OUT = RESULTS / "rlvr_diagnosis.json"
ITERATIONS = 40
SEED = 0
RUNS = {
    "healthy": "the preset: 3-digit prompts, temperature 1, lr 1e-4",
    "too_hard": "4-digit training prompts for a 3-digit SFT model",
    "cold": "temperature 0.01 (rollouts and training)",
    "format": "a verifier that demands 'so N <eos>' with no scratchpad, a format the SFT model never writes",
    "lr_high": "lr 1e-3 instead of 1e-4",
}


def strict_format_answer(ids) -> int | None:
    """The answer of a response in the demanded format ``so N <eos>``, else None."""
    ids = [int(i) for i in ids]
    if not ids or ids[0] != addition.SO or addition.EOS_ID not in ids:
        return None
    words = [addition.VOCAB[i] for i in ids[1:ids.index(addition.EOS_ID)]]
    if not words or any(w not in addition.DIGITS for w in words) or (words[0] == "0" and len(words) > 1):
        return None
    return int("".join(words))


def strict_verify(prompt, response) -> float:
    a, b = addition.parse_prompt(prompt)
    return float(strict_format_answer(response) == a + b)


class GroupLog:
    """Wraps a task's verifier and stats to log, per iteration, what the groups looked like: the
    verifier's rewards are recorded as they are computed; ``stats`` (called once an iteration on
    the batch's responses, the G samples of a prompt adjacent) reads the last batch's rewards."""

    def __init__(self, task, group_size: int):
        self.task, self.G, self.rewards = task, group_size, []

    def verifier(self, prompt, response) -> float:
        r = self.task.verifier(prompt, response)
        self.rewards.append(float(r))
        return r

    def stats(self, responses: torch.Tensor) -> dict:
        B, G = len(responses), self.G
        r = np.asarray(self.rewards[-B:]).reshape(-1, G)
        self.rewards.clear()
        groups = responses.reshape(B // G, G, -1).tolist()
        distinct = np.mean([len({tuple(x) for x in g}) / G for g in groups])
        return {**self.task.stats(responses), "all_wrong": float(np.mean(r.max(1) == 0)),
                "all_right": float(np.mean(r.min(1) == 1)), "distinct": float(distinct)}

    def wrapped(self):
        return dataclasses.replace(self.task, verifier=self.verifier, stats=self.stats)


def task_of(name: str):
    if name == "too_hard":
        return addition.make_task(digits=4)
    if name == "format":
        return dataclasses.replace(addition.TASK, name="addition-so-format", verifier=strict_verify,
                                   is_valid=lambda ids: strict_format_answer(ids) is not None)
    return addition.TASK


def run(name: str, sft, kw: dict) -> dict:
    settings = {**kw, "iterations": ITERATIONS, "seed": SEED}
    if name == "cold":
        settings["temperature"] = 0.01
    if name == "lr_high":
        settings["lr"] = 1e-3
    log = GroupLog(task_of(name), settings["group_size"])
    t0 = time.perf_counter()
    h = train_grpo(dataclasses.replace(sft, task=log.wrapped()), None, GRPOConfig(**settings), progress=False).history
    seconds = time.perf_counter() - t0
    r4 = lambda xs: [round(float(x), 4) for x in xs]  # noqa: E731
    return {"run": name, "what": RUNS[name], "seed": SEED, "iterations": ITERATIONS, "seconds": round(seconds, 2),
            "changed": {k: v for k, v in settings.items() if kw.get(k) != v and k not in ("iterations", "seed")},
            "history": {"accuracy": r4(h.gold), "well_formed": r4(1 - np.asarray(h.ungrammatical)),
                        "length": r4(h.length), "worked": r4(s["worked"] for s in h.task_stats),
                        "zero_variance": r4(h.zero_std_groups), "all_wrong": r4(s["all_wrong"] for s in h.task_stats),
                        "all_right": r4(s["all_right"] for s in h.task_stats),
                        "distinct": r4(s["distinct"] for s in h.task_stats), "kl": r4(h.kl),
                        "clip_fraction": r4(h.clip_fraction)},
            "samples_first": h.samples[0], "samples_last": h.samples[-1]}


def sft_model():
    """The SFT model every run starts from (rlvr_presets('cpu'), seed 0; from the cache once made), and the
    preset's GRPO settings."""
    task, pre, kw = rlvr_presets("cpu")
    pre.seed = SEED
    return pretrain(pre, device="cpu", progress=False, task=task), kw


def diagnose(name: str, cache_dir: str) -> dict:
    """One logged run, in whichever process the runner puts it: the SFT model from ``cache_dir``."""
    os.environ[cache.ENV] = cache_dir
    sft, kw = sft_model()
    return run(name, sft, kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)  # --jobs N (worker processes), --ray auto|ADDRESS|local, --fresh
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, kw = sft_model()  # trained once here (or loaded): the jobs load it from the cache
    record = {**header(threads=1), "settings": {"grpo": kw, "iterations": ITERATIONS, "seed": SEED,
                                                "sft": "rlvr_presets('cpu'), seed 0"}, "runs": {}}
    jobs = [Job(f"{name} seed={SEED} iterations={ITERATIONS}", diagnose,
                dict(name=name, cache_dir=str(cache.cache_dir()))) for name in RUNS]
    resume = resume_path(args.out)
    with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="rlvr diagnosis") as runner:
        rows = runner.map(jobs)
    for name, row in zip(RUNS, rows):
        record["runs"][name] = row
        h = row["history"]
        print(f"[{name}] acc {h['accuracy'][0]:.2f} -> {h['accuracy'][-1]:.2f}  zero-var {h['zero_variance'][0]:.2f} -> "
              f"{h['zero_variance'][-1]:.2f}  all-wrong {h['all_wrong'][-1]:.2f}  distinct {h['distinct'][-1]:.2f}  "
              f"well-formed {h['well_formed'][-1]:.2f}  ({row['seconds']:.0f} s)", flush=True)
    write(record, args.out)
    resume.unlink(missing_ok=True)  # complete: the next run of this script trains afresh


if __name__ == "__main__":
    main()
