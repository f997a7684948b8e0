"""Chapter 9: PPO, DPO, GRPO, RLOO and best-of-n on the same task, one evaluator, 3 seeds.

    .venv/bin/python benchmarks/rlhf_methods.py             # 2 worker processes, resumable
    .venv/bin/python benchmarks/rlhf_methods.py --seeds 1   # a quick look
    .venv/bin/python benchmarks/rlhf_methods.py --fresh     # ignore the finished jobs kept
    .venv/bin/python benchmarks/rlhf_methods.py --only timing  # the interleaved timing alone

Every method starts from the same SFT model and uses the same 1000 preference pairs
(DPO directly, the others through the reward model trained on them), and every
result is measured by the same evaluator (``ppo_lib.rlhf.evaluate.evaluate_policy``:
fresh samples, gold reward, proxy score, KL to the SFT model, ungrammatical rate).
This script trains every method itself, PPO included. The knobs, on one grid:

- PPO, GRPO, RLOO: beta in (0, 0.04, 0.1, 0.3). The knobs share a name, not a meaning:
  PPO's and RLOO's beta weigh k1 *summed* over the response *in the reward*, GRPO's weighs
  k3 *averaged* over the tokens *in the loss*;
- DPO: beta in (0.04, 0.1, 0.3, 1.0): its beta must be > 0 (it divides the implicit
  reward), so 1.0 takes the place of 0;
- best-of-n: n in (1, 2, 4, ..., 64).

RLOO is :mod:`ppo_lib.rlhf.rloo` (Ahmadian et al. 2024, TRL's RLOOTrainer), not GRPO's loss
with a leave-one-out baseline. Each job runs in a worker process (``ppo_lib.sweep.Runner``,
one torch thread each) and logs its seconds split into rollouts (generation, log-probs,
scores) and updates, its updates and generated tokens, and the machine's load average at
its start and end (``os.getloadavg``): the cores may be shared, and the load says how much.

Writes results/rlhf_methods.json (chapter 9 reads it) and results/rlhf_methods.png; the
finished jobs are kept in results/rlhf_methods.jobs.jsonl, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.rlhf.best_of_n import best_of_n_curve  # noqa: E402
from ppo_lib.rlhf.dpo import DPOConfig, train_dpo  # noqa: E402
from ppo_lib.rlhf.evaluate import evaluate_policy  # noqa: E402
from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo  # noqa: E402
from ppo_lib.rlhf.model import n_parameters  # noqa: E402
from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo  # noqa: E402
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain  # noqa: E402
from ppo_lib.rlhf.reward_model import RewardConfig, train_reward_model  # noqa: E402
from ppo_lib.rlhf.rloo import RLOOConfig, train_rloo  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402

OUT = RESULTS / "rlhf_methods.json"
BETAS = (0.0, 0.04, 0.1, 0.3)
KNOBS = {"PPO": ("beta", BETAS),
         "GRPO": ("beta", BETAS),
         "RLOO": ("beta", BETAS),
         "DPO": ("beta", (0.04, 0.1, 0.3, 1.0)),
         "best-of-n": ("n", (1, 2, 4, 8, 16, 32, 64))}
MODELS_IN_MEMORY = {"PPO": 4, "GRPO": 3, "RLOO": 3, "DPO": 2, "best-of-n": 2}
CURVES = ("gold", "kl", "ungrammatical", "length")  # logged every iteration by PPO, GRPO and RLOO


def settings() -> dict:
    return {"pretrain": dataclasses.asdict(PretrainConfig()), "reward": dataclasses.asdict(RewardConfig()),
            "dpo": dataclasses.asdict(DPOConfig()), "grpo": dataclasses.asdict(GRPOConfig()),
            "rloo": dataclasses.asdict(RLOOConfig()), "ppo": dataclasses.asdict(TokenPPOConfig())}


@functools.lru_cache(maxsize=1)
def models():
    """The SFT model and the reward model, once per process (from the on-disk cache the main
    process filled, so every worker holds the same weights)."""
    sft = pretrain(progress=False)
    return sft, train_reward_model(sft, progress=False)


def _final(ev: dict) -> dict:
    return {k: ev[k] for k in ("gold", "proxy", "kl", "ungrammatical", "length", "samples")}


def run_one(method: str, knob: float, seed: int) -> dict:
    """One training run (or one best-of-n draw), evaluated; with its seconds, split and load."""
    sft, rm = models()
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    extra: dict = {}
    if method == "best-of-n":
        row = best_of_n_curve(sft.model, rm.model, ns=(int(knob),), n_prompts=64, seed=100 + seed)["rows"][0]
        seconds = time.perf_counter() - t0
        final = {"gold": row["gold"], "proxy": row["proxy"], "kl": row["kl"], "ungrammatical": row["ungrammatical"],
                 "samples": row["samples"]}
        return {"seed": seed, "knob": knob, "seconds": round(seconds, 3), "final": final,
                "load": [round(load_start, 2), round(os.getloadavg()[0], 2)]}
    if method == "DPO":
        result = train_dpo(sft, rm.pairs, DPOConfig(beta=knob, seed=seed), progress=False)
        h = result.history
        extra = {"chosen_logp": [h.chosen_logp[0], h.chosen_logp[-1]],
                 "rejected_logp": [h.rejected_logp[0], h.rejected_logp[-1]],
                 "updates": len(h.loss), "rollout_seconds": 0.0, "update_seconds": round(sum(h.seconds), 3)}
    else:
        if method == "PPO":
            config = TokenPPOConfig(beta=knob, seed=seed)
            result = train_ppo(sft, rm, config, progress=False)
        elif method == "GRPO":
            config = GRPOConfig(beta=knob, seed=seed, kl="loss_k3" if knob > 0 else "none")
            result = train_grpo(sft, rm, config, progress=False)
        elif method == "RLOO":
            config = RLOOConfig(beta=knob, seed=seed)
            result = train_rloo(sft, rm, config, progress=False)
        else:
            raise ValueError(f"method={method!r}: must be one of {', '.join(KNOBS)}")
        h = result.history
        extra = {"updates": len(h.gold) * config.epochs * config.num_minibatches,
                 "rollout_seconds": round(sum(h.rollout_seconds), 3), "update_seconds": round(sum(h.update_seconds), 3),
                 "curves": {k: [round(v, 4) for v in getattr(h, k)] for k in CURVES}}
        if method in ("GRPO", "RLOO"):
            extra["zero_std_groups"] = [round(v, 4) for v in h.zero_std_groups]
        if method == "RLOO":
            extra["equal_score_groups"] = [round(v, 4) for v in h.equal_score_groups]
    seconds = time.perf_counter() - t0
    load_end = os.getloadavg()[0]
    ev = evaluate_policy(result.policy, sft.model, rm.model)
    return {"seed": seed, "knob": knob, "seconds": round(seconds, 3), "tokens_generated": result.tokens_generated,
            "load": [round(load_start, 2), round(load_end, 2)], "final": _final(ev), **extra}


def timing_summary(results: dict) -> dict:
    """Per method, over all its runs (every knob and seed): median seconds per run, per update and
    per generated token, the share of the seconds spent in rollouts, and the load seen."""
    out = {}
    for method, res in results.items():
        runs = [r for runs in res["points"].values() for r in runs]
        row = {"runs": len(runs), "seconds_per_run": float(np.median([r["seconds"] for r in runs])),
               "load_min": float(min(min(r["load"]) for r in runs)),
               "load_max": float(max(max(r["load"]) for r in runs))}
        if method != "best-of-n":
            row["updates_per_run"] = float(np.median([r["updates"] for r in runs]))
            row["update_seconds_per_update"] = float(np.median([r["update_seconds"] / r["updates"] for r in runs]))
            row["rollout_share"] = float(np.median([r["rollout_seconds"] / (r["rollout_seconds"] + r["update_seconds"])
                                                    for r in runs]))
        if method not in ("best-of-n", "DPO"):
            row["tokens_per_run"] = float(np.median([r["tokens_generated"] for r in runs]))
            row["rollout_seconds_per_token"] = float(np.median([r["rollout_seconds"] / r["tokens_generated"]
                                                                for r in runs]))
            row["seconds_per_token"] = float(np.median([r["seconds"] / r["tokens_generated"] for r in runs]))
        out[method] = row
    return out


TIMING_ITERATIONS = {"PPO": 10, "GRPO": 10, "RLOO": 10}  # short runs: the cost per update and per token
TIMING_DPO_STEPS = 30


def timing_interleaved(repeats: int = 3) -> dict:
    """Short runs of PPO, GRPO, RLOO and DPO at their default settings, one after the other in this
    process and repeated ``repeats`` times in turn (PPO, GRPO, RLOO, DPO, PPO, ...), so that the
    methods see the same load: seconds per update, per generated token, and the rollout share."""
    sft, rm = models()
    rows: dict = {m: [] for m in ("PPO", "GRPO", "RLOO", "DPO")}
    for rep in range(repeats):
        for method in rows:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            if method == "DPO":
                result = train_dpo(sft, rm.pairs, DPOConfig(steps=TIMING_DPO_STEPS), progress=False)
                h = result.history
                row = {"updates": len(h.loss), "rollout_seconds": 0.0, "update_seconds": sum(h.seconds)}
            else:
                if method == "PPO":
                    config = TokenPPOConfig(iterations=TIMING_ITERATIONS[method])
                    result = train_ppo(sft, rm, config, progress=False)
                elif method == "GRPO":
                    config = GRPOConfig(iterations=TIMING_ITERATIONS[method])
                    result = train_grpo(sft, rm, config, progress=False)
                else:
                    config = RLOOConfig(iterations=TIMING_ITERATIONS[method])
                    result = train_rloo(sft, rm, config, progress=False)
                h = result.history
                row = {"updates": len(h.gold) * config.epochs * config.num_minibatches,
                       "rollout_seconds": sum(h.rollout_seconds), "update_seconds": sum(h.update_seconds),
                       "tokens_generated": result.tokens_generated}
            row.update(seconds=time.perf_counter() - t0, repeat=rep, load=[round(load, 2), round(os.getloadavg()[0], 2)])
            rows[method].append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
            print(f"[timing {rep}] {method}: {row['seconds']:.1f} s, {row['updates']} updates, load {row['load']}",
                  flush=True)
    out = {}
    for method, runs in rows.items():
        summary = {"runs": runs, "update_ms_per_update": float(np.median(
            [1000 * r["update_seconds"] / r["updates"] for r in runs]))}
        if method != "DPO":
            summary["rollout_ms_per_token"] = float(np.median(
                [1000 * r["rollout_seconds"] / r["tokens_generated"] for r in runs]))
            summary["rollout_share"] = float(np.median(
                [r["rollout_seconds"] / (r["rollout_seconds"] + r["update_seconds"]) for r in runs]))
            summary["ms_per_token"] = float(np.median([1000 * r["seconds"] / r["tokens_generated"] for r in runs]))
        out[method] = summary
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=list(KNOBS), choices=list(KNOBS))
    parser.add_argument("--only", choices=["sweep", "timing"], default=None,
                        help="sweep: the knob sweep alone; timing: the interleaved timing alone (both are kept "
                             "in the results file); default: both")
    add_arguments(parser)  # --jobs, --ray, --fresh
    parser.set_defaults(jobs=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only == "timing":
        record = json.loads(OUT.read_text()) if OUT.exists() else {}
        if record.get("settings") not in (None, settings()):
            raise SystemExit(f"{OUT} holds another settings' sweep: run the sweep first")
        record.setdefault("provenance", {})["timing_interleaved"] = header(threads=1)
        record["timing_interleaved"] = timing_interleaved()
        write(record, OUT)
        return
    seeds = list(range(args.seeds))
    record = {**header(threads=1, workers=args.jobs)}
    record["settings"] = settings()
    digest = hashlib.sha256(json.dumps(record["settings"], sort_keys=True, default=str).encode()).hexdigest()[:10]
    sft, rm = models()  # trained here once (and cached on disk for the workers)
    record["sft"] = _final(evaluate_policy(sft.model, sft.model, rm.model))
    record["n_parameters"] = n_parameters(sft.model)
    record["models_in_memory"] = MODELS_IN_MEMORY
    record["knobs"] = {m: {"name": name, "values": list(values)} for m, (name, values) in KNOBS.items()}
    results: dict = {}
    jobs = [Job(f"{m}|{KNOBS[m][0]}={v:g}|seed={s}|settings={digest}", run_one, {"method": m, "knob": v, "seed": s})
            for m in args.methods for v in KNOBS[m][1] for s in seeds]
    with Runner(workers=args.jobs, ray=args.ray, resume=resume_path(OUT), fresh=args.fresh,
                label="rlhf_methods") as runner:
        done = runner.map(jobs)
    for job, run in zip(jobs, done):
        m, v = job.kwargs["method"], job.kwargs["knob"]
        results.setdefault(m, {"knob": KNOBS[m][0], "points": {}})["points"].setdefault(str(v), []).append(run)
        f = run["final"]
        print(f"[{m} {KNOBS[m][0]}={v:g} seed {run['seed']}] gold {f['gold']:+.2f} KL {f['kl']:.2f} "
              f"ungrammatical {f['ungrammatical']:.0%} ({run['seconds']:.1f} s, load {run['load']})", flush=True)
    record["results"] = results
    record["timing"] = timing_summary(results)
    if args.only is None:
        record["provenance"] = {"timing_interleaved": header(threads=1)}
        record["timing_interleaved"] = timing_interleaved()
    elif OUT.exists():  # keep the interleaved timing of an earlier run
        before = json.loads(OUT.read_text())
        if "timing_interleaved" in before and before.get("settings") == record["settings"]:
            record["timing_interleaved"] = before["timing_interleaved"]
            record["provenance"] = {"timing_interleaved": before.get("provenance", {}).get("timing_interleaved")}
    write(record, OUT)
    plot(record, RESULTS / "rlhf_methods.png")


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, res in record["results"].items():
        pts = sorted((np.mean([r["final"]["kl"] for r in runs]), np.mean([r["final"]["gold"] for r in runs]))
                     for runs in res["points"].values())
        ax.plot(*zip(*pts), "o-", label=method)
    ax.axhline(record["sft"]["gold"], color="gray", ls=":", label="SFT")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL to the SFT model (nats)")
    ax.set_ylabel("gold reward")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
