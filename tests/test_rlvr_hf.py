"""The optional Hugging Face adapter (ppo_lib.rlhf.hf): the library's GRPO trainer on a
transformers causal LM. A tiny GPT-2 is built from a GPT2Config here and the tokenizer in code:
nothing is downloaded. Skipped where the optional `transformers` is not installed."""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                reason="the optional `transformers` package is not installed "
                                       "(pip install -e \".[hf]\"); the Hugging Face adapter is not tested")

from ppo_lib.rlhf import addition as add  # noqa: E402
from ppo_lib.rlhf.model import generate, response_logprobs  # noqa: E402


@pytest.fixture(scope="module")
def hf():
    from ppo_lib.rlhf import hf
    return hf


def test_word_level_tokenizer_keeps_the_task_ids_and_the_task_round_trips(hf):
    tok = hf.word_level_tokenizer(add.TASK)
    prompt = add.prompt_ids(725, 368)
    task = hf.hf_task(add.TASK, tok)
    assert task.vocab == add.TASK.vocab and task.eos_id == add.EOS_ID and task.pad_id == add.PAD_ID
    hp = task.heldout_prompts(4)
    assert hp.shape == (4, task.prompt_len) and (hp[:, -1] == add.EQUALS).all()
    p = task.encode_prompt("725 + 368")
    right = add.TASK.encode(": 1 3 , 9 , 1 0 so 1 0 9 3 <eos>")
    assert task.verifier(p, right) == 1.0 == add.verify(prompt, right)
    assert task.verifier(p, add.TASK.encode("1 0 9 4 <eos>")) == 0.0
    assert task.verifier(p, add.TASK.encode("1 0 9 3")) == 0.0          # unfinished
    assert hf.split_words("1093", tuple(add.VOCAB[3:])) == ["1", "0", "9", "3"]
    assert hf.split_words(": 13, 9 so 1093", tuple(add.VOCAB[3:]))[:4] == [":", "1", "3", ","]
    assert hf.split_words("12 apples", tuple(add.VOCAB[3:])) is None
    texts = task.sample_texts(8, seed=0)
    assert texts.shape == (8, task.context)
    assert all(task.verifier(r[:task.prompt_len], r[task.prompt_len:]) == 1.0 for r in texts.tolist())


def test_adapter_samples_the_distribution_it_scores_with_and_without_the_cache(hf):
    model, tok = hf.tiny_gpt2(add.TASK)
    sft = hf.from_hf(model, tok, add.TASK)
    task, lm = sft.task, sft.model
    assert lm.cfg.vocab_size == task.vocab_size and lm.cfg.context >= task.context
    prompts = task.heldout_prompts(6)
    for kv in (False, True):
        gen = generate(lm, prompts, generator=torch.Generator().manual_seed(0), task=task, kv_cache=kv)
        forced = response_logprobs(lm, gen.tokens, gen.prompt_len) * gen.mask
        assert torch.isfinite(forced).all()
        assert torch.allclose(forced, gen.logprobs * gen.mask, atol=1e-4)
    a = generate(lm, prompts, generator=torch.Generator().manual_seed(1), task=task, kv_cache=False)
    b = generate(lm, prompts, generator=torch.Generator().manual_seed(1), task=task, kv_cache=True)
    assert torch.equal(a.tokens, b.tokens)


def test_left_padding_is_masked_out_of_attention(hf):
    model, tok = hf.tiny_gpt2(add.TASK)
    lm = hf.HFCausalLM(model, len(tok), add.PAD_ID)
    body = add.TASK.encode("<bos> 7 2 5 + 3 6 8 =")
    short = torch.tensor([body])
    padded = torch.tensor([[add.PAD_ID] * 3 + body])
    with torch.no_grad():
        assert torch.allclose(lm(short)[0, -1], lm(padded)[0, -1], atol=1e-5)


def test_grpo_runs_on_a_hugging_face_gpt2_through_the_adapter(hf):
    """Brief SFT of a tiny GPT-2 on 2-digit addition, always worked (so that some groups have a
    spread of rewards), then GRPO iterations of the library's own trainer: finite, logged, and the
    policy moves. (1-digit addition has 81 problems, fewer than the 512 held-out ones the task
    draws: make_task(digits=1) never finishes building its held-out set.)"""
    from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo

    torch.manual_seed(0)
    src = add.make_task(digits=2, worked_share=1.0)
    model, tok = hf.tiny_gpt2(src)
    sft = hf.from_hf(model, tok, src, sft_steps=150, batch_size=64, lr=3e-3)
    assert sft.losses[-1] < sft.losses[0] * 0.2
    config = GRPOConfig(group_size=8, prompts_per_iteration=8, beta=0.0, kl="none", lr=1e-3, iterations=3,
                        epochs=1, minibatches=2, kv_cache=True, seed=0)
    before = [p.detach().clone() for p in sft.model.parameters()]
    result = train_grpo(sft, None, config, progress=False)
    h = result.history
    assert len(h) == 3 and result.tokens_generated > 0
    assert all(0.0 <= g <= 1.0 for g in h.gold) and all(map(torch.isfinite, map(torch.tensor, h.kl)))
    assert min(h.zero_std_groups) < 1.0, "every group had equal rewards: nothing to learn from"
    assert any(not torch.equal(a, b) for a, b in zip(before, result.policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, sft.model.parameters())), "the SFT model must not move"
    assert isinstance(h.samples[-1][0], str) and h.task_stats[-1].keys() == {"worked"}


def test_adapter_errors_are_clear(hf):
    model, tok = hf.tiny_gpt2(add.TASK)
    lm = hf.HFCausalLM(model, len(tok), add.PAD_ID)
    with pytest.raises(ValueError, match="token ids must be in"):
        lm(torch.tensor([[len(tok)]]))
    with pytest.raises(ValueError, match="more than the model's"):
        hf.HFCausalLM(model, len(tok) + 5, add.PAD_ID)
    with pytest.raises(ValueError, match="prompt_len"):
        hf.hf_task(add.TASK, tok, prompt_len=3).heldout_prompts(2)
