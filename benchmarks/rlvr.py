"""RL with verifiable rewards (chapter 10): GRPO and its 2025 successors on the addition task, 3 seeds.

    .venv/bin/python benchmarks/rlvr.py                               # every variant, 3 seeds (~30 min, 2 cores)
    .venv/bin/python benchmarks/rlvr.py --variants grpo dapo --seeds 1 --iterations 40   # a quick look

    .venv/bin/python benchmarks/rlvr.py --jobs 2                      # on 2 local processes (or --ray auto)

Writes results/rlvr.json (the command, date and machine with it) and results/rlvr.png (``--out``
for another file). The runs go through the sweep runner (``ppo_lib.sweep``: ``--jobs``, ``--ray``;
each finished run is kept in a resume file next to ``--out`` as it ends, so an interrupted sweep
keeps what it did and a rerun skips it; ``--fresh`` ignores it). Each job loads its seed's SFT
model from the cache, which this script fills first, so a run starts from the same weights in
whichever process it lands; every run is seeded, so the results do not depend on the backend.

Per seed: the SFT model of that seed (rlvr_presets; cached in .ppo_cache), its held-out pass@k
(96 problems x 64 samples, Chen et al.'s unbiased estimator) and worked share; then each variant
(presets.GRPO_VARIANTS, plus ``grpo_kl``: GRPO with k3 in the loss, beta 0.04) for the preset's
150 iterations: per iteration accuracy (the verifier's mean on the rollouts), mean length,
worked share, zero-variance-group share, KL to the SFT model, rollout and update seconds,
responses sampled; at the end the same held-out evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.rlhf import cache  # noqa: E402
from ppo_lib.rlhf.evaluate import evaluate_verifier  # noqa: E402
from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo  # noqa: E402
from ppo_lib.rlhf.presets import GRPO_VARIANTS, rlvr_presets  # noqa: E402
from ppo_lib.rlhf.pretrain import pretrain  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402

OUT = RESULTS / "rlvr.json"
VARIANTS = {**GRPO_VARIANTS, "grpo_kl": {"beta": 0.04, "kl": "loss_k3"}, "ppo": {"trainer": "ppo"}}
# the baseline with a critic: chapter 8's PPO on the verifier (value model from the SFT trunk), the
# same batch of 128 answers, epochs, minibatches and lr as the GRPO preset, no KL; it samples
# without the key/value cache (TokenPPOConfig has no such switch: its settings are chapter 8's)
PPO_SETTINGS = {"beta": 0.0, "batch_size": 128, "epochs": 2, "num_minibatches": 2, "lr": 1e-4}
KS = (1, 4, 16, 64)


def _round(xs, nd=4):
    return [round(float(x), nd) for x in xs]


def _eval(policy, task, ref=None) -> dict:
    ev = evaluate_verifier(policy, task, n_prompts=96, samples_per_prompt=64, ks=KS, ref=ref)
    return {"pass_at_k": {str(k): v for k, v in ev["pass_at_k"].items()}, "accuracy": ev["accuracy"],
            "length": ev["length"], "worked": ev["stats"]["worked"], "valid": ev["valid"], "kl": ev["kl"],
            "never_solved": int(sum(c == 0 for c in ev["right_per_prompt"])), "samples": ev["samples"][:4]}


def run_ppo(sft, seed: int, iterations: int) -> dict:
    from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo

    task = sft.task
    t0 = time.perf_counter()
    result = train_ppo(sft, None, TokenPPOConfig(**PPO_SETTINGS, iterations=iterations, seed=seed), progress=False)
    seconds = time.perf_counter() - t0
    h = result.history
    n = len(h.gold)
    return {"variant": "ppo", "seed": seed, "seconds": round(seconds, 2), "switches": {"trainer": "ppo", **PPO_SETTINGS},
            "history": {"accuracy": _round(h.gold), "length": _round(h.length, 3), "worked": [None] * n,
                        "zero_variance": [float("nan")] * n, "kl": _round(h.kl), "k3": [0.0] * n,
                        "clip_fraction": _round(h.clip_fraction, 5), "rollout_s": [float("nan")] * n,
                        "update_s": [float("nan")] * n, "iteration_s": _round(h.seconds),
                        "responses_sampled": [PPO_SETTINGS["batch_size"]] * n},
            "final": _eval(result.policy, task, sft.model)}


def run_variant(name: str, sft, seed: int, iterations: int) -> dict:
    if name == "ppo":
        return run_ppo(sft, seed, iterations)
    task, _, kw = rlvr_presets("cpu")
    config = GRPOConfig(**{**kw, **VARIANTS[name], "iterations": iterations, "seed": seed})
    t0 = time.perf_counter()
    result = train_grpo(sft, None, config, progress=False)
    seconds = time.perf_counter() - t0
    h = result.history
    return {"variant": name, "seed": seed, "seconds": round(seconds, 2), "switches": VARIANTS[name],
            "history": {"accuracy": _round(h.gold), "length": _round(h.length, 3),
                        "worked": _round([s["worked"] for s in h.task_stats], 4),
                        "zero_variance": _round(h.zero_std_groups), "kl": _round(h.kl), "k3": _round(h.k3, 5),
                        "clip_fraction": _round(h.clip_fraction, 5), "rollout_s": _round(h.rollout_seconds),
                        "update_s": _round(h.update_seconds), "responses_sampled": list(h.responses_sampled)},
            "final": _eval(result.policy, task, sft.model)}


def one_run(name: str, seed: int, iterations: int, cache_dir: str) -> dict:
    """One (variant, seed), in whichever process the sweep runner puts it: the seed's SFT model
    from ``cache_dir`` (filled by ``main`` first), so every run starts from the same weights."""
    os.environ[cache.ENV] = cache_dir
    task, pre, _ = rlvr_presets("cpu")
    pre.seed = seed
    sft = pretrain(pre, device="cpu", progress=False, task=task)
    return {**run_variant(name, sft, seed, iterations), "iterations": iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=None, help="default: the preset's 150")
    parser.add_argument("--out", default=str(OUT))
    add_arguments(parser)  # --jobs N (worker processes), --ray auto|ADDRESS|local, --fresh
    args = parser.parse_args()
    out = Path(args.out)
    torch.set_num_threads(1)
    task, pre, kw = rlvr_presets("cpu")
    iterations = args.iterations or kw["iterations"]
    record = json.loads(out.read_text()) if out.exists() else {}
    record.update(header(threads=1))
    # every invocation that added runs, in order (the header above is the latest one's)
    record.setdefault("provenance", []).append({**header(threads=1), "variants": args.variants, "seeds": args.seeds,
                                                "iterations": args.iterations or kw["iterations"]})
    record["settings"] = {"pretrain": {**dataclasses.asdict(pre), "seed": "the run's seed"}, "grpo": kw,
                          "iterations": iterations, "variants": VARIANTS, "eval": {"prompts": 96, "samples": 64,
                                                                                   "ks": list(KS)}}
    record.setdefault("sft", {})
    record.setdefault("runs", [])
    for seed in range(args.seeds):  # each seed's SFT model, trained here once (or loaded): the jobs load it
        pre.seed = seed
        sft = pretrain(pre, device="cpu", progress=False, task=task)
        if str(seed) not in record["sft"]:
            record["sft"][str(seed)] = {"seconds": round(sft.seconds, 2), **_eval(sft.model, task)}
            write(record, out)
    jobs = [Job(f"{name} seed={seed} iterations={iterations}", one_run,
                dict(name=name, seed=seed, iterations=iterations, cache_dir=str(cache.cache_dir())))
            for seed in range(args.seeds) for name in args.variants]
    resume = resume_path(out)
    with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="rlvr") as runner:
        rows = runner.map(jobs)
    for row in rows:
        name, seed = row["variant"], row["seed"]
        record["runs"] = [r for r in record["runs"]
                          if not (r["variant"] == name and r["seed"] == seed and r["iterations"] == iterations)]
        record["runs"].append(row)
        f = row["final"]
        print(f"[{name} seed {seed}] pass@1 {f['pass_at_k']['1']:.3f} @64 {f['pass_at_k']['64']:.3f} "
              f"worked {f['worked']:.2f} length {f['length']:.1f} ({row['seconds']:.0f} s)", flush=True)
    record["table"] = table(record, iterations)
    write(record, out)
    resume.unlink(missing_ok=True)  # complete: the next run of this script trains afresh
    plot(record, iterations, out.with_suffix(".png"))


def table(record: dict, iterations: int) -> dict:
    """Mean and sd over seeds per variant: held-out pass@k, worked share, length, and over the last
    50 iterations' rollouts the zero-variance share; seconds per iteration."""
    out = {"sft": {}}
    sft = list(record["sft"].values())
    for k in map(str, KS):
        out["sft"][f"pass@{k}"] = [float(np.mean([s["pass_at_k"][k] for s in sft])),
                                   float(np.std([s["pass_at_k"][k] for s in sft]))]
    out["sft"]["worked"] = float(np.mean([s["worked"] for s in sft]))
    out["sft"]["length"] = float(np.mean([s["length"] for s in sft]))
    for name in VARIANTS:
        runs = [r for r in record["runs"] if r["variant"] == name and r["iterations"] == iterations]
        if not runs:
            continue
        row = {"seeds": sorted(r["seed"] for r in runs)}
        for k in map(str, KS):
            v = [r["final"]["pass_at_k"][k] for r in runs]
            row[f"pass@{k}"] = [float(np.mean(v)), float(np.std(v))]
        for key in ("worked", "length", "kl"):
            row[key] = float(np.mean([r["final"][key] for r in runs]))
        row["zero_variance_last50"] = float(np.mean([np.mean(r["history"]["zero_variance"][-50:]) for r in runs]))
        # (nan for PPO, which samples one answer per prompt: no groups)
        row["s_per_it"] = float(np.mean([r["seconds"] / r["iterations"] for r in runs]))
        row["rollout_share"] = float(np.mean([sum(r["history"]["rollout_s"]) /
                                              (sum(r["history"]["rollout_s"]) + sum(r["history"]["update_s"]))
                                              for r in runs]))
        row["responses_per_it"] = float(np.mean([np.mean(r["history"]["responses_sampled"]) for r in runs]))
        out[name] = row
    return out


def plot(record: dict, iterations: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for name in VARIANTS:
        runs = [r for r in record["runs"] if r["variant"] == name and r["iterations"] == iterations]
        if not runs:
            continue
        for ax, key in zip(axes, ("accuracy", "length", "zero_variance")):
            ax.plot(np.mean([np.asarray(r["history"][key], dtype=float) for r in runs], axis=0), label=name, lw=1)
    for ax, title in zip(axes, ("accuracy (rollouts)", "mean length", "zero-variance groups")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
