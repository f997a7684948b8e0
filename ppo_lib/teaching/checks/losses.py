"""Exercises on losses (chapter 1 on): the value and the gradients are checked."""

from __future__ import annotations

import torch

from ppo_lib import losses
from ppo_lib.teaching.checks.core import Case, Exercise, InputChanged, Mistake, changed, tracked


def _run_loss(fn, logprobs, weights):
    """Call fn on fresh tensors that track gradients; report loss and both gradients (an in-place change
    of an input is reported as such)."""
    lp, lp_given = tracked(logprobs, torch.float64)
    w, w_given = tracked(weights, torch.float64)
    loss = fn(lp_given, w_given)
    for name, given, leaf in (("logprobs", lp_given, lp), ("weights", w_given, w)):
        if changed(given, leaf):
            return InputChanged(name)
    if not isinstance(loss, torch.Tensor):
        return {"loss": loss}
    if loss.numel() != 1:
        return {"loss": loss.detach()}
    if loss.requires_grad:
        loss.backward()
    zero = torch.zeros_like(lp)
    return {"loss": loss.detach(),
            "gradient w.r.t. logprobs": lp.grad if lp.grad is not None else zero,
            "gradient w.r.t. weights (they are constants: it must be zero)": w.grad if w.grad is not None else zero}


check_reinforce_loss = Exercise(
    "reinforce_loss",
    reference=losses.policy_gradient_loss,
    reference_name="ppo_lib.losses.policy_gradient_loss",
    run=_run_loss,
    cases=[
        Case(([-0.5], [2.0]), "logprobs=[-0.5], weights=[2.0]"),
        Case(([-0.1, -2.0, -0.7], [1.0, -1.0, 0.5]), "logprobs=[-0.1, -2.0, -0.7], weights=[1.0, -1.0, 0.5]"),
        Case(([-1.2, -0.3, -2.5, -0.05], [0.5, 3.0, -2.0, 1.5]),
             "logprobs=[-1.2, -0.3, -2.5, -0.05], weights=[0.5, 3.0, -2.0, 1.5] (a batch of 4)"),
        Case(([-0.4, -1.1, -0.9, -2.2, -0.6], [0.0, 1.5, 0.0, -2.0, 0.0]),
             "weights with zeros (a zero advantage still counts in the batch mean): logprobs=[-0.4, -1.1, -0.9, "
             "-2.2, -0.6], weights=[0, 1.5, 0, -2, 0]"),
        Case(([round(-0.15 * k - 0.05, 2) for k in range(16)], [round((-1) ** k * (0.3 + 0.1 * k), 2) for k in range(16)]),
             "a batch of 16 (sizes beyond the small cases)"),
    ],
    mistakes=[
        Mistake("sign", lambda lp, w: (lp * w.detach()).mean(),
                "the sign is flipped: the optimiser *minimises* the loss, and we want to *increase* "
                "log pi(a|s) * weight, so the loss is its negative."),
        Mistake("sum", lambda lp, w: -(lp * w.detach()).sum(),
                "use the mean over the batch, not the sum (the learning rate should not depend on the batch size)."),
        Mistake("no detach", lambda lp, w: -(lp * w).mean(),
                "the weights carry a gradient: detach them (weights.detach()); they are returns or "
                "advantages, constants for the policy step."),
        Mistake("probabilities", lambda lp, w: -(lp.exp() * w.detach()).mean(),
                "use the log-probabilities themselves, not exp(logprobs)."),
    ],
)
