r"""Pre-training the tiny GPT on the language: the SFT model and the frozen reference.

Next-token cross-entropy on a task's supervised sequences (by default the review language's
sampled grammatical strings), padding ignored:

.. math:: \mathcal L = -\frac{1}{\#\text{tokens}} \sum_{b,i} \log p_\theta(x_{b,i+1} \mid x_{b,\le i}).

A task with ``sft_loss_on_prompt=False`` (the addition task: its prompts are random digits
that no model can predict) counts the response tokens only, as supervised fine-tuning does.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn.functional as F

from ppo_lib.config import check_config, check_range, validated
from ppo_lib.rlhf import cache
from ppo_lib.rlhf import language as lang
from ppo_lib.rlhf.arguments import count, flag, plain_numbers, require_finite, require_module
from ppo_lib.rlhf.model import GPT, GPTConfig, generate, resolve_device
from ppo_lib.rlhf.task import Task
from ppo_lib.runs import keep_run


@validated
@dataclasses.dataclass
class PretrainConfig:
    n_texts: int = 20_000
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    model: GPTConfig = GPTConfig()

    def __post_init__(self):
        check_range(self, "n_texts", 1, integer=True)
        check_range(self, "steps", 1, integer=True)
        check_range(self, "batch_size", 1, integer=True)
        check_range(self, "lr", 0.0, 1.0, low_open=True)
        check_range(self, "seed", 0, integer=True)
        if isinstance(self.model, dict):
            self.model = GPTConfig(**self.model)
        if not isinstance(self.model, GPTConfig):
            raise TypeError(f"model=<{type(self.model).__name__}>: expected a GPTConfig (the network's sizes, e.g. "
                            f"GPTConfig(d_model=64)) or a dict of its fields, got a {type(self.model).__name__}")
        plain_numbers(self)


@dataclasses.dataclass
class PretrainResult:
    model: GPT
    losses: list[float]
    seconds: float
    from_cache: bool
    config: PretrainConfig
    task: Task = lang.TASK   # what the model was trained on: the trainers read it from here
    interrupted: bool = False  # Ctrl+C stopped pre-training: the model of the last finished step


def require_pretrained(sft, name: str = "sft") -> None:
    """``sft`` must be what :func:`pretrain` returned (not the bare model, not a config, not another
    result): a clear ``TypeError`` that names what was passed and what to pass instead."""
    if isinstance(sft, PretrainResult):
        return
    kind = type(sft).__name__
    if isinstance(sft, torch.nn.Module):
        hint = (f"; pass the PretrainResult itself (`sft`, not `sft.model`): the trainers read the task and "
                f"the settings from it")
    elif hasattr(sft, "policy"):  # a TokenPPOResult, GRPOResult or DPOResult
        hint = (f"; a {kind} is a fine-tuned policy (its `.policy`), and the trainers start from the "
                f"pre-trained model: pass the PretrainResult of pretrain()")
    elif hasattr(sft, "pairs") and hasattr(sft, "model"):  # a RewardModelResult: arguments swapped?
        hint = "; a RewardModelResult is the reward model: check the order of the arguments (sft first)"
    else:
        hint = ""
    raise TypeError(f"{name}=<{kind}>: expected the PretrainResult returned by pretrain(), got a {kind}{hint}")


def lm_loss(model: GPT, tokens: torch.Tensor, response_from: int = 0, pad_id: int = lang.PAD_ID) -> torch.Tensor:
    """Mean next-token cross-entropy over the non-padding targets of ``tokens`` ``(B, T)``;
    with ``response_from = P > 0`` only the tokens from position ``P`` on are targets."""
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:]
    if response_from > 0:
        targets = targets.clone()
        targets[:, :response_from - 1] = pad_id  # target j is token j + 1: the prompt's are ignored
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id)


def pretrain(config: PretrainConfig | None = None, device: str = "auto", progress: bool = True,
             use_cache: bool = True, task: Task | None = None) -> PretrainResult:
    """Train the tiny GPT on ``config.n_texts`` supervised sequences of ``task`` (default: the
    review language), or load it from the cache. The cache key covers every setting and, for
    any task but the default, the task (its name, version, vocabulary and shapes)."""
    config = check_config(config, PretrainConfig, "pretrain")
    progress, use_cache = flag("progress", progress), flag("use_cache", use_cache)
    task = lang.TASK if task is None else task
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a Task, got {type(task).__name__}")
    task.check_vocab(config.model.vocab_size, "PretrainConfig.model")
    task.check_fits(config.model.context, "PretrainConfig.model")
    dev = resolve_device(device)
    settings = dataclasses.asdict(config)
    if task is not lang.TASK:  # the review language's keys stay as they were (existing caches still load)
        settings["task"] = task.cache_settings()
    model = GPT(config.model)
    if use_cache and (hit := cache.load("sft", settings)) is not None:
        model.load_state_dict(hit["state"])
        return PretrainResult(model.to(dev).eval(), list(hit["losses"]), float(hit["seconds"]), True, config, task)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    model = GPT(config.model).to(dev)  # initialised under the seed
    data = task.sample_texts(config.n_texts, config.seed).to(dev)
    if data.dim() != 2 or data.shape[1] > config.model.context:
        raise ValueError(f"task {task.name!r}: sample_texts gave shape {tuple(data.shape)}; expected "
                         f"(n_texts, at most {config.model.context})")
    response_from = 0 if task.sft_loss_on_prompt else task.prompt_len
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    bar = progress_bar(config.steps, "pre-training", progress)
    result = PretrainResult(model, losses, 0.0, False, config, task)

    def finish():  # however the loop ends: Ctrl+C keeps the model so far, an error carries it
        if bar is not None:
            bar.close()
        result.seconds = time.perf_counter() - t0
        model.eval()

    model.train()
    with keep_run(result, finish, on_interrupt=lambda: f"Pre-training interrupted after {len(losses)} of "
                                                       f"{config.steps} steps: returning the model so far."):
        for step in range(config.steps):
            idx = torch.randint(len(data), (config.batch_size,), generator=gen)
            loss = lm_loss(model, data[idx.to(dev)], response_from, task.pad_id)
            value = loss.item()  # checked before the step: a NaN never reaches the kept model
            require_finite(torch.tensor(value), f"pre-training step {step}: the loss",
                           f"; the model of the last finished step is kept (try a smaller lr than {config.lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(value)
            if bar is not None:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if use_cache and not result.interrupted:  # a partly trained model is never cached as the real one
        cache.save("sft", settings, {"state": {k: v.cpu() for k, v in model.state_dict().items()},
                                     "losses": losses, "seconds": result.seconds})
    return result


def progress_bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, mininterval=0.5)


@torch.no_grad()
def sample_report(model: GPT, n: int = 512, seed: int = 1, temperature: float = 1.0) -> dict:
    """Samples of the model on every prompt: grammatical rate, mean gold score, a few texts."""
    require_module("model", model, GPT, "a language model (a GPT, e.g. sft.model)")
    n = count("n", n, 1)
    dev = next(model.parameters()).device
    prompts = [lang.PROMPTS[i % len(lang.PROMPTS)] for i in range(n)]
    gen = generate(model, prompts, temperature=temperature, generator=torch.Generator(dev).manual_seed(seed))
    gold = lang.gold_rewards(gen.responses.cpu())
    return {"grammatical": lang.grammatical_rate(gen.responses.cpu()), "gold": float(gold.mean()),
            "eos_rate": float(gen.has_eos.float().mean()),
            "samples": [(p, t, float(g)) for p, t, g in zip(prompts[:8], gen.texts()[:8], gold[:8])]}
