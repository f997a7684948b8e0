"""Chapter 10's library: tasks as values, the addition task and its verifier, pass@k, the GRPO
switches (loss aggregation, clip-higher, dynamic sampling, GSPO), a learner's own task, and a
seeded learning test (the slow one, marked ``slow``)."""

import itertools
import math

import numpy as np
import pytest
import torch

from ppo_lib.losses import clipped_surrogate
from ppo_lib.rlhf import addition as add
from ppo_lib.rlhf import cache
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.evaluate import evaluate_verifier, pass_at_k
from ppo_lib.rlhf.grpo import (GRPOConfig, aggregation_weights, collect_groups, group_advantages, grpo_loss,
                               mean_advantages, rloo_advantages, select_groups, train_grpo)
from ppo_lib.rlhf.model import GPT, GPTConfig, frozen_copy, generate
from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo
from ppo_lib.rlhf.dpo import DPOConfig, train_dpo
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain
from ppo_lib.rlhf.reward_model import RewardConfig, train_reward_model
from ppo_lib.rlhf.task import Task, right_padded

T = add.TASK


def ids(text: str) -> list[int]:
    return T.encode(text)


# ---------------------------------------------------------------- the addition task and its verifier

@pytest.mark.parametrize("response, right", [
    ("1 0 9 3 <eos>", 1.0),
    (": 1 3 , 9 , 1 0 so 1 0 9 3 <eos>", 1.0),
    (": 9 so 1 0 9 3 <eos>", 1.0),                      # the scratchpad is not checked, only its form
    ("1 0 9 3 <eos> 5 5 <pad>", 1.0),                   # anything after <eos> is ignored
    ("1 0 9 3", 0.0),                                   # unfinished
    ("0 1 0 9 3 <eos>", 0.0),                           # a leading zero
    ("1 0 9 4 <eos>", 0.0),                             # wrong
    (": 1 3 , 9 , 1 0 <eos>", 0.0),                     # no "so"
    (": so 1 0 9 3 <eos>", 0.0),                        # an empty scratchpad
    (": 1 3 , , 1 0 so 1 0 9 3 <eos>", 0.0),            # an empty column
    (": 1 3 , 9 , 1 0 so 1 0 9 3 so 1 <eos>", 0.0),     # two answers
    (": 1 3 , 9 , 1 0 so 0 1 0 9 3 <eos>", 0.0),        # a leading zero in the answer
    ("1 0 + 9 3 <eos>", 0.0),
    ("<eos>", 0.0),
    ("so 1 0 9 3 <eos>", 0.0),
])
def test_verifier_by_hand(response, right):
    prompt = add.prompt_ids(725, 368)
    assert add.verify(prompt, ids(response)) == right
    assert T.verify(torch.tensor([prompt]), torch.tensor([ids(response)])).tolist() == [right]


def test_scratchpad_is_column_sums_from_the_units_up_with_the_carry():
    assert add.column_sums(725, 368) == [13, 9, 10]
    assert T.decode(add.response_ids(725, 368, worked=True)) == ": 1 3 , 9 , 1 0 so 1 0 9 3 <eos>"
    assert T.decode(add.response_ids(725, 368, worked=False)) == "1 0 9 3 <eos>"
    assert T.decode(add.prompt_ids(725, 368)) == "7 2 5 + 3 6 8 ="
    assert add.parse_prompt(add.prompt_ids(725, 368)) == (725, 368)
    assert T.vocab_size == 18 and T.prompt_len == 11 and T.context == 31


def test_teacher_is_always_right_works_30_percent_and_never_shows_held_out_problems():
    data = T.sample_texts(3000, 1)
    P = T.prompt_len
    right = T.verify(data[:, :P], data[:, P:])
    assert right.eq(1).all()
    worked = data[:, P].eq(add.WORK).float().mean().item()
    assert 0.27 < worked < 0.33
    lengths = (data[:, P:] != add.PAD_ID).sum(1)
    w = data[:, P].eq(add.WORK)
    assert set(lengths[~w].tolist()) <= {4, 5} and set(lengths[w].tolist()) <= {11, 12, 13, 14, 15}
    held = {tuple(r) for r in T.heldout_prompts(add.N_HELDOUT).tolist()}
    assert len(held) == add.N_HELDOUT
    assert not held & {tuple(r) for r in data[:, :P].tolist()}
    assert not held & {tuple(r) for r in T.sample_prompts(np.random.default_rng(0), 2000).tolist()}


# ---------------------------------------------------------------- pass@k

@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_brute_force_enumeration(n):
    for c in range(n + 1):
        samples = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_is_not_the_biased_plug_in_and_rejects_bad_input():
    # 1 right of 4, k = 2: 1 - C(3,2)/C(4,2) = 0.5, while 1 - (3/4)^2 = 0.4375
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(64, 0, 64) == 0.0 and pass_at_k(64, 1, 64) == 1.0
    with pytest.raises(ValueError, match=r"k=5: must be in \[1, n=4\]"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c=5: more right answers than samples"):
        pass_at_k(4, 5, 1)


# ---------------------------------------------------------------- the loss aggregations, by hand

def _tiny_batch():
    """Four responses in 6 slots: short right (2 tokens), long right (6), short wrong (2), long wrong (6)."""
    lengths = torch.tensor([2, 6, 2, 6])
    mask = (torch.arange(6)[None] < lengths[:, None]).float()
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old = torch.full((4, 6), -1.0) * mask
    return mask, adv, old


@pytest.mark.parametrize("aggregation, short, long", [
    ("grpo", 1 / (4 * 2), 1 / (4 * 6)),     # 1 / (B |o_i|): a short answer's tokens weigh 3x a long one's
    ("dr_grpo", 1 / (4 * 6), 1 / (4 * 6)),  # 1 / (B L): every token the same
    ("dapo", 1 / 16, 1 / 16),               # 1 / N, N = 2 + 6 + 2 + 6 real tokens
])
def test_each_aggregation_per_token_gradient_weight_by_hand(aggregation, short, long):
    mask, adv, old = _tiny_batch()
    logprobs = old.clone().requires_grad_(True)  # ratio 1: inside the clip, the gradient is -A w
    loss, _ = grpo_loss(logprobs, old, None, adv, mask, 0.2, 0.0, aggregation)
    g = logprobs.grad if logprobs.grad is not None else torch.autograd.grad(loss, logprobs)[0]
    expected = torch.zeros(4, 6)
    for i, (a, n) in enumerate(zip(adv.tolist(), [2, 6, 2, 6])):
        expected[i, :n] = -a * (short if n == 2 else long)
    assert torch.allclose(g, expected, atol=1e-7)
    assert torch.allclose(aggregation_weights(mask, aggregation), expected.abs(), atol=1e-7)
    # the wrong answers: under grpo a long one's tokens are pushed down 3x less than a short one's
    assert g[3, 0] / g[2, 0] == pytest.approx(long / short)


def test_aggregations_agree_when_all_responses_fill_every_slot():
    mask = torch.ones(3, 4)
    for a, b in itertools.combinations(["grpo", "dr_grpo", "dapo"], 2):
        assert torch.allclose(aggregation_weights(mask, a), aggregation_weights(mask, b))


def test_kl_term_uses_the_same_aggregation():
    mask, adv, old = _tiny_batch()
    logprobs = old.clone().requires_grad_(True)
    ref = old - 0.5 * mask
    k3 = (torch.expm1(-(old - ref)) + (old - ref)) * mask
    for aggregation in ("grpo", "dr_grpo", "dapo"):
        _, info = grpo_loss(logprobs, old, ref, torch.zeros(4), mask, 0.2, 0.1, aggregation)
        assert info["k3"] == pytest.approx(float((k3 * aggregation_weights(mask, aggregation)).sum()), rel=1e-6)


def test_clip_higher_lets_a_rising_token_with_positive_advantage_keep_its_gradient():
    ratio = torch.tensor([1.25, 0.75], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    g_sym = torch.autograd.grad(clipped_surrogate(ratio, adv, 0.2), ratio)[0]
    g_high = torch.autograd.grad(clipped_surrogate(ratio, adv, 0.2, clip_eps_high=0.28), ratio)[0]
    assert g_sym.tolist() == [0.0, 0.0]            # both clipped
    assert g_high.tolist() == [0.5, 0.0]           # 1.25 < 1.28: unclipped (mean over 2); the lower bound unchanged
    with pytest.raises(ValueError, match=r"clip_eps_high=0.1: must be >= clip_eps=0.2"):
        clipped_surrogate(ratio, adv, 0.2, clip_eps_high=0.1)


def test_gspo_sequence_ratio_is_the_geometric_mean_of_the_token_ratios():
    mask, adv, old = _tiny_batch()
    logprobs = old + torch.tensor([[0.1, -0.3, 0, 0, 0, 0], [0.02] * 6, [0.0] * 6, [0.01] * 6]) * mask
    loss, _ = grpo_loss(logprobs, old, None, adv, mask, 0.2, 0.0, ratio_level="sequence")
    s = torch.exp(torch.tensor([(0.1 - 0.3) / 2, 0.02, 0.0, 0.01]))
    assert float(loss) == pytest.approx(-float((s * adv).mean()), rel=1e-6)  # all inside the clip
    with pytest.raises(ValueError, match="ratio_level='sequence' with aggregation='dapo'"):
        grpo_loss(logprobs, old, None, adv, mask, 0.2, 0.0, "dapo", ratio_level="sequence")


# ---------------------------------------------------------------- zero-variance groups

def test_zero_variance_groups_give_zero_advantage_and_no_nan():
    rewards = torch.tensor([[1.0] * 8, [0.0] * 8, [0.7] * 8, [1, 0, 0, 0, 0, 0, 0, 0.0]])
    for fn in (group_advantages, mean_advantages, rloo_advantages):
        a = fn(rewards)
        assert torch.isfinite(a).all()
        assert a[:3].eq(0).all(), fn.__name__
        assert a[3].abs().sum() > 0
    assert mean_advantages(rewards)[3].tolist() == pytest.approx([0.875] + [-0.125] * 7)
    # an all-zero batch: the loss and its gradient are exactly 0, nothing is NaN
    mask, _, old = _tiny_batch()
    logprobs = old.clone().requires_grad_(True)
    for aggregation in ("grpo", "dr_grpo", "dapo"):
        loss, info = grpo_loss(logprobs, old, None, torch.zeros(4), mask, 0.2, 0.0, aggregation)
        (g,) = torch.autograd.grad(loss, logprobs)
        assert float(loss.detach()) == 0.0 and g.eq(0).all() and math.isfinite(info["approx_kl"])


def test_select_groups_prefers_groups_with_a_spread_in_sampling_order():
    spread = torch.tensor([False, True, False, True, True])
    assert select_groups(spread, 2).tolist() == [1, 3]
    assert select_groups(spread, 4).tolist() == [1, 3, 4, 0]


# ---------------------------------------------------------------- a learner's own task: reversing a word

LETTERS = ("a", "b", "c", "d")


def reverse_task(max_response_len: int = 4) -> Task:
    vocab = ("<pad>", "<bos>", "<eos>", *LETTERS, "|")
    tid = {w: i for i, w in enumerate(vocab)}

    def prompt(word):
        return [tid["<bos>"], *(tid[c] for c in word), tid["|"]]

    def words(rng, n):
        return ["".join(LETTERS[i] for i in rng.integers(4, size=3)) for _ in range(n)]

    def verifier(p, r):
        word = [i for i in p if tid["a"] <= i <= tid["d"]]
        r = list(r)
        return float(tid["<eos>"] in r and r[:r.index(tid["<eos>"])] == word[::-1])

    def texts(n, seed):
        rows = [prompt(w) + [tid[c] for c in w[::-1]] + [tid["<eos>"]] for w in words(np.random.default_rng(seed), n)]
        return right_padded(rows, 5 + max_response_len, 0)

    return Task(name="reverse", vocab=vocab, prompt_len=5, max_response_len=max_response_len,
                sample_prompts=lambda rng, n: torch.tensor([prompt(w) for w in words(rng, n)]),
                heldout_prompts=lambda n: torch.tensor([prompt(w) for w in words(np.random.default_rng(99), n)]),
                sample_texts=texts, verifier=verifier)


def test_a_learners_task_runs_through_pretraining_grpo_ppo_dpo_and_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    task = reverse_task()
    cfg = PretrainConfig(n_texts=2000, steps=150, batch_size=32, lr=3e-3,
                         model=GPTConfig.for_task(task, d_model=32, n_heads=2, n_layers=1))
    sft = pretrain(cfg, device="cpu", progress=False, task=task)
    assert sft.task is task and not sft.from_cache and sft.losses[-1] < sft.losses[0]
    again = pretrain(cfg, device="cpu", progress=False, task=task)
    assert again.from_cache
    # the cache key covers the task: the review language's key for the same settings differs
    assert len(list(tmp_path.glob("sft-*.pt"))) == 1
    run = train_grpo(sft, None, GRPOConfig(iterations=3, group_size=4, prompts_per_iteration=4, beta=0.0, kl="none",
                                           loss_aggregation="dapo", clip_eps_high=0.28, dynamic_sampling=True,
                                           kv_cache=True), progress=False)
    h = run.history
    assert len(h.gold) == 3 and all(0 <= g <= 1 for g in h.gold)
    assert all(n >= 16 for n in h.responses_sampled)
    assert all(t > 0 for t in h.rollout_seconds + h.update_seconds)
    ppo = train_ppo(sft, None, TokenPPOConfig(iterations=2, batch_size=16), progress=False)
    assert len(ppo.history.gold) == 2
    ev = evaluate_verifier(run.policy, task, n_prompts=8, samples_per_prompt=4, ks=(1, 4))
    assert 0 <= ev["pass_at_k"][1] <= ev["pass_at_k"][4] <= 1
    # chapter 8-9's route on the same task: pairs labelled by the verifier, a reward model, DPO
    rm = train_reward_model(sft, RewardConfig(n_pairs=64, epochs=1), progress=False, use_cache=False)
    assert rm.pairs.task is task and rm.pairs.chosen.shape == (64, task.context)
    with_rm = train_grpo(sft, rm, GRPOConfig(iterations=1, group_size=2, prompts_per_iteration=4), progress=False)
    assert len(with_rm.history.proxy) == 1
    dpo = train_dpo(sft, rm.pairs, DPOConfig(steps=2, batch_size=16), progress=False)
    assert all(math.isfinite(x) for x in dpo.history.loss)


def test_dynamic_sampling_refills_to_the_asked_batch_and_counts_the_extra_samples():
    task = reverse_task()
    torch.manual_seed(0)
    policy = GPT(GPTConfig.for_task(task, d_model=16, n_heads=2, n_layers=1))
    ref = frozen_copy(policy)
    # right only for prompts starting with "a" and a response starting with "a": most groups are all wrong
    picky = Task(**{**{f.name: getattr(task, f.name) for f in task.__dataclass_fields__.values()},
                    "name": "picky", "verifier": lambda p, r: float(p[1] == 3 and r[0] in (3, 4))})
    cfg = GRPOConfig(group_size=8, prompts_per_iteration=6, dynamic_sampling=True, max_sampling_rounds=20)
    ro = collect_groups(policy, ref, None, cfg, torch.Generator().manual_seed(0), np.random.default_rng(0), picky)
    assert ro.rewards.shape == (6, 8) and ro.tokens.shape[0] == 48 == ro.advantages.shape[0]
    spread = ro.rewards.amax(1) > ro.rewards.amin(1)
    assert spread.all()                         # refilled: every group carries a signal
    assert ro.n_sampled > 48 and ro.n_sampled % 48 == 0 and ro.zero_std_share > 0.5
    # the right rows travelled with their rewards: the verifier agrees row by row
    again = picky.verify(ro.tokens[:, :5], ro.tokens[:, 5:])
    assert torch.equal(again, ro.scores)
    # with the cap reached, the batch is filled with zero-variance groups (advantage 0, no NaN)
    capped = GRPOConfig(group_size=8, prompts_per_iteration=6, dynamic_sampling=True, max_sampling_rounds=1)
    ro1 = collect_groups(policy, ref, None, capped, torch.Generator().manual_seed(0), np.random.default_rng(0), picky)
    assert ro1.tokens.shape[0] == 48 and ro1.n_sampled == 48 and torch.isfinite(ro1.advantages).all()


# ---------------------------------------------------------------- clear errors

def test_bad_input_gets_a_clear_error():
    task = reverse_task()
    with pytest.raises(ValueError, match=r"need a context of 9, but PretrainConfig.model has context=6"):
        pretrain(PretrainConfig(model=GPTConfig(vocab_size=task.vocab_size, context=6)), progress=False,
                 use_cache=False, task=task)
    with pytest.raises(ValueError, match=r"has 8 tokens but PretrainConfig.model has vocab_size=25"):
        pretrain(PretrainConfig(), progress=False, use_cache=False, task=task)
    bad = Task(**{**{f.name: getattr(task, f.name) for f in task.__dataclass_fields__.values()},
                  "verifier": lambda p, r: "right"})
    with pytest.raises(TypeError, match=r"verifier\(.*\) returned 'right' \(str\): a verifier must return a finite"):
        bad.verify(torch.tensor([[1, 3, 4, 5, 7]]), torch.tensor([[5, 4, 3, 2]]))
    nan = Task(**{**{f.name: getattr(task, f.name) for f in task.__dataclass_fields__.values()},
                  "verifier": lambda p, r: float("nan")})
    with pytest.raises(TypeError, match="returned nan"):
        nan.verify(torch.tensor([[1, 3, 4, 5, 7]]), torch.tensor([[5, 4, 3, 2]]))
    with pytest.raises(ValueError, match=r"group_size=1: must be in \[2, inf\).*a group of one"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match=r"clip_eps_high=0.1: must be >= clip_eps=0.2"):
        GRPOConfig(clip_eps_high=0.1)
    with pytest.raises(ValueError, match="loss_aggregation='mean': must be one of 'grpo', 'dr_grpo', 'dapo'"):
        GRPOConfig(loss_aggregation="mean")
    with pytest.raises(ValueError, match=r"max_sampling_rounds=0: must be in \[1, 100\]"):
        GRPOConfig(max_sampling_rounds=0)
    with pytest.raises(ValueError, match="pad='<blank>': not in the vocabulary"):
        Task(**{**{f.name: getattr(task, f.name) for f in task.__dataclass_fields__.values()}, "pad": "<blank>"})
    with pytest.raises(ValueError, match="task 'reviews' has no verifier"):
        train_grpo(pretrain_stub(), None, GRPOConfig(iterations=1))


def pretrain_stub():
    from ppo_lib.rlhf.pretrain import PretrainResult

    return PretrainResult(GPT(), [], 0.0, False, PretrainConfig())


# ---------------------------------------------------------------- sampling with a key/value cache

@pytest.mark.parametrize("task", [lang.TASK, add.TASK], ids=["reviews", "addition"])
def test_kv_cache_samples_the_same_tokens_and_logprobs(task):
    torch.manual_seed(0)
    model = GPT(GPTConfig.for_task(task))
    prompts = task.sample_prompts(np.random.default_rng(0), 32)
    a = generate(model, prompts, generator=torch.Generator().manual_seed(1), task=task)
    b = generate(model, prompts, generator=torch.Generator().manual_seed(1), task=task, kv_cache=True)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_review_language_task_is_the_default_and_its_prompts_are_the_trainers_draws():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    old = [lang.encode_prompt(lang.PROMPTS[i]) for i in rng_a.integers(len(lang.PROMPTS), size=10)]
    assert lang.TASK.sample_prompts(rng_b, 10).tolist() == old
    assert GPTConfig.for_task(lang.TASK) == GPTConfig()


# ---------------------------------------------------------------- seeded learning test (slow)

@pytest.mark.slow
def test_slow_grpo_raises_held_out_accuracy_over_sft_in_2_of_3_seeds(rlvr_sft):
    """Three GRPO seeds on the seed-0 SFT model (one SFT model: training three would triple the
    minute it costs). Measured here (2-core CPU, loaded): SFT pass@1 0.24 on the held-out set
    (RLVR.md: 0.29); GRPO with the preset reached 0.73-0.80 in its rollouts by iteration 10-20 and
    0.86 held out after 150. The test runs 20 iterations per seed and asks for +0.25, about half
    the gain seen, in 2 of the 3 seeds."""
    from ppo_lib.rlhf.presets import rlvr_presets

    task, _, kw = rlvr_presets("cpu")
    before = evaluate_verifier(rlvr_sft.model, task, n_prompts=48, samples_per_prompt=16, ks=(1, 16))
    assert 0.1 < before["pass_at_k"][1] < 0.45 and before["stats"]["worked"] < 0.45
    gains = []
    for seed in range(3):
        run = train_grpo(rlvr_sft, None, GRPOConfig(**{**kw, "iterations": 20, "seed": seed}), progress=False)
        after = evaluate_verifier(run.policy, task, n_prompts=48, samples_per_prompt=16, ks=(1, 16))
        gains.append(after["pass_at_k"][1] - before["pass_at_k"][1])
        print(f"seed {seed}: pass@1 {before['pass_at_k'][1]:.3f} -> {after['pass_at_k'][1]:.3f}")
        assert after["stats"]["worked"] > before["stats"]["worked"]  # RL picks the scratchpad
        assert all(math.isfinite(x) for x in run.history.gold + run.history.kl)
    assert sum(g >= 0.25 for g in gains) >= 2, (before["pass_at_k"], gains)
