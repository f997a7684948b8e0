"""Depth a learner misses in chapter 8, measured: a prompt-dependent gold, a labeller who likes
length, reward-model ensembles, the critic's start, and PPO-ptx.

    .venv/bin/python benchmarks/rlhf_depth.py                 # every condition, 3 seeds (~35 runs of ~25 s on 1 quiet core)
    .venv/bin/python benchmarks/rlhf_depth.py --jobs 2        # the same on 2 processes
    .venv/bin/python benchmarks/rlhf_depth.py --quick         # 4 iterations, 1 seed, small evaluation: a smoke test
    .venv/bin/python benchmarks/rlhf_depth.py --rows "single RM, beta 0.1" "length-biased RM, beta 0.1"

Writes results/rlhf_depth.json (chapter 8's section 7 reads it) and results/rlhf_depth.png.
Every condition runs PPO (or GRPO) with chapter 8's settings (``TokenPPOConfig()`` with the
beta named in the row, 80 iterations; ``GRPOConfig()`` for GRPO) from the same SFT model, on
the same seeds, and changes one thing:

- **single RM** at beta 0, 0.1 (the chapter's), 0.3: the baselines, on this machine;
- **prompted gold** (``language.PROMPTED_TASK``): a reward model trained on labels of the
  prompt-dependent gold, then PPO and GRPO against it; gold per prompt subject;
- **length-biased RM** (``RewardConfig(length_bias=0.05)``: 0.05 gold per extra token to the
  labeller) at beta 0.1 and 0.3, against the single RM at the same betas (Singhal et al. 2023);
- **ensembles** (Coste et al. 2023) of the reward models of seeds 0, 1, 2 at beta 0, scored by
  the worst case (``min``) or by ``mean - 1.0 * variance`` (UWO), against the single RM of seed 0
  at beta 0: same budget, same seeds; the critic starts from the seed-0 member;
- **critic from the SFT model** (``critic_init="sft"``) against the default start from the reward
  model (Ouyang et al. 2022), and **PPO-ptx** (``ptx_coef=1.0``, InstructGPT's pre-training mix),
  both at beta 0.1.

Each run is evaluated like chapter 8's (``evaluate_policy``: 384 fresh samples on the held-out
prompts, seed 777): both golds (the default and the prompt-dependent one), the run's own reward
(proxy), the seed-0 reward model's score, KL to the SFT model, length, ungrammatical share, and
the same per prompt subject. Every reward model is checked on 1000 fresh SFT pairs (seed 123)
against its own gold (agreement) and for how its score follows the response's length
(correlation on 1024 SFT samples). The runs go through the sweep runner: an interrupted sweep
keeps its finished runs in results/rlhf_depth.jobs.jsonl and a rerun skips them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.rlhf import language as lang  # noqa: E402
from ppo_lib.rlhf.evaluate import EVAL_SEED  # noqa: E402
from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo  # noqa: E402
from ppo_lib.rlhf.model import generate, response_logprobs  # noqa: E402
from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo  # noqa: E402
from ppo_lib.rlhf.pretrain import pretrain  # noqa: E402
from ppo_lib.rlhf.reward_model import (RewardConfig, RewardEnsemble, sample_pairs, score,  # noqa: E402
                                       train_reward_model)
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402

OUT = RESULTS / "rlhf_depth.json"
LENGTH_BIAS = 0.05
UWO_COEF = 1.0
PTX_COEF = 1.0
ENSEMBLE_SEEDS = (0, 1, 2)

#: row name -> what changes from chapter 8's PPO (beta 0.1, the default reward model)
ROWS = {
    "single RM, beta 0.1": dict(beta=0.1),
    "prompted gold, PPO, beta 0.1": dict(beta=0.1, task="prompted"),
    "prompted gold, GRPO": dict(method="grpo", task="prompted"),
    "length-biased RM, beta 0.1": dict(beta=0.1, length_bias=LENGTH_BIAS),
    "length-biased RM, beta 0.3": dict(beta=0.3, length_bias=LENGTH_BIAS),
    "single RM, beta 0.3": dict(beta=0.3),
    "single RM, beta 0": dict(beta=0.0),
    "ensemble min (WCO), beta 0": dict(beta=0.0, ensemble="min"),
    "ensemble mean - var (UWO), beta 0": dict(beta=0.0, ensemble="uwo"),
    "critic from SFT, beta 0.1": dict(beta=0.1, critic_init="sft"),
    "PPO-ptx 1.0, beta 0.1": dict(beta=0.1, ptx_coef=PTX_COEF),
}


@functools.lru_cache(maxsize=None)  # a worker process loads each model once, whatever jobs it runs
def sft_model(task: str = "reviews"):
    """The chapter's SFT model (cached); for the prompted gold, the same model with the prompted task."""
    sft = pretrain(progress=False)
    return dataclasses.replace(sft, task=lang.PROMPTED_TASK) if task == "prompted" else sft


@functools.lru_cache(maxsize=None)
def reward_model(task: str = "reviews", seed: int = 0, length_bias: float = 0.0):
    return train_reward_model(sft_model(task), RewardConfig(seed=seed, length_bias=length_bias), progress=False)


def reward_of(spec: dict):
    """The reward a row trains against: one reward model, or an ensemble of the seeds' models."""
    task = spec.get("task", "reviews")
    if spec.get("ensemble"):
        return RewardEnsemble([reward_model(task, s) for s in ENSEMBLE_SEEDS], mode=spec["ensemble"], coef=UWO_COEF)
    return reward_model(task, 0, spec.get("length_bias", 0.0))


@torch.no_grad()
def evaluate(policy, ref, scorer, seed0_scorer, n: int = 384) -> dict:
    """Chapter 8's evaluation (``evaluate_policy``: same prompts, seed, KL) with both golds, the run's
    reward and the seed-0 reward model's score, overall and per prompt subject."""
    prompts = [lang.PROMPTS[i % len(lang.PROMPTS)] for i in range(n)]
    gen = generate(policy, prompts, temperature=1.0, generator=torch.Generator().manual_seed(EVAL_SEED))
    lp = response_logprobs(policy, gen.tokens, gen.prompt_len, 1.0) * gen.mask
    lp_ref = response_logprobs(ref, gen.tokens, gen.prompt_len, 1.0) * gen.mask
    responses = gen.responses.cpu()
    gold = lang.gold_rewards(responses)
    gold_p = lang.prompted_gold_rewards(gen.prompts.cpu(), responses)
    proxy = score(scorer, gen.tokens, gen.prompt_len).cpu()
    proxy0 = score(seed0_scorer, gen.tokens, gen.prompt_len).cpu()
    kl = (lp - lp_ref).sum(1).cpu()
    length = gen.lengths.cpu().float()
    ok = torch.tensor([lang.is_grammatical(r) for r in responses.tolist()], dtype=torch.float32)

    def summary(sel):
        return {"gold": float(gold[sel].mean()), "gold_prompted": float(gold_p[sel].mean()),
                "gold_prompted_std": float(gold_p[sel].std()), "proxy": float(proxy[sel].mean()),
                "proxy_std": float(proxy[sel].std()), "proxy_seed0": float(proxy0[sel].mean()),
                "kl": float(kl[sel].mean()), "length": float(length[sel].mean()),
                "ungrammatical": float(1 - ok[sel].mean())}

    subjects = [lang.prompt_subject(p) for p in prompts]
    out = summary(torch.ones(n, dtype=torch.bool))
    out["per_subject"] = {s: summary(torch.tensor([x == s for x in subjects])) for s in lang.SUBJECTS}
    texts = gen.texts()
    out["samples"] = [(prompts[i], texts[i]) for i in range(6)]
    return out


def run(name: str, spec: dict, seed: int, iterations: int, n_eval: int) -> dict:
    sft = sft_model(spec.get("task", "reviews"))
    reward = reward_of(spec)
    seed0 = reward_model(spec.get("task", "reviews"), 0, spec.get("length_bias", 0.0))
    if spec.get("method", "ppo") == "grpo":
        result = train_grpo(sft, reward, GRPOConfig(seed=seed, **({"iterations": iterations} if iterations else {})),
                            progress=False)
        keys = ("proxy", "gold", "kl", "length", "ungrammatical", "zero_std_groups")
    else:
        kw = {"iterations": iterations} if iterations else {}
        config = TokenPPOConfig(beta=spec["beta"], ptx_coef=spec.get("ptx_coef", 0.0), seed=seed, **kw)
        result = train_ppo(sft, reward, config, progress=False, critic_init=spec.get("critic_init", "reward_model"))
        keys = ("proxy", "gold", "kl", "length", "ungrammatical", "value_loss")
    final = evaluate(result.policy, sft.model, reward.model, seed0.model, n_eval)
    h = result.history
    return {"seed": seed, "seconds": round(result.seconds, 1), "final": final,
            "history": {k: [round(float(x), 4) for x in getattr(h, k)] for k in keys}}


@torch.no_grad()
def check_reward_model(rm, task: str) -> dict:
    """Agreement with the reward model's own gold (no length term) on 1000 fresh SFT pairs, and the
    correlation of its score with the response's length on 1024 SFT samples."""
    sft = sft_model(task)
    pairs = sample_pairs(sft.model, 1000, seed=123, task=sft.task)
    rc, rr = score(rm.model, pairs.chosen).cpu(), score(rm.model, pairs.rejected).cpu()
    gc, gr = pairs.gold_chosen, pairs.gold_rejected
    differ = gc != gr
    agree = float(((rc - rr).sign() == (gc - gr).sign())[differ].float().mean())
    gen = generate(sft.model, sft.task.heldout_prompts(1024), generator=torch.Generator().manual_seed(55))
    s = score(rm.model, gen.tokens, gen.prompt_len).cpu().numpy()
    length = gen.lengths.cpu().float().numpy()
    return {"agreement": agree, "length_correlation": float(np.corrcoef(s, length)[0, 1]),
            "score_per_token": float(np.polyfit(length, s, 1)[0])}


def job_key(name: str, spec: dict, seed: int, iterations: int, n_eval: int) -> str:
    digest = hashlib.sha256(json.dumps([spec, LENGTH_BIAS, UWO_COEF, PTX_COEF, ENSEMBLE_SEEDS],
                                       sort_keys=True).encode()).hexdigest()[:10]
    return f"{name} spec={digest} iterations={iterations or 'default'} n_eval={n_eval} seed={seed}"


def aggregate(runs: list[dict]) -> dict:
    keys = ("gold", "gold_prompted", "proxy", "proxy_seed0", "kl", "length", "ungrammatical")
    out = {k: float(np.mean([r["final"][k] for r in runs])) for k in keys}
    out["per_subject"] = {s: {k: float(np.mean([r["final"]["per_subject"][s][k] for r in runs]))
                              for k in ("gold", "gold_prompted", "gold_prompted_std", "proxy", "proxy_std", "length")}
                          for s in lang.SUBJECTS}
    return out


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for name in ("single RM, beta 0.1", "length-biased RM, beta 0.1", "single RM, beta 0.3",
                 "length-biased RM, beta 0.3"):
        if name in rows:
            curves = np.array([r["history"]["length"] for r in rows[name]["runs"]])
            ax.plot(curves.mean(0), label=name, ls="-" if "length" in name else ":")
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("response length (tokens)")
    ax.legend(fontsize="small")
    ax.set_title("length, mean of seeds")
    ax = axes[1]
    for name in ("single RM, beta 0", "ensemble min (WCO), beta 0", "ensemble mean - var (UWO), beta 0"):
        if name in rows:
            curves = np.array([r["history"]["gold"] for r in rows[name]["runs"]])
            ax.plot(curves.mean(0), label=name)
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("gold (training samples)")
    ax.legend(fontsize="small")
    ax.set_title("one reward model or three, beta 0")
    ax = axes[2]
    for name in ("single RM, beta 0.1", "prompted gold, PPO, beta 0.1", "prompted gold, GRPO"):
        if name in rows:
            per = rows[name]["mean"]["per_subject"]
            key = "gold" if name.startswith("single") else "gold_prompted"
            ax.plot(list(lang.SUBJECTS), [per[s][key] for s in lang.SUBJECTS], "o-", label=f"{name} ({key})")
    sft = record["sft"]["per_subject"]
    ax.plot(list(lang.SUBJECTS), [sft[s]["gold_prompted"] for s in lang.SUBJECTS], "k^:", label="SFT (gold_prompted)")
    ax.set_ylabel("gold after training, by prompt subject")
    ax.legend(fontsize="small")
    ax.set_title("per prompt")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW", help="only these rows (names as in ROWS)")
    p.add_argument("--quick", action="store_true", help="4 iterations, seed 0, 48 evaluation samples (a smoke test)")
    p.add_argument("--out", default=None)
    p.add_argument("--available-only", action="store_true",
                   help="write the file from the rows whose every seed is already in the resume file (an "
                        "interrupted sweep's finished rows); the others are listed as not run")
    add_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(1)
    iterations, n_eval, seeds = (4, 48, [0]) if args.quick else (0, 384, args.seeds)
    out = Path(args.out) if args.out else (RESULTS / "rlhf_depth_quick.json" if args.quick else OUT)
    rows = dict(ROWS)
    if args.rows:
        unknown = [r for r in args.rows if r not in ROWS]
        if unknown:
            p.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
        rows = {r: ROWS[r] for r in args.rows}
    not_run = []
    if args.available_only:
        kept = set()
        if resume_path(out).exists():
            for line in resume_path(out).read_text().splitlines():
                try:
                    kept.add(json.loads(line)["key"])
                except (ValueError, KeyError, TypeError):
                    continue
        not_run = [name for name, spec in rows.items()
                   if any(job_key(name, spec, s, iterations, n_eval) not in kept for s in seeds)]
        rows = {name: spec for name, spec in rows.items() if name not in not_run}
    t0 = time.perf_counter()
    # the reward models first, in this process: the workers then read them from the cache
    sft = sft_model()
    reward_models = {"default, seed 0": ("reviews", reward_model()),
                     "default, seed 1": ("reviews", reward_model(seed=1)),
                     "default, seed 2": ("reviews", reward_model(seed=2)),
                     f"length_bias {LENGTH_BIAS}": ("reviews", reward_model(length_bias=LENGTH_BIAS)),
                     "prompted gold": ("prompted", reward_model("prompted"))}
    record = {**header(), "settings": {"ppo": dataclasses.asdict(TokenPPOConfig()),
                                       "grpo": dataclasses.asdict(GRPOConfig()),
                                       "reward": dataclasses.asdict(RewardConfig()),
                                       "iterations": iterations or TokenPPOConfig().iterations,
                                       "n_eval": n_eval, "seeds": seeds, "length_bias": LENGTH_BIAS,
                                       "uwo_coef": UWO_COEF, "ptx_coef": PTX_COEF,
                                       "ensemble_seeds": list(ENSEMBLE_SEEDS),
                                       "apt_adjectives": {k: list(v) for k, v in lang.APT_ADJECTIVES.items()},
                                       "faint_praise": lang.FAINT_PRAISE},
              "row_specs": rows, "rows_not_run": not_run, "complete": False}
    record["reward_models"] = {name: {**check_reward_model(rm, task), "seconds": round(rm.seconds, 1)}
                               for name, (task, rm) in reward_models.items()}
    for name, r in record["reward_models"].items():
        print(f"[reward model {name}] {r}", flush=True)
    record["sft"] = evaluate(sft.model, sft.model, reward_models["default, seed 0"][1].model,
                             reward_models["default, seed 0"][1].model, n_eval)
    record["sft_prompted_rm"] = evaluate(sft.model, sft.model, reward_models["prompted gold"][1].model,
                                         reward_models["prompted gold"][1].model, n_eval)
    jobs = [Job(job_key(name, spec, s, iterations, n_eval), run,
                dict(name=name, spec=spec, seed=s, iterations=iterations, n_eval=n_eval))
            for name, spec in rows.items() for s in seeds]
    resume = resume_path(out)
    with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="rlhf_depth") as runner:
        results = runner.map(jobs)
    record["rows"] = {}
    for i, (name, spec) in enumerate(rows.items()):
        runs = results[i * len(seeds):(i + 1) * len(seeds)]
        record["rows"][name] = {"spec": spec, "runs": runs, "mean": aggregate(runs)}
        m = record["rows"][name]["mean"]
        print(f"{name:38s} gold {m['gold']:+.2f} prompted {m['gold_prompted']:+.2f} proxy {m['proxy']:+.2f} "
              f"KL {m['kl']:5.1f} length {m['length']:4.1f} ungrammatical {m['ungrammatical']:.0%}", flush=True)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["complete"] = set(rows) == set(ROWS)
    write(record, out)
    if not args.quick:
        plot(record, out.with_suffix(".png"))
    if record["complete"]:
        resume.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
