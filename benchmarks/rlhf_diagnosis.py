"""Three logged PPO runs on the review language for chapter 8's diagnosis exercise: a healthy
one, a reward-hacked one and a collapsed one.

    .venv/bin/python benchmarks/rlhf_diagnosis.py               # 3 runs x 80 iterations, seed 0 (~2-4 min, 2 cores)
    .venv/bin/python benchmarks/rlhf_diagnosis.py --jobs 2      # on 2 processes (--ray auto: on Ray)

Writes results/rlhf_diagnosis.json (the command, date and machine with it). Every run starts
from chapter 8's SFT model (``pretrain()``, seed 0, cached in .ppo_cache) and uses chapter 8's
PPO settings (the ``TokenPPOConfig`` defaults: 80 iterations of 64 responses, lr 1e-3), except
for what each run changes:

- ``healthy``: beta 0.1 against the chapter's reward model (1000 preference pairs), the
  chapter's own training run;
- ``hacked``: beta 0 (no KL penalty) against the same reward model, a weak proxy off the SFT
  model's distribution (the chapter's section 3 lists its holes);
- ``collapsed``: beta 0.1 against the same reward model with lr 3e-2, thirty times the
  chapter's: the steps are too large for this model.

Tried first, on this script's first machine (an AMD EPYC, 2 cores), and not kept: beta 0
against a reward model on 300 pairs (seeds 0 and 1 settled on ``nice !``, grammatical, gold
1.0: no hacking within 80 iterations; seed 2 half ungrammatical); lr 1e-2 (gold up to 1.5, then
a KL of 117 nats with no ``<eos>``, then ungrammatical strings the proxy likes: a collapse that
ends looking like hacking); lr 2e-2 (collapsed at once, like 3e-2, onto ``nice``).

Logged per iteration (the library's ``TokenPPOHistory``): proxy (the reward model's mean score
of the batch), gold (the known "human"), the sequence KL to the SFT model (k1 sum, nats), the
mean response length (tokens, ``<eos>`` included), the ungrammatical share, the share of
responses that end with ``<eos>``, the clip fraction; and, from all 64 decoded responses of the
batch (``n_samples_logged=64``), the share of *distinct* responses (1: all different). The
policy's entropy is not logged by ``train_ppo``, so it is not here.

One seed each: the file shows three runs, not a seed spread. The runs go through the sweep
runner (``ppo_lib.sweep``; ``--jobs``, ``--ray``, a resume file next to ``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.rlhf import cache  # noqa: E402
from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo  # noqa: E402
from ppo_lib.rlhf.pretrain import pretrain  # noqa: E402
from ppo_lib.rlhf.reward_model import RewardConfig, train_reward_model  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402

OUT = RESULTS / "rlhf_diagnosis.json"
SEED = 0
#: name -> (what it is, reward-model pairs, PPO settings changed from the defaults)
RUNS = {
    "healthy": ("beta 0.1, the chapter's reward model (1000 pairs), lr 1e-3", 1000, {"beta": 0.1}),
    "hacked": ("beta 0 (no KL penalty), the chapter's reward model, lr 1e-3", 1000, {"beta": 0.0}),
    "collapsed": ("beta 0.1, the chapter's reward model, lr 3e-2 (thirty times the chapter's)", 1000,
                  {"beta": 0.1, "lr": 3e-2}),
}


def models(n_pairs: int):
    """Chapter 8's SFT model and a reward model on ``n_pairs`` pairs (from the cache once made)."""
    sft = pretrain(progress=False)
    return sft, train_reward_model(sft, RewardConfig(n_pairs=n_pairs), progress=False)


def run(name: str, cache_dir: str) -> dict:
    """One logged run, in whichever process the runner puts it: the models from ``cache_dir``."""
    os.environ[cache.ENV] = cache_dir
    torch.set_num_threads(1)
    what, n_pairs, changed = RUNS[name]
    sft, rm = models(n_pairs)
    config = TokenPPOConfig(seed=SEED, **changed)
    t0 = time.perf_counter()
    h = train_ppo(sft, rm, config, progress=False, n_samples_logged=config.batch_size).history
    seconds = time.perf_counter() - t0
    r4 = lambda xs: [round(float(x), 4) for x in xs]  # noqa: E731
    return {"run": name, "what": what, "seed": SEED, "reward_model_pairs": n_pairs, "changed": changed,
            "iterations": config.iterations, "seconds": round(seconds, 2),
            "history": {"proxy": r4(h.proxy), "gold": r4(h.gold), "kl": r4(h.kl), "length": r4(h.length),
                        "ungrammatical": r4(h.ungrammatical), "eos_rate": r4(h.eos_rate),
                        "clip_fraction": r4(h.clip_fraction),
                        "distinct": r4(len(set(s)) / len(s) for s in h.samples)},
            "samples_first": h.samples[0][:8], "samples_last": h.samples[-1][:8]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)  # --jobs N (worker processes), --ray auto|ADDRESS|local, --fresh
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for n_pairs in sorted({r[1] for r in RUNS.values()}):
        models(n_pairs)  # trained once here (or loaded): the jobs load them from the cache
    record = {**header(threads=1), "settings": {"ppo": {k: v for k, v in vars(TokenPPOConfig()).items()},
                                                "seed": SEED, "sft": "pretrain() defaults, seed 0"},
              "runs": {}}
    jobs = [Job(f"{name} seed={SEED}", run, dict(name=name, cache_dir=str(cache.cache_dir()))) for name in RUNS]
    resume = resume_path(args.out)
    with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="rlhf diagnosis") as runner:
        rows = runner.map(jobs)
    for name, row in zip(RUNS, rows):
        record["runs"][name] = row
        h = row["history"]
        print(f"[{name}] proxy {h['proxy'][0]:+.2f} -> {h['proxy'][-1]:+.2f}  gold {h['gold'][0]:+.2f} -> "
              f"{h['gold'][-1]:+.2f}  KL {h['kl'][-1]:.1f}  length {h['length'][-1]:.1f}  "
              f"ungrammatical {h['ungrammatical'][-1]:.2f}  distinct {h['distinct'][-1]:.2f}  ({row['seconds']:.0f} s)",
              flush=True)
    write(record, args.out)
    resume.unlink(missing_ok=True)  # complete: the next run of this script trains afresh


if __name__ == "__main__":
    main()
