# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 8 — PPO on a language model (RLHF)
#
# Most people who meet PPO today meet it inside RLHF: reinforcement learning from human
# feedback, the stage that turned pre-trained language models into InstructGPT and its
# successors. Nothing in it is new to you. The policy is a language model, an action is a
# token, an episode is one response, and the reward comes at the end — from a *reward model*
# that learned what people prefer. Everything else is chapters 3 and 5: GAE, the clipped
# surrogate, the clipped value loss. What *is* new is the danger: the reward model is only a
# proxy for the people, and a policy that optimises a proxy hard enough finds its holes.
#
# So this chapter trains everything itself, on a tiny language whose "human" we know exactly:
# a GPT of about 100 000 parameters, a reward model, and PPO — in a couple of minutes on a CPU.
# Because the truth is known, we can *measure* what the literature can only argue about.
#
# **Your time:** about 120 minutes to read, run, do the exercises and play with the widgets.
#
# **Learning objectives.** After this chapter you can:
#
# - Describe RLHF as reinforcement learning: the language model is the policy, a token is an action, a response is an episode.
# - Pre-train a tiny GPT on a language with a known gold reward, and gather the log-probabilities of its tokens (the shift by one).
# - Fit a reward model to preference pairs with the Bradley-Terry loss, and find the strings where it disagrees with the truth.
# - Build per-token rewards (a KL penalty to a frozen reference plus the score at the end), token-level GAE and whitening over a mask, and train PPO on them.
# - Explain the role of the KL coefficient beta, watch reward hacking happen when it is zero, and compare PPO with best-of-n on Gao's reward-versus-KL plot.

# %%
import json
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from ppo_lib.advantages import gae as library_gae
from ppo_lib.teaching.checks import (check_adaptive_kl_update, check_bradley_terry_loss, check_gather_logprobs,
                            check_masked_whiten, check_per_token_rewards)
from ppo_lib.course import REPO_ROOT
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.best_of_n import best_of_n_curve, fit_gao, gao_curve
from ppo_lib.rlhf.evaluate import evaluate_policy
from ppo_lib.rlhf.kl import kl_per_token
from ppo_lib.rlhf.model import generate, n_parameters, resolve_device
from ppo_lib.rlhf.ppo import TokenPPOConfig, token_values, train_ppo
from ppo_lib.rlhf.pretrain import pretrain, sample_report
from ppo_lib.rlhf.reward_model import RewardConfig, agreement, score, score_texts, train_reward_model
from ppo_lib.rlhf.token_advantages import token_gae
from ppo_lib.teaching.widgets import LiveFigure

torch.set_num_threads(1)
device = resolve_device("auto")  # a GPU when there is one; everything below also runs on the CPU
print(f"device: {device}")

# %% [markdown]
# ## 1. A language with a known truth
#
# Our "internet" is a language of reviews. A prompt names a thing; a response judges it in one
# to three clauses, each an optional *not*, up to two intensifiers and an adjective, and ends
# with "." or "!" and the end-of-sequence token `<eos>`:
#
# `<bos> the food was` | `very good but not really nice ! <eos>`
#
# Our "human" is a hidden **gold reward**: the mean over clauses of the adjective's polarity
# (+1, −1, or 0 for *ok*), flipped by *not*, and scaled by 1.25 per intensifier. Its maximum is
# 1.5 (*very very great !*). Anything ungrammatical, or unfinished, scores −2. In real RLHF
# nobody can compute this function — that is why a reward model is learned — but here it lets
# us grade every stage.

# %%
print(f"{lang.VOCAB_SIZE} tokens: {' '.join(lang.VOCAB)}")
print(f"prompts: {lang.PROMPTS}\n")
for words in lang.sample_texts(6, seed=3):
    response = words[lang.PROMPT_LEN:]
    print(f"{' '.join(words[1:lang.PROMPT_LEN]):15s} | {' '.join(response):45s} gold {lang.gold_reward(response):+.3f}")
print()
for text in ["very very great ! <eos>", "not bad . <eos>", "great great ! <eos>", "very good", "ok . <eos>"]:
    print(f"{text:25s} grammatical: {str(lang.is_grammatical(text)):5s}  gold {lang.gold_reward(text):+.3f}")

# %% [markdown]
# ## 2. Pre-training a tiny GPT
#
# The model is a decoder-only transformer (2 layers, width 64, 4 heads): token and position
# embeddings, blocks of causal self-attention and an MLP, a linear head over the vocabulary.
# The **causal mask** lets position $i$ attend to positions $\le i$ only, so the logits at
# position $i$ are the model's guess for token $i+1$, made without looking at it. Pre-training
# minimises the next-token cross-entropy on 20 000 sampled strings.
#
# This model plays two parts from now on: it is the **SFT model** that RLHF starts from, and a
# frozen copy of it is the **reference** $\pi_{ref}$ that the KL penalty measures against.
# The trained weights are cached in `.ppo_cache/` next to this notebook, keyed by every
# setting, so a restarted kernel loads them in a second.

# %%
sft = pretrain(device=device)
print(f"{n_parameters(sft.model):,} parameters; "
      + ("loaded from the cache" if sft.from_cache else f"trained in {sft.seconds:.0f} s")
      + f"; final loss {np.mean(sft.losses[-50:]):.3f}")
sft_report = sample_report(sft.model)
print(f"samples: {sft_report['grammatical']:.1%} grammatical, mean gold {sft_report['gold']:+.3f}")
for prompt, text, g in sft_report["samples"][:5]:
    print(f"  {prompt:15s} | {text:45s} gold {g:+.2f}")
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(sft.losses, lw=0.6)
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats/token)")
plt.show()

# %% [markdown]
# ### Exercise 8.1 — the log-probabilities of a response (the shift by one)
#
# PPO needs $\log\pi(a_t|s_t)$ for every response token. One forward pass of the whole
# sequence gives logits of shape `(B, T, V)`; the logits at position $i$ score token $i+1$.
# With a prompt of $P$ tokens, response token $t$ sits at position $P+t$ and is scored by the
# logits at position $P+t-1$:
#
# $$\log\pi(a_t|s_t) = \mathrm{log\_softmax}(z_{P+t-1})[a_t], \qquad t = 0, \dots, T-P-1.$$
#
# Write `gather_logprobs(logits, tokens, prompt_len)`: `logits` `(B, T, V)`, `tokens` `(B, T)`
# (long), return `(B, T - prompt_len)`. Keep it differentiable: PPO's ratio is built on it.

# %% nbgrader={"grade": false, "grade_id": "gather_logprobs", "locked": false, "schema_version": 3, "solution": true}
def gather_logprobs(logits, tokens, prompt_len):
    ### BEGIN SOLUTION
    logp = torch.log_softmax(logits[:, prompt_len - 1:-1], dim=-1)
    return logp.gather(-1, tokens[:, prompt_len:].unsqueeze(-1)).squeeze(-1)
    ### END SOLUTION


# %%
gather_logprobs = check_gather_logprobs(gather_logprobs)

# %% [markdown]
# With your function: the log-probabilities that `generate` recorded *while sampling*, token
# by token, must equal those of one teacher-forced pass over the finished sequences. If they
# did not, PPO's first ratio would not be 1 and the KL estimate would be off from the start.

# %%
gen = generate(sft.model, list(lang.PROMPTS) * 4, generator=torch.Generator(device).manual_seed(0))
with torch.no_grad():
    teacher_forced = gather_logprobs(sft.model(gen.tokens), gen.tokens, gen.prompt_len) * gen.mask
gap = (teacher_forced - gen.logprobs).abs().max().item()
print(f"largest difference between sampled and teacher-forced log-probs: {gap:.2e}")
assert gap < 1e-4

# %% [markdown]
# ## 3. A reward model learned from preferences
#
# People do not hand out scores; they compare. We show our "human" two SFT responses to the
# same prompt, and it prefers one with probability $\sigma\big((g_1 - g_2)/\tau\big)$, where
# $g$ is the gold reward and $\tau$ (0.25) the human's noise. A reward model $r_\phi$ — the SFT
# trunk with a scalar head, read at `<eos>` — is fitted to these labels by the
# **Bradley-Terry** likelihood (InstructGPT, eq. 1):
#
# $$\mathcal L(\phi) = -\frac1B\sum_b \log\sigma\big(r_\phi(x_b, y^{w}_b) - r_\phi(x_b, y^{l}_b)\big),$$
#
# where $y^w$ is the preferred ("chosen") response and $y^l$ the other one. Only differences of
# scores matter, so afterwards we shift the head's bias so that SFT samples score 0 on average
# (the choice of Huang et al. 2024's N+ implementation details; InstructGPT instead shifted it
# so that the labellers' demonstrations score 0 on average): a positive score then means
# "better than the SFT model".
#
# ### Exercise 8.2 — the Bradley-Terry loss
#
# Write `bradley_terry_loss(r_chosen, r_rejected)`: two tensors of shape `(B,)`, return the
# scalar loss above. Make it stable when the gap is large (what is $\log\sigma(-120)$ in
# float32 if you compute the sigmoid first?).

# %% nbgrader={"grade": false, "grade_id": "bradley_terry_loss", "locked": false, "schema_version": 3, "solution": true}
def bradley_terry_loss(r_chosen, r_rejected):
    ### BEGIN SOLUTION
    return -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()
    ### END SOLUTION


# %%
bradley_terry_loss = check_bradley_terry_loss(bradley_terry_loss)

# %% [markdown]
# **Predict first:** with 1000 noisy comparisons of mostly grammatical strings, how often will
# the reward model order a *fresh* pair the way the gold reward does: 60%, 75%, 95%?

# %%
reward = train_reward_model(sft, RewardConfig(n_pairs=1000))
with torch.no_grad():
    bt_yours = bradley_terry_loss(score(reward.model, reward.pairs.chosen), score(reward.model, reward.pairs.rejected))
print(("loaded from the cache" if reward.from_cache else f"trained in {reward.seconds:.0f} s")
      + f"; Bradley-Terry loss on its training pairs (your function): {bt_yours.item():.3f}")
rm_check = agreement(reward.model, sft.model, n_pairs=1000)
print(f"held-out: orders {rm_check['agreement']:.1%} of {rm_check['pairs_compared']} fresh pairs as gold does; "
      f"correlation of scores with gold {rm_check['correlation']:.2f}")

# %% [markdown]
# ### Where the proxy is wrong: its holes
#
# The reward model has only seen what the SFT model writes, which is nearly always
# grammatical. What does it say about strings it never saw? We take SFT samples, break them
# in a few typical ways (repeat the response, stack intensifiers, repeat an adjective, drop
# the ending) and list the ones the reward model likes *most* — with their gold scores.

# %%
def broken_variants(words):
    body = words[:-2]  # without the ending and <eos>
    adjectives = [w for w in body if w in lang.POLARITY]
    yield body + words[-2:-1] + body + words[-2:]                  # the response twice
    yield ["very"] * 4 + body[-1:] + words[-2:]                     # too many intensifiers
    if adjectives:
        yield body + [adjectives[-1]] * 2 + words[-2:]              # an adjective repeated
    yield body + [lang.EOS]                                         # no ending


base = generate(sft.model, list(lang.PROMPTS) * 40, generator=torch.Generator(device).manual_seed(5))
candidates = {}
for prompt, ids in zip(list(lang.PROMPTS) * 40, base.responses.tolist()):
    words = lang.decode(ids, specials=True).split()
    if not lang.is_grammatical(words):
        continue
    for variant in broken_variants(words):
        if len(variant) <= lang.MAX_RESPONSE_LEN:
            candidates[(prompt, " ".join(w for w in variant if w != lang.EOS))] = lang.gold_reward(variant)
keys = list(candidates)
proxies = []
for prompt in lang.PROMPTS:
    mine = [k for k in keys if k[0] == prompt]
    proxies += list(zip(mine, score_texts(reward.model, prompt, [k[1] for k in mine])))
holes = sorted(proxies, key=lambda kv: -kv[1])[:8]
print(f"{len(keys)} broken strings; the reward model's favourites:")
print(f"  {'prompt':15s} {'response':42s} {'proxy':>6s} {'gold':>6s}")
for (prompt, text), proxy in holes:
    print(f"  {prompt:15s} {text:42s} {proxy:+6.2f} {candidates[(prompt, text)]:+6.2f}")

# %% [markdown]
# Every string in that table is ungrammatical, so its gold score is −2, yet the proxy rates
# it above the average SFT sample (which scores 0). This is the raw material of reward
# hacking: a policy that is only told "maximise the proxy" will find such strings.

# %% [markdown]
# ## 4. PPO against the reward model
#
# ### The episode, the reward, the penalty
#
# A response of $L$ slots is an episode; step $t$ emits token $a_t$ from state $s_t$ (the prompt
# and the tokens so far). Slots after `<eos>` are padding, masked out of everything. Following
# Ziegler et al. (2019) and InstructGPT (eq. 2), the reward of each token is a **KL penalty**
# towards the frozen reference, and the reward model's score $R(x, y)$ arrives on the last real
# token (`<eos>`):
#
# $$r_t = -\beta\,\big(\log\pi_\theta(a_t|s_t) - \log\pi_{ref}(a_t|s_t)\big) + [\,t = t_{last}\,]\,R(x, y).$$
#
# Summed over the response, the penalty is $-\beta$ times a sample of
# $\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})$: the objective is "reward, minus $\beta$ times how far the
# policy drifted from the SFT model". That keeps the text fluent — and keeps the policy in the
# region where the reward model was trained. A response that never emits `<eos>` gets a fixed
# score of −1 instead of the reward model's (Huang et al. 2024), so the policy cannot dodge
# judgement by rambling.
#
# Two pitfalls of the big libraries' users, avoided here by construction: we sample with a
# temperature only — top-k or top-p sampling changes the distribution actually sampled, and the
# KL estimate built on $\log\pi_\theta$ then goes negative, which the policy exploits (TRL issues
# 925, 1161); and the score goes on the `<eos>` token itself, not on the padding slot after it
# (TRL issue 3750).
#
# ### Exercise 8.3 — per-token rewards
#
# Write `per_token_rewards(kl, scores, mask, beta)`: `kl` and `mask` are `(B, L)` (`mask` is 1.0
# on real tokens, `<eos>` included, 0.0 on padding), `scores` is `(B,)`. Return `(B, L)`:
# $-\beta\,\mathrm{kl}_t$ on real tokens, 0 on padding, and each row's score added on its *last
# real* token (slot $L-1$ when the response has no `<eos>`).

# %% nbgrader={"grade": false, "grade_id": "per_token_rewards", "locked": false, "schema_version": 3, "solution": true}
def per_token_rewards(kl, scores, mask, beta):
    ### BEGIN SOLUTION
    rewards = -beta * kl * mask
    last = mask.sum(dim=1).long() - 1
    rewards = rewards.clone()
    rewards[torch.arange(len(scores)), last] += scores
    return rewards
    ### END SOLUTION


# %%
per_token_rewards = check_per_token_rewards(per_token_rewards)

# %% [markdown]
# ### Advantages over tokens: the same GAE
#
# With these rewards, the advantages are chapter 3's GAE, run along the tokens of each
# response with $\gamma = 1$ and $\lambda = 0.95$ (TRL's defaults; Zheng et al. 2023): the
# episode ends after the last real token — no bootstrap — and the padding is cut off by the
# done flags. The library's `token_gae` is literally `ppo_lib.advantages.gae` on the transposed
# `(L, B)` arrays. Check it on one rollout, with the value model (which starts as a copy of the
# reward model, as in InstructGPT) and your reward function:

# %%
with torch.no_grad():
    lp = gather_logprobs(sft.model(gen.tokens), gen.tokens, gen.prompt_len) * gen.mask
    lp_ref = lp.clone()  # the policy *is* the reference before training: KL 0
    values = token_values(reward.model, gen.tokens, gen.prompt_len) * gen.mask
    rewards = per_token_rewards(kl_per_token(lp, lp_ref), score(reward.model, gen.tokens), gen.mask, 0.1)
adv, returns = token_gae(rewards, values, gen.mask, gamma=1.0, lam=0.95)
dones = torch.cat([gen.mask[:, 1:], torch.zeros_like(gen.mask[:, :1])], dim=1) == 0
next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1) * ~dones
by_hand = library_gae(rewards.T, values.T, next_values.T, dones.T, gamma=1.0, lam=0.95).T * gen.mask
print(f"token_gae vs the library's GAE on (L, B) arrays: max difference {(adv - by_hand).abs().max():.2e}")
assert torch.allclose(adv, by_hand, atol=1e-5)

# %% [markdown]
# ### Exercise 8.4 — whitening over a mask
#
# PPO normalises advantages (chapter 5). With padding, the mean and the standard deviation must
# be taken over the **real tokens only**, or the many zeros of the padding drag them. Write
# `masked_whiten(x, mask)`: `x`, `mask` `(B, L)`; return $(x - \mu)/\sigma$ with $\mu$ and the
# *unbiased* standard deviation $\sigma$ (divide by $n-1$, as `torch.std` does) over the $n$
# masked elements, $\sigma^2 + 10^{-8}$ under the square root, and 0 outside the mask. With a
# single masked element, only centre it.

# %% nbgrader={"grade": false, "grade_id": "masked_whiten", "locked": false, "schema_version": 3, "solution": true}
def masked_whiten(x, mask):
    ### BEGIN SOLUTION
    mask = mask.to(x.dtype)
    n = mask.sum()
    mean = (x * mask).sum() / n
    centred = (x - mean) * mask
    if n < 2:
        return centred
    var = (centred ** 2).sum() / (n - 1)
    return centred / torch.sqrt(var + 1e-8)
    ### END SOLUTION


# %%
masked_whiten = check_masked_whiten(masked_whiten)

# %% [markdown]
# ### Training
#
# Everything together is `ppo_lib.rlhf.ppo.train_ppo`; read its module top to bottom, it is
# one screen. Each iteration samples 64 responses, computes the rewards with *your*
# `per_token_rewards` and whitens with *your* `masked_whiten`, then runs 4 epochs of 2
# minibatches of the clipped losses of chapter 5 (`ppo_lib.losses.clipped_surrogate` and
# `clipped_value_loss`, applied to the real tokens). Four models are in memory: the policy,
# the frozen reference, the reward model and the value model.
#
# **Predict first:** with $\beta = 0.1$, where will the gold reward end, and how many nats of
# KL will the policy spend to get there?

# %%
config = TokenPPOConfig(beta=0.1)
print(config)
run = train_ppo(sft, reward, config, rewards_fn=per_token_rewards, whiten_fn=masked_whiten)
h = run.history
print(f"{len(h.gold)} iterations in {run.seconds:.0f} s ({run.tokens_generated / run.seconds:,.0f} response tokens/s)")

# %%
def plot_history(h, title=""):
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(h.proxy, label="proxy (reward model)")
    axes[0].plot(h.gold, label="gold (the 'human')")
    axes[0].set_title(f"reward {title}")
    axes[0].legend(fontsize="small")
    axes[1].plot(h.kl, color="tab:red")
    axes[1].set_title("KL(policy || reference), nats per response")
    axes[2].plot(np.array(h.ungrammatical) * 100, color="tab:gray")
    axes[2].set_title("ungrammatical samples (%)")
    for ax in axes:
        ax.set_xlabel("PPO iteration")
    fig.tight_layout()
    plt.show()


plot_history(h, "(beta = 0.1)")
before = evaluate_policy(sft.model, sft.model, reward.model)
after = evaluate_policy(run.policy, sft.model, reward.model)
print(f"{'':8s} {'gold':>7s} {'proxy':>7s} {'KL':>6s} {'ungrammatical':>14s} {'length':>7s}")
for name, ev in (("SFT", before), ("PPO", after)):
    print(f"{name:8s} {ev['gold']:+7.3f} {ev['proxy']:+7.3f} {ev['kl']:6.2f} {ev['ungrammatical']:14.1%} "
          f"{ev['length']:7.2f}")
print("\nsamples before -> after:")
for (p, t0, g0, _), (_, t1, g1, _) in zip(before["samples"][:6], after["samples"][:6]):
    print(f"  {p:15s} | {t0:40s} ({g0:+.2f})  ->  {t1:34s} ({g1:+.2f})")

# %% [markdown]
# The policy found what the reward model likes *and* the gold reward likes: strongly
# positive, grammatical answers, and (the length column) shorter ones than the SFT model's;
# section 5 reads the length of three seeds per $\beta$ from the file. The KL it paid is what its answers cost in likelihood under
# the SFT model, in nats per response.
#
# ### Options the big systems use
#
# - **An adaptive $\beta$** (Ziegler et al. 2019): instead of fixing $\beta$, steer the measured
#   KL towards a target with a proportional controller. The paper writes it as
#   $e_t = \mathrm{clip}\big((\mathrm{KL}_t - \mathrm{KL}_{target})/\mathrm{KL}_{target}, -0.2, 0.2\big)$,
#   $\beta_{t+1} = \beta_t\,(1 + K_\beta\, e_t)$ with a fixed gain $K_\beta = 0.1$. Its reference
#   code (openai/lm-human-preferences) and TRL's `AdaptiveKLController` replace the gain by
#   $n/H$: $\beta \leftarrow \beta\,(1 + e\,n/H)$, where $n$ is the number of responses behind
#   the measurement and $H$ a horizon (old TRL: target 6 nats, $H$ = 10 000): the step grows
#   with the number of responses measured. This library, and exercise 8.5, use the code's form.
#   Unlike chapter 6's rule, it moves $\beta$ smoothly and by at most $0.2\,n/H$ per step.
#   `TokenPPOConfig(adaptive_kl=True, kl_target=..., kl_horizon=...)`.
# - **PPO-ptx** (InstructGPT): add $\gamma_{ptx}$ times the pre-training log-likelihood to the
#   objective, so the policy keeps its language while it chases the reward.
#   `TokenPPOConfig(ptx_coef=...)`.
# - **The KL estimator in the reward**: $k_1 = \log\pi - \log\pi_{ref}$ per token (InstructGPT,
#   TRL's default; unbiased, can be negative), or $k_3 = e^{-k_1} - 1 + k_1$ (unbiased, never
#   negative), `TokenPPOConfig(kl_estimator="k3")`. "Never negative" makes $k_3$ look safer; as
#   a *reward* it is not. PPO treats the reward as a fixed number and raises or lowers the
#   probability of the sampled tokens in proportion to it, so what pulls the policy back is the
#   size of the penalty on those tokens. $k_1$ is first order in the log-ratio; $k_3 \approx
#   k_1^2/2$ is second order: a token with log-ratio 0.1 pays 0.005 instead of 0.1. Written out,
#   the expected gradient of a $k_3$ reward is $\nabla\mathrm{KL}(\pi\|\pi_{ref}) + \sum_y
#   \pi_{ref}(y)\nabla\log\pi(y)$ (at one position, $y$ running over the next token), and near the reference the two terms cancel to first order:
#   the penalty barely pulls until the policy is already far away. Section 5 measures what that
#   does. (Chapter 9 puts $k_3$ in the *loss*, as GRPO does, where it is differentiated: a
#   different estimator of a different gradient.)
#
# ### Exercise 8.5 — the adaptive KL controller
#
# Write `adaptive_kl_update(beta, kl, kl_target, n_steps, horizon)` returning the new $\beta$
# as a Python number (a float: the next cell rounds it with `round(beta, 5)`), in the
# reference code's form above: the clipped relative error scaled by `n_steps / horizon`
# (the paper's $K_\beta$ would be a fixed 0.1 in its place).

# %% nbgrader={"grade": false, "grade_id": "adaptive_kl_update", "locked": false, "schema_version": 3, "solution": true}
def adaptive_kl_update(beta, kl, kl_target, n_steps, horizon):
    ### BEGIN SOLUTION
    error = min(max(kl / kl_target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)
    ### END SOLUTION


# %%
adaptive_kl_update = check_adaptive_kl_update(adaptive_kl_update)

# %% [markdown]
# Your controller on a scripted sequence of measured KLs (target 6 nats, 64 responses per
# measurement, horizon 10 000, starting from $\beta = 0.2$): it rises while the KL is above
# target and falls below it, slowly — a horizon of 10 000 responses is long.

# %%
beta, trace = 0.2, []
for kl in [2, 4, 6, 9, 12, 12, 12, 8, 6, 3, 1, 1]:
    beta = adaptive_kl_update(beta, kl, 6.0, 64, 10_000)
    trace.append(round(beta, 5))
print(trace)

# %% [markdown]
# ### Exercise 8.6 — one PPO iteration, from rollout to update
#
# `train_ppo` above ran 80 times one function, `ppo_lib.rlhf.ppo.ppo_iteration`: the rollout, the
# rewards, the advantages and the update of one batch. Now write it yourself, from the pieces of
# this chapter (your `gather_logprobs`, `per_token_rewards` and `masked_whiten`, the library's
# `token_gae`, `kl_per_token`, `score` and `token_values`) and chapter 5's two clipped losses:
#
# `ppo_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng)`
#
# 1. **Roll out.** `prompts = lang.TASK.sample_prompts(rng, config.batch_size)`, then
#    `gen = generate(policy, prompts, temperature=config.temperature, generator=generator)`:
#    `gen.tokens` `(B, P + L)`, `gen.mask` `(B, L)`, `gen.has_eos` `(B,)`. Under `torch.no_grad()`:
#    the policy's and the reference's log-probs of the response tokens (times the mask), the
#    values `token_values(value_model, tokens, P)` (times the mask), and the scores: the reward
#    model's `score(reward_model, tokens, P)` where the response has an `<eos>`,
#    `config.missing_eos_score` where it has none. (The temperature is 1 throughout here.)
# 2. **Rewards**: the KL per token `kl_per_token(logp, ref_logp, config.kl_estimator)`, then
#    `per_token_rewards` with the `beta` you are given (with the adaptive controller it is no longer
#    `config.beta`).
# 3. **Advantages**: `token_gae` with `config.gamma` and `config.gae_lambda` gives the advantages and
#    the returns (the value targets); whiten the advantages over the mask if
#    `config.whiten_advantages`; the returns stay as they are.
# 4. **Update**: `config.epochs` times: draw a permutation,
#    `torch.randperm(config.batch_size, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))`,
#    and walk it in `perm.chunk(config.num_minibatches)` (the last chunk is smaller when the count
#    does not divide the batch). For each chunk, on its *real* tokens only: the ratio of the new
#    log-probs to the rollout's, the loss `-clipped_surrogate(ratio, advantages, config.clip_eps)`
#    plus `config.value_coef` times `clipped_value_loss(new values, rollout values, returns,
#    config.value_clip_range)`; then `optimizer.zero_grad()`, `backward()`, clip the global norm
#    of the policy's and the value model's gradients *together* to `config.max_grad_norm`,
#    `optimizer.step()`.
#
# Return a dict: `rewards`, `advantages`, `returns` (each `(B, L)`), and two diagnostics averaged
# over the gradient steps, each measured on the chunk before its step: `clip_fraction` (the share
# of real tokens with $|r - 1| >$ `config.clip_eps`) and `value_loss`. The checker runs your
# function and the library's on tiny random models from the same seeds, in six configurations
# (beta 0 and a `beta` that differs from `config.beta`, k3, both clip ranges, gamma and lambda,
# whitening off, 13 responses in 3 chunks, a binding gradient clip), and says which part differs
# first: the rewards, the advantages, the returns, the number of steps, the policy loss, the value
# loss, the clipping, the parameters after the update, or a diagnostic.

# %%
from ppo_lib.losses import clipped_surrogate, clipped_value_loss
from ppo_lib.teaching.checks import check_ppo_iteration


# %% nbgrader={"grade": false, "grade_id": "ppo_iteration", "locked": false, "schema_version": 3, "solution": true}
def ppo_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng):
    ### BEGIN SOLUTION
    P = lang.PROMPT_LEN
    prompts = lang.TASK.sample_prompts(rng, config.batch_size)
    gen = generate(policy, prompts, temperature=config.temperature, generator=generator)
    tokens, mask = gen.tokens, gen.mask
    with torch.no_grad():  # the rollout's numbers are constants of the update
        old_logp = gather_logprobs(policy(tokens), tokens, P) * mask
        ref_logp = gather_logprobs(ref(tokens), tokens, P) * mask
        old_values = token_values(value_model, tokens, P) * mask
        scores = torch.where(gen.has_eos, score(reward_model, tokens, P),
                             torch.tensor(config.missing_eos_score))
    rewards = per_token_rewards(kl_per_token(old_logp, ref_logp, config.kl_estimator), scores, mask, beta)
    advantages, returns = token_gae(rewards, old_values, mask, config.gamma, config.gae_lambda)
    if config.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    params = list(policy.parameters()) + list(value_model.parameters())
    fractions, value_losses = [], []
    for _ in range(config.epochs):
        shuffle = torch.Generator().manual_seed(int(rng.integers(2**31)))
        for idx in torch.randperm(config.batch_size, generator=shuffle).chunk(config.num_minibatches):
            real = mask[idx] > 0
            ratio = (gather_logprobs(policy(tokens[idx]), tokens[idx], P) - old_logp[idx]).exp()
            policy_loss = -clipped_surrogate(ratio[real], advantages[idx][real], config.clip_eps)
            new_values = token_values(value_model, tokens[idx], P)
            v_loss = clipped_value_loss(new_values[real], old_values[idx][real], returns[idx][real],
                                        config.value_clip_range)
            optimizer.zero_grad()
            (policy_loss + config.value_coef * v_loss).backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            fractions.append(((ratio[real] - 1).abs() > config.clip_eps).float().mean().item())
            value_losses.append(v_loss.item())
    return {"rewards": rewards, "advantages": advantages, "returns": returns,
            "clip_fraction": sum(fractions) / len(fractions), "value_loss": sum(value_losses) / len(value_losses)}
    ### END SOLUTION


# %%
ppo_iteration = check_ppo_iteration(ppo_iteration)

# %% [markdown]
# If the checker accepted your function, it is `train_ppo`'s loop body: everything else in
# `train_ppo` is set-up (four models, one Adam optimiser over the policy and the value model, the
# seeded generators) and logging. If it did not, its message names the first part that differs,
# and a hint when your answer matches one of the usual mistakes it knows (the shift by one, the
# sign of the KL, the score on the wrong token, GAE or whitening over the padding, a ratio against
# the wrong policy, an unclipped value loss, clipping each model's gradients apart, a reference
# that moves, and more).

# %% [markdown]
# ## 5. The KL coefficient, live: reward hacking at $\beta = 0$
#
# What happens as $\beta$ changes? A sweep of six values of $\beta$ with three seeds each takes
# several minutes, more than this chapter's budget, so `benchmarks/rlhf.py` ran it with exactly
# this chapter's settings and kept the results in a file (with its command, date and machine).
# The widget reads that file. Tick **run live** to train the selected $\beta$ here instead
# (about 20 s, seed 0; kept, so moving back is instant).
#
# **Predict first:** at $\beta = 0$ nothing holds the policy near the SFT model. What happens
# to the proxy, to the gold reward, to the grammar?

# %%
results_path = REPO_ROOT / "benchmarks" / "results" / "rlhf.json"
if not results_path.exists():
    raise FileNotFoundError(f"{results_path} is missing: run `.venv/bin/python benchmarks/rlhf.py` to make it")
bench = json.loads(results_path.read_text())
print(f"from {results_path.name}: `{bench['command']}`, {bench['date']}, {bench['machine']['platform']}")
assert bench["settings"]["ppo"]["iterations"] == config.iterations and bench["settings"]["ppo"]["lr"] == config.lr
sweep = {float(b): runs for b, runs in bench["sweep"].items()}
betas = sorted(sweep)
sft_length = before["length"]  # the SFT model's mean response length, tokens with <eos> (evaluated above)
live_runs = {}


def beta_view(beta, live):
    """The data the widget shows for one beta: the file's seeds, or a live run (seed 0)."""
    if live:
        if beta not in live_runs:
            r = train_ppo(sft, reward, TokenPPOConfig(beta=beta, seed=0), progress=False)
            live_runs[beta] = {"seed": 0, "history": r.history.to_dict(),
                               "final": evaluate_policy(r.policy, sft.model, reward.model)}
        runs = [live_runs[beta]]
    else:
        runs = sweep[beta]
    finals = {k: float(np.mean([r["final"][k] for r in runs]))
              for k in ("gold", "proxy", "kl", "ungrammatical", "length")}
    return {"beta": beta, "live": live, "runs": runs, "final": finals,
            "samples": [s[1] for s in runs[0]["final"]["samples"][:4]]}


def draw_beta(view, fig):
    ax_f, ax_t, ax_l = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1.1, 0.8]})
    for b in betas:  # the frontier from the file: final KL vs gold and proxy, mean of the seeds
        kl = np.mean([r["final"]["kl"] for r in sweep[b]])
        ax_f.scatter(kl, np.mean([r["final"]["gold"] for r in sweep[b]]), color="tab:orange", s=25)
        ax_f.scatter(kl, np.mean([r["final"]["proxy"] for r in sweep[b]]), color="tab:blue", s=25)
        ax_f.annotate(f"{b:g}", (kl, np.mean([r["final"]["gold"] for r in sweep[b]])), fontsize=7,
                      xytext=(3, -9), textcoords="offset points")
    f = view["final"]
    ax_f.scatter(f["kl"], f["gold"], s=160, facecolors="none", edgecolors="k", lw=1.5)
    ax_f.scatter(f["kl"], f["proxy"], s=160, facecolors="none", edgecolors="k", lw=1.5)
    ax_f.scatter([], [], color="tab:orange", label="gold")
    ax_f.scatter([], [], color="tab:blue", label="proxy")
    ax_f.set_xscale("symlog", linthresh=1.0)
    ax_f.set_xlabel("KL to the SFT model (nats)")
    ax_f.set_title("end of training, one point per beta (labels)")
    ax_f.legend(fontsize="small", loc="lower left")
    for r in view["runs"]:
        ax_t.plot(r["history"]["proxy"], color="tab:blue", lw=1)
        ax_t.plot(r["history"]["gold"], color="tab:orange", lw=1)
        ax_t.plot(-2 + 2 * np.array(r["history"]["ungrammatical"]), color="tab:gray", lw=0.8, ls=":")
    ax_t.set_ylim(-2.2, 3.8)
    ax_t.set_xlabel("PPO iteration")
    ax_t.set_title(f"beta = {view['beta']:g}: proxy (blue), gold (orange), ungrammatical (dotted, -2 + 2 x rate)")
    ax_t.title.set_fontsize(8)
    for r in view["runs"]:
        ax_l.plot(r["history"]["length"], color="tab:purple", lw=1)
    ax_l.axhline(sft_length, color="gray", ls="--", lw=0.8, label=f"SFT model ({sft_length:.1f})")
    ax_l.set_xlabel("PPO iteration")
    ax_l.set_title("response length (tokens, <eos> included)", fontsize=8)
    ax_l.legend(fontsize="small")
    fig.tight_layout()


def describe_beta(view):
    f = view["final"]
    source = "live run, seed 0" if view["live"] else f"{len(view['runs'])} seeds from the file"
    samples = "; ".join(f"<code>{s}</code>" for s in view["samples"])
    return (f"<b>beta = {view['beta']:g}</b> ({source}): gold {f['gold']:+.2f}, proxy {f['proxy']:+.2f}, "
            f"KL {f['kl']:.1f} nats, ungrammatical {f['ungrammatical']:.0%}, length {f['length']:.1f} tokens"
            f"<br>samples: {samples}")


beta_controls = {"beta": widgets.SelectionSlider(options=betas, value=0.0, description="beta",
                                                 continuous_update=False),
                 "live": widgets.Checkbox(value=False, description="run live")}
beta_explorer = LiveFigure(beta_controls, beta_view, draw_beta, describe_beta, figsize=(14, 3.6), cache=True)
display(beta_explorer)

# %%
table = {b: beta_view(b, False)["final"] for b in betas}
hacked = {b: sum(r["final"]["gold"] < before["gold"] for r in sweep[b]) for b in betas}
print(f"{'beta':>6s} {'gold':>7s} {'proxy':>7s} {'KL':>7s} {'ungrammatical':>14s} {'length':>7s} "
      f"{'seeds below SFT gold':>21s}")
for b, f in table.items():
    print(f"{b:6g} {f['gold']:+7.2f} {f['proxy']:+7.2f} {f['kl']:7.1f} {f['ungrammatical']:14.0%} {f['length']:7.2f} "
          f"{hacked[b]:>14d} of {len(sweep[b])}")
print(f"(means over the file's seeds; the SFT model: gold {before['gold']:+.2f}, proxy {before['proxy']:+.2f}, "
      f"length {sft_length:.2f})")
best_beta = max(table, key=lambda b: table[b]["gold"])
print(f"best mean gold at beta = {best_beta:g}; highest mean proxy at beta = "
      f"{max(table, key=lambda b: table[b]['proxy']):g}")
lengths = {b: [r["final"]["length"] for r in sweep[b]] for b in betas}
print("final length per seed: " + "; ".join(f"beta {b:g}: " + ", ".join(f"{x:.2f}" for x in lengths[b])
                                            for b in betas))

# what the text below says, checked against the file
proxies = [table[b]["proxy"] for b in betas]
assert table[0.0]["proxy"] > max(proxies) - 0.15 and hacked[0.0] == 1
assert all(hacked[b] == 0 for b in betas if b > 0)
assert max(lengths[0.1] + lengths[0.3]) <= 5.0 < sft_length - 2
largest_other_kl = max(r["final"]["kl"] for b in betas if b > 0 for r in sweep[b])
assert all(r["final"]["kl"] > largest_other_kl for r in sweep[0.0])

# %% [markdown]
# Read the table from both ends. A large $\beta$ pins the policy to the SFT model: a small KL
# and a small gain. A moderate $\beta$ buys most of the gold reward for a few nats. At
# $\beta = 0$ the proxy ends within 0.15 of the highest in the table, but in one seed of
# three the gold reward ended *below the SFT model's*: the policy left the grammar, where the
# reward model was never trained, and settled on strings the reward model scores well and the
# "human" scores −2. Look at the samples under the widget. The two seeds that did not
# collapse within the 80 iterations had still drifted further than any run with a penalty
# (every $\beta = 0$ run has a larger KL than the largest at $\beta > 0$).
#
# The length column (and the widget's right panel) answers a question the reward never asked.
# With $\beta$ = 0.1 or 0.3, every seed's answers got shorter: at most 5 tokens with `<eos>`,
# against the SFT model's 7.5 — one short, strongly positive clause, like the samples under
# the widget. On this task that is what the gold reward wants too (it averages over clauses,
# and its maximum is the single clause *very very great !*), so here the shortening is not a
# hack. The final lengths of every seed are printed under the table; in real RLHF, where
# longer answers tend to be preferred by labellers and reward models, the same column is how
# length hacking is caught.

# %% [markdown]
# ### Is the collapse luck, or a matter of time?
#
# One seed of three is not a rate. `benchmarks/rlhf.py` also ran $\beta = 0$ on the same three
# seeds for three times as long (its first 80 iterations are the sweep's runs, as the cell
# checks) and recorded, for each seed, the first iteration from which the rollouts' gold stays
# below the SFT model's to the end.

# %%
collapse = bench["collapse"]
n_long = collapse["iterations"]
print(f"beta 0, {n_long} iterations ({n_long // config.iterations}x the sweep's); the SFT model's gold "
      f"{collapse['gold_sft']:+.3f}")
print(f"{'seed':>4s} {'gold below SFT from iteration':>30s} {'final gold':>11s} {'proxy':>6s} {'KL':>5s} "
      f"{'ungrammatical':>14s}")
for row, r in zip(collapse["rows"], collapse["runs"]):
    first = row["stays_below_sft_from"]
    print(f"{row['seed']:4d} {('never' if first is None else str(first)):>30s} {row['final_gold']:+11.2f} "
          f"{row['final_proxy']:+6.2f} {row['final_kl']:5.1f} {r['final']['ungrammatical']:14.0%}")
fig, ax = plt.subplots(figsize=(8, 2.8))
for r in collapse["runs"]:
    ax.plot(r["history"]["gold"], lw=1, label=f"seed {r['seed']}")
ax.axhline(collapse["gold_sft"], color="gray", ls="--", lw=0.8, label="SFT model")
ax.axvline(config.iterations, color="k", ls=":", lw=0.8, label="the sweep's budget")
ax.set_xlabel("PPO iteration")
ax.set_ylabel("gold reward (rollouts)")
ax.set_title("beta = 0, three times as long")
ax.legend(fontsize="small", ncol=2)
plt.show()
# the long runs are the sweep's runs continued: the same seed gives the same first 80 iterations
for r in collapse["runs"]:
    same_seed = next(s for s in sweep[0.0] if s["seed"] == r["seed"])
    assert r["history"]["gold"][:config.iterations] == same_seed["history"]["gold"]
firsts = [row["stays_below_sft_from"] for row in collapse["rows"]]
# what the text below says: every seed collapsed within the long run; within 80 iterations only some
assert all(f is not None for f in firsts)
assert sum(f < config.iterations for f in firsts) == hacked[0.0] and 0 < hacked[0.0] < len(firsts)
assert max(firsts) > 3 * min(firsts)
for row, r in zip(collapse["rows"], collapse["runs"]):
    p, first = r["history"]["proxy"], row["stays_below_sft_from"]
    assert np.mean(p[max(first - 10, 0):first]) > 2.5 and np.mean(p[-10:]) > 2.5

# %% [markdown]
# Every seed collapsed, at very different times: the iterations printed differ by more than a
# factor of three, and two of the three seeds looked healthy at iteration 80. Seed 1 fell only
# part of the way (half its final answers are ungrammatical). So on this task, with nothing
# pulling the policy back, hacking is a matter of time, and *when* is a matter of the seed: a
# run that is fine at the end of its budget has not shown that it is safe. Nothing in the proxy
# warned us — it stays near its top through the fall (the cell checks: over the
# 10 iterations before the fall and over the last 10, its mean stays above 2.5). Only the gold reward shows the collapse, and a real
# system does not have one.
#
# Hence the KL term of PPO-based RLHF: InstructGPT and TRL's PPO trainer keep it, and practice
# watches samples, length and perplexity, not just the reward. Not every recipe keeps it, though:
# when the reward is a program that checks the answer (a verifier, chapter 10) rather than a
# learned model with holes, many drop it. TRL's GRPO trainer defaults to $\beta = 0$, and DAPO
# (Yu et al. 2025) removes the KL term, arguing that a long chain of thought must be allowed to
# move far from the starting model.

# %% [markdown]
# ### A KL penalty is not early stopping here
#
# Gao et al. (2022) found that, in their experiments, a KL penalty acts like early stopping: it
# does not reach a better gold reward at a given KL, it only halts the policy sooner on the same
# path. The file lets us test that on our task: stop each $\beta = 0$ run where it first
# reaches the KL at which $\beta = 0.3$ ends, and compare the gold there with $\beta = 0.3$'s.

# %%
# Gao et al. (2022): "a KL penalty acts like early stopping". If it did, a beta-0 run stopped when it
# reaches the KL where beta 0.3 ends would have about beta 0.3's gold. From the file, seed by seed:
kl_end = float(np.mean([r["final"]["kl"] for r in sweep[0.3]]))
gold_end = [r["final"]["gold"] for r in sweep[0.3]]
print(f"beta 0.3 ends at KL {kl_end:.2f} (mean of its seeds' final evaluations), gold "
      + ", ".join(f"{g:+.2f}" for g in gold_end) + " (seeds " + ", ".join(str(r["seed"]) for r in sweep[0.3]) + ")")
print(f"{'beta 0, seed':>12s} {'first iteration at KL >= ' + format(kl_end, '.2f'):>28s} {'its KL':>7s} "
      f"{'gold there':>11s} {'gold, 5 iterations around':>26s}")
gold_on_the_way, gold_at_the_kl = [], []
for r in sweep[0.0]:
    kl, g = np.array(r["history"]["kl"]), np.array(r["history"]["gold"])
    i = int(np.argmax(kl >= kl_end))
    assert kl[i] >= kl_end  # every beta-0 run passes that KL
    around = float(np.mean(g[max(i - 2, 0):i + 3]))
    gold_on_the_way.append(around)
    gold_at_the_kl.append(float(g[i]))
    print(f"{r['seed']:12d} {i:28d} {kl[i]:7.2f} {g[i]:+11.2f} {around:+26.2f}")
# the same measurement for beta 0.3: its rollouts' gold over its last 5 iterations
gold_end_rollouts = [float(np.mean(r["history"]["gold"][-5:])) for r in sweep[0.3]]
print("beta 0.3, rollouts' gold over its last 5 iterations: " + ", ".join(f"{g:+.2f}" for g in gold_end_rollouts))
# what the text below says: at that KL every beta-0 seed had less gold than every beta-0.3 seed at its end,
# measured either way (one iteration or five around it; beta 0.3's final evaluation or its last 5 iterations)
assert max(gold_at_the_kl + gold_on_the_way) < min(gold_end + gold_end_rollouts)

# %% [markdown]
# Early stopping would have been far worse: at the same KL, every unpenalised run had less gold
# than every $\beta = 0.3$ run at its end, by either measure (the gold of one rollout batch of 64
# is noisy, hence the five-iteration average beside it). The penalty does not just stop the
# policy earlier on the same path; it changes the path. One reading (not measured here): the
# penalty is charged on every token, so a change that moves a token far from the reference
# without raising the reward costs reward; without it, the first nats go wherever the proxy's
# gradient points. This is a
# finding on a 100 000-parameter toy, not a refutation of Gao et al.'s much larger models —
# but it is why "just stop early" is no substitute for the penalty here.

# %% [markdown]
# ### $k_3$ in the reward: a weaker leash
#
# Section 4 argued that $k_3$, put in the reward, barely pulls near the reference. The file has
# the same PPO with $k_3$ in place of $k_1$, at three values of $\beta$ and on the same seeds
# (the KL column is always measured the same way, as the $k_1$ sum over the response):

# %%
k3_runs = {float(b): runs for b, runs in bench["k3"]["runs"].items()}
print("k1 (the sweep) and k3 as the per-token KL in the reward, the same seeds; KL measured as the k1 sum:")
print(f"{'beta':>5s} {'estimator':>9s} {'gold':>7s} {'proxy':>7s} {'KL':>6s} {'ungrammatical':>14s} {'length':>7s}")
k_table = {}
for b in sorted(k3_runs):
    for name, runs in (("k1", sweep[b]), ("k3", k3_runs[b])):
        k_table[b, name] = {k: float(np.mean([r["final"][k] for r in runs]))
                            for k in ("gold", "proxy", "kl", "ungrammatical", "length")}
        f = k_table[b, name]
        print(f"{b:5g} {name:>9s} {f['gold']:+7.2f} {f['proxy']:+7.2f} {f['kl']:6.2f} {f['ungrammatical']:14.0%} "
              f"{f['length']:7.2f}")
# what the text below says: at every beta, every k3 seed ended further from the SFT model than every k1
# seed; k3 at beta 1 spent more KL than k1 at beta 0.3, less than k1 at beta 0.1; no k3 run collapsed
for b in k3_runs:
    assert min(r["final"]["kl"] for r in k3_runs[b]) > max(r["final"]["kl"] for r in sweep[b])
assert k_table[0.3, "k1"]["kl"] < k_table[1.0, "k3"]["kl"] < k_table[0.1, "k1"]["kl"]
assert all(r["final"]["gold"] > before["gold"] + 0.9 and r["final"]["ungrammatical"] < 0.05
           for runs in k3_runs.values() for r in runs)
print("KL of k3 over k1's, same beta: " + ", ".join(f"beta {b:g}: {k_table[b, 'k3']['kl'] / k_table[b, 'k1']['kl']:.1f}x"
                                                     for b in sorted(k3_runs)))
cut = {name: k_table[0.1, name]["kl"] / k_table[1.0, name]["kl"] for name in ("k1", "k3")}
print(f"beta 0.1 -> 1 (tenfold) divides the KL by {cut['k1']:.1f} with k1, by {cut['k3']:.1f} with k3")
assert cut["k3"] < cut["k1"] / 2 and k_table[1.0, "k3"]["gold"] > k_table[1.0, "k1"]["gold"]

# %% [markdown]
# At every $\beta$, every $k_3$ seed ended further from the SFT model than every $k_1$ seed:
# with $k_3$, $\beta = 1$ spent more nats than $k_1$ at $\beta = 0.3$, fewer than at $\beta = 0.1$.
# The same number no longer means the same leash, and raising it buys much less: going from
# $\beta = 0.1$ to 1 divided $k_3$'s KL by less than half as much as $k_1$'s (printed). Within 80 iterations no
# $k_3$ run collapsed (every seed's gold is at least 0.9 above the SFT model's), and on this task,
# where $k_1$ at $\beta = 1$ held the policy back from gold it could have had, the looser leash
# even scored higher there. That is not the estimator being better: it is a smaller effective
# $\beta$. Use $k_3$ in the reward only knowing that it is a weaker regulariser, and tune $\beta$
# for it separately.

# %% [markdown]
# ### Exercise 8.7 — diagnose three runs
#
# In a real system there is no gold reward: you read the logged curves and decide whether a run is
# learning or going wrong. `benchmarks/rlhf_diagnosis.py` ran three PPO runs of 80 iterations from
# this chapter's SFT model, one seed each, and logged the proxy, the gold reward, the KL, the mean
# length, the ungrammatical share and the share of *distinct* responses among the 64 of each batch.
# One is healthy, one hacked its reward model, one collapsed. Below they are shuffled under the
# ids X, Y and Z. **Predict first:** which curve tells a hacked run from a healthy one, if you may
# not look at the gold reward? And which tells a collapse from a hack?

# %%
from ppo_lib.teaching.checks import check_rlhf_diagnosis
from ppo_lib.teaching.checks.rlhf_diagnosis import VERDICTS, diagnosis_curves, signature_holds

diag_path = REPO_ROOT / "benchmarks" / "results" / "rlhf_diagnosis.json"
if not diag_path.exists():
    raise FileNotFoundError(f"{diag_path} is missing: run `.venv/bin/python benchmarks/rlhf_diagnosis.py` to make it")
diag = json.loads(diag_path.read_text())
print(f"from {diag_path.name}: `{diag['command']}`, {diag['date']}, {diag['machine']['platform']}")
curves = diagnosis_curves(diag)
panels = [("proxy", "proxy (reward model)"), ("gold", "gold"), ("kl", "KL to SFT (nats)"),
          ("length", "length (tokens)"), ("ungrammatical", "ungrammatical share"), ("distinct", "distinct share")]
fig, axes = plt.subplots(1, 6, figsize=(15, 2.8))
for ax, (key, title) in zip(axes, panels):
    for rid, h in curves.items():
        ax.plot(h[key], lw=1, label=f"run {rid}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("iteration", fontsize=8)
axes[0].legend(fontsize="small")
if max(max(h["kl"]) for h in curves.values()) > 20:
    axes[2].set_yscale("symlog", linthresh=10)
fig.tight_layout()
plt.show()
print(f"{'run':4s}" + "".join(f"{key:>15s}" for key, _ in panels) + "   (first iteration -> mean of the last 20)")
for rid, h in curves.items():
    print(f"{rid:4s}" + "".join(f"{h[k][0]:6.2f} -> {np.mean(h[k][-20:]):5.2f}" for k, _ in panels))

# %% [markdown]
# Make `diagnosis()` return a dict `{run id: verdict}` for the runs X, Y and Z, each verdict one of
# the three printed below. The checker says, run by run, whether you are right, and if not what
# the verdict you named would look like.

# %%
for verdict, looks in VERDICTS.items():
    print(f"{verdict!r:17s} {looks}")


# %% nbgrader={"grade": false, "grade_id": "diagnosis", "locked": false, "schema_version": 3, "solution": true}
def diagnosis():
    ### BEGIN SOLUTION
    return {"X": "reward hacking", "Y": "collapse", "Z": "healthy"}
    ### END SOLUTION


# %%
diagnosis = check_rlhf_diagnosis(diagnosis)

# %% [markdown]
# Once you have tried: what each run shows, checked against the file in the next cell.
#
# - **Healthy** (beta 0.1, lr $10^{-3}$: the run of section 4). Proxy and gold rise together and
#   stay up; the KL settles at a few nats; the answers stay grammatical. The distinct share falls
#   too: the policy converges on a handful of short, strongly positive answers, which is what the
#   gold reward asks for here, so a low diversity alone is not the alarm.
# - **Reward hacking** (beta 0, the same reward model). The proxy ends *higher* than the healthy
#   run's, while the gold falls to the floor of −2 and the answers become ungrammatical strings in
#   the reward model's holes (section 3); with no penalty the KL grows far beyond the healthy run's.
#   Without the gold column, the tells are the KL, the length and the samples.
# - **Collapse** (beta 0.1, lr $3\times10^{-2}$, thirty times the chapter's). Within the first
#   iterations (almost) every response is the same (here the empty answer, `<eos>` alone), the
#   length drops, and the proxy stays far below a healthy run's: the policy did not find a better
#   answer, it lost the language. The cure is a
#   smaller step (the learning rate, the clip range, the gradient clip), not a larger $\beta$.

# %%
holds = signature_holds(diag)
for name, run in diag["runs"].items():
    h = run["history"]
    print(f"{name:9s} ({run['what']}): proxy {np.mean(h['proxy'][-20:]):+.2f}, gold {np.mean(h['gold'][-20:]):+.2f}, "
          f"KL {np.mean(h['kl'][-20:]):.1f}, length {np.mean(h['length'][-20:]):.1f}, ungrammatical "
          f"{np.mean(h['ungrammatical'][-20:]):.0%}, distinct {np.mean(h['distinct'][-20:]):.2f} (last 20 iterations); "
          f"last samples: {run['samples_last'][:2]}")
assert holds == {"healthy": True, "hacked": True, "collapsed": True}, holds
runs_h = {name: run["history"] for name, run in diag["runs"].items()}
assert np.mean(runs_h["healthy"]["distinct"][-20:]) < runs_h["healthy"]["distinct"][0]  # "the distinct share falls too"
assert np.mean(runs_h["hacked"]["gold"][-20:]) < -1.9  # "the gold falls to the floor of -2"
# "without the gold column, the tells are the KL, the length and the samples": longer answers than the healthy run's
assert np.mean(runs_h["hacked"]["length"][-20:]) > np.mean(runs_h["healthy"]["length"][-20:])
assert np.mean(runs_h["collapsed"]["length"][-20:]) == 1.0 and not any(diag["runs"]["collapsed"]["samples_last"])

# %% [markdown]
# ## 6. Over-optimisation: best-of-n and PPO on one plot
#
# The simplest way to use a reward model needs no training at all: draw $n$ responses from the
# SFT model and keep the one with the highest proxy score. Its KL to the SFT model is usually
# given as $\log n - (n-1)/n$ (Stiennon et al. 2020, Gao et al. 2022), but Beirami et al. (2024)
# proved that this is an *upper bound* on the KL, reached only when no single response has a
# sizeable probability; a model that often repeats its likeliest answers, as ours does, spends
# fewer nats than that. We place best-of-n at the bound, as Gao et al. did, and keep in mind
# that its true KL is smaller. Gao, Schulman and Hilton (2022) measured
# the gold reward of both best-of-n and RL against $d = \sqrt{\mathrm{KL}}$ and found the same
# shape: it rises, peaks and falls, while the proxy keeps rising. They fitted
# $R_{bon}(d) = d(\alpha - \beta d)$ and $R_{RL}(d) = d(\alpha - \beta\log d)$ to the gold gain.
#
# The slider trains reward models on fewer or more preference pairs (each is trained once and
# cached). **Predict first:** does a reward model trained on 300 pairs peak earlier or later
# than one trained on 2000?

# %%
ppo_points = [(kl, g) for r in sweep[0.0] for kl, g in zip(r["history"]["kl"], r["history"]["gold"])]
reward_models = {1000: reward}


def overoptimisation(n_pairs):
    if n_pairs not in reward_models:
        reward_models[n_pairs] = train_reward_model(sft, RewardConfig(n_pairs=n_pairs), progress=False)
    curve = best_of_n_curve(sft.model, reward_models[n_pairs].model, ns=(1, 2, 4, 8, 16, 32, 64), n_prompts=48)
    return {"n_pairs": n_pairs, "curve": curve}


def draw_overoptimisation(view, fig):
    ax = fig.subplots()
    rows, g0, p0 = view["curve"]["rows"], view["curve"]["gold_sft"], view["curve"]["proxy_sft"]
    d = np.sqrt([r["kl"] for r in rows])
    gold_gain, proxy_gain = np.array([r["gold"] for r in rows]) - g0, np.array([r["proxy"] for r in rows]) - p0
    ax.plot(d, proxy_gain, "o-", color="tab:blue", label="best-of-n, proxy")
    ax.plot(d, gold_gain, "o-", color="tab:orange", label="best-of-n, gold")
    for r, x in zip(rows, d):
        ax.annotate(f"n={r['n']}", (x, gold_gain[rows.index(r)]), fontsize=7, xytext=(2, -10), textcoords="offset points")
    alpha, beta_ = fit_gao([r["kl"] for r in rows], gold_gain, "bon")
    xs = np.linspace(0, max(d.max(), 1e-3) * 1.05, 100)
    ax.plot(xs, gao_curve(xs, alpha, beta_, "bon"), color="tab:orange", ls="--", lw=1,
            label=f"fit d(a - b d): a={alpha:.2f}, b={beta_:.2f}")
    if view["n_pairs"] == 1000:  # PPO at beta 0 used this reward model
        kl, g = np.array(ppo_points).T
        keep = kl < 2 * d.max() ** 2
        ax.scatter(np.sqrt(np.maximum(kl[keep], 0)), g[keep] - g0, s=6, color="tab:green", alpha=0.5,
                   label="PPO, beta 0, every iteration (3 seeds)")
        a_rl, b_rl = fit_gao(np.maximum(kl[keep], 0), g[keep] - g0, "rl")
        xs_rl = np.linspace(1e-3, np.sqrt(np.maximum(kl[keep], 0)).max(), 100)
        ax.plot(xs_rl, gao_curve(xs_rl, a_rl, b_rl, "rl"), color="tab:green", ls="--", lw=1,
                label=f"fit d(a - b log d): a={a_rl:.2f}, b={b_rl:.2f}")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel("sqrt(KL to the SFT model)")
    ax.set_ylabel("gain over the SFT model")
    ax.set_title(f"reward model trained on {view['n_pairs']} preference pairs")
    ax.legend(fontsize="small", loc="upper left")


def describe_overoptimisation(view):
    rows = view["curve"]["rows"]
    best = max(rows, key=lambda r: r["gold"])
    return (f"<b>{view['n_pairs']} pairs</b>: gold peaks at n = {best['n']} ({best['gold']:+.2f}, KL {best['kl']:.2f}); "
            f"at n = {rows[-1]['n']}: gold {rows[-1]['gold']:+.2f}, proxy {rows[-1]['proxy']:+.2f}")


pairs_slider = {"n_pairs": widgets.SelectionSlider(options=[300, 600, 1000, 2000], value=1000,
                                                   description="pairs", continuous_update=False)}
overopt_explorer = LiveFigure(pairs_slider, overoptimisation, draw_overoptimisation, describe_overoptimisation,
                              figsize=(8, 3.8), cache=True)
display(overopt_explorer)

# %%
rows = overopt_explorer.data["curve"]["rows"]
print(f"{'n':>4s} {'KL':>6s} {'gold':>7s} {'proxy':>7s}")
for r in rows:
    print(f"{r['n']:4d} {r['kl']:6.2f} {r['gold']:+7.2f} {r['proxy']:+7.2f}")
print(f"\nPPO (beta 0.1, above) reached gold {after['gold']:+.2f} at KL {after['kl']:.1f}; "
      f"best-of-{rows[-1]['n']} reaches {rows[-1]['gold']:+.2f} at KL {rows[-1]['kl']:.1f}")

# %%
# PPO's frontier from the file: each beta > 0 at its seeds' mean final KL and mean gold gain over the SFT
# model, starting from the SFT model itself (KL 0, gain 0: the limit of a huge beta)
ppo_frontier = sorted([(0.0, 0.0)] + [(float(np.mean([r["final"]["kl"] for r in sweep[b]])),
                                       float(np.mean([r["final"]["gold"] for r in sweep[b]])) - before["gold"])
                                      for b in betas if b > 0])
bon_file = bench["best_of_n"]["1000"]  # the same reward model settings as the sweep's (1000 pairs)
print("gold gain over the SFT model at the same KL (best-of-n at its KL bound; PPO interpolated between its betas):")
gaps = {}
for r in bon_file["rows"][1:]:
    if r["kl"] > ppo_frontier[-1][0]:
        print(f"  KL {r['kl']:4.2f}: best-of-{r['n']:<3d} beyond PPO's largest KL ({ppo_frontier[-1][0]:.2f}), not compared")
        continue
    ppo_gain = float(np.interp(r["kl"], [t[0] for t in ppo_frontier], [t[1] for t in ppo_frontier]))
    gaps[r["n"]] = r["gold"] - bon_file["gold_sft"] - ppo_gain
    print(f"  KL {r['kl']:4.2f}: best-of-{r['n']:<3d} {r['gold'] - bon_file['gold_sft']:+.2f}   PPO {ppo_gain:+.2f}"
          f"   best-of-n ahead by {gaps[r['n']]:+.2f}")
print("PPO's frontier (KL, gain): " + ", ".join(f"({k:.2f}, {g:+.2f})" for k, g in ppo_frontier))
# what the text below says: best-of-n ahead at every n compared (n = 2 and up), and PPO's interpolated
# frontier rising over the KLs compared (so a smaller, true best-of-n KL would only widen the gap)
assert len(gaps) >= 4 and all(g > 0 for g in gaps.values())
compared_kl = max(r["kl"] for r in bon_file["rows"] if r["n"] in gaps)
upto = [t for t in ppo_frontier if t[0] < compared_kl]
upto.append(next(t for t in ppo_frontier if t[0] >= compared_kl))
assert all(b[1] > a[1] for a, b in zip(upto, upto[1:]))
for n_pairs, curve in bench["best_of_n"].items():
    peak = max(curve["rows"], key=lambda r: r["gold"])
    print(f"from the file, {n_pairs:>4s} pairs: best-of-n gold peaks at n = {peak['n']} ({peak['gold']:+.2f}); "
          f"at n = 64 gold {curve['rows'][-1]['gold']:+.2f}, proxy {curve['rows'][-1]['proxy']:+.2f}")

# %% [markdown]
# Compare the two at equal KL in the lines above (the file's best-of-n curve, for the same
# reward-model settings as the sweep, and each method's gain over its own measurement of the
# SFT model): best-of-n is ahead of PPO at every $n$ compared, by the amounts printed. Gao et
# al. found the same sign — RL consumed more KL than best-of-n for the same gold — and read it
# as a warning that KL is not an adequate measure for comparing optimisation methods: the
# nats a method spends say little about what it gets for them. The bound only widens the gap:
# best-of-n's true KL is at most the value used, and PPO's frontier rises with the KL over
# this range (checked), so at best-of-n's true KL PPO would be further behind. The methods
# also differ in *when* they pay: best-of-n pays at inference time, $n$ samples and $n$
# reward-model calls for every answer; PPO pays once, in training. Now move the slider. A reward model fitted on fewer pairs is a worse proxy: its
# gold curve is lower and flattens or turns down at a smaller $n$, while its proxy keeps
# climbing — the gap between the two curves is the over-optimisation.

# %% [markdown]
# ## 7. Depth, measured: the prompt, length, and reward-model ensembles
#
# Questions this chapter's toy can answer because its truth is known. Each one changes a single
# thing in the PPO runs above (this chapter's settings, 80 iterations, the same SFT model) and
# trains 3 seeds: too many runs for this chapter's budget, so `benchmarks/rlhf_depth.py` ran them
# and kept the results (its command, date and machine are printed below). Every number in this
# section is read from that file. "Proxy" is the score the run was trained against (its own reward
# model, or ensemble); "gold" is the hidden judgement of section 1, and "prompted" the
# prompt-dependent gold of 7.1.
#
# 1. **The prompt.** The gold of section 1 ignores the prompt. `lang.PROMPTED_TASK` (our variant,
#    for this section) keeps the same language but makes praise depend on the subject: any
#    positive adjective suits a movie, only *great* or *good* suit food, only *nice* suits the
#    staff; praise that does not suit the subject is faint, worth 0.25 instead of 1. A reward model
#    is trained on labels from this gold, then PPO and GRPO (chapter 9; its groups are per prompt).
# 2. **Length.** A labeller who likes longer answers a little: the first response is preferred
#    with probability $\sigma\big((g_1 - g_2 + \lambda(\ell_1 - \ell_2))/\tau\big)$, $\ell$ the length in
#    tokens, $\lambda = 0.05$ gold per token (`RewardConfig(length_bias=0.05)`). Singhal et al.
#    (2023, *A long way to go: investigating length correlations in RLHF*) found that RLHF
#    lengthens answers and that much of its reward gain comes from length.
# 3. **Ensembles.** Coste et al. (2023, *Reward model ensembles help mitigate overoptimization*)
#    train several reward models that differ only in their seed and optimise a conservative
#    score: the worst case (WCO, the minimum over members) or the mean minus $\lambda$ times the
#    variance over members (UWO). Here: the reward models of seeds 0, 1, 2 (`RewardEnsemble`; in
#    our library the seed also draws the preference pairs, so the members saw different pairs),
#    at $\beta = 0$, where section 5's single reward model was hacked; the single model of seed 0
#    at $\beta = 0$ on the same seeds is the comparison.
#
# 4. **Two choices of InstructGPT's**, each measured once against the plain run at $\beta = 0.1$: the
#    value model started from the SFT trunk instead of from the reward model
#    (`train_ppo(..., critic_init="sft")`), and PPO-ptx, its pre-training mix
#    (`TokenPPOConfig(ptx_coef=1.0)`); with them, UWO with $\lambda = 1$ at $\beta = 0$.

# %%
depth_path = REPO_ROOT / "benchmarks" / "results" / "rlhf_depth.json"
if not depth_path.exists():
    raise FileNotFoundError(f"{depth_path} is missing: run `.venv/bin/python benchmarks/rlhf_depth.py` to make it")
depth = json.loads(depth_path.read_text())
print(f"from {depth_path.name}: `{depth['command']}`, {depth['date']}, {depth['machine']['platform']}")
assert depth["settings"]["seeds"] == [0, 1, 2]
assert depth["complete"] and not depth["rows_not_run"], "the file lacks rows: rerun the command above"
assert depth["settings"]["ppo"]["iterations"] == config.iterations and depth["settings"]["ppo"]["lr"] == config.lr
D = {name: row["mean"] for name, row in depth["rows"].items()}
runs_of = {name: row["runs"] for name, row in depth["rows"].items()}
print(f"\n{'row (mean of 3 seeds)':36s} {'gold':>6s} {'prompted':>9s} {'proxy':>6s} {'KL':>5s} {'length':>7s} "
      f"{'ungramm.':>9s}")
for name, m in {"SFT model": depth["sft"], **D}.items():
    print(f"{name:36s} {m['gold']:+6.2f} {m['gold_prompted']:+9.2f} {m['proxy']:+6.2f} {m['kl']:5.1f} "
          f"{m['length']:7.1f} {m['ungrammatical']:9.0%}")
print("\nreward models, on 1000 fresh SFT pairs and 1024 SFT samples:")
for name, r in depth["reward_models"].items():
    print(f"  {name:16s} agreement with its gold {r['agreement']:.1%}, score per extra token "
          f"{r['score_per_token']:+.3f} (correlation with length {r['length_correlation']:+.2f})")

# %% [markdown]
# ### 7.1 The prompt: which subjects gain, and GRPO's groups
#
# **Predict first:** the SFT model picks its adjectives without looking at the subject. Which
# subject starts lowest on the prompted gold, and does training on prompted labels close the gap?

# %%
subjects = list(lang.SUBJECTS)
per_subject_rows = {"SFT model": depth["sft"]["per_subject"],
                    "PPO, prompt-blind RM (single RM, beta 0.1)": D["single RM, beta 0.1"]["per_subject"],
                    "PPO, prompted RM": D["prompted gold, PPO, beta 0.1"]["per_subject"],
                    "GRPO, prompted RM": D["prompted gold, GRPO"]["per_subject"]}
print(f"{'prompted gold by subject (mean of seeds)':44s}" + "".join(f"{s:>8s}" for s in subjects))
for name, per in per_subject_rows.items():
    print(f"{name:44s}" + "".join(f"{per[s]['gold_prompted']:+8.2f}" for s in subjects))
gain = {name: {s: per[s]["gold_prompted"] - depth["sft"]["per_subject"][s]["gold_prompted"] for s in subjects}
        for name, per in per_subject_rows.items() if name != "SFT model"}
for name, g in gain.items():
    print(f"gain over SFT, {name:31s}" + "".join(f"{g[s]:+8.2f}" for s in subjects))
for name in ("prompted gold, PPO, beta 0.1", "prompted gold, GRPO"):
    print(f"{name}: samples {[t for _, t in runs_of[name][0]['final']['samples'][::2]]}")
zero_std = [r["history"]["zero_std_groups"] for r in runs_of["prompted gold, GRPO"]]
print("GRPO, share of groups whose 8 rewards are all equal (no signal), per seed: first iteration "
      f"{[z[0] for z in zero_std]}, last {[z[-1] for z in zero_std]}, largest {[max(z) for z in zero_std]}")
rm_check = depth["reward_models"]
print(f"agreement with its own gold: prompted RM {rm_check['prompted gold']['agreement']:.1%}, "
      f"prompt-blind RM {rm_check['default, seed 0']['agreement']:.1%}")
# what the text below says, checked against the file
for name, per in per_subject_rows.items():
    assert min(subjects, key=lambda s: per[s]["gold_prompted"]) == "staff"  # the staff lowest, before and after
for g in gain.values():
    assert min(subjects, key=lambda s: g[s]) == "staff"                     # and gaining least
blind, prompted = gain["PPO, prompt-blind RM (single RM, beta 0.1)"], gain["PPO, prompted RM"]
assert prompted["staff"] > blind["staff"] and prompted["food"] < blind["food"]
assert D["prompted gold, PPO, beta 0.1"]["gold_prompted"] <= D["single RM, beta 0.1"]["gold_prompted"]
assert rm_check["prompted gold"]["agreement"] < rm_check["default, seed 0"]["agreement"]
assert all(z[0] == 0 for z in zero_std) and all(max(z) >= 0.5 for z in zero_std)
seed0_samples = dict(runs_of["prompted gold, PPO, beta 0.1"][0]["final"]["samples"])
assert "nice" in seed0_samples["the food was"].split() and "good" in seed0_samples["the staff was"].split()

# %% [markdown]
# The prompt matters, and the numbers say how. The staff, whose only apt word is *nice*, starts
# lowest and stays lowest after every method, with the smallest gain: a prompt whose good answers
# are rare among the SFT model's samples is a hard prompt, and the average gold hides it. Training
# on labels from the prompted gold moved the staff up a little and the food down, and the average
# prompted gold ended no higher than that of the run trained on the prompt-blind reward model: the
# interaction "this word, for this subject" is harder to learn from 1000 noisy pairs (the prompted
# reward model agrees less with its own gold than the plain one does with its own), and the policy
# optimises what the reward model learned, not what the labeller meant. Seed 0's samples show it:
# the policy praises the food as *nice* and the staff as *good*, faint praise both.
#
# GRPO's groups are per prompt (chapter 9): its 8 answers to one prompt are compared with each
# other. At the first iteration no group had 8 equal rewards; later, as the policy settled on one
# answer per prompt, at least half of the groups did in every seed. Such a group's advantages
# $(r - \bar r)/\mathrm{std}$ are all 0: that prompt teaches nothing in that iteration. A prompt
# the policy answers the same way every time has stopped contributing, whether its answer is good
# or not.
# %% [markdown]
# ### 7.2 Length: a labeller who likes it a little
#
# **Predict first:** the length-biased labels teach the reward model to pay for every extra token.
# Does PPO then write longer answers than against the plain reward model? And does a larger
# $\beta$, which holds the policy nearer the SFT model, undo the bias?

# %%
length_rows = {(b, rm): D[f"{'single' if rm == 'plain' else 'length-biased'} RM, beta {b}"]
               for b in (0.1, 0.3) for rm in ("plain", "length-biased")}
print(f"SFT model: length {depth['sft']['length']:.1f} tokens, gold {depth['sft']['gold']:+.2f}")
print(f"{'3 seeds (mean)':>26s} {'length':>7s} {'gold':>6s} {'proxy':>6s} {'KL':>5s} {'ungramm.':>9s}")
for (b, rm), m in length_rows.items():
    print(f"{f'beta {b}, {rm} RM':>26s} {m['length']:7.1f} {m['gold']:+6.2f} {m['proxy']:+6.2f} {m['kl']:5.1f} "
          f"{m['ungrammatical']:9.0%}")
for b in (0.1, 0.3):
    print(f"length per seed at beta {b}: plain", [round(r["final"]["length"], 1) for r in runs_of[f"single RM, beta {b}"]],
          "length-biased", [round(r["final"]["length"], 1) for r in runs_of[f"length-biased RM, beta {b}"]])
print(f"score per extra token on SFT samples (a straight-line fit): length-biased RM "
      f"{rm_check['length_bias 0.05']['score_per_token']:+.3f}, plain RM {rm_check['default, seed 0']['score_per_token']:+.3f}")
length_curves = {name: np.mean([r["history"]["length"] for r in runs_of[name]], axis=0)
                 for name in ("single RM, beta 0.1", "length-biased RM, beta 0.1",
                              "single RM, beta 0.3", "length-biased RM, beta 0.3")}
extra = {b: length_rows[b, "length-biased"]["length"] - length_rows[b, "plain"]["length"] for b in (0.1, 0.3)}
cost = {b: length_rows[b, "plain"]["gold"] - length_rows[b, "length-biased"]["gold"] for b in (0.1, 0.3)}
print("the length-biased runs' extra length:", {b: round(v, 2) for b, v in extra.items()},
      "and their gold below the plain runs':", {b: round(v, 2) for b, v in cost.items()})
# what the text below says, checked against the file
assert rm_check["length_bias 0.05"]["score_per_token"] > 5 * rm_check["default, seed 0"]["score_per_token"] > 0
for b in (0.1, 0.3):
    assert depth["sft"]["length"] > length_rows[b, "length-biased"]["length"] > length_rows[b, "plain"]["length"]
    assert length_rows[b, "length-biased"]["gold"] < length_rows[b, "plain"]["gold"]
    assert length_rows[b, "length-biased"]["kl"] < length_rows[b, "plain"]["kl"]
assert extra[0.3] > extra[0.1] and cost[0.3] > cost[0.1]
for rm in ("plain", "length-biased"):
    assert length_rows[0.3, rm]["length"] > length_rows[0.1, rm]["length"]
early_peak = {name: float(curve[:10].max()) for name, curve in length_curves.items()}
print(f"longest mean length in the first 10 iterations at beta 0.1: plain RM {early_peak['single RM, beta 0.1']:.1f}, "
      f"length-biased RM {early_peak['length-biased RM, beta 0.1']:.1f} (the SFT model: {depth['sft']['length']:.1f})")
assert early_peak["length-biased RM, beta 0.1"] > max(depth["sft"]["length"], early_peak["single RM, beta 0.1"]) + 0.8

# %% [markdown]
# The reward model learned the labeller's taste: on SFT samples its score rises with length more
# than five times as fast as the plain model's. PPO against it ends with longer answers than
# against the plain reward model, a lower gold and a smaller KL, but this is not Singhal et al.'s
# picture of answers that grow, except at the start: in their first ten iterations the
# length-biased runs at $\beta = 0.1$ (mean of the 3 seeds) did lengthen their answers, by more than
# 0.8 of a token beyond both the SFT model and the plain runs' longest (the first panel of the
# figure below), and then both kinds of run shortened them. Section 1's formula says why length
# cannot pay in gold here: the gold is a *mean* over clauses, and one clause with two
# intensifiers already earns the top score. A preference of 0.05 gold per token only left the
# final answers a little longer; it did not reverse the shortening.
#
# A larger $\beta$ did not undo the bias; on this toy it made it worse. At $\beta = 0.3$ every run
# stayed longer than at 0.1 (shortening is itself a move away from the SFT model, and the penalty
# charges for it), and the length-biased runs' excess over the plain ones grew, as did their gold
# deficit (the printed differences, means of 3 seeds; per seed the lengths overlap). The penalty
# holds the policy near the SFT model; it cannot tell the length the labeller liked from the
# quality the labeller meant, since both come to the policy through the same reward model. The
# remedies in use act on the reward instead: a length penalty, or a reward model trained to
# separate quality from length (Singhal et al. try several; Chen et al. 2024, *ODIN*, train a
# separate length head and drop it).

# %% [markdown]
# ### 7.3 One reward model or three, at $\beta = 0$
#
# **Predict first:** with no KL penalty, a single reward model was hacked in section 5. Is the
# minimum of three reward models harder to hack? "RM seed 0" is the single reward model's score of
# the same samples, so the two rows can be compared on one scale.

# %%
ens_names = ("single RM, beta 0", "ensemble min (WCO), beta 0")
print(f"{'beta 0, 3 seeds':36s} {'gold':>6s} {'proxy':>6s} {'RM seed 0':>9s} {'KL':>6s} {'ungramm.':>9s} "
      f"{'seeds below SFT gold':>21s}")
below_sft = {}
for name in ens_names:
    m = D[name]
    below_sft[name] = sum(r["final"]["gold"] < depth["sft"]["gold"] for r in runs_of[name])
    print(f"{name:36s} {m['gold']:+6.2f} {m['proxy']:+6.2f} {m['proxy_seed0']:+9.2f} {m['kl']:6.1f} "
          f"{m['ungrammatical']:9.0%} {below_sft[name]:>16d} of 3")
print("gold per seed:", {name: [round(r["final"]["gold"], 2) for r in runs_of[name]] for name in ens_names})
# what the text below says, checked against the file
assert below_sft == {"single RM, beta 0": 1, "ensemble min (WCO), beta 0": 1}
kept = {name: [r["final"] for r in runs_of[name] if r["final"]["gold"] >= depth["sft"]["gold"]] for name in ens_names}
assert all(abs(f["gold"] - lang.MAX_GOLD) < 0.005 for f in kept["ensemble min (WCO), beta 0"])
assert all(f["gold"] < lang.MAX_GOLD - 0.1 for f in kept["single RM, beta 0"])
assert max(f["kl"] for f in kept["ensemble min (WCO), beta 0"]) < min(f["kl"] for f in kept["single RM, beta 0"])
collapsed = [r["final"] for r in runs_of["ensemble min (WCO), beta 0"] if r["final"]["gold"] < depth["sft"]["gold"]][0]
assert collapsed["ungrammatical"] == 1.0 and collapsed["proxy"] > 2.0
print(f"the collapsed WCO seed: {collapsed['samples'][0][1]!r}, ungrammatical {collapsed['ungrammatical']:.0%}, "
      f"ensemble (minimum) score {collapsed['proxy']:+.2f}")

# %% [markdown]
# The ensemble helped, and it did not save every seed. With either reward, one seed of three
# collapsed to ungrammatical strings. But the seeds that stayed in the language went further with
# the ensemble: both reached the top gold, 1.5 (every sample as good as the language allows), at a
# smaller KL than either surviving seed of the single reward model, which ended below the top. The
# collapse tells the limit: the collapsed seed's strings are ungrammatical, and the *minimum* of the
# three reward models still scores them above 2, so every member rates them highly. Our three
# members share the SFT trunk and the language's blind spots, and an error that all members make
# is one no ensemble can see; Eisenstein et al. (2023, *Helping or herding? Reward model ensembles
# mitigate but do not eliminate reward hacking*) found the same with language models: ensembles of
# reward models that share their pre-training make correlated errors. In their PPO runs Coste et al.
# kept a small KL penalty beside the ensemble; here the penalty was 0, and with three seeds per row
# these are counts, not rates.


# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for name, curve in length_curves.items():
    axes[0].plot(curve, label=name, ls="-" if "length" in name else ":")
axes[0].set_xlabel("PPO iteration")
axes[0].set_ylabel("response length (tokens)")
axes[0].legend(fontsize="x-small")
for name in ens_names:
    axes[1].plot(np.mean([r["history"]["gold"] for r in runs_of[name]], axis=0), label=name)
axes[1].set_xlabel("PPO iteration")
axes[1].set_ylabel("gold (training samples, mean of seeds)")
axes[1].legend(fontsize="x-small")
for name, per in per_subject_rows.items():
    axes[2].plot(subjects, [per[s]["gold_prompted"] for s in subjects], "o-", label=name)
axes[2].set_ylabel("prompted gold, by subject")
axes[2].legend(fontsize="x-small")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### 7.4 Three more rows: UWO, the critic's start, PPO-ptx
#
# **Predict first:** InstructGPT starts its value model from the reward model, and mixes
# pre-training batches into PPO's loss (PPO-ptx) to keep what pre-training taught. On this toy, which
# of the two would you expect to change the result?

# %%
base = "single RM, beta 0.1"
print(f"{'3 seeds':36s} {'gold per seed':>22s} {'KL per seed':>18s} {'length':>7s} {'ungramm.':>9s}")
for name in (base, "critic from SFT, beta 0.1", "PPO-ptx 1.0, beta 0.1", "single RM, beta 0",
             "ensemble min (WCO), beta 0", "ensemble mean - var (UWO), beta 0"):
    g = [r["final"]["gold"] for r in runs_of[name]]
    k = [r["final"]["kl"] for r in runs_of[name]]
    print(f"{name:36s} {str([round(x, 2) for x in g]):>22s} {str([round(x, 1) for x in k]):>18s} "
          f"{D[name]['length']:7.1f} {D[name]['ungrammatical']:9.0%}")
value_loss = {name: np.mean([r["history"]["value_loss"] for r in runs_of[name]], axis=0)
              for name in (base, "critic from SFT, beta 0.1")}
for name, v in value_loss.items():
    print(f"value loss (mean of seeds), {name:26s} iterations 0-4: {np.round(v[:5], 2)}, last 10: {v[-10:].mean():.3f}")
gold_of = {name: [r["final"]["gold"] for r in runs_of[name]] for name in D}
kl_of = {name: [r["final"]["kl"] for r in runs_of[name]] for name in D}
# what the text below says, checked against the file
uwo = runs_of["ensemble mean - var (UWO), beta 0"]
assert all(r["final"]["gold"] > depth["sft"]["gold"] and r["final"]["ungrammatical"] < 0.01 for r in uwo)
assert sorted(gold_of["ensemble mean - var (UWO), beta 0"])[1] < lang.MAX_GOLD - 0.4
assert min(gold_of["critic from SFT, beta 0.1"]) < min(gold_of[base]) < max(gold_of[base]) <= max(gold_of["critic from SFT, beta 0.1"])
assert value_loss[base][0] > 2 * value_loss["critic from SFT, beta 0.1"][0]
assert all(value_loss[base][i] < value_loss["critic from SFT, beta 0.1"][i] for i in range(2, 10))
assert max(gold_of["PPO-ptx 1.0, beta 0.1"]) < min(gold_of[base])
assert max(kl_of["PPO-ptx 1.0, beta 0.1"]) < min(kl_of[base])
assert D["PPO-ptx 1.0, beta 0.1"]["length"] > D[base]["length"]

# %% [markdown]
# **UWO** (the mean of the three reward models minus their variance) kept all three seeds
# grammatical and above the SFT model's gold at $\beta = 0$, where the single reward model and the
# minimum each lost one seed of three; but two of its seeds stopped near a gold of 1, well below
# the top that WCO's surviving seeds reached. Penalising disagreement steered away from the
# strings the members disagree about, and also from some good answers they disagree about.
#
# **The critic's start** made no difference that three seeds can resolve: the gold of the runs
# whose value model started from the SFT trunk (with a zero head) spans that of the runs started
# from the reward model. The value loss tells the two apart only at the start. The reward-model
# start is worse at iteration 0: the reward model was trained to score finished responses, and the
# critic reads it at every prefix. The zero head starts right on average, because the reward model
# was centred so that SFT samples score 0 (section 3). From iteration 2 to 9 the reward-model
# start is ahead; by the end both fit the returns closely (the SFT start slightly closer).
#
# **PPO-ptx** at `ptx_coef=1.0` lowered the gold and the KL of every seed below every plain run's,
# and left longer answers: the pre-training term pulls the policy back toward the SFT model's
# text, a second leash beside $\beta$. InstructGPT used it for something this toy cannot show:
# to keep the model's scores on public NLP benchmarks from falling (their "alignment tax"), with a
# pre-training corpus far broader than the task; here the corpus *is* the task's language, so the
# only thing it can protect is the SFT model's own habits.

# %% [markdown]
# ## What we learned
#
# - RLHF is PPO with a language model as the policy: a token is an action, a response an
#   episode; the reward model's score arrives at `<eos>`, and a per-token KL penalty
#   $-\beta(\log\pi_\theta - \log\pi_{ref})$ ties the policy to the frozen SFT model.
# - The log-probability of token $t$ comes from the logits at position $t-1$: the shift by one.
# - The reward model is fitted to comparisons with the Bradley-Terry loss; it is good where
#   its training data was and wrong elsewhere, and the policy goes looking for "elsewhere".
# - GAE over tokens is the library's GAE with masks; advantages are whitened over real tokens.
# - $\beta$ trades reward for distance from the SFT model. Without it, the proxy rises while
#   the true reward collapses: reward hacking, reproduced and measured — in one seed of three
#   within 80 iterations, in all three within 240, at times that depend on the seed.
# - A KL penalty is not early stopping on this task: at the KL where $\beta = 0.3$ ends, the
#   unpenalised runs had much less gold. The penalty changes the path, not just where it stops.
# - Where the KL goes is worth watching too: with a moderate $\beta$ the answers got shorter
#   (here the gold reward wants that; in real RLHF, length is a classic hack).
# - $k_3$ in the reward is unbiased and never negative, but second order near the reference:
#   as a reward it pulls the policy back much less than $k_1$ at the same $\beta$ (measured).
# - Best-of-n and PPO both over-optimise a proxy. At equal KL best-of-n was ahead at every $n$
#   (with its KL an upper bound, the true gap is if anything larger): as Gao et al. concluded,
#   the KL spent is not a fair common currency for comparing methods.
# - With a truth that depends on the prompt, averages hide hard prompts: the subject with one apt
#   word gained least under every method, and at some point of every GRPO run half or more of
#   its groups went silent (eight equal rewards) as the policy settled on one answer per prompt
#   (section 7).
# - A labeller's slight taste for length enters the reward model and PPO's answers, and a larger
#   $\beta$ did not take it out (section 7); a worst-case
#   ensemble of three reward models helped the runs that stayed grammatical, but not against an
#   error that every member shared (section 7).
#
# ## Further reading
#
# - L. Ouyang et al., *Training language models to follow instructions with human feedback*
#   (InstructGPT), 2022 — eq. 1 (reward model), eq. 2 (the RL objective with PPO-ptx).
# - N. Stiennon et al., *Learning to summarize from human feedback*, 2020 — RLHF with PPO, and
#   best-of-n's KL.
# - D. Ziegler et al., *Fine-tuning language models from human preferences*, 2019 — the per-token
#   KL penalty and the adaptive KL controller.
# - S. Huang et al., *The N+ implementation details of RLHF with PPO: a case study on TL;DR
#   summarization*, 2024 — EOS handling, reward normalisation, the many small choices.
# - R. Zheng et al., *Secrets of RLHF in large language models, part I: PPO*, 2023.
# - L. Gao, J. Schulman, J. Hilton, *Scaling laws for reward model overoptimization*, 2022.
# - P. Singhal, T. Goyal, J. Xu, G. Durrett, *A long way to go: investigating length correlations
#   in RLHF*, 2023 — section 7.2.
# - T. Coste, U. Anwar, R. Kirk, D. Krueger, *Reward model ensembles help mitigate
#   overoptimization*, 2023 — worst-case (WCO) and uncertainty-weighted (UWO) ensembles, section 7.3.
# - J. Eisenstein et al., *Helping or herding? Reward model ensembles mitigate but do not eliminate
#   reward hacking*, 2023 — why members that share pre-training share errors.
