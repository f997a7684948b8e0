"""PPO on a language model (chapter 8): stages, throughput, the beta sweep, best-of-n, TRL.

    .venv/bin/python benchmarks/rlhf.py                    # everything (30 PPO runs; the file keeps their seconds)
    .venv/bin/python benchmarks/rlhf.py --only sweep       # just the beta sweep
    .venv/bin/python benchmarks/rlhf.py --trl-python /tmp/benchvenv/bin/python   # TRL in another venv
    .venv/bin/python benchmarks/rlhf.py --only sweep k3 collapse best_of_n --jobs 2   # the PPO runs on 2 processes

Writes results/rlhf.json (chapter 8 reads its sweep; the settings it used are stored
with it and the chapter checks they are its own) and results/rlhf_frontier.png.

- stages: seconds for pre-training, the reward model and one PPO run (beta 0.1), with
  1 and 2 torch threads; PPO iterations and response tokens per second;
- sweep: PPO for beta in {0, 0.03, 0.1, 0.3, 1, 3} x 3 seeds, the chapter's settings:
  per-iteration proxy, gold, KL, ungrammatical rate, response length, <eos> rate and beta;
  the final evaluation with samples;
- k3: the same PPO with k3 instead of k1 as the per-token KL in the reward, for beta in
  {0.1, 0.3, 1} x the same seeds (the k1 runs to compare with are the sweep's);
- collapse: PPO at beta 0 for 3x the iterations (240), per seed: the first iteration after
  which the rollouts' gold stays below the SFT model's, or None if it never does;
- best_of_n: gold and proxy against KL for reward models on 300 and 1000 pairs, with
  Gao et al.'s fits; the fit of the RL form to the PPO runs;
- trl: the same PPO iteration with Hugging Face TRL's PPOTrainer on a GPT-2 of the same
  size built locally (benchmarks/rlhf_trl.py), ours measured in the same way beside it;
- memory: this process's peak resident set.

The PPO runs of sweep, k3 and collapse go through the sweep runner (``ppo_lib.sweep``,
2 worker processes by default, one torch thread each, as the sequential version had): an
interrupted run keeps its finished runs in results/rlhf.jobs.jsonl and the same command
skips them (``--fresh`` starts over); the file is removed once every run is done. Each
``--only`` section replaces its part of results/rlhf.json and records its command under
``provenance``; the others stay as they were.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.rlhf.best_of_n import best_of_n_curve, fit_gao  # noqa: E402
from ppo_lib.rlhf.evaluate import evaluate_policy  # noqa: E402
from ppo_lib.rlhf.model import n_parameters, resolve_device  # noqa: E402
from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo  # noqa: E402
from ppo_lib.rlhf.presets import presets  # noqa: E402
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain, sample_report  # noqa: E402
from ppo_lib.rlhf.reward_model import RewardConfig, agreement, train_reward_model  # noqa: E402
from ppo_lib.sweep import Job, Runner, add_arguments, resume_path  # noqa: E402

OUT = RESULTS / "rlhf.json"
BETAS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
K3_BETAS = (0.1, 0.3, 1.0)       # the k3-in-the-reward runs, against the sweep's k1 runs at the same beta
COLLAPSE_ITERATIONS = 240        # 3x the chapter's 80
HISTORY_FIELDS = ("proxy", "gold", "kl", "ungrammatical", "length", "eos_rate", "beta")


def stages(threads: int, device: str) -> dict:
    torch.set_num_threads(threads)
    pre_cfg, rm_cfg, ppo_kw = presets(device)  # the defaults on the CPU, a larger model on a GPU
    t0 = time.perf_counter()
    sft = pretrain(pre_cfg, device=device, progress=False, use_cache=False)
    t_pre = time.perf_counter() - t0
    t0 = time.perf_counter()
    rm = train_reward_model(sft, rm_cfg, progress=False, use_cache=False)
    t_rm = time.perf_counter() - t0
    run = train_ppo(sft, rm, TokenPPOConfig(beta=0.1, **ppo_kw), progress=False)
    its = len(run.history.seconds)
    row = {"threads": threads, "device": device, "n_parameters": n_parameters(sft.model), "pretrain_s": round(t_pre, 2), "reward_model_s": round(t_rm, 2),
           "ppo_run_s": round(run.seconds, 2), "ppo_iterations": its,
           "ppo_iterations_per_s": round(its / run.seconds, 2),
           "response_tokens_per_s": round(run.tokens_generated / run.seconds, 1),
           "sft": {k: v for k, v in sample_report(sft.model).items() if k != "samples"},
           "reward_model": agreement(rm.model, sft.model)}
    print(f"[stages, {threads} thread(s)] {row}", flush=True)
    return row


def ppo_run(beta: float, seed: int, kl_estimator: str = "k1", iterations: int = 80, device: str = "cpu") -> dict:
    """One PPO run with the chapter's settings (a job: the SFT model and the reward model come from the cache)."""
    sft = pretrain(device=device, progress=False)
    rm = train_reward_model(sft, progress=False)
    run = train_ppo(sft, rm, TokenPPOConfig(beta=beta, seed=seed, kl_estimator=kl_estimator, iterations=iterations),
                    progress=False)
    final = evaluate_policy(run.policy, sft.model, rm.model)
    h = run.history
    return {"seed": seed, "seconds": round(run.seconds, 2), "final": final,
            "history": {k: [round(x, 4) for x in getattr(h, k)] for k in HISTORY_FIELDS}}


def job_key(beta: float, seed: int, kl_estimator: str, iterations: int, device: str) -> str:
    """Everything a run depends on, with a digest of every setting (a changed default never reuses an old run)."""
    settings = {"pretrain": dataclasses.asdict(PretrainConfig()), "reward": dataclasses.asdict(RewardConfig()),
                "ppo": dataclasses.asdict(TokenPPOConfig(beta=beta, seed=seed, kl_estimator=kl_estimator,
                                                         iterations=iterations))}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"ppo beta={beta:g} kl={kl_estimator} iterations={iterations} seed={seed} device={device} config={digest}"


def ppo_jobs(sections, seeds, device) -> dict[str, list[tuple]]:
    """(section, beta or kl_estimator) -> the run specs, in the order the file keeps them."""
    specs = {}
    if "collapse" in sections:  # the longest first, so the two workers finish together
        specs[("collapse", "0.0")] = [(0.0, s, "k1", COLLAPSE_ITERATIONS) for s in seeds]
    if "sweep" in sections:
        for beta in BETAS:
            specs[("sweep", str(beta))] = [(beta, s, "k1", 80) for s in seeds]
    if "k3" in sections:
        for beta in K3_BETAS:
            specs[("k3", str(beta))] = [(beta, s, "k3", 80) for s in seeds]
    return specs


def first_iteration_below(gold: list[float], level: float) -> int | None:
    """The first iteration (0-based) from which every later iteration's gold is below ``level``; None if none."""
    i = len(gold)
    while i > 0 and gold[i - 1] < level:
        i -= 1
    return None if i == len(gold) else i


def collapse_summary(runs: list[dict], gold_sft: float) -> dict:
    rows = []
    for r in runs:
        g = r["history"]["gold"]
        first = first_iteration_below(g, gold_sft)
        rows.append({"seed": r["seed"], "stays_below_sft_from": first, "final_gold": round(r["final"]["gold"], 4),
                     "final_proxy": round(r["final"]["proxy"], 4), "final_kl": round(r["final"]["kl"], 3),
                     "min_gold": min(g), "argmin_gold": int(np.argmin(g))})
        print(f"[collapse] seed {r['seed']}: gold below SFT's ({gold_sft:+.2f}) from iteration "
              f"{first if first is not None else f'never within {len(g)}'}; final gold {r['final']['gold']:+.2f}",
              flush=True)
    return {"iterations": COLLAPSE_ITERATIONS, "gold_sft": gold_sft, "rows": rows, "runs": runs}


def best_of_n(sft, rms: dict) -> dict:
    out = {}
    for n_pairs, rm in rms.items():
        curve = best_of_n_curve(sft.model, rm.model, ns=(1, 2, 4, 8, 16, 32, 64), n_prompts=48)
        gains = [r["gold"] - curve["gold_sft"] for r in curve["rows"]]
        alpha, beta = fit_gao([r["kl"] for r in curve["rows"]], gains, "bon")
        curve["fit_bon"] = {"alpha": alpha, "beta": beta}
        out[str(n_pairs)] = curve
        print(f"[best-of-n, {n_pairs} pairs] " + ", ".join(f"n={r['n']}: gold {r['gold']:+.2f} proxy {r['proxy']:+.2f}"
                                                           for r in curve["rows"]), flush=True)
    return out


def trl_side_by_side(trl_python: str | None, threads: int) -> dict:
    """TRL in this interpreter if it is installed, else in ``trl_python``; ours measured the same way."""
    code = ("import json, sys; sys.path.insert(0, '.'); from benchmarks.rlhf_trl import run_trl_ppo, run_ours; "
            f"print('RESULT' + json.dumps({{'trl': run_trl_ppo(threads={threads}), 'ours': run_ours(threads={threads})}}))")
    python = trl_python or sys.executable
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=1200,
                              cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"could not run {python}: {exc}"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if not lines:
        return {"error": f"{python} exited {proc.returncode}: {proc.stderr.strip()[-800:]}"}
    out = json.loads(lines[-1][len("RESULT"):])
    print(f"[trl] {out}", flush=True)
    return out


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for beta, runs in record["sweep"].items():
        kl = [r["final"]["kl"] for r in runs]
        ax.scatter(kl, [r["final"]["gold"] for r in runs], color="tab:orange", s=14)
        ax.scatter(kl, [r["final"]["proxy"] for r in runs], color="tab:blue", s=14)
        ax.annotate(beta, (np.mean(kl), np.mean([r["final"]["gold"] for r in runs])), fontsize=7)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL to the SFT model (nats)")
    ax.set_title("PPO, final gold (orange) and proxy (blue), 3 seeds per beta")
    for n_pairs, curve in record.get("best_of_n", {}).items():
        d = np.sqrt([r["kl"] for r in curve["rows"]])
        ax2.plot(d, [r["gold"] - curve["gold_sft"] for r in curve["rows"]], "o-", label=f"best-of-n gold, {n_pairs} pairs")
        ax2.plot(d, [r["proxy"] - curve["proxy_sft"] for r in curve["rows"]], "x:", label=f"best-of-n proxy, {n_pairs} pairs")
    ax2.set_xlabel("sqrt(KL)")
    ax2.set_title("gain over SFT")
    ax2.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sections = ["stages", "sweep", "k3", "collapse", "best_of_n", "trl"]
    parser.add_argument("--only", nargs="*", default=sections, choices=sections)
    parser.add_argument("--seeds", type=int, default=3)
    add_arguments(parser)  # --jobs N (worker processes), --ray auto|ADDRESS, --fresh
    parser.set_defaults(jobs=2)
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--trl-python", default=None, help="a Python with trl installed (default: this one)")
    args = parser.parse_args()
    device = str(resolve_device(args.device))
    record = json.loads(OUT.read_text()) if OUT.exists() else {}
    record.update(header(device=device))
    for section in args.only:  # which command made which part of the file
        record.setdefault("provenance", {})[section] = header(device=device)
    record["settings"] = {"pretrain": dataclasses.asdict(PretrainConfig()), "reward": dataclasses.asdict(RewardConfig()),
                          "ppo": dataclasses.asdict(TokenPPOConfig())}
    if "stages" in args.only:
        record["stages"] = [stages(1, device), stages(2, device)]
    torch.set_num_threads(1)
    sft = pretrain(device=device, progress=False)
    rm = train_reward_model(sft, progress=False)
    record["n_parameters"] = n_parameters(sft.model)
    gold_sft = evaluate_policy(sft.model, sft.model, rm.model)["gold"]
    specs = ppo_jobs(args.only, list(range(args.seeds)), device)
    if specs:
        t0 = time.perf_counter()
        jobs = [Job(job_key(b, s, est, its, device), ppo_run,
                    dict(beta=b, seed=s, kl_estimator=est, iterations=its, device=device))
                for spec in specs.values() for b, s, est, its in spec]
        resume = resume_path(OUT)
        with Runner(workers=args.jobs, ray=args.ray, resume=resume, fresh=args.fresh, label="rlhf") as runner:
            results = iter(runner.map(jobs))
        wall = round(time.perf_counter() - t0, 1)
        parts: dict = {}
        for (section, name), spec in specs.items():
            parts.setdefault(section, {})[name] = [next(results) for _ in spec]
        for section, runs in parts.items():
            for name, rs in runs.items():
                for r in rs:
                    f = r["final"]
                    print(f"[{section}] beta {name} seed {r['seed']}: gold {f['gold']:+.2f} proxy {f['proxy']:+.2f} "
                          f"KL {f['kl']:.1f} ungrammatical {f['ungrammatical']:.0%} length {f['length']:.1f} "
                          f"({r['seconds']:.0f} s)", flush=True)
        record["ppo_runs_seconds"] = {"wall": wall, "workers": args.jobs, "sections": sorted(parts)}
        if "sweep" in parts:
            record["sweep"] = parts["sweep"]
            record["sweep_seconds"] = round(sum(r["seconds"] for rs in parts["sweep"].values() for r in rs), 1)
            points = [(kl, g) for r in record["sweep"]["0.0"] for kl, g in zip(r["history"]["kl"], r["history"]["gold"])]
            kl, g = np.array(points).T
            alpha, beta = fit_gao(np.maximum(kl, 0), g - gold_sft, "rl")
            record["fit_rl_beta0"] = {"alpha": alpha, "beta": beta, "gold_sft": gold_sft}
        if "k3" in parts:
            record["k3"] = {"kl_estimator": "k3", "betas": list(K3_BETAS), "runs": parts["k3"],
                            "note": "the k1 runs at the same beta and seeds are the sweep's"}
        if "collapse" in parts:
            record["collapse"] = collapse_summary(parts["collapse"]["0.0"], gold_sft)
        resume.unlink(missing_ok=True)  # complete: the next run of this script trains afresh
    if "best_of_n" in args.only:
        rm300 = train_reward_model(sft, RewardConfig(n_pairs=300), progress=False)
        record["best_of_n"] = best_of_n(sft, {300: rm300, 1000: rm})
    if "trl" in args.only:
        record["trl"] = trl_side_by_side(args.trl_python, threads=1)
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    write(record, OUT)
    if "sweep" in record:
        plot(record, RESULTS / "rlhf_frontier.png")


if __name__ == "__main__":
    main()
