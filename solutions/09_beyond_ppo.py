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
# prompt. **RLOO** (Ahmadian et al. 2024) is the same idea with a leave-one-out baseline.
#
# Which is better? The question is usually argued; here we measure. Same language, same SFT
# model, same 1000 preference pairs, one evaluator (gold reward and KL to the SFT model, on
# fresh samples, three seeds), each method swept over its own knob.
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
# - Map the course's settings to their names in Stable-Baselines3, CleanRL, TRL, OpenRLHF and RLlib.

# %%
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
    ### BEGIN SOLUTION
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    return -torch.nn.functional.logsigmoid(beta * (chosen - rejected)).mean()
    ### END SOLUTION


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
# PPO measures the grammar of its own samples every iteration (through the reward model
# and the KL); DPO only ever sees the fixed pairs. On-policy methods correct what they break;
# off-policy methods can only be stopped early.
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
    ### BEGIN SOLUTION
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    adv = centred / (rewards.std(dim=1, keepdim=True) + 1e-4)
    equal = rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True)
    return adv.masked_fill(equal, 0.0)
    ### END SOLUTION


# %%
group_advantages = check_group_advantages(group_advantages)

# %% [markdown]
# **RLOO** (REINFORCE leave-one-out; Kool et al. 2019, Ahmadian et al. 2024) keeps the group
# but not the division: the baseline of sample $i$ is the mean of the *other* $G-1$ rewards,
# $\hat A_i = r_i - \frac{1}{G-1}\sum_{j\ne i} r_j$. Because a sample's baseline never contains
# the sample itself, the policy gradient stays unbiased.
#
# ### Exercise 9.3 — RLOO's advantages
#
# Write `rloo_advantages(rewards)`: `(n_prompts, G)` in and out, $G \ge 2$.

# %% nbgrader={"grade": false, "grade_id": "rloo_advantages", "locked": false, "schema_version": 3, "solution": true}
def rloo_advantages(rewards):
    ### BEGIN SOLUTION
    G = rewards.shape[1]
    return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)
    ### END SOLUTION


# %%
rloo_advantages = check_rloo_advantages(rloo_advantages)

# %%
example = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]])
print("rewards\n", example)
print("GRPO advantages\n", group_advantages(example))
print("RLOO advantages\n", rloo_advantages(example))

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
    ### BEGIN SOLUTION
    l = logprobs - ref_logprobs
    return torch.exp(-l) - 1 + l
    ### END SOLUTION


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
# Eight prompts, eight samples each (64 responses per iteration, like chapter 8's PPO),
# $\beta = 0.04$ (the paper's value), two epochs of two minibatches per batch. Three models in
# memory: policy, reference, reward model.

# %%
grpo = train_grpo(sft, reward, GRPOConfig(beta=0.04))
rloo = train_grpo(sft, reward, GRPOConfig(beta=0.04, baseline="rloo"))
live = {"SFT": sft_eval, "DPO (beta 0.1)": dpo_eval}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for name, run in (("GRPO", grpo), ("RLOO", rloo)):
    live[f"{name} (beta 0.04)"] = evaluate_policy(run.policy, sft.model, reward.model)
    axes[0].plot(run.history.gold, label=name)
    axes[1].plot(run.history.kl, label=name)
    axes[2].plot(np.array(run.history.zero_std_groups) * 100, label=name)
axes[0].set_title("gold reward")
axes[1].set_title("KL to the reference (nats)")
axes[2].set_title("groups with equal rewards (%)")
for ax in axes:
    ax.set_xlabel("iteration")
    ax.legend(fontsize="small")
fig.tight_layout()
plt.show()
print(f"{'':18s} {'gold':>7s} {'proxy':>7s} {'KL':>6s} {'ungrammatical':>14s}")
for name, ev in live.items():
    print(f"{name:18s} {ev['gold']:+7.3f} {ev['proxy']:+7.3f} {ev['kl']:6.2f} {ev['ungrammatical']:14.1%}")
print(f"GRPO {grpo.seconds:.0f} s, RLOO {rloo.seconds:.0f} s, DPO {dpo.seconds:.0f} s")
late = {name: np.mean(run.history.zero_std_groups[-10:]) for name, run in (("GRPO", grpo), ("RLOO", rloo))}
print("groups with equal rewards, last 10 iterations: "
      + ", ".join(f"{name} {frac:.0%}" for name, frac in late.items()))
assert late["GRPO"] > 0.2  # what the text below describes

# %% [markdown]
# Watch the right-hand plot. In this run GRPO's policy sharpened until many of its groups
# answered a prompt with responses that all got the same reward (often the very same string).
# Such a group has no spread, so its advantages are 0 and it teaches nothing: GRPO's learning
# signal dries up as the policy converges, one reason why its practitioners use large groups
# (the paper: 64). RLOO's policy, trained on the same prompts without the division by the
# spread, kept more variety here (the line printed above); one seed shows a possibility, not a
# rule.
#
# ## 3. The comparison, measured
#
# One seed of one setting proves little. `benchmarks/rlhf_methods.py` ran every method over
# its own knob with three seeds — PPO over $\beta$ (from chapter 8's sweep), DPO over its
# $\beta$, GRPO and RLOO over the KL coefficient in the loss, best-of-n over $n$ — and
# evaluated every result with the same evaluator. The frontier plots the mean gold reward
# against the mean KL to the SFT model: up and to the left is better.

# %%
results_path = REPO_ROOT / "benchmarks" / "results" / "rlhf_methods.json"
if not results_path.exists():
    raise FileNotFoundError(f"{results_path} is missing: run `.venv/bin/python benchmarks/rlhf_methods.py`")
methods = json.loads(results_path.read_text())
print(f"from {results_path.name}: `{methods['command']}`, {methods['date']}, {methods['machine']['platform']}")
assert methods["settings"]["dpo"]["lr"] == DPOConfig().lr and methods["settings"]["grpo"]["beta"] == GRPOConfig().beta
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
# how many of its runs (all knobs, all seeds) ended mostly ungrammatical (more than half of
# the samples: chapter 8's reward-hacking collapse), the
# wall time of one training run at its default setting (all methods timed one after the
# other in one process, on this CPU), the models it holds in memory while training, and
# whether it needs a reward model and samples during training.

# %%
needs = {"PPO": ("yes", "online", 4), "GRPO": ("yes", "online", 3), "RLOO": ("yes", "online", 3),
         "DPO": ("no", "offline", 2), "best-of-n": ("yes", "at inference", 2)}
timing = methods["timing"]
print(f"{'method':10s} {'best gold':>9s} {'at knob':>11s} {'KL':>6s} {'seed sd':>8s} {'collapsed':>10s} "
      f"{'s/run':>6s} {'models':>7s} {'reward model':>13s} {'sampling':>13s}")
rows_table = {}
for m, pts in frontier.items():
    knob, best = max(pts, key=lambda t: t[1]["gold"])
    rows_table[m] = dict(best, seconds=timing[m]["seconds"])
    all_runs = [r for runs in results[m]["points"].values() for r in runs]
    collapsed = sum(r["final"]["ungrammatical"] > 0.5 for r in all_runs)
    rows_table[m]["collapsed"] = collapsed
    rm_needed, online, n_models = needs[m]
    print(f"{m:10s} {best['gold']:+9.2f} {results[m]['knob'] + '=' + format(knob, 'g'):>11s} {best['kl']:6.2f} "
          f"{best['gold_sd']:8.2f} {collapsed:>5d} of {len(all_runs):<3d} {timing[m]['seconds']:6.1f} {n_models:7d} "
          f"{rm_needed:>13s} {online:>13s}")
print(f"\nthe SFT model: gold {methods['sft']['gold']:+.2f}")
print("by best mean gold:", " > ".join(sorted(rows_table, key=lambda m: -rows_table[m]["gold"])))
for m in results:
    bad = [(k, r["seed"]) for k, runs in results[m]["points"].items() for r in runs
           if r["final"]["ungrammatical"] > 0.5]
    if bad:
        print(f"{m}: collapsed runs (knob, seed): {bad}")

# %% [markdown]
# How to read it, with the numbers above in front of you:
#
# - **Online methods reach the highest gold.** PPO, GRPO and RLOO sample from the policy and
#   score what they sample; DPO learns from a fixed set of SFT answers, stays close to the SFT
#   model (a small KL), and has a lower ceiling on this task.
# - **Best-of-n is a strong, training-free baseline** at the same KL; it pays with $n$ samples
#   and $n$ reward-model calls at inference instead.
# - **Compute and memory.** DPO is the cheapest to train and needs neither a reward model nor
#   sampling (its reference can even be replaced by precomputed log-probabilities, as
#   `train_dpo` does). GRPO and RLOO need no critic: one model fewer than PPO, and on this task
#   a shorter run. On a model this small the seconds go mostly into sampling.
# - **Stability.** Look at the "collapsed" column and the list under the table: a run whose
#   samples are mostly ungrammatical has found a hole of the reward model (chapter 8's hack). Without a
#   critic and with a small KL coefficient, GRPO's runs are the ones to watch here. Three seeds
#   leave wide error bars: compare the spread with the gaps between methods before concluding.
#
# These readings are checked against the file here, so the text cannot drift from the data:

# %%
online_best = max(rows_table[m]["gold"] for m in ("PPO", "GRPO", "RLOO"))
assert online_best > rows_table["DPO"]["gold"], "the text says online methods beat DPO here"
assert rows_table["DPO"]["kl"] < min(rows_table[m]["kl"] for m in ("PPO", "GRPO", "RLOO"))
assert rows_table["DPO"]["seconds"] < min(rows_table[m]["seconds"] for m in ("PPO", "GRPO", "RLOO"))
assert max(rows_table["GRPO"]["seconds"], rows_table["RLOO"]["seconds"]) < rows_table["PPO"]["seconds"]
assert rows_table["best-of-n"]["gold"] > rows_table["DPO"]["gold"]
assert rows_table["GRPO"]["collapsed"] >= max(rows_table[m]["collapsed"] for m in ("PPO", "RLOO", "DPO"))
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
# ## 4. Where to go next
#
# You now have a PPO you can read from end to end: the clipped objective, GAE, the implementation details from
# chapter 7, and the token-level version from chapter 8. The libraries below do the same things. They name them
# differently, pick different defaults, and add the machinery needed to run on more than one machine. This section
# covers three things: which published systems used which method, a lookup table from our settings to theirs, and
# what changes once a single machine is no longer enough.

# %% [markdown]
# ### Which systems trained with what
#
# | System | Year | Preference / RL stage | Source |
# |---|---|---|---|
# | InstructGPT | 2022 | PPO against a reward model with a KL penalty. The released "InstructGPT" models are **PPO-ptx** (PPO plus a pre-training log-likelihood term). | Ouyang et al., *Training language models to follow instructions with human feedback*, arXiv:2203.02155 |
# | ChatGPT | 2022 | RLHF "using the same methods as InstructGPT": reward models trained on ranked comparisons, then fine-tuning with **PPO**, over several iterations | OpenAI, *Introducing ChatGPT* (blog) |
# | Llama 2-Chat | 2023 | Iterative RLHF (V1…V5): **rejection-sampling fine-tuning** and **PPO**, two reward models (helpfulness, safety) | Touvron et al., *Llama 2*, arXiv:2307.09288 |
# | Zephyr-7B-β | 2023 | dSFT, then **dDPO** (DPO on GPT-4-ranked UltraFeedback pairs). No sampling during fine-tuning. | Tunstall et al., *Zephyr: Direct Distillation of LM Alignment*, arXiv:2310.16944 |
# | Llama 3 | 2024 | "Several rounds of SFT and **DPO**". SFT data comes partly from rejection sampling with a reward model. | Llama Team, *The Llama 3 Herd of Models*, arXiv:2407.21783 |
# | DeepSeekMath | 2024 | **GRPO** (introduced here): a PPO variant with no critic, whose baseline comes from a group of sampled answers | Shao et al., arXiv:2402.03300 |
# | DeepSeek-R1 / R1-Zero | 2025 | **GRPO** with rule-based (accuracy, format) rewards | DeepSeek-AI, arXiv:2501.12948 |
# | Tülu 3 | 2024 | SFT → length-normalised **DPO** (`dpo_norm`) → **RLVR**, optimised with **PPO** (`ppo_vllm_thread_ray_gtrl.py`) | Lambert et al., arXiv:2411.15124; allenai/open-instruct `docs/tulu3.md` |

# %% [markdown]
# ### Our names, their names
#
# Versions checked: **Stable-Baselines3 2.8.0** (`PPO.__init__`; identical on main, 2.9.0a4) ·
# **CleanRL** main @ `fe8d8a0` (`Args` in `cleanrl/ppo.py` / `ppo_continuous_action.py`; values are written "ppo / continuous") ·
# **RLlib, Ray 2.60.0 wheel**, new API stack (`PPOConfig().training(...)`, `.env_runners(...)`) ·
# **TRL 1.0.0** `trl.experimental.ppo.PPOConfig` (field-for-field identical in 1.9.0 and on main 1.10.0.dev0); fields it inherits from
# `transformers.TrainingArguments` were checked in transformers 5.24.0 ·
# **OpenRLHF 0.11.0** `python -m openrlhf.cli.train_ppo_ray` (dotted flags since 0.10.2; the flat names in parentheses
# are from 0.10.1.post2; the non-Ray `openrlhf.cli.train_ppo` was removed in March 2025, PR #882).
# A default is shown wherever the source sets one. "—" means there is no equivalent.
#
# **A. Classic PPO (`ppo_lib.algos.ppo.PPOConfig`)**
#
# | Ours (default) | SB3 `PPO(...)` | CleanRL `Args` | RLlib `PPOConfig` | TRL `PPOConfig` | OpenRLHF flag |
# |---|---|---|---|---|---|
# | `clip_eps` 0.2 | `clip_range=0.2` | `clip_coef=0.2` | `training(clip_param=0.3)` | `cliprange=0.2` | `--actor.eps_clip 0.2` (`--eps_clip`) |
# | `gamma` 0.99 | `gamma=0.99` | `gamma=0.99` | `training(gamma=0.99)` | `gamma=1.0` | `--algo.advantage.gamma 1` (`--gamma`) |
# | `gae_lambda` 0.95 | `gae_lambda=0.95` | `gae_lambda=0.95` | `training(lambda_=1.0)` | `lam=0.95` | `--algo.advantage.lambd 1` (`--lambd`) |
# | `lr` 3e-4 | `learning_rate=3e-4` | `learning_rate=2.5e-4 / 3e-4` | `training(lr=5e-5)` | `learning_rate=3e-6` | `--actor.adam.lr 1e-6`, `--critic.adam.lr 9e-6` (`--actor_learning_rate`, `--critic_learning_rate`) |
# | `rollout_steps` 2048 | `n_steps=2048` | `num_steps=128 / 2048` | `env_runners(rollout_fragment_length="auto")` | — | — |
# | `num_envs` 1 | size of the VecEnv, e.g. `make_vec_env(env_id, n_envs=1)` | `num_envs=4 / 1` | `env_runners(num_env_runners=2, num_envs_per_env_runner=1)` | — | — |
# | `epochs` 10 | `n_epochs=10` | `update_epochs=4 / 10` | `training(num_epochs=30)` | `num_ppo_epochs=4` | `--train.max_epochs 1` (`--max_epochs`) |
# | `minibatch_size` 64 | `batch_size=64` | `num_minibatches=4 / 32` (size is computed) | `training(minibatch_size=128)` | `num_mini_batches=1` (size is computed) | `--train.batch_size 128` (`--train_batch_size`) |
# | `value_coef` 1.0 on ½·MSE | `vf_coef=0.5` on MSE | `vf_coef=0.5` on ½·MSE | `training(vf_loss_coeff=1.0)` on MSE | `vf_coef=0.1` on ½·MSE | — (the critic has its own optimiser) |
# | `entropy_coef` 0.0 | `ent_coef=0.0` | `ent_coef=0.01 / 0.0` | `training(entropy_coeff=0.0)` | — | `--actor.entropy_coef` None (`--entropy_loss_coef`) |
# | `max_grad_norm` 0.5 | `max_grad_norm=0.5` | `max_grad_norm=0.5` | `training(grad_clip=None, grad_clip_by="global_norm")` | `max_grad_norm=1.0` (TrainingArguments) | `--actor.max_norm 1.0` (`--max_norm`) |
# | `target_kl` None | `target_kl=None` (stops once approx-KL > 1.5×, checked every minibatch) | `target_kl=None` (checked after each epoch) | — | — | — |
# | `clip_value` False | `clip_range_vf=None` (its own range around the old values; loss on the clipped prediction only, no max) | `clip_vloss=True` (uses `clip_coef`, like ours) | `training(vf_clip_param=10.0)` (clips the squared error, not the value) | `cliprange_value=0.2` (always on) | `--critic.value_clip 0.5` (`--value_clip`) |
# | `normalize_advantages` True | `normalize_advantage=True` (per minibatch) | `norm_adv=True` (per minibatch) | — (always on, whole batch, in the GAE connector) | — (always whitened) | — (always on for `gae`; `--algo.advantage.no_std_norm` keeps the centring only) |
# | `anneal_lr` False | pass a schedule: `learning_rate=LinearSchedule(3e-4, 0.0, 1.0)` (`get_linear_fn` is deprecated) | `anneal_lr=True` | `training(lr=[[0, 3e-4], [T, 0.0]])` | `lr_scheduler_type="linear"` (TrainingArguments) | `--actor.lr_scheduler cosine_with_min_lr` (`--lr_scheduler`) |
# | `adam_eps` 1e-5 | `policy_kwargs=dict(optimizer_kwargs=dict(eps=...))`, default 1e-5 for Adam | hard-coded `eps=1e-5` | — (override `Learner.configure_optimizers_for_module`) | `adam_epsilon=1e-8` (TrainingArguments) | `--actor.adam.eps 1e-8` (no flag in 0.10.1.post2) |
# | `beta` 1.0 (penalty) | — | — | `training(kl_coeff=0.2)` with `use_kl_loss=True` | — | — |
# | `kl_target` 0.01 | — | — | `training(kl_target=0.01)` | — | — |
# | `adaptive_beta` True | — | — | — (always adaptive: ×1.5 when KL > 2·target, ×0.5 when KL < target/2) | — | — |
#
# RLlib's default is clipping *and* an adaptive KL penalty to the old policy used together. Its update constants differ
# from the paper's rule (×2 / ÷2 at 1.5× / ÷1.5), which is ours. For the TRL and OpenRLHF columns, `gamma`/`lam`
# are per token, as in chapter 8.
#
# **B. PPO on tokens (`ppo_lib.rlhf.ppo.TokenPPOConfig`).** SB3, CleanRL and RLlib have no equivalent for any row: "—".
#
# | Ours (default) | TRL 1.0.0 `PPOConfig` | OpenRLHF 0.11.0 flag (0.10.1.post2 name) |
# |---|---|---|
# | `beta` 0.05 | `kl_coef=0.05` | `--algo.kl.init_coef 0.01` (`--init_kl_coef`) |
# | `kl_estimator` "k1" | `kl_estimator="k1"` (`"k1"` or `"k3"`) | `--algo.kl.estimator k1` (k1/k2/k3) (`--kl_estimator`) |
# | `adaptive_kl` False | — in 1.x (TRL 0.11 `trl/trainer/ppo_config.py`: `adap_kl_ctrl=True`) | on as soon as `--algo.kl.target` is set (Ziegler's controller, `AdaptiveKLController`) |
# | `kl_target` 6.0 | — (0.11: `target=6.0`) | `--algo.kl.target` None (`--kl_target`) |
# | `kl_horizon` 10 000 | — (0.11: `horizon=10000`) | `--algo.kl.horizon 10000` (`--kl_horizon`) |
# | `ptx_coef` 0.0 | — | — in 0.11.0; `--ptx_coef 0.05` up to 0.10.1.post2 |
# | `batch_size` 64 responses | `batch_size` is computed: `per_device_train_batch_size` (8) × `gradient_accumulation_steps` × world size | `--rollout.batch_size 1024` prompts × `--rollout.n_samples_per_prompt 1` (`--rollout_batch_size`, `--n_samples_per_prompt`) |
# | `epochs` 4 | `num_ppo_epochs=4` | `--train.max_epochs 1` (`--max_epochs`) |
# | `num_minibatches` 2 | `num_mini_batches=1` | implied: rollout batch × samples ÷ `--train.batch_size 128` |
# | `clip_eps` 0.2 | `cliprange=0.2` | `--actor.eps_clip 0.2` (`--eps_clip`) |
# | `value_clip_range` 0.2 | `cliprange_value=0.2` | `--critic.value_clip 0.5` (`--value_clip`) |
# | `value_coef` 0.1 | `vf_coef=0.1` | — (separate critic model and optimiser) |
# | `gamma` 1.0 | `gamma=1.0` | `--algo.advantage.gamma 1` (`--gamma`) |
# | `gae_lambda` 0.95 | `lam=0.95` | `--algo.advantage.lambd 1` (`--lambd`) |
# | `temperature` 1.0 | `temperature=0.7` | `--rollout.temperature 1.0` (`--temperature`) |
# | `missing_eos_score` −1 | `missing_eos_penalty=None` (a positive number *subtracted* from the score) | `--reward.stop_properly_penalty_coef` None (if < 0, a fixed reward for truncated samples) (`--stop_properly_penalty_coef`) |
# | `max_grad_norm` 1.0 | `max_grad_norm=1.0` (TrainingArguments) | `--actor.max_norm 1.0` (`--max_norm`) |
# | `whiten_advantages` True | — (always `masked_whiten`) | — (always for `gae`; `--algo.advantage.no_std_norm` turns off the division) (`--no_advantage_std_norm`) |
# | `lr` 1e-3 | `learning_rate=3e-6` | `--actor.adam.lr 1e-6` (`--actor_learning_rate`) |

# %% [markdown]
# ### What changes when one machine is not enough (on paper)
#
# - **Generation becomes the cost to beat.** OpenRLHF's README: "RLHF training spends **80%** of the time on sample
#   generation". Its answer is to generate with vLLM engines and to use Ray to put the actor, critic, reward and
#   reference models on separate GPU groups, "for models up to **70B+** parameters". Tülu 3's code reused OpenRLHF's
#   Ray + vLLM code "for scaling up PPO RLVR training into the 70B scale" (open-instruct README).
# - **You have to decide how to split the GPUs.** OpenRLHF's tuning guide (0.6.0 README) suggests vLLM : actor : critic
#   = 1 : 1 : 1, e.g. a 70B model on 48 A100s as 16/16/16. Its timing table (1024 prompts, 1 PPO epoch, 70B, 32 A800s)
#   shows 4488.53 s against 10 407.0 s for an optimised DeepSpeed-Chat, a **2.3×** speed-up. The README itself marks
#   these numbers as outdated.
# - **Weights must travel to the generators.** Once sampling runs in another engine, every update has to be copied
#   there: OpenRLHF `--vllm.sync_backend nccl`; in TRL's server mode the trainer calls
#   `vllm_client.update_named_param`. TRL's vLLM support has a colocate mode (the default) and a server mode. It covers
#   GRPO, Online DPO, NashMD, XPO and RLOO; the experimental `PPOConfig` has no vLLM option.
# - **Asynchrony trades freshness for throughput.** OpenRLHF's `--train.async_enable` / `--train.async_queue_size`
#   overlap generation and training ("larger = more off-policy"). `--algo.advantage.is_correction_enable` adds an
#   importance-sampling correction (`tis`, `icepop`, `seq-mask-tis`). The README warns that async training "may
#   affect convergence".
# - **Classic RL separates sampling from learning.** In RLlib, EnvRunners collect samples
#   (`num_env_runners`, `num_envs_per_env_runner`, `rollout_fragment_length`) and Learners train (`num_learners`,
#   `num_gpus_per_learner`). The effective batch is `num_learners × train_batch_size_per_learner`. PPO's default
#   is `num_env_runners=2`.
# - **Synchronous data-parallel PPO scales well.** DD-PPO reports near-linear scaling: a **107×** speed-up on
#   **128 GPUs**, and 2.5 billion steps in under 3 days on 64 GPUs. OpenAI Five ran PPO through its "Rapid"
#   system on batches of about **2 million frames every 2 seconds**.
# - **Asynchronous actor–learner designs.** IMPALA separates acting from learning and corrects the lag with V-trace,
#   reaching **250,000 frames/s** on "thousands of machines". RLlib's APPO follows IMPACT (Luo et al. 2020), a
#   clipped-target variant of the same idea.
#
# These figures are the projects' own (OpenRLHF's README; TRL's vLLM documentation; RLlib's
# source; Wijmans et al. 2020 for DD-PPO; Espeholt et al. 2018 for IMPALA; Berner et al. 2019
# for OpenAI Five); this course has not reproduced them. The parameter tables were checked
# against the libraries' source at the versions named above; defaults change between
# releases, so check the version you install.

# %% [markdown]
# ## What we learned
#
# - The KL-regularised objective has a closed-form optimum; inverting it turns any policy into
#   an implicit reward, and the Bradley-Terry loss on that reward is DPO: no reward model, no
#   sampling, two models (one, with precomputed reference log-probabilities).
# - DPO widens the gap between chosen and rejected, not the chosen probability itself; and,
#   never seeing its own samples, it cannot notice what it breaks elsewhere.
# - GRPO replaces the critic by the other answers to the same prompt; RLOO does the same with a
#   leave-one-out mean. A group with equal rewards teaches nothing.
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
