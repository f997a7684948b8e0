"""The seeded numbers of chapters 8-9's stages, short runs of each: written once by the library
before tasks existed (commit 31f5db2), compared exactly by tests/test_rlhf_results.py.

    PYTHONPATH=<a checkout of 31f5db2> python tests/rlhf_seeded.py    # rewrites tests/data/rlhf_seeded.json
"""

import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "data" / "rlhf_seeded.json"
#: how the CPU that wrote OUT computes floats (tests/numerics.py): exact comparisons need the same
FINGERPRINT = OUT.with_suffix(".numerics.json")


def seeded_numbers(sft, rm) -> dict:
    from ppo_lib.rlhf.best_of_n import best_of_n_curve
    from ppo_lib.rlhf.dpo import DPOConfig, train_dpo
    from ppo_lib.rlhf.evaluate import evaluate_policy
    from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo
    from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo
    from ppo_lib.rlhf.pretrain import sample_report
    from ppo_lib.rlhf.reward_model import sample_pairs

    out = {"sft_loss_last": sft.losses[-1], "sft_report": {k: v for k, v in sample_report(sft.model).items()
                                                           if k != "samples"},
           "reward_losses_last": rm.losses[-1] if hasattr(rm, "losses") else None}
    ev = evaluate_policy(sft.model, sft.model, rm.model, n=96)
    out["sft_eval"] = {k: v for k, v in ev.items() if k != "samples"}
    ppo = train_ppo(sft, rm, TokenPPOConfig(beta=0.1, iterations=4), progress=False)
    out["ppo"] = {k: getattr(ppo.history, k) for k in ("proxy", "gold", "kl", "clip_fraction", "value_loss")}
    for kl, baseline in (("loss_k3", "group"), ("reward_k1", "rloo"), ("none", "group")):
        g = train_grpo(sft, rm, GRPOConfig(kl=kl, baseline=baseline, iterations=4, beta=0.0 if kl == "none" else 0.04),
                       progress=False)
        out[f"grpo_{kl}_{baseline}"] = {k: getattr(g.history, k) for k in
                                        ("proxy", "gold", "kl", "k3", "zero_std_groups", "clip_fraction", "length")}
    pairs = sample_pairs(sft.model, 64, seed=5)
    d = train_dpo(sft, pairs, DPOConfig(steps=4), progress=False)
    out["dpo"] = {k: getattr(d.history, k) for k in ("loss", "margin", "chosen_logp")}
    curve = best_of_n_curve(sft.model, rm.model, ns=(1, 4), n_prompts=12)
    out["best_of_n"] = [{k: r[k] for k in ("n", "kl", "gold", "proxy")} for r in curve["rows"]]
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    from ppo_lib.rlhf.pretrain import pretrain
    from ppo_lib.rlhf.reward_model import train_reward_model
    import ppo_lib

    print("library:", ppo_lib.__file__)
    sft = pretrain(progress=False, use_cache=False)
    rm = train_reward_model(sft, progress=False, use_cache=False)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(seeded_numbers(sft, rm), indent=1) + "\n")
    from tests.numerics import numerics_fingerprint

    FINGERPRINT.write_text(json.dumps({"numerics_fingerprint": numerics_fingerprint()}, indent=1) + "\n")
    print("wrote", OUT, "and", FINGERPRINT)
