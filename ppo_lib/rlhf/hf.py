r"""An optional adapter: the library's GRPO trainer on a Hugging Face causal language model.

``transformers`` is an optional extra (``pip install -e ".[hf]"``), never a dependency of the
course: it is imported inside the functions below only.

What :func:`ppo_lib.rlhf.grpo.train_grpo` needs from a model is small: ``model(tokens)``
returning logits ``(B, T, V)``, ``model.cfg.context`` and ``model.cfg.vocab_size``, and, to
sample with a key/value cache, ``model(new_token, past, keep)`` (see
:func:`ppo_lib.rlhf.model.generate`). :class:`HFCausalLM` gives exactly that around any
``AutoModelForCausalLM``; the logits are cut to the tokenizer's vocabulary (a checkpoint's
output layer is often padded beyond it), and the left padding of prompts is masked out of
attention, with positions counted from the first real token, so a pre-trained model sees
its prompts as it saw its training texts.

The task holds the vocabulary: :func:`hf_task` turns a task of the course (e.g.
:data:`ppo_lib.rlhf.addition.TASK`) into the same task over a Hugging Face tokenizer's
vocabulary: its prompts are the same problems re-tokenised, its supervised texts the same
teacher's answers re-tokenised, and its verifier decodes a response to text, splits it into
the original task's words and asks the original verifier. :func:`word_level_tokenizer` builds
a tokenizer whose ids are a task's own (nothing downloaded), which the tests and the TRL
benchmark use.

A learner with a GPU and internet (not run here: this machine is offline, with no GPU)::

    pip install -e ".[hf]"
    python -m ppo_lib.rlhf.hf --model Qwen/Qwen2.5-0.5B --sft-steps 200 --iterations 100

``--tiny`` instead of ``--model`` builds a 2-layer GPT-2 with a word-level tokenizer locally
(what the test does, in a few seconds on a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import time
import warnings

import torch
import torch.nn as nn

from ppo_lib.config import caller_stack_level
from ppo_lib.rlhf.arguments import count, flag, real
from ppo_lib.rlhf.task import Task, right_padded


def require_transformers():
    """``transformers``, or a clear error saying how to install the optional extra."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ppo_lib.rlhf.hf needs the optional `transformers` package: "
                          "pip install -e \".[hf]\" (or pip install transformers)") from exc
    return transformers


@dataclasses.dataclass(frozen=True)
class HFModelConfig:
    """What the library's samplers and trainers read from a model's ``cfg``."""

    vocab_size: int
    context: int


class _Past:
    """The key/value cache of a Hugging Face model between two sampling steps, with the
    attention mask and the next position of each row."""

    def __init__(self, cache, attention_mask: torch.Tensor, next_position: torch.Tensor):
        self.cache, self.attention_mask, self.next_position = cache, attention_mask, next_position


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM as the library's language model: ``forward(tokens)`` -> logits
    ``(B, T, V)`` with ``V = vocab_size`` (the tokenizer's size), ``cfg.context``, ``cfg.vocab_size``.

    ``pad_id``: the prompts' left padding, masked out of attention; positions start at the first
    real token. (After ``<eos>`` the response's padding is attended to, as by the course's GPT:
    nothing after ``<eos>`` is scored.)
    """

    def __init__(self, model: nn.Module, vocab_size: int, pad_id: int, context: int | None = None):
        super().__init__()
        self.model = model
        hf_cfg = model.config
        limit = next((getattr(hf_cfg, a) for a in ("n_positions", "max_position_embeddings")
                      if getattr(hf_cfg, a, None)), None)
        context = context or limit
        if context is None:
            raise ValueError("context: the model's config names no maximum length; pass context=...")
        out_size = model.get_output_embeddings().weight.shape[0]
        if vocab_size > out_size:
            raise ValueError(f"vocab_size={vocab_size}: more than the model's {out_size} output logits")
        self.cfg = HFModelConfig(vocab_size=int(vocab_size), context=int(context))
        self.pad_id = int(pad_id)
        # transformers 5.x names the key/value cache `cache`; earlier releases `past_key_values`
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def _mask_and_positions(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real = torch.cumsum((tokens != self.pad_id).long(), dim=1) > 0   # False on the leading padding only
        positions = (torch.cumsum(real.long(), dim=1) - 1).clamp(min=0)
        return real.long(), positions

    @staticmethod
    def _cache_of(out):
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def forward(self, tokens: torch.Tensor, past: list | None = None, keep: list | None = None) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected shape (batch, positions), got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size}), got {int(tokens.min())}.."
                             f"{int(tokens.max())}")
        if past is None:
            if tokens.shape[1] > self.cfg.context:
                raise ValueError(f"{tokens.shape[1]} tokens: longer than the model's context of {self.cfg.context}")
            mask, positions = self._mask_and_positions(tokens)
            out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=keep is not None)
            if keep is not None:
                keep.append(_Past(self._cache_of(out), mask, positions[:, -1] + 1))
        else:
            state = past[0]
            if tokens.shape[1] != 1:
                raise ValueError(f"with cached keys and values, feed one new position at a time, got {tokens.shape[1]}")
            mask = torch.cat([state.attention_mask, torch.ones_like(tokens)], dim=1)
            if mask.shape[1] > self.cfg.context:
                raise ValueError(f"{mask.shape[1]} tokens: longer than the model's context of {self.cfg.context}")
            positions = state.next_position[:, None]
            out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{self._cache_arg: state.cache})
            if keep is not None:
                keep.append(_Past(self._cache_of(out), mask, state.next_position + 1))
        return out.logits[..., :self.cfg.vocab_size].float()


# --------------------------------------------------------------------------
# A task over a Hugging Face tokenizer's vocabulary
# --------------------------------------------------------------------------

def word_level_tokenizer(task: Task):
    """A ``PreTrainedTokenizerFast`` whose ids are ``task``'s own (words split on whitespace), built in
    code: nothing is downloaded. Its decode joins words with spaces."""
    require_transformers()
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel(vocab=dict(task.token_id), unk_token=task.pad))
    core.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=task.pad, bos_token=task.bos,
                                  eos_token=task.eos, unk_token=task.pad, padding_side="left")
    if len(tok) != task.vocab_size or tok.convert_tokens_to_ids(list(task.vocab)) != list(range(task.vocab_size)):
        raise RuntimeError(f"the word-level tokenizer's ids differ from task {task.name!r}'s")
    return tok


def split_words(text: str, words: tuple[str, ...]) -> list[str] | None:
    """``text`` as a sequence of ``words`` (longest match first, whitespace ignored), or None when
    some of it is no word: ``"1093"`` and ``"1 0 9 3"`` both give ``['1', '0', '9', '3']``."""
    by_len = sorted(set(words), key=len, reverse=True)
    out = []
    for chunk in text.split():
        i = 0
        while i < len(chunk):
            w = next((w for w in by_len if w and chunk.startswith(w, i)), None)
            if w is None:
                return None
            out.append(w)
            i += len(w)
    return out


def hf_task(task: Task, tokenizer, prompt_len: int | None = None, max_response_len: int | None = None) -> Task:
    """``task`` over ``tokenizer``'s vocabulary (see the module doc). Prompts are the same problems:
    the original prompt's words joined by spaces, tokenised, after ``<bos>`` when the tokenizer has
    one, left-padded to ``prompt_len`` (default: the longest held-out prompt plus 2). Responses are
    at most ``max_response_len`` tokens (default: the original task's). A response is decoded up to
    its first ``<eos>``, split into the original task's words (:func:`split_words`; text that is
    no word scores 0) and judged by the original verifier."""
    require_transformers()
    if task.verifier is None:
        raise ValueError(f"task {task.name!r} has no verifier: hf_task needs one (the reward of RLVR)")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos token: set tokenizer.eos_token first")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    bos_id = tokenizer.bos_token_id
    vocab = tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    if len(set(vocab)) != len(vocab):  # a few tokenizers name two ids alike: make the names unique
        seen: dict[str, int] = {}
        fixed = []
        for i, w in enumerate(vocab):
            fixed.append(w if w not in seen else f"{w}<id {i}>")
            seen.setdefault(w, i)
        vocab = tuple(fixed)
    src_words = tuple(w for w in task.vocab if w not in (task.pad, task.bos, task.eos))

    def prompt_text(src_ids) -> str:
        return task.decode(src_ids)

    def encode_words(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    def prompt_body(src_ids) -> list[int]:
        return ([bos_id] if bos_id is not None else []) + encode_words(prompt_text(src_ids))

    P = prompt_len or 2 + max(len(prompt_body(p)) for p in task.heldout_prompts(64).tolist())
    L = max_response_len or task.max_response_len

    def left_pad(ids: list[int]) -> list[int]:
        if len(ids) > P:
            raise ValueError(f"a prompt of {len(ids)} tokens: more than prompt_len={P}; pass a larger prompt_len")
        return [pad_id] * (P - len(ids)) + ids

    def convert_prompts(src: torch.Tensor) -> torch.Tensor:
        return torch.tensor([left_pad(prompt_body(p)) for p in src.tolist()], dtype=torch.long)

    def sample_texts(n: int, seed: int) -> torch.Tensor:
        rows = []
        for row in task.sample_texts(n, seed).tolist():
            src_prompt, src_resp = row[:task.prompt_len], row[task.prompt_len:]
            finished = task.eos_id in src_resp
            if finished:
                src_resp = src_resp[:src_resp.index(task.eos_id)]
            resp = encode_words(task.decode(src_resp)) + ([eos_id] if finished else [])
            rows.append(left_pad(prompt_body(src_prompt)) + resp[:L])
        return right_padded(rows, P + L, pad_id, f"{task.name} text (re-tokenised)")

    def to_source(prompt_ids, response_ids) -> tuple[list[int], list[int]] | None:
        ptext = tokenizer.decode([i for i in prompt_ids if i not in (pad_id, bos_id)], skip_special_tokens=True)
        pwords = split_words(ptext, src_words)
        ids = list(response_ids)
        finished = eos_id in ids
        if finished:
            ids = ids[:ids.index(eos_id)]
        rwords = split_words(tokenizer.decode(ids, skip_special_tokens=True), src_words)
        if pwords is None or rwords is None:
            return None
        return task.encode_prompt(" ".join(pwords)), task.encode(rwords) + ([task.eos_id] if finished else [])

    def verifier(prompt_ids, response_ids) -> float:
        src = to_source(prompt_ids, response_ids)
        return 0.0 if src is None else task.verifier(*src)

    def is_valid(response_ids) -> bool:
        ids = list(response_ids)
        if eos_id not in ids:
            return False
        words = split_words(tokenizer.decode(ids[:ids.index(eos_id)], skip_special_tokens=True), src_words)
        if words is None:
            return False
        return True if task.is_valid is None else bool(task.is_valid(task.encode(words) + [task.eos_id]))

    def stats(responses: torch.Tensor) -> dict:
        if task.stats is None or not len(responses):
            return {}
        rows = []
        for r in responses.tolist():
            words = split_words(tokenizer.decode([i for i in r if i not in (pad_id, eos_id)],
                                                 skip_special_tokens=True), src_words) or []
            rows.append(task.encode(words[:task.max_response_len]) or [task.pad_id])
        return task.stats(right_padded(rows, max(map(len, rows)), task.pad_id))

    name_or_path = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return Task(name=f"{task.name}@hf:{name_or_path}:{len(vocab)}", vocab=vocab, prompt_len=P, max_response_len=L,
                sample_prompts=lambda rng, n: convert_prompts(task.sample_prompts(rng, n)),
                heldout_prompts=lambda n: convert_prompts(task.heldout_prompts(n)),
                sample_texts=sample_texts, verifier=verifier, is_valid=is_valid, stats=stats,
                encode_prompt_text=lambda text: left_pad(prompt_body(task.encode_prompt(text))),
                sft_loss_on_prompt=task.sft_loss_on_prompt, version=task.version,
                pad=vocab[pad_id], bos=vocab[bos_id if bos_id is not None else eos_id], eos=vocab[eos_id])


# --------------------------------------------------------------------------
# From a Hugging Face model to the trainer's input
# --------------------------------------------------------------------------

def from_hf(model, tokenizer, task: Task, sft_steps: int = 0, batch_size: int = 32, lr: float = 1e-4,
            seed: int = 0, context: int | None = None, progress: bool = False, one_cycle: bool = False):
    """A :class:`~ppo_lib.rlhf.pretrain.PretrainResult` that :func:`~ppo_lib.rlhf.grpo.train_grpo`
    takes: ``model`` wrapped in :class:`HFCausalLM` with ``task`` over ``tokenizer``'s vocabulary
    (:func:`hf_task`, unless ``task`` already is over it), after ``sft_steps`` steps of supervised
    fine-tuning on the task's teacher data (loss on the response tokens when the task says so;
    AdamW, ``lr`` constant, gradients clipped at norm 1; ``one_cycle=True``: the recipe of
    :func:`~ppo_lib.rlhf.pretrain.pretrain` instead, AdamW with weight decay 0.01 and a one-cycle
    schedule peaking at ``lr``, no clipping). The device is the model's."""
    from ppo_lib.rlhf.pretrain import PretrainConfig, PretrainResult, lm_loss, progress_bar

    if not isinstance(model, nn.Module):
        raise TypeError(f"model=<{type(model).__name__}>: expected a Hugging Face causal LM (a torch module, e.g. "
                        f"AutoModelForCausalLM.from_pretrained(...)), got a {type(model).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task=<{type(task).__name__}>: expected a Task (e.g. ppo_lib.rlhf.addition.TASK)")
    sft_steps, batch_size, seed = count("sft_steps", sft_steps, 0), count("batch_size", batch_size), \
        count("seed", seed, 0, 2**32 - 1)
    lr = real("lr", lr, 0.0, 1.0, low_open=True)
    progress, one_cycle = flag("progress", progress), flag("one_cycle", one_cycle)
    if sft_steps == 0:
        settings = (("batch_size", batch_size, 32), ("lr", lr, 1e-4), ("one_cycle", one_cycle, False))
        unused = [f"{name}={value!r}" for name, value, default in settings if value != default]
        if unused:
            warnings.warn(f"{', '.join(unused)}: ignored with sft_steps=0 (they set the supervised fine-tuning, "
                          f"and none is done)", UserWarning, stacklevel=caller_stack_level())
    if task.vocab_size != len(tokenizer):
        task = hf_task(task, tokenizer)
    lm = HFCausalLM(model, task.vocab_size, task.pad_id, context)
    task.check_fits(lm.cfg.context, "the Hugging Face model")
    dev = next(lm.parameters()).device
    losses: list[float] = []
    t0 = time.perf_counter()
    if sft_steps > 0:
        torch.manual_seed(seed)
        data = task.sample_texts(sft_steps * batch_size, seed)
        opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=lr,
                                weight_decay=0.01 if one_cycle else 0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=sft_steps, pct_start=0.1) \
            if one_cycle else None
        response_from = 0 if task.sft_loss_on_prompt else task.prompt_len
        bar = progress_bar(sft_steps, "SFT (Hugging Face model)", progress)
        lm.train()
        for step in range(sft_steps):
            batch = data[step * batch_size:(step + 1) * batch_size].to(dev)
            loss = lm_loss(lm, batch, response_from, task.pad_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if sched is None:
                torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    lm.eval()
    config = PretrainConfig(n_texts=max(sft_steps * batch_size, 1), steps=max(sft_steps, 1), batch_size=batch_size,
                            lr=lr, seed=seed)  # what was done (its `model` field is not this model)
    return PretrainResult(lm, losses, time.perf_counter() - t0, False, config, task)


def tiny_gpt2(task: Task, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, seed: int = 0):
    """A randomly initialised ``GPT2LMHeadModel`` of the course GPT's size, built locally for
    ``task`` and its :func:`word_level_tokenizer`: ``(model, tokenizer)``. Nothing is downloaded."""
    require_transformers()
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = word_level_tokenizer(task)
    cfg = GPT2Config(vocab_size=task.vocab_size, n_positions=task.context, n_embd=d_model, n_layer=n_layers,
                     n_head=n_heads, n_inner=4 * d_model, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     pad_token_id=task.pad_id, bos_token_id=task.bos_id, eos_token_id=task.eos_id)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg), tokenizer


def main(argv=None) -> dict:
    """The command of the module doc: SFT, then GRPO on the addition task, on a Hugging Face model."""
    parser = argparse.ArgumentParser(description="GRPO (ppo_lib.rlhf.grpo) on a Hugging Face causal LM, "
                                                 "3-digit addition with a verifier")
    parser.add_argument("--model", help="a hub name or a local path, e.g. Qwen/Qwen2.5-0.5B or gpt2")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer GPT-2 built here (offline)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sft-steps", type=int, default=200)
    parser.add_argument("--sft-lr", type=float, default=None, help="default 1e-5 for --model, 2e-3 for --tiny")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None, help="GRPO's; default 1e-6 for --model, 1e-4 for --tiny")
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.tiny):
        parser.error("give --model NAME or --tiny")
    require_transformers()
    from ppo_lib.rlhf.addition import TASK
    from ppo_lib.rlhf.evaluate import evaluate_verifier
    from ppo_lib.rlhf.grpo import GRPOConfig, train_grpo
    from ppo_lib.rlhf.model import resolve_device

    dev = resolve_device(args.device)
    if args.tiny:
        model, tokenizer = tiny_gpt2(TASK, seed=args.seed)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    model.to(dev)
    sft = from_hf(model, tokenizer, TASK, sft_steps=args.sft_steps, seed=args.seed, progress=True,
                  lr=args.sft_lr or (2e-3 if args.tiny else 1e-5), batch_size=64 if args.tiny else 16)
    task = sft.task
    before = evaluate_verifier(sft.model, task, n_prompts=args.eval_prompts, samples_per_prompt=8, ks=(1, 8),
                               chunk=256)
    print(f"after SFT: pass@1 {before['pass_at_k'][1]:.3f}, pass@8 {before['pass_at_k'][8]:.3f}, "
          f"{before['samples'][:2]}")
    config = GRPOConfig(group_size=8, prompts_per_iteration=16, beta=0.0, kl="none", iterations=args.iterations,
                        lr=args.lr or (1e-4 if args.tiny else 1e-6), epochs=2, minibatches=4 if args.tiny else 16,
                        kv_cache=True, seed=args.seed)
    result = train_grpo(sft, None, config)
    after = evaluate_verifier(result.policy, task, n_prompts=args.eval_prompts, samples_per_prompt=8, ks=(1, 8),
                              chunk=256)
    h = result.history
    print(f"after GRPO: pass@1 {after['pass_at_k'][1]:.3f}, pass@8 {after['pass_at_k'][8]:.3f}; "
          f"{result.seconds:.0f} s ({sum(h.rollout_seconds):.0f} s sampling, {sum(h.update_seconds):.0f} s updates)")
    return {"sft": before, "grpo": after, "seconds": result.seconds}


if __name__ == "__main__":
    main()
