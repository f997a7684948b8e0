"""Chapter 8's library: the language, the transformer, generation, rewards over tokens,
the reward model, PPO on tokens, best-of-n, the cache. Analytic tests first, then
seeded learning tests on the session's SFT and reward models (tests/conftest.py)."""

import math

import numpy as np
import pytest
import torch

from ppo_lib import losses
from ppo_lib.advantages import gae
from ppo_lib.rlhf import cache
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.best_of_n import best_of_n_curve, bon_kl, fit_gao, gao_curve
from ppo_lib.rlhf.evaluate import evaluate_policy
from ppo_lib.rlhf.kl import AdaptiveKLController, adaptive_kl_update, kl_per_token
from ppo_lib.rlhf.model import (GPT, GPTConfig, ScalarModel, gather_logprobs, generate, response_logprobs,
                                response_mask)
from ppo_lib.rlhf.ppo import TokenPPOConfig, collect, ppo_token_loss, train_ppo
from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain
from ppo_lib.rlhf.reward_model import (RewardConfig, agreement, bradley_terry_loss, eos_positions, sample_pairs,
                                       score, train_reward_model)
from ppo_lib.rlhf.token_advantages import masked_whiten, per_token_rewards, token_dones, token_gae


# ---------------------------------------------------------------- the language

def test_sampler_makes_only_grammatical_strings_that_fit_the_context():
    texts = lang.sample_texts(3000, seed=1)
    assert all(lang.is_grammatical(t[lang.PROMPT_LEN:]) for t in texts)
    assert max(len(t) for t in texts) <= lang.CONTEXT
    assert {" ".join(t[1:lang.PROMPT_LEN]) for t in texts} == set(lang.PROMPTS)
    # every word of the response vocabulary appears
    used = {w for t in texts for w in t}
    assert used == set(lang.VOCAB) - {lang.PAD}


@pytest.mark.parametrize("text, gold", [
    ("good . <eos>", 1.0),
    ("bad ! <eos>", -1.0),
    ("ok . <eos>", 0.0),
    ("not good . <eos>", -1.0),
    ("not very awful ! <eos>", 1.25),
    ("very really great . <eos>", 1.5),
    ("good and bad . <eos>", 0.0),
    ("very good but not really nice and ok ! <eos>", (1.25 - 1.25 + 0.0) / 3),
    ("really fun and not bad . <eos>", (1.25 + 1.0) / 2),
])
def test_gold_reward_by_hand(text, gold):
    assert lang.gold_reward(text) == pytest.approx(gold)
    assert lang.is_grammatical(text)


@pytest.mark.parametrize("text", [
    "good .",                          # no <eos>
    "good <eos>",                      # no ending
    "very very very good . <eos>",     # three intensifiers
    "good good . <eos>",
    "good . good . <eos>",
    "not not good . <eos>",
    "good and bad and ok and fun . <eos>",  # four clauses
    ". <eos>",
    "and good . <eos>",
    "very . <eos>",
    "the good . <eos>",
])
def test_ungrammatical_or_unfinished_scores_minus_two(text):
    assert not lang.is_grammatical(text)
    assert lang.gold_reward(text) == lang.INVALID_SCORE


def test_gold_reward_reads_token_ids_and_stops_at_eos():
    ids = lang.encode("very good ! <eos> bad bad")
    assert lang.gold_reward(ids) == pytest.approx(1.25)
    assert lang.gold_reward(torch.tensor(ids)) == pytest.approx(1.25)


def test_bad_words_and_prompts_are_clear_errors():
    with pytest.raises(ValueError, match="unknown word 'excellent'"):
        lang.encode("very excellent !")
    with pytest.raises(ValueError, match="exactly 3"):
        lang.encode_prompt("the food was very")
    with pytest.raises(ValueError, match="unknown word"):
        generate(GPT(), ["the pizza was"])
    with pytest.raises(ValueError, match="empty"):
        generate(GPT(), [])


# ---------------------------------------------------------------- the transformer

def test_causal_mask_later_tokens_never_change_earlier_logits():
    torch.manual_seed(0)
    model = GPT().eval()
    x = torch.randint(3, lang.VOCAB_SIZE, (4, lang.CONTEXT))
    for pos in (1, 7, lang.CONTEXT - 1):
        y = x.clone()
        y[:, pos:] = torch.randint(3, lang.VOCAB_SIZE, y[:, pos:].shape)
        with torch.no_grad():
            a, b = model(x), model(y)
        assert torch.allclose(a[:, :pos], b[:, :pos], atol=1e-6)
        assert not torch.allclose(a[:, pos:], b[:, pos:])


def test_model_rejects_too_long_sequences_and_bad_ids():
    model = GPT()
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(torch.zeros(1, lang.CONTEXT + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must be in"):
        model(torch.full((1, 3), lang.VOCAB_SIZE))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(TypeError, match=r"dtype torch.float32; allowed: integer token ids"):
        model(torch.zeros(1, 3))  # a float id would be truncated by a cast: refused, not guessed


def test_token_ids_are_checked_at_the_boundary_and_trusted_inside_the_loops():
    """generate checks its prompts once and then feeds back its own samples without the range scan
    (a GPU synchronisation per forward): the forward pass scans ids only outside those loops."""
    from ppo_lib.rlhf.model import check_token_ids, generate, token_ids_checked

    model = GPT()
    bad = torch.full((2, lang.PROMPT_LEN), lang.VOCAB_SIZE + 3)
    with pytest.raises(ValueError, match=r"prompts: token ids must be in \[0, 25\), got 28..28"):
        check_token_ids(bad, lang.VOCAB_SIZE, "prompts")
    scans = []
    original = torch.Tensor.min

    def counting_min(self, *args, **kwargs):
        scans.append(1)
        return original(self, *args, **kwargs)

    torch.Tensor.min = counting_min
    try:
        model(torch.zeros(1, 3, dtype=torch.long))
        outside = len(scans)
        with token_ids_checked():
            model(torch.zeros(1, 3, dtype=torch.long))
        inside = len(scans) - outside
    finally:
        torch.Tensor.min = original
    assert outside == 1 and inside == 0


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generate_logprobs_equal_a_teacher_forced_pass(temperature):
    torch.manual_seed(0)
    model = GPT()
    gen = generate(model, list(lang.PROMPTS) * 3, temperature=temperature,
                   generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        forced = response_logprobs(model, gen.tokens, gen.prompt_len, temperature) * gen.mask
    assert torch.allclose(forced, gen.logprobs, atol=1e-5)
    assert gen.tokens.shape == (18, lang.CONTEXT)
    # padding after <eos> only, and masked out
    for row, m in zip(gen.responses, gen.mask):
        ids = row.tolist()
        if lang.EOS_ID in ids:
            k = ids.index(lang.EOS_ID)
            assert all(i == lang.PAD_ID for i in ids[k + 1:])
            assert m[:k + 1].eq(1).all() and m[k + 1:].eq(0).all()
        else:
            assert m.eq(1).all()


def test_gather_logprobs_is_the_shift_by_one():
    logits = torch.randn(2, 5, 7)
    tokens = torch.randint(0, 7, (2, 5))
    out = gather_logprobs(logits, tokens, prompt_len=2)
    logp = torch.log_softmax(logits, -1)
    for b in range(2):
        for t in range(3):
            assert out[b, t] == pytest.approx(logp[b, 1 + t, tokens[b, 2 + t]].item(), abs=1e-6)


def test_generate_is_seeded_and_rejects_temperature_zero():
    model = GPT()
    a = generate(model, lang.PROMPTS, generator=torch.Generator().manual_seed(3))
    b = generate(model, lang.PROMPTS, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            generate(model, lang.PROMPTS, temperature=bad)
    with pytest.raises(ValueError, match="context"):
        generate(model, lang.PROMPTS, max_new_tokens=lang.MAX_RESPONSE_LEN + 1)


def test_response_mask_includes_eos_and_nothing_after():
    r = torch.tensor([[5, lang.EOS_ID, 0, 0], [5, 6, 7, 8], [lang.EOS_ID, 0, 0, 0]])
    assert response_mask(r).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


# ---------------------------------------------------------------- rewards and advantages over tokens

MASK = torch.tensor([[1., 1., 1., 0.], [1., 1., 1., 1.], [1., 0., 0., 0.]])


def test_per_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, -0.2, 0.3, 9.0], [0.5, 0.5, 0.5, 0.5], [2.0, 9.0, 9.0, 9.0]])
    r = per_token_rewards(kl, torch.tensor([1.0, -1.0, 3.0]), MASK, beta=0.5)
    expected = torch.tensor([[-0.05, 0.1, -0.15 + 1.0, 0.0],
                             [-0.25, -0.25, -0.25, -0.25 - 1.0],
                             [-1.0 + 3.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(r, expected)
    with pytest.raises(ValueError, match="beta=-0.1"):
        per_token_rewards(kl, torch.zeros(3), MASK, -0.1)
    with pytest.raises(ValueError, match="one score per response"):
        per_token_rewards(kl, torch.zeros(2), MASK, 0.1)


def test_token_dones_end_the_episode_after_the_last_real_token():
    assert token_dones(MASK).tolist() == [[False, False, True, True], [False, False, False, True],
                                          [True, True, True, True]]


def test_token_gae_with_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, 0.2, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 7.0], [1.0, 1.0, 1.0, 1.0], [2.0, 7.0, 7.0, 7.0]])
    adv, ret = token_gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    expected_ret = torch.tensor([[1.3, 1.2, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(ret, expected_ret)
    assert torch.allclose(adv, (expected_ret - values) * MASK)


def test_token_gae_lambda_zero_is_the_td_error_without_bootstrap_at_the_end():
    rewards = torch.tensor([[0.1, 0.2, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 7.0]])
    adv, _ = token_gae(rewards, values, MASK[:1], gamma=1.0, lam=0.0)
    assert torch.allclose(adv, torch.tensor([[0.1 + 0.4 - 0.5, 0.2 + 0.3 - 0.4, 1.0 - 0.3, 0.0]]))


def test_token_gae_equals_the_library_gae_on_transposed_arrays():
    g = torch.Generator().manual_seed(0)
    B, L = 6, 9
    lengths = torch.tensor([1, 3, 9, 5, 9, 2])
    mask = (torch.arange(L)[None] < lengths[:, None]).float()
    rewards, values = torch.randn(B, L, generator=g) * mask, torch.randn(B, L, generator=g) * mask
    adv, ret = token_gae(rewards, values, mask, gamma=0.97, lam=0.9)
    for b in range(B):  # one episode at a time, by the library, with nothing after it
        n = int(lengths[b])
        nxt = torch.cat([values[b, 1:n], torch.zeros(1)])
        ref = gae(rewards[b, :n], values[b, :n], nxt, torch.arange(n) == n - 1, 0.97, 0.9)
        assert torch.allclose(adv[b, :n], ref, atol=1e-6)
        assert adv[b, n:].eq(0).all()


def test_masked_whiten_uses_only_real_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 6.0, 7.0], [8.0, -50.0, -50.0, -50.0]])
    w = masked_whiten(x, MASK)
    real = x[MASK.bool()]
    assert torch.allclose(w[MASK.bool()], (real - real.mean()) / real.std(), atol=1e-6)
    assert w[~MASK.bool()].eq(0).all()
    one = torch.zeros_like(MASK)
    one[0, 0] = 1
    assert torch.allclose(masked_whiten(x, one), torch.zeros_like(x))  # only centred


def test_kl_estimators():
    lp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    l = lp - ref
    assert torch.allclose(kl_per_token(lp, ref, "k1"), l)
    assert torch.allclose(kl_per_token(lp, ref, "k2"), l ** 2 / 2)
    k3 = kl_per_token(lp, ref, "k3")
    assert torch.allclose(k3, torch.exp(-l) - 1 + l) and (k3 >= 0).all()
    with pytest.raises(ValueError, match="estimator='k4'"):
        kl_per_token(lp, ref, "k4")


def test_k1_and_k3_are_unbiased_for_the_kl_of_a_categorical():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    true_kl = float((p * (p / q).log()).sum())
    a = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lp, lq = p.log()[a], q.log()[a]
    for est in ("k1", "k3"):
        assert kl_per_token(lp, lq, est).mean().item() == pytest.approx(true_kl, abs=0.01)


def test_adaptive_kl_controller_by_hand():
    assert adaptive_kl_update(0.2, 6.0, 6.0, 64, 10_000) == pytest.approx(0.2)
    assert adaptive_kl_update(0.2, 6.6, 6.0, 64, 10_000) == pytest.approx(0.2 * (1 + 0.1 * 64 / 10_000))
    assert adaptive_kl_update(0.2, 60.0, 6.0, 64, 10_000) == pytest.approx(0.2 * (1 + 0.2 * 64 / 10_000))
    assert adaptive_kl_update(0.2, 0.0, 6.0, 64, 10_000) == pytest.approx(0.2 * (1 - 0.2 * 64 / 10_000))
    ctl = AdaptiveKLController(0.2, 6.0, 100)
    assert ctl.update(12.0, 100) == pytest.approx(0.24)


def test_bradley_terry_loss_by_hand_and_stable():
    rc, rr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    expected = -(math.log(1 / (1 + math.exp(-1))) + math.log(0.5)) / 2
    assert bradley_terry_loss(rc, rr).item() == pytest.approx(expected)
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([100.0])).item() == pytest.approx(100.0)


def test_eos_positions_read_the_score_at_eos_or_the_last_slot():
    toks = lang.to_batch([[lang.BOS, "the", "food", "was", "good", ".", lang.EOS]]).tokens
    assert eos_positions(toks).tolist() == [6]
    no_eos = torch.full((1, lang.CONTEXT), lang.TOKEN_ID["good"])
    assert eos_positions(no_eos).tolist() == [lang.CONTEXT - 1]


# ---------------------------------------------------------------- PPO on tokens reuses chapter 5's losses

def test_ppo_token_loss_is_the_library_losses_on_the_real_tokens():
    torch.manual_seed(0)
    policy, rm = GPT(), ScalarModel()
    config = TokenPPOConfig(beta=0.1)
    ro = collect(policy, GPT(), rm, rm, config, 0.1, torch.Generator().manual_seed(0), np.random.default_rng(0))
    with torch.no_grad():  # perturb so ratios differ from 1 and clipping matters
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in rm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx = torch.arange(16)
    loss, info = ppo_token_loss(policy, rm, ro, idx, config)
    m = ro.mask[idx].bool()
    new_lp = response_logprobs(policy, ro.tokens[idx])
    ratio = (new_lp - ro.logprobs[idx]).exp()
    pg = -losses.clipped_surrogate(ratio[m], ro.advantages[idx][m], 0.2)
    v = rm(ro.tokens[idx])[:, lang.PROMPT_LEN - 1:-1]
    vf = losses.clipped_value_loss(v[m], ro.values[idx][m], ro.returns[idx][m], 0.2)
    assert loss.item() == pytest.approx((pg + 0.1 * vf).item(), rel=1e-5)
    assert 0 < info["clip_fraction"] < 1


def test_rollout_rewards_kl_and_missing_eos_score():
    torch.manual_seed(0)
    policy, rm = GPT(), ScalarModel()  # an untrained model rarely emits <eos> in time
    config = TokenPPOConfig(beta=0.0, missing_eos_score=-1.0, batch_size=32)
    ro = collect(policy, policy, rm, rm, config, 0.0, torch.Generator().manual_seed(0), np.random.default_rng(0))
    has_eos = (ro.tokens[:, lang.PROMPT_LEN:] == lang.EOS_ID).any(1)
    assert (~has_eos).any()
    assert torch.all(ro.scores[~has_eos] == -1.0)
    assert torch.allclose(ro.kl, torch.zeros(32), atol=1e-5)  # policy == reference
    assert torch.allclose(ro.rewards.sum(1), ro.scores, atol=1e-6)  # beta 0: only the score


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": -0.1}, "beta=-0.1"),
    ({"temperature": 0}, "temperature=0"),
    ({"kl_estimator": "exact"}, "kl_estimator='exact'"),
    ({"clip_eps": 1.5}, "clip_eps=1.5"),
    ({"num_minibatches": 100}, "num_minibatches=100"),
    ({"adaptive_kl": "yes"}, "adaptive_kl='yes'"),
    ({"beta": 0.0, "adaptive_kl": True}, "beta=0 with adaptive_kl=True"),
    ({"iterations": 0}, "iterations=0"),
])
def test_rlhf_config_rejects_bad_values(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        TokenPPOConfig(**kwargs)


def test_reward_model_needs_two_pairs():
    with pytest.raises(ValueError, match="n_pairs=1"):
        RewardConfig(n_pairs=1)
    with pytest.raises(ValueError, match="at least 2 preference pairs"):
        sample_pairs(GPT(), 1)


def test_train_ppo_rejects_the_wrong_objects():
    with pytest.raises(TypeError, match="PretrainResult"):
        train_ppo(GPT(), None)


# ---------------------------------------------------------------- the cache and the seeds

def test_cache_is_keyed_by_settings_and_never_trusts_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    cfg = PretrainConfig(steps=3, n_texts=200)
    a = pretrain(cfg, progress=False)
    assert not a.from_cache
    b = pretrain(cfg, progress=False)
    assert b.from_cache
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    c = pretrain(PretrainConfig(steps=3, n_texts=200, lr=1e-3), progress=False)
    assert not c.from_cache  # another setting, another entry
    path = cache.path_of("sft", __import__("dataclasses").asdict(cfg))
    path.write_bytes(path.read_bytes()[:100])  # a truncated file
    d = pretrain(cfg, progress=False)
    assert not d.from_cache
    for pa, pd in zip(a.model.parameters(), d.model.parameters()):
        assert torch.equal(pa, pd)  # retrained, same seed, same numbers


def test_same_seed_same_numbers_on_the_cpu(rlhf_sft, rlhf_reward):
    runs = [train_ppo(rlhf_sft, rlhf_reward, TokenPPOConfig(iterations=2, batch_size=16, seed=4), progress=False)
            for _ in range(2)]
    assert runs[0].history.proxy == runs[1].history.proxy
    assert runs[0].history.kl == runs[1].history.kl


def test_interrupt_keeps_the_policy_and_history(rlhf_sft, rlhf_reward):
    def stop(history):
        if len(history) == 2:
            raise KeyboardInterrupt

    result = train_ppo(rlhf_sft, rlhf_reward, TokenPPOConfig(iterations=5, batch_size=16), progress=False, callback=stop)
    assert result.interrupted and len(result.history.gold) == 2

    def crash(history):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError) as info:
        train_ppo(rlhf_sft, rlhf_reward, TokenPPOConfig(iterations=5, batch_size=16), progress=False, callback=crash)
    assert len(info.value.partial_result.history.gold) == 1


# ---------------------------------------------------------------- best-of-n

def test_best_of_n_kl_and_gao_fits():
    assert bon_kl(1) == 0.0
    assert bon_kl(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError, match="n=0"):
        bon_kl(0)
    kl = np.array([0.2, 0.8, 1.5, 2.5, 3.4])
    for kind in ("bon", "rl"):
        y = gao_curve(np.sqrt(kl), 1.2, 0.4, kind)
        assert fit_gao(kl, y, kind) == pytest.approx((1.2, 0.4), abs=1e-9)


# ---------------------------------------------------------------- learning tests (seeded)

def test_pretraining_makes_a_grammatical_sft_model(rlhf_sft):
    from ppo_lib.rlhf.pretrain import sample_report

    report = sample_report(rlhf_sft.model, n=1000)
    assert report["grammatical"] >= 0.95
    assert -0.5 < report["gold"] < 0.5


def test_reward_model_agrees_with_gold_on_held_out_pairs(rlhf_sft, rlhf_reward):
    check = agreement(rlhf_reward.model, rlhf_sft.model, n_pairs=1000)
    assert check["agreement"] >= 0.75
    # centred: SFT samples score about 0 on average
    gen = generate(rlhf_sft.model, list(lang.PROMPTS) * 50, generator=torch.Generator().manual_seed(9))
    assert abs(score(rlhf_reward.model, gen.tokens).mean().item()) < 0.15


def test_best_of_n_improves_gold_for_small_n(rlhf_sft, rlhf_reward):
    curve = best_of_n_curve(rlhf_sft.model, rlhf_reward.model, ns=(1, 4, 16), n_prompts=24)
    golds = [r["gold"] for r in curve["rows"]]
    proxies = [r["proxy"] for r in curve["rows"]]
    assert golds[1] > golds[0] + 0.3
    assert proxies[0] < proxies[1] < proxies[2]


@pytest.fixture(scope="module")
def sft_eval(rlhf_sft, rlhf_reward):
    return evaluate_policy(rlhf_sft.model, rlhf_sft.model, rlhf_reward.model)


def test_ppo_with_beta_0_1_raises_gold_by_one_within_ten_nats(rlhf_sft, rlhf_reward, sft_eval):
    run = train_ppo(rlhf_sft, rlhf_reward, TokenPPOConfig(beta=0.1, seed=0), progress=False)
    ev = evaluate_policy(run.policy, rlhf_sft.model, rlhf_reward.model)
    assert ev["gold"] >= sft_eval["gold"] + 1.0, (ev, sft_eval)
    assert 0 < ev["kl"] < 10
    assert ev["ungrammatical"] < 0.05


def test_ppo_with_beta_0_over_optimises_the_reward_model(rlhf_sft, rlhf_reward, sft_eval):
    """Without a KL penalty PPO drives the proxy far up, and the proxy over-rates what it finds.

    Whether the run goes on to *hack* (gold below the SFT model, broken grammar) depends on the
    seed and on the CPU: float sums differ by instruction set and this chaotic run amplifies
    them. The results file (made on one machine) has seeds 0 and 1 hacked (gold -2.0); on an
    AVX-512 machine here seeds 0-2 end at gold +1.24 to +1.50 (proxy +3.0, KL 6.2-6.9), seed 1
    after a dip to -1.75. What holds on both: the proxy gains more than 2 over the SFT model,
    at least 1 more than the gold does, and the KL passes 5 nats."""
    run = train_ppo(rlhf_sft, rlhf_reward, TokenPPOConfig(beta=0.0, seed=0), progress=False)
    ev = evaluate_policy(run.policy, rlhf_sft.model, rlhf_reward.model)
    proxy_gain, gold_gain = ev["proxy"] - sft_eval["proxy"], ev["gold"] - sft_eval["gold"]
    assert proxy_gain > 2.0, ev
    assert proxy_gain > gold_gain + 1.0, (proxy_gain, gold_gain)
    assert ev["kl"] > 5.0, ev
