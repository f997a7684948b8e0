r"""Best-of-n sampling and reward over-optimisation (Gao, Schulman, Hilton 2022).

Best-of-n draws ``n`` responses from the SFT model and keeps the one the reward model
likes best. It needs no training. Its KL to the SFT model is usually reported with the
formula of Stiennon et al. 2020 (appendix) and Gao et al. 2022 (eq. 3),

.. math:: \mathrm{KL}_{bon} = \log n - \frac{n-1}{n},

but Beirami et al. 2024 (*Theoretical guarantees on the best-of-n alignment policy*)
proved that this is an upper bound, not the KL itself: it is reached only in the limit
where no single response has a sizeable probability. A policy that repeats its likeliest
answers (as a small model on a small language does) has a smaller true KL; the curves
here use the bound, as Gao et al. did.

Gao et al. fit the *gold* reward gain as a function of :math:`d = \sqrt{\mathrm{KL}}`:

.. math:: R_{bon}(d) = d\,(\alpha_{bon} - \beta_{bon}\, d), \qquad
          R_{RL}(d) = d\,(\alpha_{RL} - \beta_{RL} \log d).

Both rise, peak and fall: optimising a proxy too hard makes the true reward worse.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import count, require_finite, require_module
from ppo_lib.rlhf.model import GPT, ScalarModel, check_temperature, generate
from ppo_lib.rlhf.reward_model import score


def bon_kl(n: int) -> float:
    """``log n - (n - 1) / n``: an upper bound on the KL of best-of-n to the sampling policy (Beirami
    et al. 2024), the value Stiennon et al. 2020 and Gao et al. 2022 use for it."""
    n = count("n", n, 1)
    return math.log(n) - (n - 1) / n


@torch.no_grad()
def best_of_n_curve(sft: GPT, reward_model: ScalarModel, ns=(1, 2, 4, 8, 16, 32, 64), n_prompts: int = 48,
                    seed: int = 0, temperature: float = 1.0) -> dict:
    """Gold and proxy reward of best-of-n for each ``n`` in ``ns``.

    For every prompt, one pool of ``max(ns)`` samples is drawn once; best-of-n is
    evaluated on each of the ``max(ns) // n`` disjoint groups of ``n`` in that pool (an
    unbiased estimate that reuses the samples).
    """
    require_module("sft", sft, GPT, "the SFT language model (a GPT)")
    require_module("reward_model", reward_model, ScalarModel, "the reward model (a ScalarModel)")
    if isinstance(ns, (str, bytes)) or not hasattr(ns, "__iter__"):
        raise TypeError(f"ns={ns!r}: expected a list of whole numbers >= 1, e.g. (1, 2, 4, 8)")
    ns = sorted(count(f"ns[{i}]", n, 1) for i, n in enumerate(ns))  # 2.5 is an error, never 2
    if not ns:
        raise ValueError("ns=(): give at least one n, e.g. (1, 2, 4, 8)")
    n_prompts = count("n_prompts", n_prompts, 1)
    seed = count("seed", seed, 0, 2**63 - 1)
    temperature = check_temperature(temperature)
    N = ns[-1]
    dev = next(sft.parameters()).device
    prompts = [lang.PROMPTS[i % len(lang.PROMPTS)] for i in range(n_prompts)]
    pool_prompts = [p for p in prompts for _ in range(N)]
    gen = generate(sft, pool_prompts, temperature=temperature, generator=torch.Generator(dev).manual_seed(seed))
    proxy = score(reward_model, gen.tokens).cpu().view(n_prompts, N)
    # argmax would pick a NaN score as the best: an error instead
    require_finite(proxy, "the reward model's scores", " (a reward model that diverged?)")
    gold = lang.gold_rewards(gen.responses.cpu()).view(n_prompts, N)
    texts = np.array(gen.texts(), dtype=object).reshape(n_prompts, N)
    rows = []
    for n in ns:
        groups = N // n
        p = proxy[:, :groups * n].reshape(n_prompts, groups, n)
        g = gold[:, :groups * n].reshape(n_prompts, groups, n)
        best = p.argmax(-1, keepdim=True)
        best_idx = best.squeeze(-1)[:, 0]
        rows.append({"n": n, "kl": bon_kl(n), "gold": float(g.gather(-1, best).mean()),
                     "proxy": float(p.gather(-1, best).mean()),
                     "ungrammatical": float((g.gather(-1, best) == lang.INVALID_SCORE).float().mean()),
                     "samples": [str(texts[i, int(best_idx[i])]) for i in range(min(4, n_prompts))]})
    return {"rows": rows, "gold_sft": float(gold.mean()), "proxy_sft": float(proxy.mean())}


def fit_gao(kl, gold_gain, kind: str) -> tuple[float, float]:
    r"""Least-squares :math:`(\alpha, \beta)` of Gao et al.'s form through the origin:
    ``kind="bon"``: :math:`R = d(\alpha - \beta d)`; ``kind="rl"``: :math:`R = d(\alpha - \beta\log d)`,
    with :math:`d = \sqrt{KL}`. ``gold_gain`` is the gold reward minus the SFT model's."""
    d = np.sqrt(np.asarray(kl, dtype=np.float64))
    y = np.asarray(gold_gain, dtype=np.float64)
    if d.shape != y.shape or d.ndim != 1:
        raise ValueError(f"kl {d.shape} and gold_gain {y.shape}: expected two 1-d lists of the same length")
    for name, values in (("kl", d), ("gold_gain", y)):
        if not np.isfinite(values).all():  # a NaN point would be dropped silently, or NaN the fit
            raise ValueError(f"{name}={values.tolist() if name == 'gold_gain' else np.square(d).tolist()}: "
                             f"contains NaN or inf (or a negative KL); every point must be finite")
    keep = d > 0
    if keep.sum() < 2:
        raise ValueError("fit_gao: needs at least 2 points with KL > 0")
    d, y = d[keep], y[keep]
    if kind == "bon":
        X = np.stack([d, -d * d], axis=1)
    elif kind == "rl":
        X = np.stack([d, -d * np.log(d)], axis=1)
    else:
        raise ValueError(f"kind={kind!r}: must be 'bon' or 'rl'")
    (alpha, beta), *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(alpha), float(beta)


def gao_curve(d, alpha: float, beta: float, kind: str) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if kind == "bon":
        return d * (alpha - beta * d)
    return d * (alpha - beta * np.log(np.maximum(d, 1e-12)))
