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
# # Chapter 10 — RL with verifiable rewards: GRPO and its 2025 successors
#
# Chapters 8 and 9 learned a reward from preferences, and watched the policy find the reward
# model's holes. Since 2025 most reasoning post-training has dropped the reward model where it
# can: a **program checks the answer** (a maths result, a passing unit test) and GRPO's groups
# turn that check into advantages. This is "RL with verifiable rewards" (RLVR; DeepSeek-R1, 2025).
# With it came a stream of fixes to GRPO — Dr. GRPO, DAPO, GSPO — that argue about how to
# average the loss, how far to clip, and what to do with groups that carry no signal.
#
# Here a 100k-parameter model learns 3-digit addition on a CPU, in about a minute. It can answer
# directly or work the sum out on a scratchpad first, and only the scratchpad is reliable: you
# will watch RL discover that thinking pays, responses get longer, and the all-right groups
# stop teaching anything. Then we compare GRPO's successors on three seeds, and say plainly
# where this toy does *not* separate them.
#
# **Your time:** about 90 minutes to read, run, do the exercises and play with the widgets.
#
# **Learning objectives.** After this chapter you can:
#
# - Define a task as a value (vocabulary, prompts, supervised data, reward) and a verifier as the reward, and say why a verifier cannot be hacked the way a reward model is.
# - Implement the unbiased pass@k estimator and use pass@1 and pass@k to ask whether RL teaches new answers or sharpens known ones.
# - Predict and compute the per-token weight of GRPO's, Dr. GRPO's and DAPO's loss aggregations, and explain the length bias of the per-response mean.
# - Train GRPO on a verifier and read its diagnostics: accuracy, response length, scratchpad share, zero-variance groups, KL, seconds.
# - Compare GRPO's 2025 successors (Dr. GRPO, DAPO's clip-higher and dynamic sampling, GSPO, the KL on and off) on three seeds, and say where they differ and where not.
# - Diagnose a reward that does not go up from logged curves: prompts too hard, a temperature too low, a format nobody produces, a learning rate too high.
# - Write a reward for format plus correctness that a degenerate answer cannot collect.

# %%
import json

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from ppo_lib.teaching.checks.rlvr import (CAUSES, DIAGNOSIS_RUNS, FORMAT_BONUS, RUN_CAUSE, check_aggregate_loss,
                                         check_diagnosis, check_format_reward, check_pass_at_k, diagnosis_curves,
                                         load_diagnosis)
from ppo_lib.course import REPO_ROOT
from ppo_lib.rlhf import addition
from ppo_lib.rlhf.evaluate import evaluate_verifier
from ppo_lib.rlhf.grpo import GRPOConfig, aggregation_weights, train_grpo
from ppo_lib.rlhf.model import generate, resolve_device
from ppo_lib.rlhf.presets import GRPO_VARIANTS, rlvr_presets
from ppo_lib.rlhf.pretrain import pretrain
from ppo_lib.teaching.widgets import LiveFigure

torch.set_num_threads(1)
device = resolve_device("auto")
task, sft_config, grpo_settings = rlvr_presets(str(device))
# supervised fine-tuning on the teacher's answers: kept in .ppo_cache/ after the first run
sft = pretrain(sft_config, device=device, task=task)
print(f"SFT model: {sum(p.numel() for p in sft.model.parameters()):,} parameters, "
      f"{sft_config.steps} steps of {sft_config.batch_size} ({'from the cache' if sft.from_cache else f'{sft.seconds:.0f} s'})")

# %% [markdown]
# ## 1. A task with a checkable answer, and two ways to answer it
#
# The task is a value (`ppo_lib.rlhf.task.Task`): its vocabulary and special tokens, a sampler
# of training prompts and a fixed held-out set, the teacher's supervised data, and the reward —
# here a **verifier**, a plain function of (prompt, response). Chapter 8's review language is
# another `Task` (with a learned reward model instead), and every trainer of the library runs
# on either. The addition task has 18 tokens; a prompt is `7 2 5 + 3 6 8 =` and there are two
# ways to answer:
#
# - **direct**: `1 0 9 3 <eos>`;
# - **worked**: `: 1 3 , 9 , 1 0 so 1 0 9 3 <eos>` — a scratchpad of the column sums from the
#   units up, carry included (5+8 = 13, 2+6+1 = 9, 7+3 = 10), then the answer.
#
# The verifier returns 1 when the response ends with `<eos>`, parses, has no leading zeros and
# its final number is the sum; otherwise 0. The teacher is always right and works the sum out
# in 30% of its answers.

# %%
prompt = addition.prompt_ids(725, 368)
for answer in ("1 0 9 3 <eos>", ": 1 3 , 9 , 1 0 so 1 0 9 3 <eos>", ": 9 so 1 0 9 3 <eos>", "1 0 9 3",
               "0 1 0 9 3 <eos>", "1 0 9 4 <eos>"):
    print(f"{task.decode(prompt)} {answer:36s} -> reward {addition.verify(prompt, task.encode(answer)):.0f}")

# %% [markdown]
# Note the third line: the verifier checks the *answer*, not the reasoning. A scratchpad with a
# wrong column sum and a right final number scores 1. That is how RLVR works on real models
# too (the reward looks at the boxed answer), and it is one reason a model's "reasoning" need
# not be faithful.
#
# **Why a verifier is not a reward model.** Chapter 8's policy found strings the reward model
# scored highly and the hidden gold reward hated. A verifier *is* the gold reward: there is no
# gap to exploit, only the verifier's own bugs (accepting `0 1 0 9 3`, say, or a reward for the
# *format* alone: give 0.5 for starting with `:` and a policy can collect it with any scratchpad
# and any answer). The teacher's data make the task interesting: how good is the SFT model, and
# which style is it good at?

# %%
with torch.no_grad():
    probe_prompts = task.heldout_prompts(96).repeat_interleave(16, dim=0)
    probe = generate(sft.model, probe_prompts, task=task, kv_cache=True,
                     generator=torch.Generator(device).manual_seed(1))
right = task.verify(probe_prompts, probe.responses.cpu())
worked = probe.responses[:, 0].cpu().eq(addition.WORK)
style = {"worked": (float(worked.float().mean()), float(right[worked].mean()), float(probe.lengths[worked].float().mean())),
         "direct": (float((~worked).float().mean()), float(right[~worked].mean()), float(probe.lengths[~worked].float().mean()))}
for name, (share, acc, length) in style.items():
    print(f"{name:7s} answers: {share:5.1%} of samples, right {acc:5.1%}, {length:4.1f} tokens")
print(f"overall: right {float(right.mean()):.1%}")
# the text below: mostly direct and nearly always wrong; worked, right most of the time
assert style["worked"][0] < 0.5 and style["direct"][1] < 0.1 and style["worked"][1] > 0.5

# %% [markdown]
# The SFT model answers directly most of the time, and those answers are nearly always wrong:
# in a minute of training it cannot add 3-digit numbers in one go. When it works the sum out it
# is right most of the time. Length and accuracy are linked, and RL has something to discover.
#
# ## 2. Measuring: pass@1 and pass@k
#
# A policy that is right 30% of the time on a prompt is still useful if we may sample several
# answers and check them. **pass@k** is the chance that at least one of $k$ samples is right.
# Estimating it from $k$ samples per prompt is noisy; Chen et al. (2021) draw $n \ge k$ samples,
# count the $c$ right ones, and average over prompts the exact chance that $k$ of the $n$, drawn
# without replacement, contain a right one:
#
# $$\widehat{\text{pass@}k} = 1 - \binom{n-c}{k}\Big/\binom{n}{k}.$$
#
# It is unbiased. The tempting plug-in $1 - (1 - c/n)^k$ is not (it is biased low).
#
# ### Exercise 10.1 — the unbiased pass@k
#
# Write `pass_at_k(n, c, k)`: whole numbers $0 \le c \le n$, $1 \le k \le n$; return a float. It
# must work for $n = 200$, where a formula through factorials in floating point fails ($n!$
# overflows a float from $171!$ on): compute the ratio as a product, or with Python's exact
# integers (`math.comb`).

# %% nbgrader={"grade": false, "grade_id": "pass_at_k", "locked": false, "schema_version": 3, "solution": true}
def pass_at_k(n, c, k):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
pass_at_k = check_pass_at_k(pass_at_k)

# %% [markdown]
# Now the SFT model on the 96 held-out problems, 64 samples each:

# %%
sft_eval = evaluate_verifier(sft.model, task, n_prompts=96, samples_per_prompt=64)
counts = sft_eval["right_per_prompt"]
for k in (1, 4, 16, 64):
    unbiased = np.mean([pass_at_k(64, c, k) for c in counts])
    plug_in = np.mean([1 - (1 - c / 64) ** k for c in counts])
    print(f"pass@{k:<2d} unbiased {unbiased:.3f}   plug-in {plug_in:.3f}")
    assert abs(unbiased - sft_eval["pass_at_k"][k]) < 1e-9
print(f"SFT: worked share {sft_eval['stats']['worked']:.2f}, mean length {sft_eval['length']:.1f} tokens")
assert sft_eval["pass_at_k"][1] < 0.4 and sft_eval["pass_at_k"][64] > 0.95   # the text below

# %% [markdown]
# pass@1 is low, but with 64 tries almost every problem is solved at least once: the SFT model
# *can* do it, it just rarely chooses to. Keep these numbers for after RL.
#
# ## 3. GRPO on a verifier, and how to average its loss
#
# GRPO (chapter 9) samples $G$ answers per prompt and gives every token of answer $i$ the
# advantage $\hat A_i = (r_i - \mathrm{mean}(r)) / (\mathrm{std}(r) + \varepsilon)$. With a 0/1
# verifier, a group that is all right or all wrong has $\hat A = 0$: **no signal** from that
# prompt. Then the clipped ratio terms $f_{i,t}$ of the tokens are averaged into one loss, and
# *how* they are averaged is the first thing the 2025 papers changed. With $B$ responses of
# lengths $|o_i|$ in $L$ slots and $N = \sum_i |o_i|$ real tokens:
#
# $$\text{GRPO: } \frac1B\sum_i \frac{1}{|o_i|}\sum_t f_{i,t} \qquad
#   \text{Dr. GRPO: } \frac{1}{B\,L}\sum_i\sum_t f_{i,t} \qquad
#   \text{DAPO: } \frac{1}{N}\sum_i\sum_t f_{i,t}.$$
#
# **Predict first.** Take a batch of four responses in $L = 16$ slots: a short (4 tokens) and a
# long (16 tokens) *right* answer, a short and a long *wrong* one. For each aggregation, what is
# the weight $w_{i,t}$ of one token of the short wrong answer, and of one token of the long
# wrong answer? Write your prediction as fractions below (leave `None` to skip), then run the
# cell: it computes them exactly.

# %%
my_prediction = {          # aggregation: (weight of a token of the short wrong answer, of the long wrong answer)
    "grpo": None,          # e.g. (1 / 16, 1 / 64)
    "dr_grpo": None,
    "dapo": None,
}
lengths = torch.tensor([4, 16, 4, 16])          # short right, long right, short wrong, long wrong
demo_mask = (torch.arange(16)[None] < lengths[:, None]).float()
exact = {a: (float(aggregation_weights(demo_mask, a)[2, 0]), float(aggregation_weights(demo_mask, a)[3, 0]))
         for a in ("grpo", "dr_grpo", "dapo")}
for a, (short, long) in exact.items():
    guess = my_prediction[a]
    verdict = "" if guess is None else ("  your prediction: right" if np.allclose(guess, (short, long))
                                        else f"  your prediction {guess[0]:.4f}, {guess[1]:.4f}: not quite")
    print(f"{a:8s} short wrong {short:.4f} (1/{1 / short:.0f})   long wrong {long:.4f} (1/{1 / long:.0f})"
          f"   long/short {long / short:.2f}{verdict}")
assert np.allclose([exact["grpo"], exact["dr_grpo"], exact["dapo"]], [(1 / 16, 1 / 64), (1 / 64, 1 / 64), (1 / 40, 1 / 40)])

# %% [markdown]
# Under GRPO each token of the long wrong answer is pushed down **4 times less** than a token of
# the short wrong one: the whole answer gets the same total push, spread over more tokens. A
# wrong answer can lower its per-token penalty by being longer — the **length bias** Liu et al.
# (2025) point at: with the per-response mean, wrong answers can drift longer. Dr. GRPO divides
# by the constant $B L$ instead (every token the same weight, whatever the batch); DAPO by the
# batch's token count $N$ (every token the same weight within a batch, but the constant moves
# with the lengths). TRL's `GRPOTrainer` defaults to DAPO's since 2025 and calls the paper's
# per-sequence mean "not recommended due to length bias".
#
# ### Exercise 10.2 — the three aggregations
#
# Write `aggregate_loss(per_token, mask, kind)`: `per_token` and `mask` of shape `(B, L)` (mask
# 1.0 on real tokens, 0.0 on padding after `<eos>`; every response has at least one token),
# `kind` one of `"grpo"`, `"dr_grpo"`, `"dapo"`; return a torch tensor holding one number, the
# aggregation above with $L$ = `mask.shape[1]`. The checker also compares its gradient with
# respect to `per_token`: the per-token weights you just predicted.

# %% nbgrader={"grade": false, "grade_id": "aggregate_loss", "locked": false, "schema_version": 3, "solution": true}
def aggregate_loss(per_token, mask, kind):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
aggregate_loss = check_aggregate_loss(aggregate_loss)

# %% [markdown]
# ### Training GRPO on the verifier
#
# The library's one GRPO trainer (`ppo_lib.rlhf.grpo.train_grpo`) takes the verifier as its
# reward when given no reward model. The chapter's settings (`rlvr_presets`): $G = 8$ answers to
# 16 prompts per iteration, 2 epochs of 2 minibatches, learning rate $10^{-4}$, no KL penalty
# (TRL's default today; section 4 turns it on), sampling with a key/value cache. We run 40
# iterations here; the benchmark behind section 4 runs 150 on three seeds.

# %%
live_config = GRPOConfig(**{**grpo_settings, "iterations": 40, "seed": 0})
run = train_grpo(sft, None, live_config)
h = run.history
fig, axes = plt.subplots(1, 4, figsize=(14, 3))
axes[0].plot(h.gold)
axes[0].set_title("accuracy of the rollouts")
axes[1].plot(h.length)
axes[1].set_title("mean response length (tokens)")
axes[2].plot([s["worked"] for s in h.task_stats])
axes[2].set_title("share of worked answers")
axes[3].plot(h.zero_std_groups)
axes[3].set_title("groups with zero variance")
for ax in axes:
    ax.set_xlabel("iteration")
fig.tight_layout()
plt.show()
rollout_s, update_s = sum(h.rollout_seconds), sum(h.update_seconds)
print(f"{len(h.gold)} iterations in {run.seconds:.0f} s: {run.seconds / len(h.gold):.2f} s each, "
      f"{rollout_s / (rollout_s + update_s):.0%} of it sampling and scoring, the rest the updates")
first_worked_90 = next((i for i, s in enumerate(h.task_stats) if s["worked"] >= 0.9), None)
print(f"the worked share first reached 90% at iteration {first_worked_90}; the KL to the SFT model "
      f"ends at {h.kl[-1]:.2f} nats per response")

# %% [markdown]
# Where does an iteration's time go? Sampling is token by token: without a cache, each of the
# 20 steps runs the model over the whole sequence so far; with a **key/value cache** each block
# keeps the keys and values of earlier positions and only the new position is computed
# (`generate(..., kv_cache=True)`, the preset's setting; the same samples up to rounding, a test
# checks it):

# %%
import time

batch_prompts = task.sample_prompts(np.random.default_rng(0), 128)
gen_seconds = {}
for kv in (False, True):
    t0 = time.perf_counter()
    generate(run.policy, batch_prompts, task=task, kv_cache=kv, generator=torch.Generator(device).manual_seed(0))
    gen_seconds[kv] = time.perf_counter() - t0
print(f"sampling 128 answers: {gen_seconds[False]:.2f} s without the cache, {gen_seconds[True]:.2f} s with it "
      f"({gen_seconds[False] / gen_seconds[True]:.1f}x)")
assert gen_seconds[False] > 2 * gen_seconds[True]   # "several times faster", below

# %% [markdown]
# Within a few iterations nearly every answer is worked, the mean length roughly doubles, and
# the accuracy follows: RL found that thinking pays here. Then the length stops growing — the
# scratchpad's format fixes it. The share of zero-variance groups rises with skill: once most
# prompts are solved in all 8 tries, those groups teach nothing.

# %%
after = evaluate_verifier(run.policy, task, n_prompts=96, samples_per_prompt=64)
print(f"{'':6s}" + "".join(f"{'pass@' + str(k):>9s}" for k in (1, 4, 16, 64)) + "   worked  length")
for name, ev in (("SFT", sft_eval), ("GRPO", after)):
    print(f"{name:6s}" + "".join(f"{ev['pass_at_k'][k]:9.3f}" for k in (1, 4, 16, 64))
          + f"   {ev['stats']['worked']:6.2f}  {ev['length']:6.1f}")
assert first_worked_90 is not None and first_worked_90 <= 30
assert after["pass_at_k"][1] > sft_eval["pass_at_k"][1] + 0.3
assert after["pass_at_k"][64] >= sft_eval["pass_at_k"][64] - 0.02
assert after["length"] > 1.5 * sft_eval["length"]
early, late = np.mean(h.zero_std_groups[:5]), np.mean(h.zero_std_groups[-20:])
print(f"zero-variance groups: {early:.0%} over the first 5 iterations, {late:.0%} over the last 20")
assert late > early
assert np.mean(h.length[-10:]) < np.mean(h.length[20:30]) + 1.0   # the length stops growing

# %% [markdown]
# **Does RL teach something new, or sharpen what was there?** Yue et al. (2025) found that on
# large models RLVR raises pass@1 but *lowers* pass@k for large $k$: the base model, sampled
# often enough, solves problems the RL model no longer does. Here pass@1 rises by a lot and
# pass@64 stays where it was: the SFT model already solved nearly every problem sometimes, and
# RL made the right answers likely. In that sense RL only sharpened — it picked the style the
# SFT model already had — but it did not narrow what the model can solve within 64 tries. The
# toy differs from Yue et al.'s setting: one skill, a base model that already covers the
# held-out set, and a short run.
#
# ## 4. GRPO's successors, on three seeds
#
# Each successor is a switch of the same trainer (`GRPO_VARIANTS` in `ppo_lib.rlhf.presets`):

# %%
for name, switches in GRPO_VARIANTS.items():
    print(f"{name:10s} {switches}")

# %% [markdown]
# `benchmarks/rlvr.py` ran each for 150 iterations on three seeds (three SFT models), plus
# `grpo_kl`, GRPO with $\beta = 0.04$ and $k_3$ in the loss, and `ppo`, chapter 8's PPO with a
# critic on the same verifier, and evaluated each on the held-out set as above. The file keeps the command, the date and the machine:

# %%
record = json.loads((REPO_ROOT / "benchmarks" / "results" / "rlvr.json").read_text())
for made in record.get("provenance", [record]):
    print(f"{made['command']}  ({made['date'][:16]}, {made['machine']['cpus']} CPUs, torch {made['machine']['torch']})")
runs = record["runs"]
variants = [v for v in record["settings"]["variants"] if any(r["variant"] == v for r in runs)]


def summarise(name):
    rs = [r for r in runs if r["variant"] == name]
    f = lambda key: [r["final"][key] for r in rs]  # noqa: E731
    p1 = [r["final"]["pass_at_k"]["1"] for r in rs]
    return {"n": len(rs), "pass@1": np.mean(p1), "sd": np.std(p1), "pass@64": np.mean([r["final"]["pass_at_k"]["64"] for r in rs]),
            "worked": np.mean(f("worked")), "length": np.mean(f("length")), "kl": np.mean(f("kl")),
            "zero_var": np.mean([np.mean(r["history"]["zero_variance"][-50:]) for r in rs]),
            "s_per_it": np.mean([r["seconds"] / r["iterations"] for r in rs]),
            "responses": np.mean([np.mean(r["history"]["responses_sampled"]) for r in rs]),
            "by_seed": {r["seed"]: r["final"]["pass_at_k"]["1"] for r in rs}}


def zero_var(s):
    return "no groups" if np.isnan(s["zero_var"]) else f"{s['zero_var']:.0%}"   # PPO samples one answer a prompt


sft_p1 = np.mean([s["pass_at_k"]["1"] for s in record["sft"].values()])
table = {v: summarise(v) for v in variants}
print(f"SFT pass@1 {sft_p1:.3f} (mean of {len(record['sft'])} seeds)")
print(f"{'variant':10s} {'seeds':>5s} {'pass@1':>14s} {'pass@64':>8s} {'worked':>7s} {'length':>7s} {'KL':>6s} "
      f"{'zero-var':>8s} {'s/it':>6s} {'samples/it':>10s}")
for v, s in table.items():
    print(f"{v:10s} {s['n']:5d} {s['pass@1']:8.3f} ± {s['sd']:.3f} {s['pass@64']:8.3f} {s['worked']:7.2f} "
          f"{s['length']:7.1f} {s['kl']:6.2f} {zero_var(s):>8s} {s['s_per_it']:6.2f} {s['responses']:10.0f}")

# %% [markdown]
# How to read it (the cell after this one checks each statement against the file):
#
# - **Every variant learns**, from the SFT model's pass@1 to well above twice it, and all end
#   with nearly every answer worked. pass@64 stays near 1: no variant narrows what can be solved.
# - **The loss aggregations are within noise of each other on this task.** The seed (which SFT
#   model you start from) moves pass@1 more than the choice among `grpo`, `dr_grpo` and
#   `dapo_loss`, and their final mean lengths agree to within 0.2 tokens: the length bias of
#   section 3 does not show here. Answers are 13-15 tokens long with little room to pad (the
#   format fixes the length); the prototype behind this chapter could not show it either.
# - **DAPO's dynamic sampling costs samples**: it generates about twice the responses per
#   iteration of plain GRPO, because some groups of every batch are all right or all wrong.
#   Full DAPO (token-level loss, clip-higher, dynamic sampling) ends ahead of GRPO on every seed,
#   by a few points: less than the spread between seeds, so on this evidence a small, consistent
#   edge bought with twice the sampling.
# - **The KL penalty** (`grpo_kl`) keeps the policy closer to the SFT model (a smaller KL at the
#   end) for no gain in accuracy here: that is why TRL turned it off by default.
# - **PPO with a critic** (`ppo`: chapter 8's trainer on the same verifier, a value model started
#   from the SFT model) ends as accurate as the GRPO family, within the spread of seeds, at more
#   than twice GRPO's seconds per iteration: it trains a second network, and its sampling here
#   runs without the key/value cache. Dropping the critic bought speed and memory, not accuracy.

# %%
others = [v for v in table if v != "grpo"]
assert all(s["pass@1"] > 2 * sft_p1 for s in table.values())
assert all(s["worked"] > 0.9 and s["pass@64"] > 0.97 for s in table.values())
seed_spread = max(table["grpo"]["by_seed"].values()) - min(table["grpo"]["by_seed"].values())
aggregation_gap = max(abs(table[v]["pass@1"] - table["grpo"]["pass@1"]) for v in ("dr_grpo", "dapo_loss") if v in table)
print(f"grpo's spread over seeds: {seed_spread:.3f}; largest gap between loss aggregations: {aggregation_gap:.3f}")
assert aggregation_gap < seed_spread
assert max(abs(table[v]["length"] - table["grpo"]["length"]) for v in ("dr_grpo", "dapo_loss") if v in table) < 0.2
if "dapo" in table:
    assert table["dapo"]["responses"] > 1.5 * table["grpo"]["responses"]
    edge = [table["dapo"]["by_seed"][k] - table["grpo"]["by_seed"][k] for k in table["grpo"]["by_seed"]]
    print(f"full DAPO minus GRPO, seed by seed: {np.round(edge, 3)}")
    assert all(0 < e < seed_spread for e in edge)
if "grpo_kl" in table:
    assert table["grpo_kl"]["kl"] < table["grpo"]["kl"]
if "ppo" in table:
    assert abs(table["ppo"]["pass@1"] - table["grpo"]["pass@1"]) < seed_spread
    assert table["ppo"]["s_per_it"] > 2 * table["grpo"]["s_per_it"]
print("the statements above hold for the file's numbers")

# %% [markdown]
# ### A widget: the variants over training
#
# Pick a variant; its accuracy, length and zero-variance share over the 150 iterations are drawn
# (the mean of its seeds) against plain GRPO (grey).

# %%
def variant_view(variant):
    rs = [r for r in runs if r["variant"] == variant]
    base = [r for r in runs if r["variant"] == "grpo"]
    mean = lambda rows, key: np.mean([r["history"][key] for r in rows], axis=0)  # noqa: E731
    return {"variant": variant, "summary": table[variant],
            "curves": {key: (mean(rs, key), mean(base, key)) for key in ("accuracy", "length", "zero_variance")}}


def draw_variant(view, fig):
    axes = fig.subplots(1, 3)
    for ax, (key, (mine, base)) in zip(axes, view["curves"].items()):
        ax.plot(base, color="0.6", lw=1, label="grpo")
        ax.plot(mine, lw=1.2, label=view["variant"])
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize="small")


def describe_variant(view):
    s = view["summary"]
    return (f"<b>{view['variant']}</b> {record['settings']['variants'][view['variant']]}: "
            f"held-out pass@1 {s['pass@1']:.3f} (sd {s['sd']:.3f}, {s['n']} seeds), worked {s['worked']:.2f}, "
            f"{s['s_per_it']:.2f} s and {s['responses']:.0f} samples per iteration")


variant_controls = {"variant": widgets.ToggleButtons(options=variants, value=variants[0], description="variant")}
variant_explorer = LiveFigure(variant_controls, variant_view, draw_variant, describe_variant, figsize=(11, 3))
display(variant_explorer)

# %% [markdown]
# ## 5. "Why doesn't my reward go up?"
#
# The most asked question about GRPO. `benchmarks/rlvr_diagnosis.py` ran five short GRPO runs
# (40 iterations, seed 0, one seed each) from the same SFT model with the preset's settings, and
# broke four of them in one way each: prompts the model cannot solve, a temperature too low, a
# verifier that demands a format the model never writes, a learning rate too high. The fifth is
# healthy. Their ids, A to E, hide which is which. Besides accuracy, each run logged per
# iteration what a group looked like: the share of groups that are **all wrong**, the **distinct
# share** (distinct answers among a group's 8, divided by 8: 1 when all differ, 1/8 when all
# are the same), the share of **well-formed** answers (under the run's own verifier's format),
# and the **KL** to the SFT model.
#
# **Predict first.** Which of these curves stays *exactly* flat when every group is all wrong
# and there is no KL term in the loss? (Look at the advantages of an all-wrong group.)

# %%
diag = load_diagnosis(REPO_ROOT / "benchmarks" / "results" / "rlvr_diagnosis.json")
print(f"{diag['command']} ({diag['date'][:10]}): {diag['settings']['iterations']} iterations, "
      f"seed {diag['settings']['seed']}")
curves = diagnosis_curves(diag)
panels = {"accuracy": "accuracy (rollouts)", "all_wrong": "all-wrong groups", "distinct": "distinct share in a group",
          "well_formed": "well-formed answers", "kl": "KL to the SFT model (nats)"}
fig, axes = plt.subplots(1, 5, figsize=(15, 3))
for rid, h in curves.items():
    for ax, key in zip(axes, panels):
        ax.plot(h[key], lw=1.2, label=f"run {rid}")
for ax, title in zip(axes, panels.values()):
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("iteration")
axes[4].set_yscale("symlog", linthresh=0.1)
axes[0].legend(fontsize="small")
fig.tight_layout()
plt.show()


def run_summary(h):
    m = lambda key, sl=slice(None): float(np.mean(h[key][sl]))  # noqa: E731
    return {"acc 0": h["accuracy"][0], "acc last 10": m("accuracy", slice(-10, None)), "all wrong": m("all_wrong"),
            "all wrong last 10": m("all_wrong", slice(-10, None)), "distinct first 5": m("distinct", slice(0, 5)),
            "well formed": m("well_formed"), "largest KL": max(h["kl"])}


summary = {rid: run_summary(h) for rid, h in curves.items()}
print("run" + "".join(f"{k:>18s}" for k in summary["A"]))
for rid, s in summary.items():
    print(f"  {rid}" + "".join(f"{v:18.2f}" for v in s.values()))

# %% [markdown]
# ### Exercise 10.3 — name the cause of each run
#
# Make `diagnosis()` return a dict `{run id: cause}` for the five runs, each cause one of
# `CAUSES` (printed below). Reason from the evidence: which curves can each cause move, and
# which must it leave alone? The checker says, for each run, whether you are right, and if not
# why the cause you named does not fit that run's curves.

# %%
for cause, meaning in CAUSES.items():
    print(f"{cause!r:26s} {meaning}")


# %% nbgrader={"grade": false, "grade_id": "diagnosis", "locked": false, "schema_version": 3, "solution": true}
def diagnosis():
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
try:
    my_diagnosis = diagnosis()
except NotImplementedError:
    my_diagnosis = None
diagnosed = check_diagnosis(my_diagnosis, diag)

# %% [markdown]
# Once you have tried: what each failure looks like, and its cure.
#
# - **Prompts too hard** (4-digit operands for a model taught 3-digit sums). The answers are
#   well formed and varied, but every group is all wrong at every iteration, so every
#   advantage is 0 and, with no KL term, the update is *exactly* zero: the KL to the SFT model
#   stays 0.0. RL can only make likelier what the model already sometimes gets right. Cure:
#   easier prompts (a curriculum), or demonstrations of the harder problems in SFT.
# - **A format nobody produces** (a verifier that wants `so 1 0 9 3 <eos>`, which the teacher
#   never wrote). The same flat zero, but the tell is the well-formed share: (almost) no answer
#   is in the demanded format. Cure: check what the SFT model writes against what the verifier
#   parses *before* training (a few samples through the verifier), or teach the format in SFT.
# - **A temperature too low** (0.01 in rollouts and training). The 8 answers to a prompt are
#   nearly the same one (a distinct share under 0.3 over the first 5 iterations, about 2
#   different answers in 8, against over 0.55 in every other run) and nearly every group is
#   zero-variance. The
#   few groups that differ give huge steps: the logits are divided by the temperature, so the
#   KL jumps past 10 nats while the accuracy stays under half the healthy run's. GRPO needs *diversity within a
#   group*: sample at temperature 1 (and train at the temperature you sampled at, chapter 8).
# - **A learning rate too high** (10^-3, ten times the preset). It starts where the healthy run
#   starts (the same SFT model), the worked style takes over, then the scratchpad itself breaks:
#   accuracy falls below where it started, all-wrong groups are more than half over the last 10
#   iterations, and once a group is all wrong it gives no
#   gradient to climb back with. Its KL is several times the healthy run's from the first
#   iterations on (the first 5 iterations' largest KL more than twice the healthy run's). Cure: a smaller lr (RLVR.md: 3e-4 still works here, noisier).
#
# In this file, measured (one seed each):

# %%
by_cause = {RUN_CAUSE[name]: summary[rid] for rid, name in DIAGNOSIS_RUNS.items()}
rid, hid = (r for cause in ("learning rate too high", "healthy") for r, n in DIAGNOSIS_RUNS.items() if RUN_CAUSE[n] == cause)
healthy, hard, fmt = by_cause["healthy"], by_cause["prompts too hard"], by_cause["format nobody produces"]
cold_run, hot = by_cause["temperature too low"], by_cause["learning rate too high"]
print(f"healthy: accuracy {healthy['acc 0']:.2f} -> {healthy['acc last 10']:.2f}, largest KL {healthy['largest KL']:.2f}")
print(f"prompts too hard: all-wrong {hard['all wrong']:.0%}, well formed {hard['well formed']:.0%}, "
      f"largest KL {hard['largest KL']}")
print(f"format nobody produces: all-wrong {fmt['all wrong']:.0%}, well formed {fmt['well formed']:.1%}, "
      f"largest KL {fmt['largest KL']}")
print(f"temperature too low: distinct share {cold_run['distinct first 5']:.2f} over the first 5 iterations, "
      f"largest KL {cold_run['largest KL']:.0f}, accuracy over the last 10 {cold_run['acc last 10']:.2f}")
print(f"learning rate too high: accuracy {hot['acc 0']:.2f} -> {hot['acc last 10']:.2f}, "
      f"all-wrong groups over the last 10 iterations {hot['all wrong last 10']:.0%}")
# what the text above says, for this file's numbers
assert healthy["acc last 10"] > healthy["acc 0"] + 0.4 and healthy["largest KL"] < 2
assert hard["all wrong"] == 1.0 and hard["well formed"] > 0.9 and hard["largest KL"] == 0.0
assert fmt["all wrong"] == 1.0 and fmt["well formed"] < 0.02 and fmt["largest KL"] == 0.0
assert hard["distinct first 5"] > 0.6 and fmt["distinct first 5"] > 0.6
assert cold_run["distinct first 5"] < 0.3 and cold_run["largest KL"] > 10
assert all(s["distinct first 5"] > 0.55 for s in summary.values() if s is not cold_run)
assert cold_run["acc last 10"] < healthy["acc last 10"] / 2
assert hot["acc 0"] == healthy["acc 0"] and hot["acc last 10"] < healthy["acc 0"] and hot["all wrong last 10"] > 0.5
assert max(curves[rid]["kl"][:5]) > 2 * max(curves[hid]["kl"][:5])

# %% [markdown]
# ### Exercise 10.4 — a format bonus that a degenerate answer cannot collect
#
# Against all-wrong groups people reach for a **format bonus**: a little reward for the worked
# style, right or wrong, so that a group whose answers are all wrong still has a spread of
# rewards and a gradient towards the scratchpad. Section 1 warned how it is hacked: pay it for
# starting with `:` and the policy learns to write `: <eos>`.
#
# Write `format_reward(prompt, response)`: `prompt` and `response` are lists of token ids (the
# response padded with `<pad>` after `<eos>`). Return the verifier's 1 or 0, plus
# `FORMAT_BONUS` (0.1) when the response is a *complete, well-formed worked answer*
# (`: n , ... , n so N <eos>`), right or wrong; anything else gets no bonus. Useful:
# `addition.verify(prompt, response)`, and `addition.parse_response(response)`, which returns
# `(answer, worked)` for a well-formed response and `None` otherwise. The checker runs your
# reward on crafted responses, degenerate ones among them, and says which one it over- (or
# under-) rewarded.
#
# **Predict first**: of `: <eos>`, `: 1 3 , 9 , 1 0 so <eos>` and `so 1 0 9 3 <eos>`, which
# would a bonus for "`:` first and `so` somewhere" pay?

# %% nbgrader={"grade": false, "grade_id": "format_reward", "locked": false, "schema_version": 3, "solution": true}
def format_reward(prompt, response):
    # YOUR CODE HERE
    raise NotImplementedError()


# %%
format_reward = check_format_reward(format_reward)
for case in check_format_reward.cases:
    print(f"{format_reward(*case.args):4.1f}  {case.describe}")

# %% [markdown]
# ## 6. The same trainer on a real language model (a GPU and internet; not run here)
#
# `train_grpo` asks little of a model: logits for a batch of token ids, a context length and a
# vocabulary size. The optional adapter `ppo_lib.rlhf.hf` wraps any Hugging Face causal LM in
# exactly that, and re-tokenises the addition task (its prompts, its teacher's answers and its
# verifier) for the model's tokenizer. `transformers` is an optional extra, not a dependency of
# the course. With a GPU (24 GB or more for a 0.5B model) and internet, in a terminal:
#
# ```bash
# pip install -e ".[hf]"
# python -m ppo_lib.rlhf.hf --model Qwen/Qwen2.5-0.5B --sft-steps 200 --iterations 100
# ```
#
# It downloads the model, fine-tunes it briefly on the teacher's answers, prints held-out
# pass@1 and pass@8, runs this chapter's GRPO (no KL, 16 prompts x 8 samples) and prints them
# again, with the seconds spent sampling and updating. **This command was not run here**: this
# machine has no GPU and no internet. What was run is the adapter's test, on a 2-layer GPT-2
# built from a configuration in the test (nothing downloaded), and
# `benchmarks/rlvr_trl.py`, which compares our trainer with TRL's `GRPOTrainer` on that GPT-2.
# (`--tiny` instead of `--model` runs the same command on such a GPT-2, offline, on a CPU.)

# %% [markdown]
# ## What we learned
#
# - A **task** is a value: vocabulary, prompts, supervised data and a reward. With a
#   **verifier** as the reward there is no reward model to hack; what the verifier checks (the
#   answer, not the reasoning) is exactly what is learned.
# - **pass@k** needs the unbiased estimator. Here RL raised pass@1 a lot and left pass@64 where
#   it was: it made the answers the model could already give likely, by choosing to think.
# - GRPO's per-response mean gives a long wrong answer's tokens a smaller push than a short
#   one's (the **length bias**); Dr. GRPO and DAPO weigh every token alike. On this task, at
#   13-16 tokens, the three end within noise of each other; the seed mattered more.
# - **Zero-variance groups** are the signal that is missing: all-right groups grow with skill,
#   all-wrong groups mean the task is too hard, the format unknown, or the policy broken; groups
#   of identical answers mean the temperature is too low. DAPO's dynamic sampling refills them
#   at the cost of more sampling. Log them every iteration, with the distinct share, the
#   well-formed share and the KL: together they tell the causes apart.
# - A **format bonus** gives all-wrong groups a spread, but only if a degenerate answer cannot
#   collect it: pay it for a complete, parsed worked answer, never for a marker.
# - Where time goes: sampling is a large part of a small model's iteration, and a key/value
#   cache makes it several times faster (`generate(kv_cache=True)`).
#
# ## Further reading
#
# - Z. Shao et al., *DeepSeekMath* (2024): GRPO, section 4.1.
# - DeepSeek-AI, *DeepSeek-R1* (2025): RL with verifiable rewards at scale.
# - Z. Liu et al., *Understanding R1-Zero-Like Training: A Critical Perspective* (2025): Dr. GRPO.
# - Q. Yu et al., *DAPO: An Open-Source LLM Reinforcement Learning System at Scale* (2025).
# - C. Zheng et al., *Group Sequence Policy Optimization* (2025): GSPO.
# - A. Ahmadian et al., *Back to Basics: Revisiting REINFORCE-Style Optimization for RLHF* (2024): RLOO.
# - Y. Yue et al., *Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?* (2025).
# - M. Chen et al., *Evaluating Large Language Models Trained on Code* (2021): the unbiased pass@k.
