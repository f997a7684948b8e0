"""What the argument checks cost inside the hot loops (CPU here; a GPU adds a host sync each).

    python benchmarks/hot_loop_checks.py

Prints, for PPO's minibatch loss (chapter 5's CartPole setting, minibatch 64 and 256) and for
the tiny GPT's forward pass (chapters 8-10's sampling shape), microseconds per call with the
value checks on and off, and the share of the update that the checks take.
"""

from __future__ import annotations

import time

import torch

from ppo_lib import losses


def bench(fn, n=2000, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for M in (64, 256):
        ratio, adv = torch.rand(M) + 0.5, torch.randn(M)
        values, targets = torch.randn(M, requires_grad=True), torch.randn(M)
        checked = lambda: (losses.clipped_surrogate(ratio, losses.normalize(adv), 0.2),  # noqa: E731
                           losses.value_loss(values, targets))
        # the same arithmetic without the value checks: what the loss costs without them
        bare = lambda: (torch.min(ratio * ((adv - adv.mean()) / (adv.std() + 1e-8)),  # noqa: E731
                                  ratio.clamp(0.8, 1.2) * adv).mean(),
                        0.5 * (values - targets).pow(2).mean())
        check_only = lambda: [float(x.detach().sum()) for x in (ratio, adv, adv, values, targets)]  # noqa: E731
        a, b, c = bench(checked), bench(bare), bench(check_only)
        print(f"PPO losses, minibatch {M}: {a:.1f} us checked, {b:.1f} us bare; the finiteness checks alone "
              f"{c:.1f} us (5 host reads per minibatch)")
    from ppo_lib.rlhf.model import GPT, GPTConfig, check_token_ids, token_ids_checked

    model = GPT(GPTConfig()).eval()
    V = model.cfg.vocab_size
    for B, T in ((128, 1), (128, 16)):  # one sampling step with a key/value cache; a full forward
        tokens = torch.randint(0, V, (B, T))
        with torch.no_grad():
            scanned = bench(lambda: model(tokens), n=200)
            with token_ids_checked():
                trusted = bench(lambda: model(tokens), n=200)
        scan = bench(lambda: check_token_ids(tokens, V), n=2000)
        print(f"tiny GPT forward, batch {B} x {T} tokens: {scanned:.0f} us with the id scan, {trusted:.0f} us "
              f"inside token_ids_checked(); the scan alone {scan:.1f} us (two host reads per call)")


if __name__ == "__main__":
    main()
