"""RLHF throughput side by side: Hugging Face TRL's PPO trainer against ppo_lib.rlhf.

    pip install -e ".[bench]"                   # adds trl==1.0.0, transformers, datasets, accelerate
    python benchmarks/rlhf_trl.py                # both, 1 torch thread, each in a fresh process
    python benchmarks/rlhf_trl.py --which trl --threads 2 --iterations 8

Both sides run the same PPO iteration on a model of the same size (2 layers, d_model 64,
4 heads, context 20, about 105k parameters): ``batch_size`` prompts of the tiny language
(``ppo_lib.rlhf.language``), responses of up to 16 tokens sampled at temperature 1, a
frozen reference, a reward model and a value model, then ``epochs`` x ``minibatches``
Adam updates of policy and value. TRL's models are Hugging Face GPT-2s built locally from
a ``GPT2Config`` with a word-level tokenizer built in code: nothing is downloaded, and the
Hugging Face offline switches are set before anything of theirs is imported.

What each figure includes:
- ``seconds_per_iteration``: median over the timed iterations of one full PPO iteration:
  generation, reference log-probs, values, reward scores, GAE and whitening, every
  update, and each side's own per-iteration bookkeeping (TRL: its metrics, ``self.log``
  and two ``gc.collect()``; ours: the history entries). One warm-up iteration is run
  first and left out, so ``iterations + 1`` iterations run in all.
- ``cpu_seconds_per_iteration``: the same median in CPU time of the process
  (``time.process_time``, all its threads): the figure to trust when other programs share
  the cores, since wall time then includes waiting for them; likewise
  ``response_tokens_per_cpu_second``.
- ``response_tokens_per_second``: real response tokens (up to and including the first
  ``<eos>``; all of them for a response that never ends) generated in the timed
  iterations, over the summed seconds of those iterations.
- ``response_slots_per_second``: ``batch_size x decode steps`` over the same seconds;
  the work done whatever the samples say (ours always runs 16 steps; Hugging Face's
  ``generate`` stops early when every row has finished).
- ``setup_seconds``: from the call to the first PPO iteration: imports, building (and,
  so that both policies write responses of similar lengths, 50 steps of language-model
  training of each policy), the trainer itself.
- ``peak_rss_mb``: ``ru_maxrss`` of the process that ran the measurement, setup included;
  ``ppo_peak_rss_mb`` the peak during the PPO iterations alone (Linux); ``rss_end_mb`` the
  resident memory after them. The ``__main__`` runs each side in a fresh interpreter so
  these figures are that side's alone.

Models are only as trained as throughput needs: policy and reference get 50 steps of
language-model training (batch 64, the same for both sides); TRL's reward and value
models are random GPT-2 classifiers, ours are trained on 64 pairs for one epoch. Model
quality changes nothing in the cost of an iteration except the response lengths, which
is why the real-token count is reported next to the slot count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULT_PREFIX = "RLHF_BENCH_RESULT "
SFT_STEPS, SFT_BATCH, SFT_LR = 50, 64, 2e-3   # ppo_lib's PretrainConfig(steps=50) defaults otherwise


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB (Linux reports kibibytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


class _PeakMemory:
    """Peak RSS of the whole process, and of the PPO iterations alone: at the start of the
    loop the kernel's high-water mark is reset (Linux >= 4.0: ``5`` to ``/proc/self/clear_refs``,
    which resets ``ru_maxrss`` too), after the peak of the setup has been read."""

    def __init__(self):
        self.setup_peak_mb, self.reset = None, False

    def loop_starts(self):
        self.setup_peak_mb = _peak_rss_mb()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False

    def figures(self) -> dict:
        now = _peak_rss_mb()
        return {"peak_rss_mb": max(now, self.setup_peak_mb or 0.0), "setup_peak_rss_mb": self.setup_peak_mb,
                "ppo_peak_rss_mb": now if self.reset else None, "rss_end_mb": _rss_now_mb()}


def _rss_now_mb() -> float | None:
    """Resident memory now (Linux only), in MiB: the steady state after the PPO iterations."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _versions(*names: str) -> dict:
    from importlib import metadata
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _summary(seconds: list[float], cpu_seconds: list[float], tokens: list[int], slots: list[int],
             batch_size: int) -> dict:
    """Medians and rates over the timed iterations (the warm-up already dropped)."""
    total = sum(seconds)
    return {
        "seconds_per_iteration": round(statistics.median(seconds), 4),
        "cpu_seconds_per_iteration": round(statistics.median(cpu_seconds), 4),
        "response_tokens_per_second": round(sum(tokens) / total, 1),
        "response_slots_per_second": round(sum(slots) / total, 1),
        "response_tokens_per_cpu_second": round(sum(tokens) / sum(cpu_seconds), 1),
        "mean_response_tokens": round(sum(tokens) / (batch_size * len(tokens)), 2),
        "iteration_seconds": [round(s, 4) for s in seconds],
        "iteration_tokens": tokens,
    }


def _check_common(iterations, batch_size, response_len, epochs, minibatches, threads):
    for name, v in dict(iterations=iterations, batch_size=batch_size, response_len=response_len,
                        epochs=epochs, minibatches=minibatches, threads=threads).items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: must be a whole number >= 1")
    if batch_size % minibatches:
        raise ValueError(f"batch_size={batch_size} must be a multiple of minibatches={minibatches} "
                         f"(TRL requires it; ours is given the same split)")


# --------------------------------------------------------------------------
# TRL
# --------------------------------------------------------------------------

def run_trl_ppo(iterations: int = 5, batch_size: int = 64, response_len: int = 16, d_model: int = 64,
                n_layers: int = 2, n_heads: int = 4, epochs: int = 4, minibatches: int = 2,
                threads: int = 1) -> dict:
    """Time ``iterations`` PPO iterations (after one warm-up) of ``trl.experimental.ppo.PPOTrainer``.

    Returns the figures described in the module docstring, or ``{"error": ...}`` saying at
    which stage and why TRL could not run (it never raises for a failure of TRL's side).
    """
    _check_common(iterations, batch_size, response_len, epochs, minibatches, threads)
    t_call = time.perf_counter()
    # Nothing may be fetched at run time: Hugging Face's own offline switches, set before import.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we know PPOTrainer is experimental in trl 1.0
    from ppo_lib.rlhf import language as lang

    if lang.PROMPT_LEN + response_len > lang.CONTEXT:
        raise ValueError(f"response_len={response_len}: prompts take {lang.PROMPT_LEN} of the "
                         f"{lang.CONTEXT} positions, so at most {lang.CONTEXT - lang.PROMPT_LEN}")
    stage = "import torch"
    patched = None
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
        torch.manual_seed(0)

        stage = "import trl.experimental.ppo (trl==1.0.0; later releases dropped PPOTrainer)"
        t_import = time.perf_counter()
        import datasets
        import transformers
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import WhitespaceSplit
        from transformers import (GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel,
                                  PreTrainedTokenizerFast, TrainerCallback)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback
        from trl.experimental.ppo import PPOConfig, PPOTrainer
        from trl.experimental.ppo import ppo_trainer as trl_ppo_module
        import_seconds = time.perf_counter() - t_import

        stage = "build the word-level tokenizer"
        vocab = {w: i for i, w in enumerate(lang.VOCAB)}
        core = Tokenizer(WordLevel(vocab=vocab, unk_token=lang.PAD))  # no unknown words: the language is closed
        core.pre_tokenizer = WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=lang.PAD, bos_token=lang.BOS,
                                            eos_token=lang.EOS, unk_token=lang.PAD, padding_side="left")
        ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
        if ids != (lang.PAD_ID, lang.BOS_ID, lang.EOS_ID) or len(tokenizer) != len(lang.VOCAB):
            raise RuntimeError(f"tokenizer ids {ids} / size {len(tokenizer)} differ from the language's")

        stage = "build the GPT-2 models"
        cfg = GPT2Config(vocab_size=len(lang.VOCAB), n_positions=lang.CONTEXT, n_embd=d_model,
                         n_layer=n_layers, n_head=n_heads, n_inner=4 * d_model, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=lang.PAD_ID, bos_token_id=lang.BOS_ID,
                         eos_token_id=lang.EOS_ID, num_labels=1)
        policy = GPT2LMHeadModel(cfg)
        # The same 50 language-model steps as ours (PretrainConfig(steps=50)), so that both
        # policies write responses of similar lengths; plain PyTorch, no Trainer.
        texts = lang.sample_texts(SFT_STEPS * SFT_BATCH, seed=0)
        opt = torch.optim.Adam(policy.parameters(), lr=SFT_LR)
        policy.train()
        for step in range(SFT_STEPS):
            tokens = lang.to_batch(texts[step * SFT_BATCH:(step + 1) * SFT_BATCH]).tokens
            logits = policy(input_ids=tokens[:, :-1], attention_mask=(tokens[:, :-1] != lang.PAD_ID).long()).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                   ignore_index=lang.PAD_ID)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sft_loss = float(loss.detach())
        ref_policy = GPT2LMHeadModel(cfg)
        ref_policy.load_state_dict(policy.state_dict())
        reward_model = GPT2ForSequenceClassification(cfg)
        value_model = GPT2ForSequenceClassification(cfg)
        value_model.load_state_dict(reward_model.state_dict())  # the critic starts from the reward model
        n_parameters = sum(p.numel() for p in policy.parameters())

        stage = "build the prompt dataset"
        prompts = [lang.encode_prompt(p) for p in lang.PROMPTS]
        rows = [prompts[i % len(prompts)] for i in range(2 * batch_size)]
        dataset = datasets.Dataset.from_dict({"input_ids": rows})

        # Timing and honest token counts, from inside TRL's loop. on_step_end fires once per
        # PPO iteration, after its updates and its logging; an iteration's time is the gap
        # between consecutive calls (the first measured from on_train_begin).
        marks: list[float] = []
        cpu_marks: list[float] = []
        memory = _PeakMemory()
        tokens_now, slots_now, optimizer_steps = [0], [0], [0]
        per_iter_tokens: list[int] = []
        per_iter_slots: list[int] = []

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                memory.loop_starts()
                cpu_marks.append(time.process_time())
                marks.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                marks.append(time.perf_counter())
                cpu_marks.append(time.process_time())
                per_iter_tokens.append(tokens_now[0])
                per_iter_slots.append(slots_now[0])
                tokens_now[0] = slots_now[0] = 0

        # TRL truncates every generated batch once (Response Processing 1) with this module
        # function; wrapping it sees every raw response: real tokens = up to and including
        # the first stop token, or the whole row when it has none.
        original_truncate = trl_ppo_module.truncate_response

        def counting_truncate(stop_token_id, pad_token_id, responses):
            is_stop = responses == stop_token_id
            has_stop = is_stop.any(dim=1)
            first = is_stop.int().argmax(dim=1) + 1
            lengths = torch.where(has_stop, first, torch.full_like(first, responses.shape[1]))
            tokens_now[0] += int(lengths.sum())
            slots_now[0] += responses.numel()
            return original_truncate(stop_token_id, pad_token_id, responses)

        trl_ppo_module.truncate_response = patched = counting_truncate
        restore = (trl_ppo_module, original_truncate)

        stage = "PPOConfig / PPOTrainer"
        with tempfile.TemporaryDirectory(prefix="trl_ppo_bench_") as out_dir:
            args = PPOConfig(
                output_dir=out_dir, use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True,
                num_sample_generations=0, bf16=False, fp16=False, seed=0,
                # one PPO iteration = batch_size episodes, epochs x minibatches optimiser steps
                per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                local_rollout_forward_batch_size=batch_size, num_mini_batches=minibatches,
                num_ppo_epochs=epochs, total_episodes=(iterations + 1) * batch_size,
                response_length=response_len, stop_token_id=lang.EOS_ID, temperature=1.0,
                missing_eos_penalty=1.0, learning_rate=5e-4, kl_coef=0.05,
            )
            trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                                 reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                                 callbacks=[Clock()])
            for cb in (PrinterCallback, ProgressCallback):  # no per-step printing
                trainer.remove_callback(cb)
            # count the optimiser's real steps (under accelerate's wrapper, if any)
            torch_optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
            torch_optimizer.register_step_post_hook(
                lambda *_: optimizer_steps.__setitem__(0, optimizer_steps[0] + 1))

            stage = "PPOTrainer.train()"
            trainer.train()
        trl_ppo_module.truncate_response = original_truncate
        patched = None

        if len(marks) != iterations + 2:
            raise RuntimeError(f"expected {iterations + 1} PPO iterations, the callback saw {len(marks) - 1}")
        seconds = [b - a for a, b in zip(marks[:-1], marks[1:])]
        cpu_seconds = [b - a for a, b in zip(cpu_marks[:-1], cpu_marks[1:])]
        steps_per_iteration, rest = divmod(optimizer_steps[0], iterations + 1)
        if rest or steps_per_iteration != epochs * minibatches:
            raise RuntimeError(f"TRL took {optimizer_steps[0]} optimiser steps in {iterations + 1} iterations, "
                               f"not epochs x minibatches = {epochs * minibatches}")
        return {
            "system": "trl.experimental.ppo.PPOTrainer",
            **_summary(seconds[1:], cpu_seconds[1:], per_iter_tokens[1:], per_iter_slots[1:], batch_size),
            "warmup_seconds": round(seconds[0], 4),
            "n_parameters": n_parameters,
            "versions": {"trl": _versions("trl")["trl"], "transformers": transformers.__version__,
                         "torch": torch.__version__, "datasets": datasets.__version__,
                         **{k: v for k, v in _versions("accelerate", "tokenizers").items()}},
            "setup_seconds": round(marks[0] - t_call, 3),
            "import_seconds": round(import_seconds, 3),
            "sft_steps": SFT_STEPS, "sft_final_loss": round(sft_loss, 3),
            "settings": dict(iterations=iterations, warmup_iterations=1, batch_size=batch_size,
                             response_len=response_len, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                             epochs=epochs, minibatches=minibatches, threads=threads,
                             updates_per_iteration=steps_per_iteration, precision="float32"),
            "threads": torch.get_num_threads(),
            **memory.figures(),
        }
    except Exception as exc:  # TRL could not run: say where and why, never raise
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
        return {"error": f"{stage}: {type(exc).__name__}: {exc}", "where": where,
                "versions": _versions("trl", "transformers", "torch", "datasets", "accelerate", "tokenizers")}
    finally:
        if patched is not None:
            restore[0].truncate_response = restore[1]


# --------------------------------------------------------------------------
# ppo_lib.rlhf
# --------------------------------------------------------------------------

def run_ours(iterations: int = 5, batch_size: int = 64, response_len: int = 16, epochs: int = 4,
             minibatches: int = 2, threads: int = 1) -> dict:
    """The same measurement for ``ppo_lib.rlhf.ppo.train_ppo`` (same keys as :func:`run_trl_ppo`)."""
    _check_common(iterations, batch_size, response_len, epochs, minibatches, threads)
    t_call = time.perf_counter()
    import torch

    t_import = time.perf_counter()
    from ppo_lib.rlhf import language as lang
    from ppo_lib.rlhf.model import n_parameters
    from ppo_lib.rlhf.ppo import TokenPPOConfig, train_ppo
    from ppo_lib.rlhf.pretrain import PretrainConfig, pretrain
    from ppo_lib.rlhf.reward_model import RewardConfig, train_reward_model
    import_seconds = time.perf_counter() - t_import

    if response_len != lang.MAX_RESPONSE_LEN:
        raise ValueError(f"response_len={response_len}: ppo_lib.rlhf's responses are fixed by the language "
                         f"at {lang.MAX_RESPONSE_LEN} tokens")
    torch.set_num_threads(threads)
    sft = pretrain(PretrainConfig(steps=SFT_STEPS, batch_size=SFT_BATCH, lr=SFT_LR), device="cpu",
                   progress=False, use_cache=False)
    reward = train_reward_model(sft, RewardConfig(n_pairs=64, epochs=1), progress=False, use_cache=False)
    config = TokenPPOConfig(iterations=iterations + 1, batch_size=batch_size, epochs=epochs,
                            num_minibatches=minibatches)
    setup_seconds = time.perf_counter() - t_call
    memory = _PeakMemory()
    memory.loop_starts()
    # CPU time between the ends of consecutive iterations (train_ppo's callback runs at the
    # end of each); the warm-up's own figure is dropped, so its start needs no mark.
    cpu_marks: list[float] = []
    result = train_ppo(sft, reward, config, progress=False,
                       callback=lambda history: cpu_marks.append(time.process_time()))
    h = result.history
    cpu_seconds = [b - a for a, b in zip(cpu_marks[:-1], cpu_marks[1:])]
    if len(h.seconds) != iterations + 1:
        raise RuntimeError(f"expected {iterations + 1} PPO iterations, got {len(h.seconds)}")
    # history.length is the mean number of real response tokens (up to and including <eos>)
    tokens = [int(round(n * batch_size)) for n in h.length]
    if sum(tokens) != result.tokens_generated:
        raise RuntimeError(f"token count {sum(tokens)} differs from result.tokens_generated "
                           f"{result.tokens_generated}")
    slots = [batch_size * lang.MAX_RESPONSE_LEN] * len(tokens)  # ours always runs every decode step
    return {
        "system": "ppo_lib.rlhf.ppo.train_ppo",
        **_summary(h.seconds[1:], cpu_seconds, tokens[1:], slots[1:], batch_size),
        "warmup_seconds": round(h.seconds[0], 4),
        "n_parameters": n_parameters(result.policy),
        "versions": {"torch": torch.__version__, **_versions("ppo_lib")},
        "setup_seconds": round(setup_seconds, 3),
        "import_seconds": round(import_seconds, 3),
        "sft_steps": SFT_STEPS, "sft_final_loss": round(float(sft.losses[-1]), 3),
        "settings": dict(iterations=iterations, warmup_iterations=1, batch_size=batch_size,
                         response_len=response_len, d_model=sft.model.cfg.d_model,
                         n_layers=sft.model.cfg.n_layers, n_heads=sft.model.cfg.n_heads, epochs=epochs,
                         minibatches=minibatches, threads=threads, updates_per_iteration=epochs * minibatches,
                         precision="float32"),
        "threads": torch.get_num_threads(),
        **memory.figures(),
    }


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

RUNNERS = {"ours": run_ours, "trl": run_trl_ppo}


def _in_fresh_process(which: str, kwargs: dict, timeout: float = 600) -> dict:
    """Run one side in a new interpreter, so its imports, setup and peak RSS are its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--kwargs", json.dumps(kwargs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"{which}: no result within {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"{which}: the process exited {proc.returncode} without a result: " + " | ".join(tail)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--which", choices=("both", "ours", "trl"), default="both")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations (one warm-up runs first)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--same-process", action="store_true",
                        help="run in this interpreter (peak RSS then covers both sides)")
    parser.add_argument("--child", choices=tuple(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        out = RUNNERS[args.child](**json.loads(args.kwargs))
        print(RESULT_PREFIX + json.dumps(out), flush=True)
        return out

    kwargs = dict(iterations=args.iterations, batch_size=args.batch_size, epochs=args.epochs,
                  minibatches=args.minibatches, threads=args.threads)
    sides = ("ours", "trl") if args.which == "both" else (args.which,)
    results = {}
    for side in sides:
        results[side] = RUNNERS[side](**kwargs) if args.same_process else _in_fresh_process(side, kwargs)
    print(json.dumps(results, indent=2))
    if len(results) == 2 and not any("error" in r for r in results.values()):
        o, t = results["ours"], results["trl"]
        print(f"\n{'':32s}{'ours':>12s}{'TRL':>12s}{'ours/TRL':>10s}")
        for key in ("seconds_per_iteration", "cpu_seconds_per_iteration", "response_tokens_per_second",
                    "response_tokens_per_cpu_second", "response_slots_per_second", "mean_response_tokens", "setup_seconds", "peak_rss_mb",
                    "ppo_peak_rss_mb", "n_parameters"):
            if o.get(key) is not None and t.get(key) is not None:
                print(f"{key:32s}{o[key]:>12g}{t[key]:>12g}{o[key] / t[key]:>10.2f}")
    return results


if __name__ == "__main__":
    main()
