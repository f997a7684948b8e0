"""Chapter 9: PPO, DPO, GRPO, RLOO and best-of-n on the same task, one evaluator, 3 seeds.

    .venv/bin/python benchmarks/rlhf_methods.py            # ~6 min on 2 cores
    .venv/bin/python benchmarks/rlhf_methods.py --seeds 1  # a quick look

Every method starts from the same SFT model and uses the same 1000 preference pairs
(DPO directly, the others through the reward model trained on them), and every
result is measured by the same evaluator (``ppo_lib.rlhf.evaluate.evaluate_policy``:
fresh samples, gold reward, proxy score, KL to the SFT model, ungrammatical rate).
Each method is swept over its own knob:

- PPO: beta (read from results/rlhf.json, where benchmarks/rlhf.py ran it with the
  same evaluator and seeds);
- DPO: beta; GRPO and RLOO: beta (k3 in the loss); best-of-n: n.

Writes results/rlhf_methods.json (chapter 9 reads it) and results/rlhf_methods.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from ppo_lib.rlhf.ppo import TokenPPOConfig  # noqa: E402
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain  # noqa: E402
from ppo_lib.rlhf.reward_model import RewardConfig, train_reward_model  # noqa: E402

OUT = RESULTS / "rlhf_methods.json"
KNOBS = {"DPO": ("beta", (0.03, 0.1, 0.3, 1.0)),
         "GRPO": ("beta", (0.0, 0.04, 0.1, 0.3)),
         "RLOO": ("beta", (0.04, 0.3)),
         "best-of-n": ("n", (1, 2, 4, 8, 16, 32, 64))}
MODELS_IN_MEMORY = {"PPO": 4, "GRPO": 3, "RLOO": 3, "DPO": 2, "best-of-n": 2}


def _final(ev: dict) -> dict:
    return {k: ev[k] for k in ("gold", "proxy", "kl", "ungrammatical", "length", "samples")}


def run_method(method: str, knob, seed: int, sft, rm) -> dict:
    t0 = time.perf_counter()
    if method == "DPO":
        result = train_dpo(sft, rm.pairs, DPOConfig(beta=knob, seed=seed), progress=False)
        extra = {"chosen_logp": [result.history.chosen_logp[0], result.history.chosen_logp[-1]],
                 "rejected_logp": [result.history.rejected_logp[0], result.history.rejected_logp[-1]]}
    elif method in ("GRPO", "RLOO"):
        config = GRPOConfig(beta=knob, seed=seed, baseline="group" if method == "GRPO" else "rloo",
                            kl="loss_k3" if knob > 0 else "none")
        result = train_grpo(sft, rm, config, progress=False)
        extra = {"zero_std_groups_last10": float(np.mean(result.history.zero_std_groups[-10:]))}
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - t0
    ev = evaluate_policy(result.policy, sft.model, rm.model)
    return {"seed": seed, "knob": knob, "seconds": round(seconds, 2), "final": _final(ev), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["sweep", "timing"], choices=["sweep", "timing"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    record = json.loads(OUT.read_text()) if OUT.exists() else {}
    record.update(header(threads=1))
    for section in args.only:
        record.setdefault("provenance", {})[section] = header(threads=1)
    sft = pretrain(progress=False)
    rm = train_reward_model(sft, progress=False)
    record["settings"] = {"pretrain": dataclasses.asdict(PretrainConfig()), "reward": dataclasses.asdict(RewardConfig()),
                          "dpo": dataclasses.asdict(DPOConfig()), "grpo": dataclasses.asdict(GRPOConfig()),
                          "ppo": dataclasses.asdict(TokenPPOConfig())}
    record["sft"] = _final(evaluate_policy(sft.model, sft.model, rm.model))
    record["n_parameters"] = n_parameters(sft.model)
    record["models_in_memory"] = MODELS_IN_MEMORY
    if "timing" in args.only:
        record["timing"] = timing(sft, rm)
    if "sweep" not in args.only:
        write(record, OUT)
        return
    results: dict = {}
    # PPO: the sweep of benchmarks/rlhf.py (same SFT, reward model, evaluator and seeds)
    ppo = json.loads((RESULTS / "rlhf.json").read_text())
    # the file may predate the renamed fields (vf_coef -> value_coef ...): compare by today's names
    ppo_then = {TokenPPOConfig.RENAMED.get(k, k): v for k, v in ppo["settings"]["ppo"].items()}
    if ppo_then != record["settings"]["ppo"] or ppo["settings"]["reward"] != record["settings"]["reward"]:
        raise SystemExit("results/rlhf.json was made with other settings: run benchmarks/rlhf.py first")
    results["PPO"] = {"knob": "beta", "points": {
        b: [{"seed": r["seed"], "knob": float(b), "seconds": r["seconds"], "final": r["final"]} for r in runs if r["seed"] in seeds]
        for b, runs in ppo["sweep"].items() if float(b) > 0}}
    for method, (knob_name, values) in KNOBS.items():
        results[method] = {"knob": knob_name, "points": {}}
        for value in values:
            runs = []
            for seed in seeds:
                if method == "best-of-n":
                    t0 = time.perf_counter()
                    curve = best_of_n_curve(sft.model, rm.model, ns=(value,), n_prompts=64, seed=100 + seed)
                    row = curve["rows"][0]
                    runs.append({"seed": seed, "knob": value, "seconds": round(time.perf_counter() - t0, 2),
                                 "final": {"gold": row["gold"], "proxy": row["proxy"], "kl": row["kl"],
                                           "ungrammatical": row["ungrammatical"], "samples": row["samples"]}})
                else:
                    runs.append(run_method(method, value, seed, sft, rm))
                f = runs[-1]["final"]
                print(f"[{method} {knob_name}={value:g} seed {seed}] gold {f['gold']:+.2f} KL {f['kl']:.2f} "
                      f"ungrammatical {f['ungrammatical']:.0%} ({runs[-1]['seconds']:.1f} s)", flush=True)
            results[method]["points"][str(value)] = runs
    record["results"] = results
    write(record, OUT)
    plot(record, RESULTS / "rlhf_methods.png")


def timing(sft, rm) -> dict:
    """Wall time of one training run per method at its default setting, seed 0, one after the
    other in this process (so the figures are comparable; run it on a quiet machine)."""
    from ppo_lib.rlhf.ppo import train_ppo

    out = {}
    for method, fn in (("PPO", lambda: train_ppo(sft, rm, TokenPPOConfig(beta=0.1), progress=False)),
                       ("GRPO", lambda: train_grpo(sft, rm, GRPOConfig(), progress=False)),
                       ("RLOO", lambda: train_grpo(sft, rm, GRPOConfig(baseline="rloo"), progress=False)),
                       ("DPO", lambda: train_dpo(sft, rm.pairs, DPOConfig(), progress=False)),
                       ("best-of-n", lambda: best_of_n_curve(sft.model, rm.model, ns=(16,), n_prompts=64))):
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        its = len(result.history.loss) if method == "DPO" else (
            None if method == "best-of-n" else len(result.history.gold))
        out[method] = {"seconds": round(seconds, 2), "iterations_or_steps": its}
        print(f"[timing] {method}: {seconds:.1f} s", flush=True)
    return out


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
