"""One evaluator for every method of chapters 8 and 9.

Fresh samples of the policy on every prompt (a seed of its own, so they never are
training samples), scored by the gold reward and by the reward model, with the
sequence KL to the reference estimated on the same samples (the sum of the
per-token ``k1``, unbiased for KL(pi || pi_ref)).
"""

from __future__ import annotations

import torch

from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.model import GPT, ScalarModel, generate, response_logprobs
from ppo_lib.rlhf.reward_model import score

EVAL_SEED = 777


@torch.no_grad()
def evaluate_policy(policy: GPT, ref: GPT, reward_model: ScalarModel | None = None, n: int = 384,
                    seed: int = EVAL_SEED, temperature: float = 1.0, n_samples: int = 8) -> dict:
    """Gold reward, proxy score, KL to ``ref`` (nats), ungrammatical rate and a few samples."""
    dev = next(policy.parameters()).device
    prompts = [lang.PROMPTS[i % len(lang.PROMPTS)] for i in range(n)]
    gen = generate(policy, prompts, temperature=temperature, generator=torch.Generator(dev).manual_seed(seed))
    lp = response_logprobs(policy, gen.tokens, gen.prompt_len, temperature) * gen.mask
    lp_ref = response_logprobs(ref, gen.tokens, gen.prompt_len, temperature) * gen.mask
    gold = lang.gold_rewards(gen.responses.cpu())
    out = {"gold": float(gold.mean()), "kl": float((lp - lp_ref).sum(1).mean()),
           "ungrammatical": 1.0 - lang.grammatical_rate(gen.responses.cpu()),
           "eos_rate": float(gen.has_eos.float().mean()), "length": float(gen.lengths.float().mean())}
    texts = gen.texts()
    if reward_model is not None:
        proxy = score(reward_model, gen.tokens, gen.prompt_len).cpu()
        out["proxy"] = float(proxy.mean())
        out["samples"] = [(prompts[i], texts[i], float(gold[i]), float(proxy[i])) for i in range(n_samples)]
    else:
        out["samples"] = [(prompts[i], texts[i], float(gold[i])) for i in range(n_samples)]
    return out
