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
# # Chapter 9 — Beyond PPO: DPO, GRPO and RLOO
#
# Chapter 8's PPO holds four models in memory (policy, reference, reward model, critic),
# samples during training, and has a dozen knobs. Two successors removed parts of it. **DPO**
# (Rafailov et al. 2023) removes the reward model *and* the sampling: it trains on the
# preference pairs directly. **GRPO** (Shao et al. 2024) keeps the sampling and the reward
# model but removes the critic: the baseline of an answer is the other answers to the same
# prompt. **RLOO** (Ahmadian et al. 2024) goes back to REINFORCE: a whole response is one
# action, its baseline the mean reward of the other answers to the same prompt.
#
# Which is better? The question is usually argued; here we measure. Same language, same SFT
# model, same 1000 preference pairs, one evaluator (gold reward and KL to the SFT model, on
# fresh samples, three seeds), every method swept over the same grid of its knob.
#
# **Your time:** about 90 minutes to read, run, do the exercises and play with the widgets.
#
# **Learning objectives.** After this chapter you can:
#
# - Derive the DPO loss from the closed-form optimum of the KL-regularised objective, implement it, and train DPO on preference pairs.
# - Measure what DPO does to the log-probabilities of the chosen and the rejected responses, and what off-policy drift does to the grammar.
# - Compute GRPO's group-relative advantages and RLOO's leave-one-out baseline, and explain how they replace the critic.
# - Compare the KL as k1 in the reward with k3 in the loss, including the gradients they give.
# - Compare PPO, DPO, GRPO, RLOO and best-of-n by their reward-versus-KL frontiers, wall time and memory, measured on one task.

# %%
import dataclasses
import json

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from ppo_lib.teaching.checks import check_dpo_loss, check_group_advantages, check_k3_kl, check_rloo_advantages
from ppo_lib.course import REPO_ROOT
from ppo_lib.rlhf.dpo import DPOConfig, pair_logprobs, train_dpo
from ppo_lib.rlhf.evaluate import evaluate_policy
from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo
from ppo_lib.rlhf.model import resolve_device
from ppo_lib.rlhf.pretrain import pretrain
from ppo_lib.rlhf.reward_model import train_reward_model
from ppo_lib.rlhf.rloo import RLOOConfig, train_rloo
from ppo_lib.teaching.widgets import LiveFigure

torch.set_num_threads(1)
device = resolve_device("auto")
# chapter 8's models: loaded from .ppo_cache/ when chapter 8 ran in this folder, trained otherwise
sft = pretrain(device=device)
reward = train_reward_model(sft)
pairs = reward.pairs
sft_eval = evaluate_policy(sft.model, sft.model, reward.model)
print(f"SFT model: gold {sft_eval['gold']:+.3f}, proxy {sft_eval['proxy']:+.3f}, "
      f"{sft_eval['ungrammatical']:.1%} ungrammatical; {len(pairs)} preference pairs")

# %% [markdown]
# ## 1. DPO: the reward model was inside the policy all along
#
# Chapter 8's PPO maximises the reward minus $\beta$ times the KL to the reference:
#
# $$\max_\pi\ \mathbb E_{x,\,y\sim\pi}\big[r(x,y)\big] - \beta\,\mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_{ref}(\cdot|x)\big).$$
#
# For a fixed prompt this problem has a closed-form solution (a Gibbs distribution; the
# derivation is the one behind every "KL-regularised" result, and DPO's appendix A.1 writes
# it out):
#
# $$\pi^*(y|x) = \frac{1}{Z(x)}\,\pi_{ref}(y|x)\,e^{r(x,y)/\beta}
# \quad\Longleftrightarrow\quad
# r(x,y) = \beta\log\frac{\pi^*(y|x)}{\pi_{ref}(y|x)} + \beta\log Z(x).$$
#
# Read the right-hand form backwards: *any* policy defines a reward, its **implicit reward**
# $\beta\log\frac{\pi(y|x)}{\pi_{ref}(y|x)}$, up to a term $\beta\log Z(x)$ that depends on the
# prompt only. The Bradley-Terry model of chapter 8 only looks at reward *differences* between
# two responses to the same prompt, so $Z(x)$ cancels. Put the implicit reward into the
# Bradley-Terry loss and the reward model disappears (Rafailov et al. 2023, eq. 7):
#
# $$\mathcal L_{DPO} = -\frac1B\sum_b\log\sigma\Big(\beta\Big[\log\frac{\pi(y^w_b|x_b)}{\pi_{ref}(y^w_b|x_b)}
#   - \log\frac{\pi(y^l_b|x_b)}{\pi_{ref}(y^l_b|x_b)}\Big]\Big),$$
#
# with $\log\pi(y|x)$ the sum of the response's token log-probabilities. No sampling, no
# reward model, no critic: a supervised loss on the pairs. Here $\beta$ plays the part of
# chapter 8's KL coefficient, but it is never applied to a KL that is measured: it only
# scales the implicit reward.
#
# ### Exercise 9.1 — the DPO loss
#
# Write `dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
# ref_rejected_logps, beta)`: four tensors of shape `(B,)` (sequence log-probabilities),
# `beta > 0`; return a torch tensor holding one number, the loss above (the mean over the
# batch; the training loop calls `backward()` on it). Use `logsigmoid`, so that it stays finite
# for margins of ±130 in float32. The reference log-probs are constants; do not modify the
# inputs in place (this holds for every exercise of the chapter).

# %% nbgrader={"grade": false, "grade_id": "dpo_loss", "locked": false, "schema_version": 3, "solution": true}
def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
dpo_loss = check_dpo_loss(dpo_loss)

# %% [markdown]
# At the start the policy is an exact copy of the reference, so every implicit reward is 0 and
# the loss is $\log 2$ whatever the pairs — a useful first check of any DPO run. The reference's
# log-probabilities are computed apart, without gradients, as training does: passing the policy's
# own tensors as the reference is refused by the library, since it would pin the loss at $\log 2$
# for ever.

# %%
lp_chosen, lp_rejected = pair_logprobs(sft.model, pairs)          # the policy's, with gradients
with torch.no_grad():
    ref_chosen, ref_rejected = pair_logprobs(sft.model, pairs)    # the frozen reference's
start_loss = dpo_loss(lp_chosen, lp_rejected, ref_chosen, ref_rejected, 0.1).item()
print(f"DPO loss of the SFT model against itself: {start_loss:.4f} (log 2 = {np.log(2):.4f})")
assert abs(start_loss - np.log(2)) < 1e-6

# %% [markdown]
# ### Training DPO, and what happens to the chosen responses
#
# **Predict first:** DPO pushes the chosen responses up *relative to* the rejected ones. Will
# the log-probability of the chosen responses go up?

# %%
dpo = train_dpo(sft, pairs, DPOConfig(beta=0.1))
dh = dpo.history
dpo_eval = evaluate_policy(dpo.policy, sft.model, reward.model)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
axes[0].plot(dh.loss)
axes[0].axhline(np.log(2), color="gray", ls=":")
axes[0].set_title("DPO loss (dotted: log 2)")
smooth = lambda x: np.convolve(x, np.ones(10) / 10, mode="valid")  # noqa: E731  (10-step mean)
axes[1].plot(smooth(dh.chosen_logp), label="chosen")
axes[1].plot(smooth(dh.rejected_logp), label="rejected")
axes[1].set_title("mean log pi(y|x) of the minibatch (10-step mean)")
axes[1].legend(fontsize="small")
axes[2].plot(smooth(dh.accuracy))
axes[2].set_title("implicit reward: chosen > rejected (10-step mean)")
for ax in axes:
    ax.set_xlabel("step")
fig.tight_layout()
plt.show()
with torch.no_grad():
    after_chosen, after_rejected = pair_logprobs(dpo.policy, pairs)
print(f"mean over all {len(pairs)} pairs: chosen log-prob   {lp_chosen.mean():+.2f} -> {after_chosen.mean():+.2f}")
print(f"                             rejected log-prob {lp_rejected.mean():+.2f} -> {after_rejected.mean():+.2f}")
# the text below says: both fell, the rejected faster
assert after_chosen.mean() < lp_chosen.mean()
assert after_rejected.mean() - lp_rejected.mean() < after_chosen.mean() - lp_chosen.mean()
print(f"DPO (beta 0.1, {len(dh.loss)} steps, {dpo.seconds:.0f} s): gold {dpo_eval['gold']:+.3f} "
      f"(SFT {sft_eval['gold']:+.3f}), KL {dpo_eval['kl']:.2f}, ungrammatical {dpo_eval['ungrammatical']:.1%}")

# %% [markdown]
# The loss only asks for a *gap*, and the cheapest way to widen it was to lower both, the
# rejected faster (compare the two lines printed above). That is what TRL's users report
# (TRL issue 800): DPO can make the preferred answers *less* likely in absolute terms, the
# probability going to responses that appear in neither column.
#
# ### Off-policy drift
#
# DPO never looks at its own samples: its data are the SFT model's responses. Nothing tells
# it what its updates do to the *other* strings, and the grammar is exactly such a thing. A
# larger step size makes the drift visible:

# %%
dpo_fast = train_dpo(sft, pairs, DPOConfig(beta=0.1, lr=3e-4), progress=False)
fast_eval = evaluate_policy(dpo_fast.policy, sft.model, reward.model)
print(f"{'':22s} {'gold':>7s} {'KL':>6s} {'ungrammatical':>14s}")
for name, ev in (("SFT", sft_eval), ("DPO, lr 1e-4", dpo_eval), ("DPO, lr 3e-4", fast_eval)):
    print(f"{name:22s} {ev['gold']:+7.3f} {ev['kl']:6.2f} {ev['ungrammatical']:14.1%}")
print("samples at lr 3e-4:", "; ".join(s[1] for s in fast_eval["samples"][:4]))

# %% [markdown]
# PPO, GRPO and RLOO score their own samples every iteration; DPO only ever sees the fixed
# pairs, so nothing in its loss reacts to what its updates do to other strings: only its
# $\beta$, its learning rate and its number of steps hold it back. Sampling is not a cure,
# though. An on-policy method sees what it breaks only through the reward model, and chapter
# 8's PPO at $\beta = 0$ broke the grammar *because* the reward model scored the broken
# strings well. What holds an on-policy method back is its KL term; section 3 counts, on
# one grid of $\beta$ that includes 0, how many runs of each method collapsed.
#
# ## 2. GRPO: a baseline from the group, no critic
#
# PPO's critic exists to give each token an advantage. For a language model the reward comes
# once, at the end, and the critic is another network as big as the policy. GRPO (Shao et al.
# 2024, section 4.1) drops it. For each prompt it samples a **group** of $G$ responses, scores
# them with the reward model, and gives every token of response $i$ the same advantage, its
# reward standardised within the group:
#
# $$\hat A_{i,t} = \frac{r_i - \mathrm{mean}(r_1,\dots,r_G)}{\mathrm{std}(r_1,\dots,r_G)}.$$
#
# The rest is PPO's clipped ratio, averaged over each response's tokens and then over
# responses, with the KL to the reference *in the loss* rather than in the reward, estimated
# per token by $k_3$:
#
# $$J = \frac1G\sum_i\frac{1}{|y_i|}\sum_t\Big[\min\big(\rho_{i,t}\hat A_{i,t},\
#   \mathrm{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\hat A_{i,t}\big) - \beta\,k_3^{(i,t)}\Big],
# \qquad k_3 = \frac{\pi_{ref}}{\pi} - \log\frac{\pi_{ref}}{\pi} - 1.$$
#
# ### Exercise 9.2 — group-relative advantages
#
# Write `group_advantages(rewards)`: `rewards` has shape `(n_prompts, G)`, one row per group.
# Return the same shape: each reward minus its group's mean, divided by its group's *sample*
# standard deviation (divide by $G-1$, as `torch.std` does) plus $10^{-4}$ (TRL's choice; the
# paper does not say). A group whose rewards are all equal carries no signal: its advantages
# must be exactly 0.

# %% nbgrader={"grade": false, "grade_id": "group_advantages", "locked": false, "schema_version": 3, "solution": true}
def group_advantages(rewards):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
group_advantages = check_group_advantages(group_advantages)

# %% [markdown]
# **RLOO** (REINFORCE leave-one-out; Kool et al. 2019, Ahmadian et al. 2024) keeps the group
# but not the division: the baseline of sample $i$ is the mean of the *other* $G-1$ rewards,
# $\hat A_i = r_i - \frac{1}{G-1}\sum_{j\ne i} r_j$. A sample's baseline never contains the
# sample itself, so it does not depend on the sample's own action and the policy gradient
# stays unbiased. RLOO differs from GRPO in more than the baseline, and as Ahmadian et al.
# and TRL's `RLOOTrainer` define it (`ppo_lib.rlhf.rloo`):
#
# - the KL is $k_1$ **summed over the response, in the reward**, as in chapter 8's PPO:
#   $r_i = s_i - \beta\sum_t(\log\pi_{old}(o_{i,t}) - \log\pi_{ref}(o_{i,t}))$;
# - a whole response is **one action**: the ratio is $\rho_i = \pi_\theta(o_i)/\pi_{old}(o_i)$ with
#   $\log\pi(o_i) = \sum_t\log\pi(o_{i,t})$, and the loss is
#   $-\frac1B\sum_i\min(\rho_i\hat A_i, \mathrm{clip}(\rho_i, 1\pm\epsilon)\hat A_i)$ (TRL clips this
#   sequence ratio, $\epsilon = 0.2$, for the steps that reuse a batch). At $\rho_i = 1$ its
#   gradient is REINFORCE's, $-\frac1B\sum_i \hat A_i\nabla\log\pi_\theta(o_i)$: the tokens of a
#   response are summed, not averaged, and nothing is divided by a standard deviation.
#
# `GRPOConfig(baseline="rloo")` keeps GRPO's per-token loss and swaps only the baseline: a
# hybrid, which this chapter no longer calls RLOO.
#
# ### Exercise 9.3 — RLOO's advantages
#
# Write `rloo_advantages(rewards)`: `(n_prompts, G)` in and out, $G \ge 2$.

# %% nbgrader={"grade": false, "grade_id": "rloo_advantages", "locked": false, "schema_version": 3, "solution": true}
def rloo_advantages(rewards):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
rloo_advantages = check_rloo_advantages(rloo_advantages)

# %%
example = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]])
print("rewards\n", example)
print("GRPO advantages\n", group_advantages(example))
print("RLOO advantages\n", rloo_advantages(example))
G = example.shape[1]
mean_baseline = example - example.mean(dim=1, keepdim=True)
print(f"mean-baseline advantages / RLOO advantages = {((mean_baseline[0] / rloo_advantages(example)[0])).tolist()}"
      f" = (G-1)/G = {(G - 1) / G}")
assert torch.allclose(mean_baseline, (G - 1) / G * rloo_advantages(example), atol=1e-7)

# %% [markdown]
# A baseline that *includes* the sample, the plain group mean (Dr. GRPO's), gives exactly
# $\frac{G-1}{G}$ times the leave-one-out advantage, group by group, as the cell above checks:
# $r_i - \bar r = \frac{G-1}{G}\big(r_i - \frac{1}{G-1}\sum_{j\ne i}r_j\big)$. The loss is linear in
# the advantages, so the gradient is the leave-one-out one scaled by $\frac{G-1}{G}$: the same
# direction, a step shrunk by a constant (7/8 for $G = 8$) that the learning rate absorbs. It
# changes the step's length, not its direction. The division by the group's standard deviation
# is the different thing: it gives each prompt its own scale (next sections).

# %% [markdown]
# ### Exercise 9.4 — k3, and k1 in the reward vs k3 in the loss
#
# Chapter 8 put the KL in the *reward* as $k_1 = \log\pi - \log\pi_{ref}$ on each sampled
# token, and let the policy gradient carry it. GRPO puts $k_3$ in the *loss* and
# differentiates it directly. Write `k3_kl(logprobs, ref_logprobs)`: per-token tensors of any
# shape; return, per token, $k_3 = e^{-l} - 1 + l$ with $l$ = `logprobs - ref_logprobs`. Keep it
# differentiable with respect to `logprobs`.

# %% nbgrader={"grade": false, "grade_id": "k3_kl", "locked": false, "schema_version": 3, "solution": true}
def k3_kl(logprobs, ref_logprobs):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
k3_kl = check_k3_kl(k3_kl)

# %% [markdown]
# Both estimators are unbiased for the *value* of $\mathrm{KL}(\pi\|\pi_{ref})$. Their
# *gradients* are another matter. On a categorical distribution of 6 tokens we can compute
# every expectation exactly and compare three gradients with respect to the policy's logits:
#
# - the true gradient of $\mathrm{KL}(\pi\,\|\,\pi_{ref})$;
# - **k1 in the reward**: the score-function (policy-gradient) estimate
#   $\mathbb E_{a\sim\pi}[\nabla\log\pi(a)\,k_1(a)]$, what chapter 8's PPO follows;
# - **k3 in the loss**: $\mathbb E_{a\sim\pi}[\nabla k_3(a)]$ with the sampled tokens held fixed,
#   what GRPO's loss follows.
#
# **Predict first:** do all three agree?

# %%
ref_logits = torch.log(torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05]))
print(f"{'distance':>9s} {'KL(pi||ref)':>12s} {'k1-in-reward error':>19s} {'k3-in-loss error':>17s} "
      f"{'k3 vs grad KL(ref||pi)':>23s}")
for shift in (0.1, 0.5, 1.0, 2.0):
    logits = (ref_logits + shift * torch.tensor([1.0, -1.0, 0.5, 0.0, -0.5, 1.5])).requires_grad_(True)
    log_pi, log_ref = torch.log_softmax(logits, 0), torch.log_softmax(ref_logits, 0)
    pi = log_pi.exp()
    true_kl = (pi * (log_pi - log_ref)).sum()
    g_true, = torch.autograd.grad(true_kl, logits, retain_graph=True)
    # k1 in the reward: E_pi[grad log pi(a) * k1(a)], k1 a constant reward
    k1 = (log_pi - log_ref).detach()
    g_k1, = torch.autograd.grad((pi.detach() * log_pi * k1).sum(), logits, retain_graph=True)
    # k3 in the loss: E_pi[grad k3(a)], the sampled tokens (weights pi) held fixed
    g_k3, = torch.autograd.grad((pi.detach() * k3_kl(log_pi, log_ref)).sum(), logits, retain_graph=True)
    reverse_kl = (log_ref.exp() * (log_ref - log_pi)).sum()
    g_rev, = torch.autograd.grad(reverse_kl, logits)
    rel = lambda g: float((g - g_true).norm() / g_true.norm())  # noqa: E731
    print(f"{shift:9.1f} {true_kl.item():12.4f} {rel(g_k1):19.2e} {rel(g_k3):17.3f} "
          f"{float((g_k3 - g_rev).norm()):23.1e}")

# %% [markdown]
# $k_1$ in the reward follows the true gradient exactly (its error is at machine precision).
# $k_3$ in the loss does not: its expected gradient is exactly that of the *reverse* KL,
# $\mathrm{KL}(\pi_{ref}\|\pi)$ (last column: zero), since
# $\mathbb E_\pi[\nabla k_3] = \sum_a(\pi(a) - \pi_{ref}(a))\nabla\log\pi(a) = -\sum_a\pi_{ref}(a)\nabla\log\pi(a)$.
# Near the reference the two KLs agree to second order, so the error is small; it grows with
# the distance (third column). It still pulls towards the reference, so GRPO works, but
# "the KL in GRPO's loss" is not the KL its logs report — the subject of TRL issues 2608,
# 3025 and 4967.
#
# ### Training GRPO and RLOO
#
# Eight prompts, eight samples each (64 responses per iteration, like chapter 8's PPO), two
# epochs of two minibatches per batch, for both. GRPO with $\beta = 0.04$ on $k_3$ in the loss
# (the paper's value); RLOO with $\beta = 0.05$ on $k_1$ summed in the reward (TRL's default).
# The two $\beta$ are not the same knob: one weighs a per-token mean in the loss, the other a
# per-response sum in the reward, so equal numbers mean nothing. Three models in memory:
# policy, reference, reward model.

# %%
grpo = train_grpo(sft, reward, GRPOConfig(beta=0.04))
rloo = train_rloo(sft, reward, RLOOConfig())
live = {"SFT": sft_eval, "DPO (beta 0.1)": dpo_eval}
# groups whose reward-model scores are all equal (for GRPO at beta > 0 these are its zero-advantage groups)
equal_scores = {"GRPO": grpo.history.zero_std_groups, "RLOO": rloo.history.equal_score_groups}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for name, run in (("GRPO", grpo), ("RLOO", rloo)):
    live[f"{name} (beta {run.config.beta:g})"] = evaluate_policy(run.policy, sft.model, reward.model)
    axes[0].plot(run.history.gold, label=name)
    axes[1].plot(run.history.kl, label=name)
    axes[2].plot(np.array(equal_scores[name]) * 100, label=name)
axes[0].set_title("gold reward")
axes[1].set_title("KL to the reference (nats)")
axes[2].set_title("groups with equal scores (%)")
for ax in axes:
    ax.set_xlabel("iteration")
    ax.legend(fontsize="small")
fig.tight_layout()
plt.show()
print(f"{'':18s} {'gold':>7s} {'proxy':>7s} {'KL':>6s} {'ungrammatical':>14s}")
for name, ev in live.items():
    print(f"{name:18s} {ev['gold']:+7.3f} {ev['proxy']:+7.3f} {ev['kl']:6.2f} {ev['ungrammatical']:14.1%}")
print(f"GRPO {grpo.seconds:.0f} s, RLOO {rloo.seconds:.0f} s, DPO {dpo.seconds:.0f} s")
late = {name: np.mean(frac[-10:]) for name, frac in equal_scores.items()}
print("groups with equal scores, last 10 iterations: "
      + ", ".join(f"{name} {frac:.0%}" for name, frac in late.items()))
assert late["GRPO"] > 0.2  # what the text below describes

# %% [markdown]
# Watch the right-hand plot. In this run GRPO's policy sharpened until many of its groups
# answered a prompt with responses that all got the same score (often the very same string).
# Such a group has no spread, so its advantages are 0 and it teaches nothing: GRPO's learning
# signal dries up as the policy converges, one reason why its practitioners use large groups
# (the paper: 64). Compare RLOO's line; one seed shows a possibility, not a rule: section 3
# shows the same share for three seeds and every $\beta$.
#
# ## 3. The comparison, measured
#
# One seed of one setting proves little. `benchmarks/rlhf_methods.py` trains every method
# itself, from the same SFT model and reward model, with three seeds, and evaluates every
# result with the same evaluator. The knobs lie on one grid: $\beta \in \{0, 0.04, 0.1, 0.3\}$
# for PPO, GRPO and RLOO, the same values for DPO except that 1.0 replaces 0 (DPO's $\beta$
# divides its implicit reward, $\log\frac{\pi}{\pi_{ref}} = r/\beta$, so it cannot be 0), and
# $n$ from 1 to 64 for best-of-n. The grid is shared, the knobs are not: PPO's and RLOO's
# $\beta$ weigh $k_1$ *summed over the response, in the reward*; GRPO's weighs $k_3$
# *averaged over the tokens, in the loss*, whose gradient follows another KL (exercise 9.4).
# So compare the methods where they land, gold reward against the KL they spent, not at
# equal $\beta$. On the frontier plot, up and to the left is better.

# %%
results_path = REPO_ROOT / "benchmarks" / "results" / "rlhf_methods.json"
if not results_path.exists():
    raise FileNotFoundError(f"{results_path} is missing: run `.venv/bin/python benchmarks/rlhf_methods.py`")
methods = json.loads(results_path.read_text())
print(f"from {results_path.name}: `{methods['command']}`, {methods['date']}, {methods['machine']['platform']}")
assert methods["settings"]["dpo"]["lr"] == DPOConfig().lr and methods["settings"]["grpo"]["beta"] == GRPOConfig().beta
assert methods["settings"]["rloo"] == dataclasses.asdict(RLOOConfig())
results = methods["results"]


def summarise(runs):
    f = lambda key: np.array([r["final"][key] for r in runs])  # noqa: E731
    return {"gold": f("gold").mean(), "gold_sd": f("gold").std(ddof=1) if len(runs) > 1 else 0.0,
            "kl": f("kl").mean(), "ungrammatical": f("ungrammatical").mean(),
            "seconds": np.mean([r["seconds"] for r in runs])}


frontier = {m: sorted(((float(k), summarise(runs)) for k, runs in res["points"].items()), key=lambda t: t[1]["kl"])
            for m, res in results.items()}
fig, ax = plt.subplots(figsize=(8, 4.2))
for m, pts in frontier.items():
    ax.errorbar([p["kl"] for _, p in pts], [p["gold"] for _, p in pts], yerr=[p["gold_sd"] for _, p in pts],
                marker="o", capsize=2, label=f"{m} ({results[m]['knob']})")
ax.axhline(methods["sft"]["gold"], color="gray", ls=":", label="SFT")
ax.set_xscale("symlog", linthresh=1.0)
ax.set_xlabel("KL to the SFT model (nats)")
ax.set_ylabel("gold reward (mean of 3 seeds, bars: sd)")
ax.legend(fontsize="small", loc="lower right")
plt.show()

# %% [markdown]
# The table puts numbers where comparisons usually put adjectives. For each method: its best
# mean gold over its knob (and the knob), the KL it spent there, the spread over seeds there,
# how many of its runs ended mostly ungrammatical (more than half of the samples: chapter 8's
# reward-hacking collapse), over all knobs and at its smallest knob (0 for the online
# methods), the models it holds in memory while training, and whether it needs a reward
# model and samples during training.

# %%
needs = {"PPO": ("yes", "online", 4), "GRPO": ("yes", "online", 3), "RLOO": ("yes", "online", 3),
         "DPO": ("no", "offline", 2), "best-of-n": ("yes", "at inference", 2)}
print(f"{'method':10s} {'best gold':>9s} {'at knob':>11s} {'KL':>6s} {'seed sd':>8s} {'collapsed':>10s} "
      f"{'at lowest':>10s} {'models':>7s} {'reward model':>13s} {'sampling':>13s}")
rows_table = {}
for m, pts in frontier.items():
    knob, best = max(pts, key=lambda t: t[1]["gold"])
    all_runs = [r for runs in results[m]["points"].values() for r in runs]
    lowest = min(results[m]["points"], key=float)
    low_runs = results[m]["points"][lowest]
    collapsed = sum(r["final"]["ungrammatical"] > 0.5 for r in all_runs)
    collapsed_low = sum(r["final"]["ungrammatical"] > 0.5 for r in low_runs)
    rows_table[m] = dict(best, knob=knob, collapsed=collapsed, collapsed_low=collapsed_low, runs=len(all_runs))
    rm_needed, online, n_models = needs[m]
    print(f"{m:10s} {best['gold']:+9.2f} {results[m]['knob'] + '=' + format(knob, 'g'):>11s} {best['kl']:6.2f} "
          f"{best['gold_sd']:8.2f} {collapsed:>5d} of {len(all_runs):<3d} {collapsed_low:>4d} of {len(low_runs):<3d} "
          f"{n_models:7d} {rm_needed:>13s} {online:>13s}")
print(f"\nthe SFT model: gold {methods['sft']['gold']:+.2f}")
print("by best mean gold:", " > ".join(sorted(rows_table, key=lambda m: -rows_table[m]["gold"])))
for m in results:
    bad = [(float(k), r["seed"]) for k, runs in results[m]["points"].items() for r in runs
           if r["final"]["ungrammatical"] > 0.5]
    if bad:
        print(f"{m}: collapsed runs (knob, seed): {bad}")

# %% [markdown]
# ### Where the seconds go
#
# PPO runs 80 iterations of 4 epochs of 2 minibatches, 640 updates, each through a policy and a
# critic; GRPO and RLOO run 60 iterations of 2 x 2, 240 updates of the policy alone; DPO 150
# steps on pairs. A run's total seconds mix the number of updates, the cost of one update and
# the cost of sampling, so the benchmark measures them apart: the seconds in rollouts
# (generation, the log-probabilities of the policy and the reference, the scores) and in
# updates, per update and per generated token. A shared machine's load changes by the minute,
# so the figures come from short runs of each method (10 iterations; DPO 30 steps) taken in
# turn, PPO, GRPO, RLOO, DPO, three times over, so that all of them meet the same load; each
# run logged the load average (`os.getloadavg`, 1 minute) at its start and end (the table's
# last column: this file's runs had the machine's 2 cores to themselves). Read them as ratios
# between methods, not as the speed of your machine.

# %%
timing = methods["timing_interleaved"]
print(f"{'method':8s} {'ms/update':>10s} {'rollout ms/token':>17s} {'rollout share':>14s} {'ms/token, all':>14s} "
      f"{'load (1 min)':>13s}")
for m, t in timing.items():
    loads = [x for r in t["runs"] for x in r["load"]]
    dash = f"{'-':>14s}"
    print(f"{m:8s} {t['update_ms_per_update']:10.1f} "
          + (f"{t['rollout_ms_per_token']:17.2f} {t['rollout_share']:14.0%} {t['ms_per_token']:14.2f}"
             if "rollout_share" in t else f"{'-':>17s} {dash} {dash}")
          + f" {min(loads):6.1f}-{max(loads):<6.1f}")
sweep_seconds = {m: t["seconds_per_run"] for m, t in methods["timing"].items()}
print("median seconds of a full run in the sweep (under the load of its own hour):",
      ", ".join(f"{m} {v:.0f} s" for m, v in sweep_seconds.items()))
settings = methods["settings"]
updates = {"PPO": settings["ppo"]["iterations"] * settings["ppo"]["epochs"] * settings["ppo"]["num_minibatches"],
           "GRPO": settings["grpo"]["iterations"] * settings["grpo"]["epochs"] * settings["grpo"]["num_minibatches"],
           "RLOO": settings["rloo"]["iterations"] * settings["rloo"]["epochs"] * settings["rloo"]["num_minibatches"]}
print("updates per full run:", updates)

# %% [markdown]
# ### Groups with equal scores
#
# A group whose $G$ scores are all equal gives GRPO advantages of exactly 0: the group
# teaches nothing. The table below shows, for each knob, the share of such groups over the
# three seeds in the first, middle and last third of training (GRPO's `zero_std_groups`,
# RLOO's `equal_score_groups`), and for RLOO also the share whose *rewards* were equal, the
# score minus its $k_1$ term, which is what its advantages are made of.

# %%
def thirds(series_per_seed):
    x = np.array(series_per_seed, dtype=float)  # (seeds, iterations)
    return [float(part.mean()) for part in np.array_split(x, 3, axis=1)]


equal_table = {}
print(f"{'method':6s} {'beta':>5s} {'equal scores: 1st':>18s} {'2nd':>6s} {'3rd third':>10s} {'equal rewards, 3rd':>19s}")
for m, key in (("GRPO", "zero_std_groups"), ("RLOO", "equal_score_groups")):
    for k, runs in sorted(results[m]["points"].items(), key=lambda kv: float(kv[0])):
        share = thirds([r[key] for r in runs])
        rewards_late = thirds([r["zero_std_groups"] for r in runs])[2]
        equal_table[(m, float(k))] = {"thirds": share, "rewards_late": rewards_late}
        print(f"{m:6s} {float(k):5g} {share[0]:18.0%} {share[1]:6.0%} {share[2]:10.0%} {rewards_late:19.0%}")

# %% [markdown]
# How to read the three tables, with the numbers above in front of you:
#
# - **The online methods tie on the best gold, not on the KL it costs.** PPO, GRPO and RLOO
#   reach best mean golds within a few hundredths of each other, less than the spread over
#   seeds at those points. PPO gets there at the largest $\beta$ and the smallest KL.
# - **At equal KL, GRPO's frontier bends.** At $\beta = 0.3$ the three land at about the same
#   KL, and there PPO and RLOO keep most of their gold while GRPO loses far more: $k_3$ in the
#   loss at that weight holds the policy back without buying more gold per nat.
# - **Not on equal terms.** PPO runs 80 iterations (5120 responses) and 640 updates with a
#   critic; GRPO and RLOO run 60 iterations (3840 responses) and 240 updates. Part of PPO's
#   better frontier may be its larger budget; this benchmark does not separate the two.
# - **Best-of-n is a strong, training-free baseline**: at its largest $n$ it sits within a
#   few hundredths of PPO and RLOO at the same KL, paying with $n$ samples and $n$
#   reward-model calls per answer at inference. **DPO** stays close to the SFT model (the
#   smallest KL of all) and has the lowest ceiling here; at equal KL best-of-n beats it too.
# - **Stability, and which method to watch.** The one run that ended mostly ungrammatical is
#   PPO's, at $\beta = 0$ (chapter 8's hack): without a KL term its 640 updates carried one of
#   three seeds into a hole of the reward model; no run of any method with a KL term
#   collapsed. One collapse in three seeds against none does not rank the methods, but it
#   says where to look first: PPO without its KL. GRPO's weakness is another one: with a
#   small $\beta$ its groups converge to equal scores (next point).
# - **Groups with equal scores.** With no KL at all ($\beta = 0$, the one point where the two
#   losses meet without a KL term), GRPO's last third of training had far more groups with
#   equal scores than RLOO's, and GRPO's share falls as its $\beta$ grows. This fits the
#   division by the group's standard deviation: a group whose scores differ only a little
#   still gets advantages of size about 1 from GRPO, so the policy keeps sharpening on it
#   until the group is identical and its advantages are exactly 0, while RLOO's advantages
#   shrink with the differences themselves. Each such group is a prompt that no longer
#   teaches anything.
# - **Where the seconds go.** One PPO update costs about twice a GRPO update (it trains the
#   critic too), and PPO makes 640 of them against 240: updates take most of PPO's seconds,
#   while rollouts take most of GRPO's and RLOO's. "The seconds go mostly into sampling" holds
#   for the critic-free methods only. Mind the noise: GRPO and RLOO sample with the same code,
#   yet their rollout milliseconds per token differ by between 5 and 20 percent in this file
#   (their responses differ in length too), and on a loaded machine by tens of percent; only
#   differences larger than that mean anything here.
#
# These readings are checked against the file here, so the text cannot drift from the data:

# %%
rt = rows_table
online = ("PPO", "GRPO", "RLOO")
best_golds = [rt[m]["gold"] for m in online]
assert max(best_golds) - min(best_golds) < min(rt[m]["gold_sd"] for m in online), "the online methods tie on gold"
assert rt["PPO"]["kl"] == min(rt[m]["kl"] for m in online) and rt["PPO"]["knob"] == max(map(float, results["PPO"]["points"]))
at_03 = {m: dict(frontier[m])[0.3] for m in online}
assert max(p["kl"] for p in at_03.values()) - min(p["kl"] for p in at_03.values()) < 0.5  # "about the same KL"
assert at_03["GRPO"]["gold"] + 0.3 < min(at_03["PPO"]["gold"], at_03["RLOO"]["gold"])
assert updates == {"PPO": 640, "GRPO": 240, "RLOO": 240}
assert settings["ppo"]["iterations"] * settings["ppo"]["batch_size"] == 5120
assert settings["grpo"]["iterations"] * 64 == settings["rloo"]["iterations"] * 64 == 3840
assert settings["grpo"]["group_size"] * settings["grpo"]["prompts_per_iteration"] == 64
bon_top = frontier["best-of-n"][-1][1]
near = [min(frontier[m], key=lambda t: abs(t[1]["kl"] - bon_top["kl"]))[1] for m in ("PPO", "RLOO")]
assert all(abs(p["gold"] - bon_top["gold"]) < 0.1 and abs(p["kl"] - bon_top["kl"]) < 0.5 for p in near)
assert rt["DPO"]["kl"] < min(rt[m]["kl"] for m in ("PPO", "GRPO", "RLOO", "best-of-n"))
assert rt["DPO"]["gold"] == min(r["gold"] for r in rt.values())
bon_by_kl = [p for _, p in frontier["best-of-n"] if p["kl"] <= rt["DPO"]["kl"]]
assert max(p["gold"] for p in bon_by_kl) > rt["DPO"]["gold"], "at equal (or lower) KL best-of-n beats DPO"
collapsed_runs = [(m, float(k)) for m in results for k, runs in results[m]["points"].items() for r in runs
                  if r["final"]["ungrammatical"] > 0.5]
assert collapsed_runs == [("PPO", 0.0)], collapsed_runs
late_grpo = [equal_table[("GRPO", b)]["thirds"][2] for b in (0.0, 0.04, 0.1, 0.3)]
assert equal_table[("GRPO", 0.0)]["thirds"][2] > 2 * equal_table[("RLOO", 0.0)]["thirds"][2]
assert all(a >= b for a, b in zip(late_grpo, late_grpo[1:])), late_grpo
t = timing
assert t["PPO"]["update_ms_per_update"] > 1.5 * max(t["GRPO"]["update_ms_per_update"], t["RLOO"]["update_ms_per_update"])
assert t["PPO"]["rollout_share"] < 0.5 < min(t["GRPO"]["rollout_share"], t["RLOO"]["rollout_share"])
assert 1.05 < max(t["GRPO"]["rollout_ms_per_token"], t["RLOO"]["rollout_ms_per_token"]) / \
    min(t["GRPO"]["rollout_ms_per_token"], t["RLOO"]["rollout_ms_per_token"]) < 1.2
assert max(x for m in ("PPO", "GRPO", "RLOO", "DPO") for r in t[m]["runs"] for x in r["load"]) < 2.0
print("the statements above hold for the file's numbers")

# %% [markdown]
# ### A widget: one method, one knob
#
# Pick a method and the position of its knob; the point is circled on the frontier and its
# samples are shown (seed 0).

# %%
positions = ["lowest", "low", "high", "highest"]


def method_view(method, position):
    pts = sorted(results[method]["points"].items(), key=lambda kv: float(kv[0]))
    i = round(positions.index(position) * (len(pts) - 1) / (len(positions) - 1))
    knob, runs = pts[i]
    return {"method": method, "knob": float(knob), "summary": summarise(runs),
            "samples": [s if isinstance(s, str) else s[1] for s in runs[0]["final"]["samples"][:4]]}


def draw_method(view, fig):
    ax = fig.subplots()
    for m, pts in frontier.items():
        ax.plot([p["kl"] for _, p in pts], [p["gold"] for _, p in pts], "o-", ms=4, lw=1, label=m,
                alpha=1.0 if m == view["method"] else 0.35)
    s = view["summary"]
    ax.scatter([s["kl"]], [s["gold"]], s=220, facecolors="none", edgecolors="k", lw=1.5)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL to the SFT model (nats)")
    ax.set_ylabel("gold reward")
    ax.legend(fontsize="small", loc="lower right")


def describe_method(view):
    s = view["summary"]
    knob = results[view["method"]]["knob"]
    samples = "; ".join(f"<code>{t}</code>" for t in view["samples"])
    return (f"<b>{view['method']}, {knob} = {view['knob']:g}</b>: gold {s['gold']:+.2f} (sd {s['gold_sd']:.2f}), "
            f"KL {s['kl']:.2f}, ungrammatical {s['ungrammatical']:.0%}, {s['seconds']:.1f} s per run"
            f"<br>samples: {samples}")


method_controls = {"method": widgets.ToggleButtons(options=list(results), value="DPO", description="method"),
                   "position": widgets.SelectionSlider(options=positions, value="low", description="knob",
                                                       continuous_update=False)}
method_explorer = LiveFigure(method_controls, method_view, draw_method, describe_method, figsize=(8, 3.8))
display(method_explorer)

# %% [markdown]
# ## What we learned
#
# - The KL-regularised objective has a closed-form optimum; inverting it turns any policy into
#   an implicit reward, and the Bradley-Terry loss on that reward is DPO: no reward model, no
#   sampling, two models (one, with precomputed reference log-probabilities).
# - DPO widens the gap between chosen and rejected, not the chosen probability itself; and,
#   never seeing its own samples, it cannot notice what it breaks elsewhere.
# - GRPO replaces the critic by the other answers to the same prompt, standardised per group;
#   RLOO (as Ahmadian et al. and TRL define it) is REINFORCE on whole responses with a
#   leave-one-out baseline and the KL as $k_1$ summed in the reward. A baseline that includes
#   the sample only rescales the gradient by $(G-1)/G$. A group with equal rewards teaches
#   GRPO nothing.
# - $k_1$ in the reward follows the gradient of KL(pi || ref); $k_3$ in the loss follows that
#   of KL(ref || pi): close near the reference, different far from it.
# - Measured on one task with one evaluator, the methods differ in the gold reward they reach,
#   the KL they spend, their seed spread, their cost and what they need — the table above, not
#   an adjective, is the answer.
#
# ## Further reading
#
# - R. Rafailov et al., *Direct preference optimization: your language model is secretly a
#   reward model*, 2023 — eq. 7 and appendix A.1 (the closed-form optimum).
# - Z. Shao et al., *DeepSeekMath: pushing the limits of mathematical reasoning in open language
#   models*, 2024 — section 4.1, GRPO.
# - A. Ahmadian et al., *Back to basics: revisiting REINFORCE-style optimization for learning
#   from human feedback in LLMs*, 2024 — RLOO.
# - W. Kool, H. van Hoof, M. Welling, *Buy 4 REINFORCE samples, get a baseline for free!*, 2019.
# - L. Gao, J. Schulman, J. Hilton, *Scaling laws for reward model overoptimization*, 2022.
# - J. Schulman, *Approximating KL divergence*, 2020 (blog note) — k1, k2, k3.
