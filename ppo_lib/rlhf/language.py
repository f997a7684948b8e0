r"""A tiny language with a known truth: short reviews and a hidden gold reward.

The language plays the part of "what people write" and the gold reward the part
of "what people like". Because both are known exactly, every later stage can be
measured against the truth: the reward model's errors, the policy's reward
hacking, the KL it pays.

A string is a prompt and a response::

    <bos> the food was | very good and not bad ! <eos>

- prompt: ``<bos> the {movie|food|staff} {was|is}`` (4 tokens);
- response: 1 to 3 clauses joined by ``and`` / ``but``, then ``.`` or ``!``, then ``<eos>``;
- clause: an optional ``not``, 0 to 2 intensifiers (``very``, ``really``), one adjective
  (4 positive, 4 negative, and the neutral ``ok``).

The gold reward of a response is the mean over its clauses of

.. math:: \text{polarity}(\text{adj}) \times (-1 \text{ if "not"}) \times (1 + 0.25 \times \#\text{intensifiers}),

in ``[-1.5, 1.5]``; anything ungrammatical, or without ``<eos>``, scores ``-2``.

**A prompt-dependent gold** (an option: :data:`PROMPTED_TASK`; the default :data:`TASK` ignores
the prompt). Each subject has its *apt* praise, :data:`APT_ADJECTIVES`: any positive adjective
suits a movie, only ``great`` or ``good`` suit food, only ``nice`` suits the staff. An apt
positive adjective keeps its polarity 1; a positive adjective that is not apt for the prompt's
subject is faint praise, worth :data:`FAINT_PRAISE` (0.25) instead. Negative adjectives and
``ok`` are scored as before. The range stays ``[-1.5, 1.5]`` for every subject, but the share of
apt praise among the SFT model's adjectives differs (4, 2, 1 of the 4 positive ones), so the
subjects differ in how hard they are. This variant is ours, built for chapter 8's section 7.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
import torch

from ppo_lib.rlhf.task import Task

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SUBJECTS = ("movie", "food", "staff")
VERBS = ("was", "is")
POSITIVE = ("good", "great", "fun", "nice")
NEGATIVE = ("bad", "awful", "boring", "rude")
NEUTRAL = ("ok",)
INTENSIFIERS = ("very", "really")
NEGATION = "not"
CONJUNCTIONS = ("and", "but")
ENDINGS = (".", "!")

VOCAB: tuple[str, ...] = (PAD, BOS, EOS, "the", *SUBJECTS, *VERBS, *POSITIVE, *NEGATIVE, *NEUTRAL,
                          *INTENSIFIERS, NEGATION, *CONJUNCTIONS, *ENDINGS)
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID = TOKEN_ID[PAD], TOKEN_ID[BOS], TOKEN_ID[EOS]
VOCAB_SIZE = len(VOCAB)

POLARITY = {**{w: 1.0 for w in POSITIVE}, **{w: -1.0 for w in NEGATIVE}, **{w: 0.0 for w in NEUTRAL}}
PROMPTS: tuple[str, ...] = tuple(f"the {s} {v}" for s in SUBJECTS for v in VERBS)
PROMPT_LEN = 4            # <bos> the food was
MAX_RESPONSE_LEN = 16     # 3 clauses of 4 tokens, 2 conjunctions, the ending, <eos>
CONTEXT = PROMPT_LEN + MAX_RESPONSE_LEN
MAX_CLAUSES, MAX_INTENSIFIERS = 3, 2
INVALID_SCORE = -2.0      # the gold score of anything ungrammatical or unfinished
MAX_GOLD = 1.5
APT_ADJECTIVES = {"movie": POSITIVE, "food": ("great", "good"), "staff": ("nice",)}
FAINT_PRAISE = 0.25       # a positive adjective that does not suit the subject (prompted gold only)


def encode(text: str | Sequence[str], add_bos: bool = False) -> list[int]:
    """Words (a string split on spaces, or a list) to token ids; unknown words are an error."""
    words = text.split() if isinstance(text, str) else list(text)
    unknown = [w for w in words if w not in TOKEN_ID]
    if unknown:
        raise ValueError(f"unknown word {unknown[0]!r}: the language's words are {' '.join(VOCAB[3:])} "
                         f"(and {BOS}, {EOS}, {PAD})")
    ids = [TOKEN_ID[w] for w in words]
    return [BOS_ID, *ids] if add_bos else ids


def decode(ids: Iterable[int], stop_at_eos: bool = True, specials: bool = False) -> str:
    """Token ids to text. Stops at the first ``<eos>``; drops ``<pad>`` and ``<bos>``
    unless ``specials``."""
    words = []
    for i in ids:
        i = int(i)
        if not 0 <= i < VOCAB_SIZE:
            raise ValueError(f"token id {i}: must be in [0, {VOCAB_SIZE})")
        if i == EOS_ID and stop_at_eos:
            if specials:
                words.append(EOS)
            break
        if i in (PAD_ID, BOS_ID) and not specials:
            continue
        words.append(VOCAB[i])
    return " ".join(words)


def encode_prompt(prompt: str) -> list[int]:
    """``"the food was"`` -> ``[<bos>, the, food, was]``, checked against the prompt set's shape."""
    ids = encode(prompt, add_bos=True)
    if len(ids) != PROMPT_LEN:
        raise ValueError(f"prompt {prompt!r} has {len(ids) - 1} words: prompts have exactly {PROMPT_LEN - 1} "
                         f"(e.g. {PROMPTS[0]!r}); the model's context is {CONTEXT} tokens, "
                         f"{MAX_RESPONSE_LEN} of them for the response")
    return ids


# --------------------------------------------------------------------------
# The grammar
# --------------------------------------------------------------------------

def sample_clause(rng: np.random.Generator) -> list[str]:
    words = [NEGATION] if rng.random() < 0.3 else []
    words += [INTENSIFIERS[rng.integers(len(INTENSIFIERS))] for _ in range(rng.integers(MAX_INTENSIFIERS + 1))]
    words.append((POSITIVE + NEGATIVE + NEUTRAL)[rng.integers(len(POLARITY))])
    return words


def sample_response(rng: np.random.Generator) -> list[str]:
    """A grammatical response (with its ending and ``<eos>``), as words."""
    n = int(rng.integers(1, MAX_CLAUSES + 1))
    words = sample_clause(rng)
    for _ in range(n - 1):
        words += [CONJUNCTIONS[rng.integers(len(CONJUNCTIONS))], *sample_clause(rng)]
    return words + [ENDINGS[rng.integers(len(ENDINGS))], EOS]


def sample_texts(n: int, seed: int = 0) -> list[list[str]]:
    """``n`` grammatical strings (prompt + response, with ``<bos>`` and ``<eos>``) as words."""
    rng = np.random.default_rng(seed)
    return [[BOS, *PROMPTS[rng.integers(len(PROMPTS))].split(), *sample_response(rng)] for _ in range(n)]


def parse_response(words: Sequence[str]) -> list[tuple[bool, int, str]] | None:
    """The clauses ``(negated, n_intensifiers, adjective)`` of a response, or None if the
    response is not grammatical. ``words`` must end with ``<eos>`` (anything after it is ignored)."""
    words = list(words)
    if EOS not in words:
        return None
    words = words[:words.index(EOS)]
    if len(words) < 2 or words[-1] not in ENDINGS:
        return None
    body, clauses, i = words[:-1], [], 0
    while True:
        negated = i < len(body) and body[i] == NEGATION
        i += negated
        n_int = 0
        while i < len(body) and body[i] in INTENSIFIERS:
            n_int, i = n_int + 1, i + 1
        if n_int > MAX_INTENSIFIERS or i >= len(body) or body[i] not in POLARITY:
            return None
        clauses.append((negated, n_int, body[i]))
        i += 1
        if i == len(body):
            break
        if body[i] not in CONJUNCTIONS or len(clauses) == MAX_CLAUSES:
            return None
        i += 1
    return clauses


def _words(response) -> list[str]:
    if isinstance(response, str):
        return response.split()
    if isinstance(response, torch.Tensor):
        response = response.tolist()
    response = list(response)
    if response and not isinstance(response[0], str):
        return [VOCAB[int(i)] for i in response]
    return response


def is_grammatical(response) -> bool:
    """True if the response (words, a string, or token ids) is grammatical and ends with ``<eos>``."""
    return parse_response(_words(response)) is not None


def polarity(adjective: str, subject: str | None = None) -> float:
    """An adjective's polarity; with a ``subject``, the prompted gold's (faint praise for a positive
    adjective that is not apt for the subject, see the module doc)."""
    if adjective not in POLARITY:
        raise ValueError(f"adjective={adjective!r}: the adjectives are {' '.join(POLARITY)}")
    if subject is None or POLARITY[adjective] <= 0:
        return POLARITY[adjective]
    if subject not in APT_ADJECTIVES:
        raise ValueError(f"subject={subject!r}: the subjects are {', '.join(SUBJECTS)} (or None: the gold that "
                         f"ignores the prompt)")
    return 1.0 if adjective in APT_ADJECTIVES[subject] else FAINT_PRAISE


def gold_reward(response, subject: str | None = None) -> float:
    """The hidden "human" judgement of a response (words, a string or token ids): see the module doc.
    ``subject`` (``"movie"``, ``"food"``, ``"staff"``): the prompt-dependent gold of that subject."""
    if subject is not None and subject not in APT_ADJECTIVES:
        raise ValueError(f"subject={subject!r}: the subjects are {', '.join(SUBJECTS)} (or None: the gold that "
                         f"ignores the prompt)")
    clauses = parse_response(_words(response))
    if clauses is None:
        return INVALID_SCORE
    return float(np.mean([polarity(adj, subject) * (-1.0 if neg else 1.0) * (1.0 + 0.25 * n)
                          for neg, n, adj in clauses]))


def prompt_subject(prompt) -> str:
    """The subject of a prompt (its text, words, or token ids with or without ``<bos>``/padding)."""
    words = [w for w in _words(prompt) if w not in (BOS, PAD)]
    subjects = [w for w in words if w in SUBJECTS]
    if len(subjects) != 1:
        raise ValueError(f"prompt {' '.join(words)!r}: expected exactly one subject of {', '.join(SUBJECTS)}")
    return subjects[0]


def prompted_gold_rewards(prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """The prompt-dependent gold of each row: prompts ``(B, P)``, responses ``(B, L)`` -> ``(B,)``."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts ({len(prompts)} rows) and responses ({len(responses)} rows): one prompt per response")
    return torch.tensor([gold_reward(r, prompt_subject(p)) for p, r in zip(prompts.tolist(), responses.tolist())],
                        dtype=torch.float32)


def gold_rewards(responses: torch.Tensor) -> torch.Tensor:
    """Gold rewards of a batch of response token ids ``(B, L)`` -> ``(B,)``."""
    return torch.tensor([gold_reward(r) for r in responses.tolist()], dtype=torch.float32)


def grammatical_rate(responses: torch.Tensor) -> float:
    return float(np.mean([is_grammatical(r) for r in responses.tolist()])) if len(responses) else float("nan")


@dataclasses.dataclass(frozen=True)
class Batch:
    """Padded token ids ``(B, CONTEXT)`` (right-padded with ``<pad>``) and their lengths."""

    tokens: torch.Tensor
    lengths: torch.Tensor


def to_batch(texts: Sequence[Sequence[str]]) -> Batch:
    tokens = torch.full((len(texts), CONTEXT), PAD_ID, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for b, words in enumerate(texts):
        ids = encode(words)
        if len(ids) > CONTEXT:
            raise ValueError(f"text {' '.join(words)!r} has {len(ids)} tokens, more than the context of {CONTEXT}")
        tokens[b, :len(ids)] = torch.tensor(ids)
        lengths[b] = len(ids)
    return Batch(tokens, lengths)


# --------------------------------------------------------------------------
# The review language as a Task (the default of every stage of chapters 8-9)
# --------------------------------------------------------------------------

def _sample_prompt_ids(rng: np.random.Generator, n: int) -> torch.Tensor:
    # exactly the draws the trainers made before tasks existed: the seeded numbers stay the same
    return torch.tensor([encode_prompt(PROMPTS[i]) for i in rng.integers(len(PROMPTS), size=n)], dtype=torch.long)


def _heldout_prompt_ids(n: int) -> torch.Tensor:
    return torch.tensor([encode_prompt(PROMPTS[i % len(PROMPTS)]) for i in range(n)], dtype=torch.long)


def _text_ids(n: int, seed: int) -> torch.Tensor:
    return to_batch(sample_texts(n, seed=seed)).tokens


TASK = Task(name="reviews", vocab=VOCAB, prompt_len=PROMPT_LEN, max_response_len=MAX_RESPONSE_LEN,
            sample_prompts=_sample_prompt_ids, heldout_prompts=_heldout_prompt_ids, sample_texts=_text_ids,
            verifier=None, gold=lambda prompts, responses: gold_rewards(responses), is_valid=is_grammatical,
            encode_prompt_text=encode_prompt, pad=PAD, bos=BOS, eos=EOS)

# The same language and texts with the prompt-dependent gold (module doc): an option, for chapter 8's
# section 7. Its SFT model is the default one (same language, same texts): the gold is not used in
# pre-training, so ``dataclasses.replace(sft, task=PROMPTED_TASK)`` reuses it.
PROMPTED_TASK = Task(name="reviews-prompted", vocab=VOCAB, prompt_len=PROMPT_LEN, max_response_len=MAX_RESPONSE_LEN,
                     sample_prompts=_sample_prompt_ids, heldout_prompts=_heldout_prompt_ids, sample_texts=_text_ids,
                     verifier=None, gold=prompted_gold_rewards, is_valid=is_grammatical,
                     encode_prompt_text=encode_prompt, pad=PAD, bos=BOS, eos=EOS)
