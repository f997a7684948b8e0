r"""A reasoning task with a verifiable answer: 3-digit + 3-digit addition, with or without a scratchpad.

18 tokens: ``<pad> <bos> <eos> 0-9 + = , so :``. A prompt is ``<bos> 7 2 5 + 3 6 8 =``, left-padded
with ``<pad>`` to 11 tokens (room for 4-digit operands). Two ways to answer:

- **direct**: ``1 0 9 3 <eos>`` (5 tokens);
- **worked**: ``: 1 3 , 9 , 1 0 so 1 0 9 3 <eos>`` (13-15 tokens): ``:`` opens a scratchpad of the
  column sums from the units up, the carry included (5+8 = 13; 2+6+1 = 9; 7+3 = 10), then ``so``
  and the answer. The first token picks the style.

The **verifier** (the reward, :func:`verify`) gives 1 when the response ends with ``<eos>``, parses
as a number or as ``: n , ... , n so N``, has no leading zeros, and its final number is the sum;
else 0. The scratchpad's numbers are not checked: only the answer counts.

The **teacher** (the supervised data) is always right and works the sum out in 30% of its answers.
A 100k-parameter model trained on it for a minute cannot add 3-digit numbers directly (right a
few percent of the time) but can run the scratchpad (right about three times in four): length
and accuracy are linked, and RL has something to find (../shared/RLVR.md: GRPO takes pass@1
from about 0.29 to 0.81 by choosing the worked style).

Held-out prompts are a fixed set of problems that the training prompts and the teacher's data
never contain.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

from ppo_lib.config import check_number

from ppo_lib.rlhf.task import BOS, EOS, PAD, Task, right_padded

DIGITS = tuple(str(d) for d in range(10))
VOCAB: tuple[str, ...] = (PAD, BOS, EOS, *DIGITS, "+", "=", ",", "so", ":")
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID = TOKEN_ID[PAD], TOKEN_ID[BOS], TOKEN_ID[EOS]
PLUS, EQUALS, COMMA, SO, WORK = (TOKEN_ID[w] for w in ("+", "=", ",", "so", ":"))
PROMPT_LEN = 11           # <bos> dddd + dddd =
MAX_RESPONSE_LEN = 20
WORKED_SHARE = 0.3        # the teacher's share of worked answers
N_HELDOUT = 512           # the held-out pool (the chapter evaluates on its first 96)
HELDOUT_SEED = 20_250_101


def digits_of(n: int) -> list[int]:
    return [TOKEN_ID[c] for c in str(n)]


def column_sums(a: int, b: int) -> list[int]:
    """The scratchpad: each column's sum from the units up, the carry from the column before included."""
    sums, carry = [], 0
    while a or b:
        s = a % 10 + b % 10 + carry
        sums.append(s)
        carry, a, b = s // 10, a // 10, b // 10
    return sums or [0]


def response_ids(a: int, b: int, worked: bool) -> list[int]:
    """The teacher's answer to ``a + b`` as token ids, ``<eos>`` included."""
    if not worked:
        return [*digits_of(a + b), EOS_ID]
    ids = [WORK]
    for i, s in enumerate(column_sums(a, b)):
        ids += ([COMMA] if i else []) + digits_of(s)
    return ids + [SO, *digits_of(a + b), EOS_ID]


def prompt_ids(a: int, b: int, prompt_len: int = PROMPT_LEN) -> list[int]:
    ids = [BOS_ID, *digits_of(a), PLUS, *digits_of(b), EQUALS]
    if len(ids) > prompt_len:
        raise ValueError(f"{a} + {b}: {len(ids)} prompt tokens, more than prompt_len={prompt_len}")
    return [PAD_ID] * (prompt_len - len(ids)) + ids


def parse_prompt(ids) -> tuple[int, int]:
    """``[<pad>.., <bos>, 7, 2, 5, +, 3, 6, 8, =]`` -> ``(725, 368)``."""
    words = [VOCAB[int(i)] for i in ids if int(i) not in (PAD_ID, BOS_ID)]
    text = "".join(words)
    if not text.endswith("=") or text.count("+") != 1:
        raise ValueError(f"prompt {' '.join(words)!r}: expected 'a + b ='")
    a, b = text[:-1].split("+")
    return int(a), int(b)


def _number(tokens: list[str]) -> int | None:
    """Digits without a leading zero (``0`` alone is fine) -> the number, else None."""
    if not tokens or any(t not in DIGITS for t in tokens) or (tokens[0] == "0" and len(tokens) > 1):
        return None
    return int("".join(tokens))


def parse_response(ids) -> tuple[int, bool] | None:
    """``(final answer, worked?)`` of a response, or None when it is malformed or unfinished.
    Anything after the first ``<eos>`` is ignored."""
    ids = [int(i) for i in ids]
    if EOS_ID not in ids:
        return None
    words = [VOCAB[i] for i in ids[:ids.index(EOS_ID)]]
    if words[:1] != [":"]:
        n = _number(words)
        return None if n is None else (n, False)
    if words.count("so") != 1:
        return None
    k = words.index("so")
    pad, answer = words[1:k], _number(words[k + 1:])
    if answer is None or not pad:
        return None
    items, item = [], []
    for w in pad + [","]:
        if w == ",":
            items.append(item)
            item = []
        else:
            item.append(w)
    if any(_number(i) is None for i in items):
        return None
    return answer, True


def verify(prompt, response) -> float:
    """The reward: 1.0 when the response (token ids) is well formed and its answer is the sum, else 0.0."""
    a, b = parse_prompt(prompt)
    parsed = parse_response(response)
    return float(parsed is not None and parsed[0] == a + b)


def is_well_formed(response) -> bool:
    return parse_response(response) is not None


def is_worked(response) -> bool:
    """The style is the first token: ``:`` opens a scratchpad."""
    ids = response.tolist() if isinstance(response, torch.Tensor) else list(response)
    return bool(ids) and int(ids[0]) == WORK


def stats(responses: torch.Tensor) -> dict:
    """Logged every iteration: the share of worked answers (scratchpad share)."""
    return {"worked": float(responses[:, 0].eq(WORK).float().mean()) if len(responses) else float("nan")}


def _operand_range(digits: int) -> tuple[int, int]:
    return 10 ** (digits - 1), 10 ** digits


@functools.lru_cache(maxsize=None)
def heldout_problems(digits: int = 3, n: int = N_HELDOUT) -> tuple[tuple[int, int], ...]:
    """The fixed held-out problems (distinct), never in training prompts nor in the teacher's data."""
    lo, hi = _operand_range(digits)
    rng = np.random.default_rng(HELDOUT_SEED + digits)
    seen: dict[tuple[int, int], None] = {}
    while len(seen) < n:
        seen[(int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))] = None
    return tuple(seen)


def sample_problems(rng: np.random.Generator, n: int, digits: int = 3) -> list[tuple[int, int]]:
    """``n`` training problems, re-drawn when one is held out."""
    lo, hi = _operand_range(digits)
    held = set(heldout_problems(digits))
    out = []
    while len(out) < n:
        a, b = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
        if (a, b) not in held:
            out.append((a, b))
    return out


def make_task(digits: int = 3, worked_share: float = WORKED_SHARE) -> Task:
    """The addition task for ``digits``-digit operands (1-4) and a teacher that works out
    ``worked_share`` of its answers."""
    if isinstance(digits, (bool, np.bool_)) or not isinstance(digits, numbers.Integral) or not 1 <= digits <= 4:
        raise ValueError(f"digits={digits!r}: must be 1, 2, 3 or 4 (prompts have room for 4-digit operands)")
    digits = int(digits)
    worked_share = check_number("worked_share", worked_share, 0.0, 1.0)  # NaN is an error, not "never worked"

    def sample_prompts(rng: np.random.Generator, n: int) -> torch.Tensor:
        return torch.tensor([prompt_ids(a, b) for a, b in sample_problems(rng, n, digits)], dtype=torch.long)

    def heldout_prompts(n: int) -> torch.Tensor:
        if n > N_HELDOUT:
            raise ValueError(f"n={n}: the held-out set has {N_HELDOUT} problems")
        return torch.tensor([prompt_ids(a, b) for a, b in heldout_problems(digits)[:n]], dtype=torch.long)

    def sample_texts(n: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        problems = sample_problems(rng, n, digits)
        worked = rng.random(n) < worked_share
        rows = [prompt_ids(a, b) + response_ids(a, b, bool(w)) for (a, b), w in zip(problems, worked)]
        return right_padded(rows, PROMPT_LEN + MAX_RESPONSE_LEN, PAD_ID, "addition text")

    name = "addition" if (digits, worked_share) == (3, WORKED_SHARE) else f"addition-{digits}d-w{worked_share:g}"
    return Task(name=name, vocab=VOCAB, prompt_len=PROMPT_LEN, max_response_len=MAX_RESPONSE_LEN,
                sample_prompts=sample_prompts, heldout_prompts=heldout_prompts, sample_texts=sample_texts,
                verifier=verify, is_valid=is_well_formed, stats=stats,
                encode_prompt_text=lambda text: prompt_ids(*_operands(text)), sft_loss_on_prompt=False)


def _operands(text: str) -> tuple[int, int]:
    """``"725 + 368"`` or ``"725+368="`` -> ``(725, 368)``."""
    parts = text.replace("=", "").replace(" ", "").split("+")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"prompt {text!r}: expected 'a + b', e.g. '725 + 368'")
    return int(parts[0]), int(parts[1])


TASK = make_task()
