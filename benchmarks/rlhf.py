"""PPO on a language model (chapter 8): stages, throughput, the beta sweep, best-of-n, TRL.

    .venv/bin/python benchmarks/rlhf.py                    # everything (~10 min on 2 cores)
    .venv/bin/python benchmarks/rlhf.py --only sweep       # just the beta sweep
    .venv/bin/python benchmarks/rlhf.py --trl-python /tmp/benchvenv/bin/python   # TRL in another venv

Writes results/rlhf.json (chapter 8 reads its sweep; the settings it used are stored
with it and the chapter checks they are its own) and results/rlhf_frontier.png.

- stages: seconds for pre-training, the reward model and one PPO run (beta 0.1), with
  1 and 2 torch threads; PPO iterations and response tokens per second;
- sweep: PPO for beta in {0, 0.03, 0.1, 0.3, 1, 3} x 3 seeds, the chapter's settings:
  per-iteration proxy, gold, KL, ungrammatical rate; the final evaluation with samples;
- best_of_n: gold and proxy against KL for reward models on 300 and 1000 pairs, with
  Gao et al.'s fits; the fit of the RL form to the PPO runs;
- trl: the same PPO iteration with Hugging Face TRL's PPOTrainer on a GPT-2 of the same
  size built locally (benchmarks/rlhf_trl.py), ours measured in the same way beside it;
- memory: this process's peak resident set.
"""

from __future__ import annotations

import argparse
import dataclasses
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

OUT = RESULTS / "rlhf.json"
BETAS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)


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


def sweep(sft, rm, seeds, device) -> dict:
    out = {}
    for beta in BETAS:
        out[str(beta)] = []
        for seed in seeds:
            run = train_ppo(sft, rm, TokenPPOConfig(beta=beta, seed=seed), progress=False)
            final = evaluate_policy(run.policy, sft.model, rm.model)
            h = run.history
            out[str(beta)].append({"seed": seed, "seconds": round(run.seconds, 2), "final": final,
                                   "history": {k: [round(x, 4) for x in getattr(h, k)]
                                               for k in ("proxy", "gold", "kl", "ungrammatical", "beta")}})
            print(f"[sweep] beta {beta:g} seed {seed}: gold {final['gold']:+.2f} proxy {final['proxy']:+.2f} "
                  f"KL {final['kl']:.1f} ungrammatical {final['ungrammatical']:.0%} ({run.seconds:.0f} s)", flush=True)
    return out


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
    parser.add_argument("--only", nargs="*", default=["stages", "sweep", "best_of_n", "trl"],
                        choices=["stages", "sweep", "best_of_n", "trl"])
    parser.add_argument("--seeds", type=int, default=3)
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
    if "sweep" in args.only:
        t0 = time.perf_counter()
        record["sweep"] = sweep(sft, rm, list(range(args.seeds)), device)
        record["sweep_seconds"] = round(time.perf_counter() - t0, 1)
        points = [(kl, g) for r in record["sweep"]["0.0"] for kl, g in zip(r["history"]["kl"], r["history"]["gold"])]
        gold_sft = evaluate_policy(sft.model, sft.model, rm.model)["gold"]
        kl, g = np.array(points).T
        alpha, beta = fit_gao(np.maximum(kl, 0), g - gold_sft, "rl")
        record["fit_rl_beta0"] = {"alpha": alpha, "beta": beta, "gold_sft": gold_sft}
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
