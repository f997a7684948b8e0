r"""A task: what a language model is asked, what it learns from, and how its answers are scored.

Every stage of chapters 8-10 reads the task from one value instead of module constants:

- the **vocabulary** and its special tokens (``<pad>``, ``<bos>``, ``<eos>``);
- the **shapes**: every prompt is ``prompt_len`` tokens (left-padded with ``<pad>`` where
  prompts differ in length), every response at most ``max_response_len`` tokens, so a model
  needs a context of ``prompt_len + max_response_len``;
- the **prompt samplers**: ``sample_prompts(rng, n)`` draws training prompts ``(n, P)``;
  ``heldout_prompts(n)`` gives the first ``n`` of a fixed held-out set ``(n, P)``;
- the **supervised data**: ``sample_texts(n, seed)`` gives ``n`` whole sequences (prompt,
  response, ``<eos>``) right-padded to the context, ``(n, prompt_len + max_response_len)``;
- the **reward**: a ``verifier(prompt_ids, response_ids) -> number`` (RL with verifiable
  rewards), or none, and then a learned reward model is passed to the trainer (chapter 8);
- optionally the hidden ``gold`` score used for logging (chapter 8's human judgement),
  ``is_valid`` (grammar or format) and ``stats`` (task-specific shares, logged each iteration).

The review language of chapters 8-9 is :data:`ppo_lib.rlhf.language.TASK`, the default
everywhere; 3-digit addition with a scratchpad is :data:`ppo_lib.rlhf.addition.TASK`; a learner
builds a third one in a cell with :class:`Task` (a test does).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Callable, Sequence

import numpy as np
import torch

from ppo_lib.config import check_number

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A task as a value; see the module doc. Checked at construction."""

    name: str
    vocab: tuple[str, ...]
    prompt_len: int
    max_response_len: int
    sample_prompts: Callable[[np.random.Generator, int], torch.Tensor]
    heldout_prompts: Callable[[int], torch.Tensor]
    sample_texts: Callable[[int, int], torch.Tensor]
    verifier: Callable[[Sequence[int], Sequence[int]], float] | None = None
    gold: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    is_valid: Callable[[Sequence[int]], bool] | None = None
    stats: Callable[[torch.Tensor], dict] | None = None
    encode_prompt_text: Callable[[str], list[int]] | None = None
    sft_loss_on_prompt: bool = True   # False: pre-training's loss is on the response tokens only
    version: int = 1                  # bump when the data change: it is part of the cache key
    pad: str = PAD
    bos: str = BOS
    eos: str = EOS

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r}: a task needs a non-empty name (it keys the cache)")
        vocab = tuple(self.vocab)
        object.__setattr__(self, "vocab", vocab)
        if len(set(vocab)) != len(vocab):
            dup = next(w for w in vocab if vocab.count(w) > 1)
            raise ValueError(f"vocab: the token {dup!r} appears twice; every token must be unique")
        for role in ("pad", "bos", "eos"):
            if getattr(self, role) not in vocab:
                raise ValueError(f"{role}={getattr(self, role)!r}: not in the vocabulary; a task needs its "
                                 f"{role} token among its words")
        for name in ("prompt_len", "max_response_len"):  # np.int64(11) and 11.0 are 11; 2.5 is an error
            object.__setattr__(self, name, check_number(name, getattr(self, name), 1, integer=True))
        object.__setattr__(self, "version", check_number("version", self.version, 0, integer=True))
        if not isinstance(self.sft_loss_on_prompt, (bool, np.bool_)):  # "False" would read as true
            raise TypeError(f"sft_loss_on_prompt={self.sft_loss_on_prompt!r}: must be True or False, not a "
                            f"{type(self.sft_loss_on_prompt).__name__}")
        object.__setattr__(self, "sft_loss_on_prompt", bool(self.sft_loss_on_prompt))
        for name in ("sample_prompts", "heldout_prompts", "sample_texts"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name}={getattr(self, name)!r}: must be a function (see Task's doc)")
        for name in ("verifier", "gold", "is_valid", "stats", "encode_prompt_text"):
            v = getattr(self, name)
            if v is not None and not callable(v):
                raise TypeError(f"{name}={v!r}: must be a function or None")

    # ------------------------------------------------------------ the vocabulary
    @functools.cached_property
    def token_id(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.token_id[self.pad]

    @property
    def bos_id(self) -> int:
        return self.token_id[self.bos]

    @property
    def eos_id(self) -> int:
        return self.token_id[self.eos]

    @property
    def context(self) -> int:
        """The context a model needs for this task: a prompt and the longest response."""
        return self.prompt_len + self.max_response_len

    def encode(self, text: str | Sequence[str]) -> list[int]:
        words = text.split() if isinstance(text, str) else list(text)
        unknown = [w for w in words if w not in self.token_id]
        if unknown:
            raise ValueError(f"unknown word {unknown[0]!r}: task {self.name!r} has the tokens {' '.join(self.vocab)}")
        return [self.token_id[w] for w in words]

    def decode(self, ids, stop_at_eos: bool = True) -> str:
        """Token ids to text, without ``<pad>``/``<bos>``; stops at (and shows) the first ``<eos>``."""
        words = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i}: must be in [0, {self.vocab_size}) for task {self.name!r}")
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.vocab[i])
            if i == self.eos_id and stop_at_eos:
                break
        return " ".join(words)

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's text -> ``prompt_len`` ids: ``<bos>`` first, left-padded with ``<pad>``."""
        if self.encode_prompt_text is not None:
            return list(self.encode_prompt_text(text))
        ids = [self.bos_id, *self.encode(text)]
        if len(ids) > self.prompt_len:
            raise ValueError(f"prompt {text!r} has {len(ids)} tokens with <bos>: task {self.name!r} has prompts of "
                             f"at most prompt_len={self.prompt_len}")
        return [self.pad_id] * (self.prompt_len - len(ids)) + ids

    # ------------------------------------------------------------ shapes and checks
    def check_fits(self, context: int, what: str = "the model") -> None:
        """A clear error when this task's prompts and responses do not fit a model's context."""
        if self.context > context:
            raise ValueError(f"task {self.name!r}: prompts of prompt_len={self.prompt_len} tokens plus responses of "
                             f"max_response_len={self.max_response_len} need a context of {self.context}, but "
                             f"{what} has context={context}; build it with GPTConfig.for_task(task)")

    def check_vocab(self, vocab_size: int, what: str = "the model") -> None:
        if vocab_size != self.vocab_size:
            raise ValueError(f"task {self.name!r} has {self.vocab_size} tokens but {what} has vocab_size={vocab_size}; "
                             f"build it with GPTConfig.for_task(task)")

    def cache_settings(self) -> dict:
        """What identifies the task in a cache key."""
        return {"name": self.name, "version": self.version, "vocab": list(self.vocab),
                "prompt_len": self.prompt_len, "max_response_len": self.max_response_len,
                "sft_loss_on_prompt": self.sft_loss_on_prompt}

    # ------------------------------------------------------------ rewards
    def verify(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """The verifier on each (prompt, response) row: ``(B, P)``, ``(B, L)`` -> ``(B,)`` float32."""
        if self.verifier is None:
            raise ValueError(f"task {self.name!r} has no verifier: pass a trained reward model to the trainer "
                             f"(reward=...), or build the task with verifier=a function of (prompt, response)")
        out = []
        for p, r in zip(prompts.tolist(), responses.tolist()):
            value = self.verifier(p, r)
            out.append(reward_value(value, f"task {self.name!r}: verifier({self.decode(p)!r}, {self.decode(r)!r})"))
        return torch.tensor(out, dtype=torch.float32)

    def gold_scores(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """The true score of each response (the hidden gold reward, else the verifier) ``(B,)``."""
        if self.gold is not None:
            return self.gold(prompts, responses)
        return self.verify(prompts, responses)

    def valid_rate(self, responses: torch.Tensor) -> float:
        """Share of responses that are well formed (``is_valid``; without it: finished with ``<eos>``)."""
        if not len(responses):
            return float("nan")
        rows = responses.tolist()
        ok = [self.is_valid(r) if self.is_valid is not None else self.eos_id in r for r in rows]
        return float(np.mean(ok))


def reward_value(value, what: str) -> float:
    """``value`` as a finite float, or a clear error naming where it came from."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise TypeError(f"{what} returned {value!r} ({type(value).__name__}): a verifier must return a finite "
                        f"number, e.g. 1.0 for a right answer and 0.0 for a wrong one")
    return float(value)


def right_padded(rows: Sequence[Sequence[int]], length: int, pad_id: int, what: str = "text") -> torch.Tensor:
    """Token-id rows -> ``(n, length)`` right-padded with ``pad_id``; a too-long row is an error."""
    out = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for b, ids in enumerate(rows):
        if len(ids) > length:
            raise ValueError(f"{what} {b} has {len(ids)} tokens, more than the context of {length}")
        out[b, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out
