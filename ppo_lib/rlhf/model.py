r"""A tiny decoder-only transformer (GPT) in plain PyTorch, and sampling from it.

Shapes: ``B`` sequences, ``T`` positions (at most ``context``), ``V`` words, ``D`` width.
The logits at position ``i`` are the model's distribution over token ``i + 1``; the
causal mask makes them depend on tokens ``0..i`` only.

:func:`generate` samples responses with a temperature only (no top-k / top-p: those
change the distribution actually sampled, and the per-token KL estimate built on
:math:`\log\pi` would then be biased, even negative: TRL issues 925, 1161, 1857),
and returns what PPO needs: the tokens, the log-probabilities of the sampled tokens
under the sampling distribution, and the mask of real response tokens.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import math
import numbers

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ppo_lib.config import check_number
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import flag as check_flag_value
from ppo_lib.rlhf.task import Task

KV = tuple[torch.Tensor, torch.Tensor]  # one block's keys and values, (B, heads, positions, D / heads)

# Set while a loop feeds the model tokens that were checked at its entry or that the model
# sampled itself (generate, the trainers): the forward pass then skips its range scan of the
# token ids, two host reads (a GPU synchronisation each) per call. The dtype is always checked.
_IDS_CHECKED = contextvars.ContextVar("ppo_lib_rlhf_token_ids_checked", default=False)


@contextlib.contextmanager
def token_ids_checked():
    """Inside this block the model trusts the range of its token ids (see ``check_token_ids``)."""
    handle = _IDS_CHECKED.set(True)
    try:
        yield
    finally:
        _IDS_CHECKED.reset(handle)


def check_token_ids(tokens: torch.Tensor, vocab_size: int, name: str = "tokens") -> torch.Tensor:
    """``tokens``, or a clear error: integer ids in ``[0, vocab_size)``."""
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name}: dtype {tokens.dtype}; allowed: integer token ids (e.g. {name}.long())")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{name}: token ids must be in [0, {vocab_size}), got {int(tokens.min())}.."
                         f"{int(tokens.max())}")
    return tokens


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when there is a GPU, the CPU otherwise."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device={device!r}: must be 'auto', 'cpu' or 'cuda'")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: no CUDA GPU is available here; use 'auto' or 'cpu'")
    return torch.device(device)


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = lang.VOCAB_SIZE
    context: int = lang.CONTEXT
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4

    def __post_init__(self):
        for name in ("vocab_size", "context", "d_model", "n_layers", "n_heads"):
            # np.int64(64) and 64.0 are 64; 2.5, True, nan and "64" are errors naming the field
            object.__setattr__(self, name, check_number(name, getattr(self, name), 1, integer=True))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")

    @classmethod
    def for_task(cls, task: Task, **kwargs) -> "GPTConfig":
        """The vocabulary size and context of ``task``; the other fields as given (or the defaults)."""
        return cls(vocab_size=task.vocab_size, context=task.context, **kwargs)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model))

    def forward(self, x: torch.Tensor, past: KV | None = None, keep: list | None = None) -> torch.Tensor:
        """``past``: this block's keys and values of the earlier positions (sampling with a cache);
        ``keep``: a list that receives this block's keys and values including the new positions."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        heads = lambda t: t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        if past is None:
            # the causal mask: position i attends to positions <= i only
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # one new position attends to every earlier one and itself: no mask needed
            if T != 1:
                raise ValueError(f"with cached keys and values, feed one new position at a time, got {T}")
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            att = F.scaled_dot_product_attention(q, k, v)
        if keep is not None:
            keep.append((k, v))
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class Trunk(nn.Module):
    """Embeddings and transformer blocks: token ids ``(B, T)`` -> features ``(B, T, D)``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: torch.Tensor, past: list[KV] | None = None, keep: list | None = None) -> torch.Tensor:
        """``past`` (one ``(keys, values)`` per block) holds the earlier positions: ``tokens`` is then
        the next position only; ``keep`` receives each block's keys and values (see :func:`generate`)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected shape (batch, positions), got {tuple(tokens.shape)}")
        start = 0 if past is None else past[0][0].shape[2]
        T = start + tokens.shape[1]
        if T > self.cfg.context:
            raise ValueError(f"{T} tokens: longer than the model's context of {self.cfg.context}")
        if _IDS_CHECKED.get():
            if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise TypeError(f"tokens: dtype {tokens.dtype}; allowed: integer token ids (e.g. tokens.long())")
        else:
            check_token_ids(tokens, self.cfg.vocab_size)
        x = self.tok(tokens) + self.pos(torch.arange(start, T, device=tokens.device))
        for i, block in enumerate(self.blocks):
            x = block(x, None if past is None else past[i], keep)
        return self.ln(x)


class GPT(nn.Module):
    """The language model: logits ``(B, T, V)``."""

    def __init__(self, cfg: GPTConfig = GPTConfig()):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, tokens: torch.Tensor, past: list[KV] | None = None, keep: list | None = None) -> torch.Tensor:
        return self.head(self.trunk(tokens, past, keep))


class ScalarModel(nn.Module):
    """A trunk and a scalar head, one number per position ``(B, T)``: the reward model
    (read at ``<eos>``) and the value model (read at every response position)."""

    def __init__(self, cfg: GPTConfig = GPTConfig()):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg)
        self.head = nn.Linear(cfg.d_model, 1)

    @classmethod
    def from_lm(cls, lm: GPT) -> "ScalarModel":
        """A copy of a language model's trunk with a fresh zero head."""
        model = cls(lm.cfg)
        model.trunk.load_state_dict(lm.trunk.state_dict())
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
        return model.to(next(lm.parameters()).device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(tokens)).squeeze(-1)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy with no gradients, in eval mode: the reference model."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --------------------------------------------------------------------------
# Log-probabilities and sampling
# --------------------------------------------------------------------------

def check_temperature(temperature: float) -> float:
    """A finite temperature > 0 as a Python float (NumPy's floats too), or a clear error."""
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature={temperature!r}: must be a number > 0, not a {type(temperature).__name__} "
                         f"(1.0 samples the model as it is; smaller is greedier)")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature={temperature!r}: sampling needs a finite temperature > 0 (1.0 samples the "
                         f"model as it is; smaller is greedier)")
    return float(temperature)


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, prompt_len: int,
                    temperature: float = 1.0) -> torch.Tensor:
    r"""Log-probabilities of the response tokens under the model, ``(B, L)``.

    The logits at position ``i`` predict token ``i + 1`` (the shift by one), so the
    response token at ``prompt_len + t`` is scored by the logits at ``prompt_len + t - 1``:

    .. math:: \log\pi(a_t|s_t) = \mathrm{log\_softmax}(z_{P+t-1} / \tau)[a_t].

    ``logits``: ``(B, T, V)``; ``tokens``: ``(B, T)``; ``L = T - prompt_len``.
    """
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)}: the first two "
                         f"dimensions must match")
    if not 1 <= prompt_len < tokens.shape[1]:
        raise ValueError(f"prompt_len={prompt_len}: must be in [1, {tokens.shape[1]})")
    logp = F.log_softmax(logits[:, prompt_len - 1:-1] / temperature, dim=-1)
    return logp.gather(-1, tokens[:, prompt_len:].unsqueeze(-1)).squeeze(-1)


def response_logprobs(model: GPT, tokens: torch.Tensor, prompt_len: int = lang.PROMPT_LEN,
                      temperature: float = 1.0) -> torch.Tensor:
    """Teacher-forced log-probabilities of the response tokens, ``(B, L)``."""
    return gather_logprobs(model(tokens), tokens, prompt_len, check_temperature(temperature))


def response_mask(responses: torch.Tensor, eos_id: int = lang.EOS_ID) -> torch.Tensor:
    """1.0 for the real response tokens (up to and including the first ``<eos>``), 0.0 after it."""
    is_eos = (responses == eos_id).long()
    after_eos = (torch.cumsum(is_eos, dim=1) - is_eos) > 0  # strictly after the first <eos>
    return (~after_eos).float()


@dataclasses.dataclass
class Generation:
    """What :func:`generate` returns. ``L`` is ``max_new_tokens``.

    - ``tokens``: ``(B, P + L)`` prompt and response, ``<pad>`` after ``<eos>``;
    - ``responses``: ``(B, L)`` the response part;
    - ``logprobs``: ``(B, L)`` log-probs of the sampled tokens at the sampling temperature
      (0 at padding);
    - ``mask``: ``(B, L)`` 1.0 on real response tokens, ``<eos>`` included;
    - ``has_eos``: ``(B,)`` whether the response finished;
    - ``lengths``: ``(B,)`` number of real response tokens;
    - ``task``: the task whose vocabulary the tokens are in.
    """

    tokens: torch.Tensor
    responses: torch.Tensor
    logprobs: torch.Tensor
    mask: torch.Tensor
    has_eos: torch.Tensor
    lengths: torch.Tensor
    prompt_len: int
    task: Task = lang.TASK

    @property
    def prompts(self) -> torch.Tensor:
        return self.tokens[:, :self.prompt_len]

    def texts(self) -> list[str]:
        return [decode(r, self.task) for r in self.responses.tolist()]


def decode(ids, task: Task = lang.TASK) -> str:
    """A response as text, with ``<eos>`` shown when present (so unfinished ones are visible)."""
    ids = list(ids)
    if task is lang.TASK:
        return lang.decode(ids, specials=False) + (" <eos>" if lang.EOS_ID in ids else " …")
    return task.decode(ids) + ("" if task.eos_id in ids else " …")


def prompt_batch(prompts, device: str | torch.device = "cpu", task: Task = lang.TASK) -> torch.Tensor:
    """Prompts (strings or a ``(B, P)`` id tensor) as a ``(B, P)`` tensor."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"prompts: expected shape (batch, prompt_len), got {tuple(prompts.shape)}")
        return prompts.to(device)
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("prompts: got an empty list; give at least one prompt, e.g. 'the food was'")
    return torch.tensor([task.encode_prompt(p) for p in prompts], dtype=torch.long, device=device)


@torch.no_grad()
def generate(model: GPT, prompts, max_new_tokens: int | None = None, temperature: float = 1.0,
             generator: torch.Generator | None = None, task: Task | None = None,
             kv_cache: bool = False) -> Generation:
    """Sample one response per prompt, ancestrally, with a temperature only.

    Every row runs ``max_new_tokens`` steps (default: the task's ``max_response_len``); after
    a row's ``<eos>`` its tokens are ``<pad>`` and masked out. The returned log-probabilities
    are exactly those of the distribution sampled from, so they equal a teacher-forced forward
    pass at the same temperature (:func:`response_logprobs`); a test proves it.

    ``kv_cache=True`` keeps each block's keys and values, so each step runs the model on the
    one new position instead of the whole sequence so far (the same distribution up to
    float rounding; about 2.4x faster here on the 31-token addition task). Off by default so
    that chapters 8-9's seeded numbers stay bit for bit.
    """
    task = lang.TASK if task is None else task
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a Task, got {type(task).__name__}")
    if not isinstance(model, nn.Module):  # e.g. the PretrainResult instead of its model
        attr = next((a for a in ("model", "policy") if isinstance(getattr(model, a, None), GPT)), None)
        hint = f"pass `result.{attr}`" if attr else "pass the GPT itself, e.g. `sft.model`"
        raise TypeError(f"model: expected a GPT, got a {type(model).__name__}; {hint}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator={generator!r}: expected None or a torch.Generator "
                        f"(e.g. torch.Generator().manual_seed(0))")
    temperature = check_temperature(temperature)
    device = next(model.parameters()).device
    x = prompt_batch(prompts, device, task)
    P = x.shape[1]
    if max_new_tokens is None:
        max_new_tokens = task.max_response_len
    max_new_tokens = check_number("max_new_tokens", max_new_tokens, 1, integer=True)
    kv_cache = check_flag_value("kv_cache", kv_cache)
    if P + max_new_tokens > model.cfg.context:
        raise ValueError(f"a prompt of {P} tokens plus max_new_tokens={max_new_tokens} is longer than the "
                         f"model's context of {model.cfg.context}")
    task.check_vocab(model.cfg.vocab_size)
    check_token_ids(x, model.cfg.vocab_size, "prompts")  # once; the loop then feeds back its own samples
    was_training = model.training
    model.eval()
    B = x.shape[0]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    logps = []
    past = None
    with token_ids_checked():  # the loop feeds back the model's own samples
        for _ in range(max_new_tokens):
            if kv_cache:
                keep: list = []
                logits = model(x if past is None else x[:, -1:], past, keep)[:, -1] / temperature
                past = keep
            else:
                logits = model(x)[:, -1] / temperature
            logp = F.log_softmax(logits, dim=-1)
            nxt = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            nxt = torch.where(done, torch.full_like(nxt, task.pad_id), nxt)
            logps.append(torch.where(done, torch.zeros(B, device=device), logp.gather(-1, nxt[:, None]).squeeze(-1)))
            done = done | (nxt == task.eos_id)
            x = torch.cat([x, nxt[:, None]], dim=1)
    model.train(was_training)
    responses = x[:, P:]
    mask = response_mask(responses, task.eos_id)
    return Generation(tokens=x, responses=responses, logprobs=torch.stack(logps, dim=1), mask=mask,
                      has_eos=(responses == task.eos_id).any(dim=1), lengths=mask.sum(dim=1).long(), prompt_len=P,
                      task=task)
