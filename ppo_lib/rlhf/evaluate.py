r"""One evaluator for every method of chapters 8 and 9, and one for verifiable tasks (chapter 10).

:func:`evaluate_policy`: fresh samples of the policy on every prompt (a seed of its own, so they
never are training samples), scored by the gold reward and by the reward model, with the
sequence KL to the reference estimated on the same samples (the sum of the per-token ``k1``,
unbiased for KL(pi || pi_ref)).

:func:`evaluate_verifier`: ``n`` samples on each held-out prompt of a task with a verifier, and
pass@k by the unbiased estimator of Chen et al. (2021, eq. 1): with ``c`` of ``n`` samples right,

.. math:: \text{pass@}k = 1 - \binom{n-c}{k} \Big/ \binom{n}{k},

averaged over prompts (:func:`pass_at_k`): the chance that at least one of ``k`` samples drawn
without replacement from the ``n`` is right. (``1 - (1 - c/n)^k`` is biased low for ``k > 1``.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import count, flag, require_module
from ppo_lib.rlhf.model import GPT, ScalarModel, generate, response_logprobs
from ppo_lib.rlhf.reward_model import score
from ppo_lib.rlhf.task import Task

EVAL_SEED = 777


@torch.no_grad()
def evaluate_policy(policy: GPT, ref: GPT, reward_model: ScalarModel | None = None, n: int = 384,
                    seed: int = EVAL_SEED, temperature: float = 1.0, n_samples: int = 8) -> dict:
    """Gold reward, proxy score, KL to ``ref`` (nats), ungrammatical rate and a few samples."""
    require_module("policy", policy, GPT, "the policy (a GPT, e.g. result.policy or sft.model)")
    require_module("ref", ref, GPT, "the reference (a GPT, e.g. sft.model)")
    if reward_model is not None:
        require_module("reward_model", reward_model, ScalarModel,
                       "None or the reward model (a ScalarModel, e.g. reward.model)")
    n = count("n", n, 1)
    n_samples = count("n_samples", n_samples, 0, n)
    seed = count("seed", seed, 0, 2**63 - 1)
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


def pass_at_k(n: int, c: int, k: int) -> float:
    r"""The unbiased pass@k of one prompt with ``c`` right answers among ``n`` samples (Chen et al.
    2021), computed as a product so it stays exact for large ``n``:
    :math:`1 - \prod_{i=n-c+1}^{n} (1 - k/i)`."""
    n, c, k = count("n", n, 0), count("c", c, 0), count("k", k, 0)  # 2.5 is an error, never 2; nan too
    if not 1 <= k <= n:
        raise ValueError(f"k={k}: must be in [1, n={n}] (k samples are drawn from the n)")
    if c > n:
        raise ValueError(f"c={c}: more right answers than samples n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@torch.no_grad()
def evaluate_verifier(policy: GPT, task: Task, n_prompts: int = 96, samples_per_prompt: int = 64,
                      ks=(1, 4, 16, 64), temperature: float = 1.0, seed: int = EVAL_SEED,
                      ref: GPT | None = None, kv_cache: bool = True, chunk: int = 2048) -> dict:
    """pass@k on the first ``n_prompts`` held-out prompts of ``task``, ``samples_per_prompt`` each,
    with the mean length, the task's stats and (given ``ref``) the KL to it, on the same samples.

    Returns ``{"pass_at_k": {k: value}, "accuracy", "length", "valid", "stats", "kl",
    "right_per_prompt", "samples"}``; ``accuracy`` is pass@1, the share of right samples.
    """
    require_module("policy", policy, nn.Module, "the policy (a language model, e.g. result.policy or sft.model)")
    if not isinstance(task, Task):
        raise TypeError(f"task=<{type(task).__name__}>: expected a Task (e.g. sft.task)")
    if task.verifier is None:
        raise ValueError(f"task {task.name!r} has no verifier: evaluate it with evaluate_policy")
    if ref is not None:
        require_module("ref", ref, nn.Module, "None or the reference (a language model, e.g. sft.model)")
    n_prompts = count("n_prompts", n_prompts, 1)
    samples_per_prompt = count("samples_per_prompt", samples_per_prompt, 1)
    chunk = count("chunk", chunk, 1)
    kv_cache = flag("kv_cache", kv_cache)
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise TypeError(f"ks={ks!r}: expected a list of whole numbers, e.g. (1, 4, 16)")
    ks = tuple(count(f"ks[{i}]", k, 1) for i, k in enumerate(ks))  # 2.5 is an error, never 2
    for k in ks:
        if not 1 <= k <= samples_per_prompt:
            raise ValueError(f"ks contains {k}: each k must be in [1, samples_per_prompt={samples_per_prompt}]")
    dev = next(policy.parameters()).device
    prompts = task.heldout_prompts(n_prompts).repeat_interleave(samples_per_prompt, dim=0)
    gen_seed = torch.Generator(dev).manual_seed(seed)
    right, lengths, responses, kls = [], [], [], []
    for start in range(0, len(prompts), chunk):
        p = prompts[start:start + chunk]
        gen = generate(policy, p, temperature=temperature, generator=gen_seed, task=task, kv_cache=kv_cache)
        right.append(task.verify(p, gen.responses.cpu()))
        lengths.append(gen.lengths.cpu().float())
        responses.append(gen.responses.cpu())
        if ref is not None:
            lp = response_logprobs(policy, gen.tokens, gen.prompt_len, temperature) * gen.mask
            lp_ref = response_logprobs(ref, gen.tokens, gen.prompt_len, temperature) * gen.mask
            kls.append((lp - lp_ref).sum(1).cpu())
    right_t = torch.cat(right).view(n_prompts, samples_per_prompt)
    responses_t = torch.cat(responses)
    c = (right_t > 0.5).sum(1).tolist()
    out = {"pass_at_k": {k: float(np.mean([pass_at_k(samples_per_prompt, ci, k) for ci in c])) for k in ks},
           "accuracy": float(right_t.mean()), "length": float(torch.cat(lengths).mean()),
           "valid": task.valid_rate(responses_t),
           "stats": task.stats(responses_t) if task.stats is not None else {},
           "kl": float(torch.cat(kls).mean()) if kls else None, "right_per_prompt": c,
           "samples": [(task.decode(prompts[i]), task.decode(responses_t[i]), float(right_t.view(-1)[i]))
                       for i in range(0, min(len(prompts), 8 * samples_per_prompt), samples_per_prompt)]}
    return out
