"""Chapter 8's exercise 8.6: the learner writes one PPO iteration on tokens, rollout to update.

The learner's function has the signature::

    ppo_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng) -> dict

and must do what the library's :func:`ppo_lib.rlhf.ppo.ppo_iteration` does (``train_ppo`` calls it
once per iteration), from the same models, the same Adam optimiser, the same ``beta`` and the same
random generators: sample ``config.batch_size`` prompts with ``rng`` and responses with ``generator``;
log-probs of the policy and of the frozen reference, values, the reward model's score at ``<eos>``
(``config.missing_eos_score`` without one); per-token rewards; token-level GAE; whitening over the
mask when ``config.whiten_advantages``; ``config.epochs`` passes of ``config.num_minibatches``
shuffled chunks, each one step of the clipped policy loss plus ``config.value_coef`` times the
clipped value loss, with the gradient norm of both models clipped to ``config.max_grad_norm``.
It returns the batch's ``rewards``, ``advantages`` and ``returns`` ``(B, L)`` and two diagnostics
averaged over the gradient steps, ``clip_fraction`` and ``value_loss``. (``train_ppo`` also logs
``approx_kl``; it is not asked for here, because the sign convention of that logged k3 is being
changed to the one of :func:`ppo_lib.losses.approx_kl` (issue 20), and the exercise should not
teach the one about to go.)

Every switch and number the text names is varied across the cases: beta (0 too, and a ``beta``
argument that differs from ``config.beta``, as the adaptive controller makes it), the KL estimator,
the clip ranges of both losses, the value coefficient, gamma and lambda, whitening on and off, the
number of minibatches (one that does not divide the batch: ``torch.chunk`` makes 5, 5 and 3 of 13),
the number of epochs, the gradient clipping (binding, and loose), and the score of an unfinished
response.

The checker's own state never decides a verdict: each call gets models, an optimiser and generators
built anew from a cached snapshot. The models are tiny random transformers over the review
language's vocabulary (the reference a perturbed copy of the policy, so the KL is not 0 from the
start; the policy's ``<eos>`` made likelier, so responses of many lengths, finished and not, are in
every batch). Every optimiser step is recorded (the gradients of the policy and of the value model
when ``optimizer.step()`` is called, that is after any clipping), so a rejection names the part that
differs: the rewards, the advantages, the returns, the step count, the policy loss, the value loss,
the gradient clipping, the parameters after the update, a frozen model that moved, or a diagnostic.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch

from ppo_lib.teaching.checks.core import Case, Exercise, Mistake

#: what the function returns, and what each entry is (for the messages)
REQUIRED = {
    "rewards": "the per-token rewards (B, L): -beta * kl on real tokens, the score on the last real one, 0 on padding",
    "advantages": "the token-level GAE advantages (B, L), whitened over the mask when config.whiten_advantages",
    "returns": "the value targets (B, L): the advantages *before* whitening plus the rollout's values",
    "clip_fraction": "the mean over the gradient steps of the fraction of the minibatch's real tokens with "
                     "|ratio - 1| > config.clip_eps (the ratio before that step)",
    "value_loss": "the mean over the gradient steps of the minibatch's clipped value loss (before that step)",
}
DIAGNOSTICS = ("clip_fraction", "value_loss")

_BASE = dict(batch_size=12, epochs=2, num_minibatches=2, lr=3e-3, beta=0.1, iterations=1)


def _lang():
    from ppo_lib.rlhf import language as lang

    return lang


def library_ppo_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng) -> dict:
    """The library's iteration (:func:`ppo_lib.rlhf.ppo.ppo_iteration`) on the given objects, its
    rollout and diagnostics in the exercise's form."""
    from ppo_lib.rlhf.ppo import ppo_iteration

    it = ppo_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng)
    ro = it.rollout
    return {"rewards": ro.rewards, "advantages": ro.advantages, "returns": ro.returns, "mask": ro.mask,
            **{k: float(np.mean([i[k] for i in it.infos])) for k in DIAGNOSTICS}}


# ----------------------------------------------------------------------------- fresh objects per call
_SNAPSHOTS: dict = {}


def _config(overrides: dict):
    from ppo_lib.rlhf.ppo import TokenPPOConfig

    return TokenPPOConfig(**{**_BASE, **overrides})


def snapshot(seed: int):
    """The four models' weights for ``seed``: computed once, then only copied."""
    if seed not in _SNAPSHOTS:
        from ppo_lib.rlhf.model import GPT, GPTConfig, ScalarModel

        lang = _lang()
        cfg = GPTConfig(d_model=16, n_layers=1, n_heads=2)
        with torch.random.fork_rng():
            torch.manual_seed(1000 + seed)
            policy, value_model, reward_model = GPT(cfg), ScalarModel(cfg), ScalarModel(cfg)
            with torch.no_grad():
                policy.head.bias[lang.EOS_ID] += 2.0  # responses of many lengths, most of them finished
                ref = copy.deepcopy(policy)
                for p in ref.parameters():
                    p.add_(0.3 * torch.randn_like(p))
                value_model.head.bias.fill_(0.3)
        _SNAPSHOTS[seed] = {name: copy.deepcopy(m.state_dict()) for name, m in
                            (("policy", policy), ("ref", ref), ("reward_model", reward_model),
                             ("value_model", value_model))}
    return _SNAPSHOTS[seed]


def fresh_objects(config_overrides: dict, seed: int, beta: float | None = None):
    """(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng) for one call."""
    from ppo_lib.rlhf.model import GPT, GPTConfig, ScalarModel

    cfg = GPTConfig(d_model=16, n_layers=1, n_heads=2)
    weights = snapshot(seed)
    policy, ref, reward_model, value_model = GPT(cfg), GPT(cfg), ScalarModel(cfg), ScalarModel(cfg)
    for name, m in (("policy", policy), ("ref", ref), ("reward_model", reward_model), ("value_model", value_model)):
        m.load_state_dict(copy.deepcopy(weights[name]))
    for m in (ref, reward_model):  # frozen, as train_ppo freezes them
        m.eval().requires_grad_(False)
    config = _config(config_overrides)
    optimizer = torch.optim.Adam(list(policy.parameters()) + list(value_model.parameters()), lr=config.lr, eps=1e-5)
    return (policy, ref, reward_model, value_model, optimizer, config, config.beta if beta is None else beta,
            torch.Generator().manual_seed(seed), np.random.default_rng(seed))


# ----------------------------------------------------------------------------- running a function
@dataclasses.dataclass
class IterationRecord:
    """What one call did: the gradients at every optimiser step, the parameters after, what it returned."""

    steps: list             # per optimizer.step(): (policy gradient, value-model gradient), flat (None: no .grad)
    policy_params: torch.Tensor
    value_params: torch.Tensor
    returned: object
    frozen_moved: str | None   # "the reference" or "the reward model" when its weights changed
    changed_input: str | None  # config.<field> changed in place, or None
    graph_error: str | None    # autograd's "backward through the graph a second time" and the like
    batch: int
    num_minibatches: int
    epochs: int
    steps_per_epoch: int
    max_grad_norm: float


def _flat(params, grads: bool):
    if grads and any(p.grad is None for p in params):
        return None
    return torch.cat([(p.grad if grads else p).detach().reshape(-1) for p in params]).clone()


_OWN_RECORDS: dict = {}
_OWN_FUNCTIONS: set = set()


def _run(fn, config_overrides: dict, seed: int, beta: float | None = None):
    if fn in _OWN_FUNCTIONS:
        key = (fn, repr(sorted(config_overrides.items())), seed, beta)
        if key not in _OWN_RECORDS:
            _OWN_RECORDS[key] = _record(fn, config_overrides, seed, beta)
        return _OWN_RECORDS[key]
    return _record(fn, config_overrides, seed, beta)


_GRAPH_ERRORS = ("backward through the graph a second time", "modified by an inplace operation")


def _record(fn, config_overrides: dict, seed: int, beta: float | None = None):
    policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng = fresh_objects(
        config_overrides, seed, beta)
    pristine = copy.deepcopy(config)
    frozen_before = {name: _flat(list(m.parameters()), False) for name, m in
                     (("the reference", ref), ("the reward model", reward_model))}
    pol, val = list(policy.parameters()), list(value_model.parameters())
    steps = []
    original_step = optimizer.step

    def recording_step(*args, **kwargs):
        steps.append((_flat(pol, True), _flat(val, True)))
        return original_step(*args, **kwargs)

    optimizer.step = recording_step
    graph_error = None
    try:
        returned = fn(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng)
    except RuntimeError as exc:
        if not any(s in str(exc) for s in _GRAPH_ERRORS):
            raise
        returned = None
        graph_error = (f"autograd stopped your update with \"{str(exc).splitlines()[0][:120]}\": a loss reached back "
                       f"into the rollout's graph. The rollout's log-probs, values and scores are constants of the "
                       f"update: compute them under torch.no_grad() (or .detach() them); only the new log-probs and "
                       f"the new values of each minibatch carry gradients")
    moved = next((name for name, m in (("the reference", ref), ("the reward model", reward_model))
                  if not torch.equal(frozen_before[name], _flat(list(m.parameters()), False))), None)
    changed = next((f"config.{f.name}" for f in dataclasses.fields(pristine)
                    if getattr(config, f.name) != getattr(pristine, f.name)), None)
    per_epoch = len(torch.arange(config.batch_size).chunk(config.num_minibatches))
    return IterationRecord(steps, _flat(pol, False), _flat(val, False), returned, moved, changed, graph_error,
                           config.batch_size, config.num_minibatches, config.epochs, per_epoch, config.max_grad_norm)


# ----------------------------------------------------------------------------- comparing, in words
def _close(a, b, rtol=1e-4, atol=1e-5) -> bool:
    return (a is not None and b is not None and isinstance(b, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)))


#: for a tensor that differs: what it is computed from, so the learner knows where to look
_DEPENDS = {
    "rewards": "the rewards depend on the sampled responses and their mask, the log-probs of the policy and of the "
               "frozen reference (the shift by one), the KL estimator config.kl_estimator and its sign, the beta "
               "given as an argument, and the score: the reward model's at <eos>, config.missing_eos_score for a "
               "response with no <eos>, added on the last real token",
    "advantages": "the rewards agree, so the advantages differ in the GAE (config.gamma, config.gae_lambda, the "
                  "values of the rollout, the episode ending at the last real token) or in the whitening (over the "
                  "real tokens only, and only when config.whiten_advantages)",
    "returns": "the rewards and the advantages agree, so the returns differ: they are the advantages before "
               "whitening plus the rollout's values (token_gae's second output)",
}


def _tensor_problem(name: str, exp: torch.Tensor, got, mask_hint: torch.Tensor | None) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"returned[{name!r}] is {type(got).__name__}, not a tensor of shape {tuple(exp.shape)}"
    if tuple(got.shape) != tuple(exp.shape):
        return f"returned[{name!r}] has shape {tuple(got.shape)}, the library's {tuple(exp.shape)} (B, L)"
    if _close(exp, got.detach()):
        return None
    diff = (got.detach().double() - exp.double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    b, t = divmod(int(diff.argmax()), exp.shape[1])
    where = f"response {b}, token slot {t}"
    if mask_hint is not None:
        n = int(mask_hint[b].sum())
        where += f" (its real tokens are slots 0-{n - 1}{', the last one <eos>' if n < exp.shape[1] else ', no <eos>'})"
    return (f"the {name} differ: at {where} yours is {float(got[b, t]):+.5f}, the library's {float(exp[b, t]):+.5f}. "
            f"{_DEPENDS[name][0].upper()}{_DEPENDS[name][1:]}")


def _step_name(i: int, per_epoch: int) -> str:
    return f"optimizer step {i + 1} (epoch {i // per_epoch + 1}, minibatch {i % per_epoch + 1})"


def _steps_problem(exp: IterationRecord, got: IterationRecord) -> str | None:
    n_exp, n_got = len(exp.steps), len(got.steps)
    if n_exp == n_got:
        return None
    said = (f"your update called optimizer.step() {n_got} times, the library's {n_exp} (config.epochs = {exp.epochs} "
            f"epochs x {exp.steps_per_epoch} minibatches)")
    if exp.batch % exp.num_minibatches or exp.steps_per_epoch != exp.num_minibatches:
        said += (f". Here num_minibatches = {exp.num_minibatches} does not divide batch_size = {exp.batch}: the "
                 f"library splits each epoch's permutation with perm.chunk(num_minibatches), which makes "
                 f"{exp.steps_per_epoch} chunks ({', '.join(str(len(c)) for c in torch.arange(exp.batch).chunk(exp.num_minibatches))})"
                 f" and keeps the last, smaller one")
    return said


def _gradient_problem(exp: IterationRecord, got: IterationRecord) -> str | None:
    how = ("(compared: the gradients in p.grad when optimizer.step() is called, after backward() and the clipping; "
           "the policy's and the value model's apart)")
    per_epoch = exp.steps_per_epoch
    for i, ((ep, ev), (gp, gv)) in enumerate(zip(exp.steps, got.steps)):
        where = f"at {_step_name(i, per_epoch)}"
        if gp is None or gv is None:
            part = "the policy" if gp is None else "the value model"
            return (f"{where} some parameters of {part} have no gradient (p.grad is None): the loss must include "
                    f"the clipped policy loss and config.value_coef times the clipped value loss {how}")
        p_ok, v_ok = _close(ep, gp, atol=1e-6), _close(ev, gv, atol=1e-6)
        if p_ok and v_ok:
            continue
        e_all, g_all = torch.cat([ep, ev]).double(), torch.cat([gp, gv]).double()

        def parallel(x, y):
            x, y = x.double(), y.double()
            return float(torch.nn.functional.cosine_similarity(x, y, dim=0)) > 1 - 1e-9

        def scale(x, y):
            return float(y.norm()) / max(float(x.norm()), 1e-30)

        pp, pv = parallel(ep, gp), parallel(ev, gv)
        if pp and pv and math.isclose(scale(ep, gp), scale(ev, gv), rel_tol=1e-3):
            return (f"{where} your gradient points the library's way, but its global norm is {float(g_all.norm()):.4g}, "
                    f"not {float(e_all.norm()):.4g}: the gradient clipping differs (clip the norm of the policy's and "
                    f"the value model's gradients *together* to config.max_grad_norm = {exp.max_grad_norm:g}) {how}")
        if pp and pv:
            part = ("the policy's gradient and the value model's each point the library's way, but are scaled "
                    "differently against each other: the clipping differs (one global norm over both models, not "
                    "one per model), or the value loss's weight config.value_coef")
        elif pp:
            part = ("the value loss differs: the clipped value loss on the real tokens, between the new values, the "
                    "rollout's values clipped to +-config.value_clip_range (not config.clip_eps) and the returns; "
                    "weighted by config.value_coef")
        elif pv:
            part = ("the policy loss differs: the clipped surrogate on the real tokens with config.clip_eps, the ratio "
                    "of the new log-probs to the rollout's (the policy that sampled, not the reference, not the "
                    "current one detached), the advantages")
        else:
            part = ("both losses differ: they share the minibatch (each epoch: torch.randperm(config.batch_size, "
                    "generator=torch.Generator().manual_seed(int(rng.integers(2**31)))), split with .chunk("
                    "config.num_minibatches)), the mask of real tokens and the new forward passes; or the gradients "
                    "were not zeroed before backward()")
        if i > 0:
            part += "; the earlier steps agreed"
        return f"{where} {part} {how}"
    return None


def _compare(expected: IterationRecord, got: IterationRecord) -> str | None:
    if got.graph_error is not None:
        return None if got.graph_error == expected.graph_error else got.graph_error
    if got.changed_input is not None and got.changed_input != expected.changed_input:
        return f"your function changed {got.changed_input} in place: the caller's config must stay as it was"
    if not isinstance(got.returned, dict):
        return (f"your function must return a dict with the keys {', '.join(REQUIRED)}; it returned "
                f"{type(got.returned).__name__}")
    missing = [k for k in REQUIRED if k not in got.returned]
    if missing:
        return (f"the dict your function returned has no key {missing[0]!r} ({REQUIRED[missing[0]]}); its keys are: "
                f"{', '.join(map(repr, got.returned)) or 'none'}")
    mask = expected.returned.get("mask")  # the library's response mask (for the message only)
    for name in ("rewards", "advantages", "returns"):
        problem = _tensor_problem(name, expected.returned[name], got.returned[name], mask)
        if problem:
            return problem
    if got.frozen_moved != expected.frozen_moved:
        return (f"{got.frozen_moved}'s weights changed during your iteration: it is frozen (the reference is the SFT "
                f"model the KL is measured against; the reward model only scores), only the policy and the value "
                f"model are trained")
    problem = _steps_problem(expected, got) or _gradient_problem(expected, got)
    if problem:
        return problem
    for name, e, g in (("policy", expected.policy_params, got.policy_params),
                       ("value model", expected.value_params, got.value_params)):
        if not _close(e, g, atol=1e-6):
            return (f"the gradients at every optimizer.step() match the library's, but the {name}'s parameters after "
                    f"the update differ by up to {float((g - e).abs().max()):.3g}: the step itself differs (step the "
                    f"optimizer you were given, and change the parameters nowhere else)")
    for key in DIAGNOSTICS:
        try:
            mine = float(got.returned[key])
        except Exception:
            return f"returned[{key!r}] must be a number, it is {type(got.returned[key]).__name__}"
        theirs = float(expected.returned[key])
        if not math.isclose(mine, theirs, rel_tol=1e-4, abs_tol=1e-6):
            return (f"the rollout and the update are right, but the diagnostic {key!r} is {mine:.6g}, the library's "
                    f"{theirs:.6g} ({REQUIRED[key]})")
    return None


# ----------------------------------------------------------------------------- a learner's version, and mistakes
def learner_style_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng, *,
                            shift=1, kl_sign=1, kl_always_k1=False, beta_from_config=False, score_slot="last_real",
                            ignore_missing_eos=False, gae_through_padding=False, gamma=None, lam=None,
                            whiten="mask", returns_from_whitened=False, old_logp_with_graph=False,
                            ratio_to="old", value_clip="range", value_coef_one=False, clip_per_model=False,
                            no_clip=False, zero_grad=True, shuffle_once=False, fixed_slices=False,
                            move_reference=False, ref_is_policy=False, clip_fraction_all_tokens=False,
                            value_loss_last=False, clip_eps=None):
    """The iteration written out from the exercise's text, with switches for the usual mistakes (all at
    their defaults: the library's iteration)."""
    from ppo_lib.losses import clipped_surrogate, clipped_value_loss, value_loss
    from ppo_lib.rlhf.kl import kl_per_token
    from ppo_lib.rlhf.model import generate
    from ppo_lib.rlhf.ppo import token_values
    from ppo_lib.rlhf.reward_model import score
    from ppo_lib.rlhf.token_advantages import masked_whiten, per_token_rewards, token_gae

    lang = _lang()
    P, B = lang.PROMPT_LEN, config.batch_size
    eps = config.clip_eps if clip_eps is None else clip_eps

    def logprobs(model, tokens):
        logits = model(tokens)
        if shift == 1:
            logp = torch.log_softmax(logits[:, P - 1:-1], dim=-1)
        else:  # the logits at the token's own position: the shift forgotten
            logp = torch.log_softmax(logits[:, P:], dim=-1)
        return logp.gather(-1, tokens[:, P:].unsqueeze(-1)).squeeze(-1)

    prompts = lang.TASK.sample_prompts(rng, B)
    gen = generate(policy, prompts, temperature=config.temperature, generator=generator)
    tokens, mask = gen.tokens, gen.mask
    with torch.no_grad():
        ref_logp = (logprobs(policy if ref_is_policy else ref, tokens) * mask)
        raw_values = token_values(value_model, tokens, P)
        old_values = raw_values if gae_through_padding else raw_values * mask
        rm = score(reward_model, tokens, P)
        scores = rm if ignore_missing_eos else torch.where(gen.has_eos, rm, torch.full_like(rm, config.missing_eos_score))
    if old_logp_with_graph:
        old_logp = logprobs(policy, tokens) * mask
    else:
        with torch.no_grad():
            old_logp = logprobs(policy, tokens) * mask
    b = config.beta if beta_from_config else beta
    kl = kl_per_token(old_logp.detach(), ref_logp, "k1" if kl_always_k1 else config.kl_estimator)
    if kl_sign < 0:
        kl = kl_per_token(ref_logp, old_logp.detach(), "k1" if kl_always_k1 else config.kl_estimator)
    if score_slot == "last_real":
        rewards = per_token_rewards(kl, scores, mask, b)
    else:
        rewards = -b * kl * mask
        rows = torch.arange(B)
        last = mask.sum(1).long() - 1
        slot = torch.full_like(last, mask.shape[1] - 1) if score_slot == "final_slot" else \
            torch.clamp(last + 1, max=mask.shape[1] - 1)
        rewards = rewards.clone()
        rewards[rows, slot] += scores
    g = config.gamma if gamma is None else gamma
    lmb = config.gae_lambda if lam is None else lam
    if gae_through_padding:
        ones = torch.ones_like(mask)
        advantages, returns = token_gae(rewards, old_values, ones, g, lmb)
        advantages, returns = advantages * mask, returns * mask
    else:
        advantages, returns = token_gae(rewards, old_values, mask, g, lmb)
    if whiten == "always" or (whiten in ("mask", "all") and config.whiten_advantages):
        if whiten == "all":
            advantages = masked_whiten(advantages, torch.ones_like(mask)) * mask
        else:
            advantages = masked_whiten(advantages, mask)
    if returns_from_whitened:
        returns = (advantages + old_values) * mask
    params = list(policy.parameters()) + list(value_model.parameters())
    fractions, v_losses = [], []
    perm_once = None
    for _ in range(config.epochs):
        perm = torch.randperm(B, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
        if shuffle_once:
            perm_once = perm if perm_once is None else perm_once
            perm = perm_once
        chunks = perm.chunk(config.num_minibatches) if not fixed_slices else \
            [perm[i * (B // config.num_minibatches):(i + 1) * (B // config.num_minibatches)]
             for i in range(config.num_minibatches)]
        for idx in chunks:
            m = mask[idx].bool()
            new_logp = logprobs(policy, tokens[idx])
            base = {"old": old_logp[idx], "current": new_logp.detach(), "ref": ref_logp[idx]}[ratio_to]
            ratio = torch.exp(new_logp - base)
            policy_loss = -clipped_surrogate(ratio[m], advantages[idx][m], eps)
            new_values = token_values(value_model, tokens[idx], P)
            if value_clip == "none":
                v_loss = value_loss(new_values[m], returns[idx][m])
            else:
                rng_v = config.value_clip_range if value_clip == "range" else config.clip_eps
                v_loss = clipped_value_loss(new_values[m], old_values[idx][m], returns[idx][m], rng_v)
            loss = policy_loss + (1.0 if value_coef_one else config.value_coef) * v_loss
            if zero_grad:
                optimizer.zero_grad()
            loss.backward()
            if clip_per_model:
                torch.nn.utils.clip_grad_norm_(list(policy.parameters()), config.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(list(value_model.parameters()), config.max_grad_norm)
            elif not no_clip:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                outside = ((ratio - 1).abs() > eps).float()
                fractions.append(float(outside.mean() if clip_fraction_all_tokens else outside[m].mean()))
                v_losses.append(float(v_loss))
    if move_reference:  # "refresh" the reference to the updated policy
        with torch.no_grad():
            for p, q in zip(ref.parameters(), policy.parameters()):
                p.copy_(q)
    return {"rewards": rewards, "advantages": advantages, "returns": returns,
            "clip_fraction": sum(fractions) / len(fractions),
            "value_loss": v_losses[-1] if value_loss_last else sum(v_losses) / len(v_losses)}


def _but(name: str, **changes):
    def impl(policy, ref, reward_model, value_model, optimizer, config, beta, generator, rng):
        return learner_style_iteration(policy, ref, reward_model, value_model, optimizer, config, beta, generator,
                                       rng, **changes)

    impl.__name__ = name
    return impl


CASES = [
    Case(({}, 0), "12 responses, 2 epochs of 2 minibatches, beta 0.1 (k1), clip 0.2, value clip 0.2, value "
                  "coefficient 0.1, gamma 1, lambda 0.95, advantages whitened, gradient norm clipped at 1"),
    Case(({"clip_eps": 0.1, "value_clip_range": 0.05, "value_coef": 0.5, "gamma": 0.9, "gae_lambda": 0.8,
           "beta": 0.3, "epochs": 3}, 1),
         "clip 0.1, value clip 0.05, value coefficient 0.5, gamma 0.9, lambda 0.8, beta 0.3, 3 epochs"),
    Case(({"whiten_advantages": False, "max_grad_norm": 0.01, "missing_eos_score": -3.0}, 2),
         "advantages NOT whitened, gradient norm clipped at 0.01 (it binds), an unfinished response scores -3"),
    Case(({"batch_size": 13, "num_minibatches": 3, "max_grad_norm": 100.0, "kl_estimator": "k3", "beta": 0.2}, 3),
         "13 responses in 3 minibatches (chunks of 5, 5 and 3), the k3 estimator in the reward, beta 0.2, "
         "gradient clipping at 100 (it does not bind)"),
    Case(({"beta": 0.0, "clip_eps": 0.3}, 4), "beta 0 (no KL penalty), clip 0.3"),
    Case(({"beta": 0.1, "adaptive_kl": True}, 5, 0.037),
         "adaptive KL: config.beta is 0.1, but the controller has moved it, so the function is given beta = 0.037"),
]


def _mistake(name, feedback, **changes):
    return Mistake(name, _but(name.replace(" ", "_"), **changes), feedback)


MISTAKES = [
    _mistake("shift forgotten", "the log-prob of response token t comes from the logits at position P + t - 1 "
             "(exercise 8.1's shift by one), for the policy, the reference and in the update", shift=0),
    _mistake("KL sign", "the KL term is log pi_theta - log pi_ref (policy minus reference), and the reward is "
             "MINUS beta times it", kl_sign=-1),
    _mistake("estimator ignored", "compute the per-token KL with config.kl_estimator (kl_per_token(logp, "
             "ref_logp, config.kl_estimator)), not always k1", kl_always_k1=True),
    _mistake("beta from the config", "use the beta given as an argument: with the adaptive controller it is not "
             "config.beta any more", beta_from_config=True),
    _mistake("score on the final slot", "the score goes on each response's last *real* token (its <eos>), not on "
             "slot L - 1, which is padding for a response that ended early", score_slot="final_slot"),
    _mistake("score after eos", "the score goes on the <eos> token itself, not on the padding slot after it "
             "(TRL issue 3750)", score_slot="after_eos"),
    _mistake("unfinished response scored", "a response with no <eos> gets config.missing_eos_score, not the reward "
             "model's score (torch.where(gen.has_eos, score, missing_eos_score))", ignore_missing_eos=True),
    _mistake("GAE through padding", "the episode ends at the last real token: mask the rollout's values and run "
             "token_gae with the response mask, so nothing bootstraps from a padding slot", gae_through_padding=True),
    _mistake("gamma and lambda fixed", "run the GAE with config.gamma and config.gae_lambda, not fixed numbers",
             gamma=1.0, lam=0.95),
    _mistake("whitening over padding", "whiten over the real tokens only (masked_whiten(advantages, mask)): the "
             "zeros of the padding drag the mean and the std", whiten="all"),
    _mistake("whitening always", "whiten only when config.whiten_advantages is True", whiten="always"),
    _mistake("whitening never", "whiten the advantages over the mask when config.whiten_advantages is True",
             whiten="never"),
    _mistake("returns from whitened advantages", "the value targets are token_gae's returns: the advantages "
             "*before* whitening plus the values", returns_from_whitened=True),
    _mistake("old log-probs not detached", "compute the rollout's log-probs under torch.no_grad() (or detach "
             "them): they are the old policy's, constants of the update", old_logp_with_graph=True),
    _mistake("ratio against the current policy", "the ratio divides by the *rollout's* probabilities (old_logp), not "
             "by the current policy's detached ones: that ratio is always 1 and nothing is ever clipped",
             ratio_to="current"),
    _mistake("ratio against the reference", "the ratio is new policy / the policy that *sampled* (the rollout's "
             "log-probs), not new policy / reference: the reference only enters the rewards", ratio_to="ref"),
    _mistake("value loss unclipped", "the value loss is clipped_value_loss(new values, rollout values, returns, "
             "config.value_clip_range), not the plain squared error", value_clip="none"),
    _mistake("value clip with clip_eps", "the value loss clips with config.value_clip_range (in units of the score), "
             "not the policy's config.clip_eps", value_clip="eps"),
    _mistake("value coefficient ignored", "multiply the value loss by config.value_coef", value_coef_one=True),
    _mistake("no gradient clipping", "clip the gradients' global norm to config.max_grad_norm between backward() "
             "and step()", no_clip=True),
    _mistake("clipping per model", "clip ONE global norm over the policy's and the value model's parameters "
             "together, not each model's separately", clip_per_model=True),
    _mistake("gradients not zeroed", "call optimizer.zero_grad() before each backward(): gradients accumulate "
             "otherwise", zero_grad=False),
    _mistake("one shuffle", "draw a new permutation every epoch (its seed from rng each time), not one for all "
             "epochs", shuffle_once=True),
    _mistake("fixed-size slices", "split each permutation with perm.chunk(config.num_minibatches): when it does "
             "not divide the batch, the last chunk is smaller and still used", fixed_slices=True),
    _mistake("reference moved", "the reference is frozen: never copy the policy into it (nor step it)",
             move_reference=True),
    _mistake("KL against the policy itself", "the KL is measured against the frozen *reference* (ref), not the "
             "policy: the policy against itself gives a KL of 0", ref_is_policy=True),
    _mistake("clip fraction over padding", "count the clip fraction over the real tokens of the minibatch only",
             clip_fraction_all_tokens=True),
    _mistake("value loss of the last step", "report the mean of the value loss over every gradient step",
             value_loss_last=True),
]

check_ppo_iteration = Exercise(
    "ppo_iteration",
    reference=library_ppo_iteration,
    reference_name="ppo_lib.rlhf.ppo.ppo_iteration",
    run=_run,
    compare=_compare,
    cases=CASES,
    mistakes=MISTAKES,
)
_OWN_FUNCTIONS.update([library_ppo_iteration, *(m.impl for m in MISTAKES)])
