"""The capstone of chapter 5: the learner writes PPO's whole update.

The learner's function has the signature::

    ppo_update(policy, optimizer, rollout, config, generator) -> dict of diagnostics

and must leave ``policy``'s parameters exactly where the library's update
(:func:`ppo_lib.algos.ppo.ppo_update`) leaves them, starting from the same weights, the same
optimiser state, the same rollout and the same random generator (which decides the minibatch
shuffles), and return the diagnostics the chapter's text names (``clip_fraction``,
``approx_kl_k3``, ``epochs``, ``explained_variance``) with the library's values.

Every switch and number the text names is varied across the cases: the clip range, gamma, lambda,
advantage normalisation on and off, gradient clipping (binding, and off: 0), truncations
bootstrapped or treated as terminations, a minibatch size that does not divide the batch (the
incomplete last minibatch is dropped), and the target-KL rule (k3, on the whole batch, after each
epoch, stop when it exceeds the target).

The checker's own state never decides a verdict: each call gets objects built fresh from a
cached, immutable snapshot (policy weights and Adam moments after one warm-up update, with their
gradients cleared, and a rollout collected by the warmed-up policy, so the stored log-probs are
those of the policy the learner starts from). Every optimiser step is recorded (the gradients in
``p.grad`` when ``optimizer.step()`` is called, that is after any clipping), so a rejection names
the part that differs: the policy loss, the value loss, the gradient clipping, the step count
(minibatch loop, epochs, early stop), or the diagnostics.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import torch

from ppo_lib.algos.ppo import ppo_update
from ppo_lib.teaching.checks.core import Case, Exercise, Mistake

#: the diagnostics the text asks for, and what each one is (for the messages)
REQUIRED_DIAGNOSTICS = {
    "clip_fraction": "the mean over every minibatch step of the fraction of samples with |r - 1| > clip_eps",
    "approx_kl_k3": "the k3 estimate of KL(pi_old || pi_new) on the whole batch after the update "
                    "(approx_kl(rollout log-probs, new log-probs)[1])",
    "epochs": "the number of epochs run (fewer than config.epochs when the target-KL rule stopped them)",
    "explained_variance": "1 - Var(targets - rollout.values) / Var(targets), with the rollout's own values",
}

_T, _N = 32, 4  # B = 128 samples per rollout
_BASE = dict(num_envs=_N, rollout_steps=_T, minibatch_size=32, epochs=2, lr=3e-3)


def library_ppo_update(policy, optimizer, rollout, config, generator) -> dict:
    """The library's one update (:func:`ppo_lib.algos.ppo.ppo_update`, which ``PPO.update``
    calls) run on the given objects, for comparison."""
    return ppo_update(policy, optimizer, rollout, config, generator)


# ----------------------------------------------------------------------------- fresh objects per call
_SNAPSHOTS: dict = {}


def _config(overrides: dict):
    from ppo_lib.algos.ppo import PPOConfig

    with warnings.catch_warnings():  # a minibatch that does not divide the batch is a case, not a warning
        warnings.simplefilter("ignore")
        return PPOConfig(**{**_BASE, **overrides})


def snapshot(seed: int, episode_steps: int):
    """Weights and Adam state after one warm-up update (gradients cleared), and a rollout collected by
    the warmed-up policy: computed once, then only copied."""
    key = (seed, episode_steps)
    if key not in _SNAPSHOTS:
        from ppo_lib.algos.ppo import PPO
        from ppo_lib.envs import VecEnv
        from ppo_lib.rollout import collect_rollout

        config = _config({})
        venv = VecEnv("CartPole-v1", num_envs=_N, seed=seed, max_episode_steps=episode_steps)
        algo = PPO(venv.single_observation_space, venv.single_action_space, config, seed=seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            warm, obs = collect_rollout(venv, algo.policy, _T, venv.reset())
            # one update first, so that Adam's moments are not zero in the case we compare
            ppo_update(algo.policy, algo.optimizer, warm, config, torch.Generator().manual_seed(seed + 1))
            algo.optimizer.zero_grad(set_to_none=True)
            rollout, _ = collect_rollout(venv, algo.policy, _T, obs)
        venv.close()
        _SNAPSHOTS[key] = (venv.single_observation_space, venv.single_action_space,
                           copy.deepcopy(algo.policy.state_dict()), copy.deepcopy(algo.optimizer.state_dict()),
                           rollout)
    return _SNAPSHOTS[key]


def fresh_objects(config_overrides: dict, seed: int, episode_steps: int = 40):
    """(policy, optimizer, rollout, config, generator) for one call: built anew, no gradient set."""
    from ppo_lib.algos.ppo import PPO

    obs_space, act_space, weights, adam, rollout = snapshot(seed, episode_steps)
    config = _config(config_overrides)
    algo = PPO(obs_space, act_space, _config({}), seed=seed)
    algo.policy.load_state_dict(weights)
    algo.optimizer.load_state_dict(copy.deepcopy(adam))  # load_state_dict keeps the tensors it is given: Adam
    # would then update the snapshot's moments in place, and the next call would start elsewhere
    for p in algo.policy.parameters():
        p.grad = None
    return algo.policy, algo.optimizer, copy.deepcopy(rollout), config, torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- running a function
@dataclasses.dataclass
class UpdateRecord:
    """What one call did: the gradients at every optimiser step, the final parameters, what it returned."""

    steps: list  # per optimizer.step(): (actor gradient, critic gradient) as flat tensors (None: no .grad)
    params: torch.Tensor
    start_params: torch.Tensor
    returned: object
    next_cell: str | None  # why the chapter's next cell cannot use the returned value, or None
    changed_input: str | None  # which input was changed in place, or None
    batch: int
    minibatch: int
    epochs: int
    target_kl: float | None
    max_grad_norm: float = 0.0


def _flat_grads(params):
    if any(p.grad is None for p in params):
        return None
    return torch.cat([p.grad.detach().reshape(-1) for p in params]).clone()


def _next_cell_problem(info) -> str | None:
    """What the chapter's next cell (a PPO whose update calls this function, trained by ``train``) does
    with the returned dict: every value must pass ``math.isfinite`` and ``float``, as in ``train``."""
    from ppo_lib.train import History

    if not isinstance(info, dict):
        return None
    for key, value in info.items():
        try:
            finite = math.isfinite(value)
        except Exception:
            return (f"the training loop checks every diagnostic with math.isfinite(value), and "
                    f"{key!r} is {type(value).__name__} ({str(value)[:60]}): return plain numbers (use .item())")
        if not finite and key != "explained_variance":
            return f"the diagnostic {key!r} is {value}: the training loop stops on a value that is not finite"
    try:
        History().record_update(0, info)
    except Exception as exc:
        return f"the training loop cannot store your diagnostics with float(): {type(exc).__name__}: {exc}"
    return None


#: the checker's own functions are deterministic: their record per case is computed once
_OWN_RECORDS: dict = {}
_OWN_FUNCTIONS: set = set()


def _run(fn, config_overrides: dict, seed: int, episode_steps: int = 40):
    if fn in _OWN_FUNCTIONS:
        key = (fn, repr(sorted(config_overrides.items())), seed, episode_steps)
        if key not in _OWN_RECORDS:
            _OWN_RECORDS[key] = _record(fn, config_overrides, seed, episode_steps)
        return _OWN_RECORDS[key]
    return _record(fn, config_overrides, seed, episode_steps)


def _record(fn, config_overrides: dict, seed: int, episode_steps: int = 40):
    policy, optimizer, rollout, config, generator = fresh_objects(config_overrides, seed, episode_steps)
    pristine_rollout, pristine_config = copy.deepcopy(rollout), copy.deepcopy(config)
    actor_params = list(policy.actor.parameters())
    actor_ids = {id(p) for p in actor_params}
    critic_params = [p for p in policy.parameters() if id(p) not in actor_ids]
    steps = []
    original_step = optimizer.step

    def recording_step(*args, **kwargs):
        steps.append((_flat_grads(actor_params), _flat_grads(critic_params)))
        return original_step(*args, **kwargs)

    optimizer.step = recording_step
    start = torch.cat([p.detach().reshape(-1) for p in policy.parameters()]).clone()
    info = fn(policy, optimizer, rollout, config, generator)
    changed = None
    for f in dataclasses.fields(pristine_rollout):
        a, b = getattr(rollout, f.name), getattr(pristine_rollout, f.name)
        if not (isinstance(a, torch.Tensor) and a.shape == b.shape and bool((a == b).all())):
            changed = f"rollout.{f.name}"
            break
    if changed is None:
        for f in dataclasses.fields(pristine_config):
            if getattr(config, f.name) != getattr(pristine_config, f.name):
                changed = f"config.{f.name}"
                break
    params = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    return UpdateRecord(steps, params, start, info, _next_cell_problem(info), changed, _T * _N,
                        config.minibatch_size, config.epochs, config.target_kl, config.max_grad_norm)


# ----------------------------------------------------------------------------- comparing, in words
def _close(a, b, rtol=1e-4, atol=1e-6) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def _step_name(i: int, per_epoch: int) -> str:
    return f"optimizer step {i + 1} (epoch {i // per_epoch + 1}, minibatch {i % per_epoch + 1})"


def _step_count_problem(exp: UpdateRecord, got: UpdateRecord) -> str:
    per_epoch = exp.batch // exp.minibatch
    n_exp, n_got = len(exp.steps), len(got.steps)
    said = (f"your update called optimizer.step() {n_got} time{'s' if n_got != 1 else ''}, the library's "
            f"{n_exp} ({n_exp // per_epoch} epoch{'s' if n_exp // per_epoch != 1 else ''} x {per_epoch} minibatches "
            f"of {exp.minibatch} from B = {exp.batch} samples)")
    with_last = -(-exp.batch // exp.minibatch)
    if n_got == 0:
        if not _close(got.start_params, got.params):
            return (said + ", yet the parameters moved: step the optimizer you were given (its Adam state carries "
                    "over from update to update), not one of your own")
        return said + ": the parameters were never stepped"
    if exp.target_kl is not None and n_got < n_exp and n_got % per_epoch:
        return (said + ". The step count differs in the early stop: you stopped in the middle of an epoch; the "
                "target-KL rule is checked after each epoch, on the whole batch")
    if exp.batch % exp.minibatch and n_got == (n_exp // per_epoch) * with_last:
        return (said + f". The step count differs in the minibatch loop: {exp.minibatch} does not divide {exp.batch}, "
                f"and the text drops the incomplete last minibatch ({exp.batch % exp.minibatch} samples) in each epoch")
    if n_got % per_epoch:
        return said + ". The step count differs in the minibatch loop: one step per full minibatch of each permutation"
    if exp.target_kl is not None:
        return (said + f". The step count differs in the early stop: after each epoch, compute k3 on the whole "
                f"batch and stop when it exceeds target_kl = {exp.target_kl:g}")
    return said + f". The step count differs in the epochs: run config.epochs = {exp.epochs} epochs"


def _gradient_problem(exp: UpdateRecord, got: UpdateRecord) -> str | None:
    per_epoch = exp.batch // exp.minibatch
    how = ("(the gradients compared are those in p.grad when optimizer.step() is called, i.e. after "
           "backward() and any clipping; the actor's and the critic's parameters apart)")
    for i, ((ea, ec), (ga, gc)) in enumerate(zip(exp.steps, got.steps)):
        if ga is None or gc is None:
            part = "the actor" if ga is None else "the critic"
            return (f"at {_step_name(i, per_epoch)} some parameters of {part} have no gradient (p.grad is None): "
                    f"the loss must include every term, computed from the policy's outputs {how}")
        a_ok, c_ok = _close(ea, ga), _close(ec, gc)
        if a_ok and c_ok:
            continue
        where = f"at {_step_name(i, per_epoch)}"
        e_all, g_all = torch.cat([ea, ec]), torch.cat([ga, gc])
        if float(g_all.norm()) == 0.0:
            return (f"{where} every gradient is 0 when optimizer.step() is called: clip_grad_norm_(params, 0) "
                    f"scales them all to 0 (max_grad_norm = 0 means: no clipping), or the loss does not depend on "
                    f"the parameters {how}")

        def parallel(x, y):  # in float64: a rescaled float32 vector stays parallel to ~1e-15
            x, y = x.double(), y.double()
            return float(torch.nn.functional.cosine_similarity(x, y, dim=0)) > 1 - 1e-9

        def scale(x, y):
            return float(y.norm()) / max(float(x.norm()), 1e-30)

        pa, pc = parallel(ea, ga), parallel(ec, gc)
        clip = exp.max_grad_norm
        at_clip = [math.isclose(float(x.norm()), clip, rel_tol=1e-4) for x in (ga, gc)] if clip else [False, False]
        if pa and pc and any(at_clip) and not math.isclose(float(g_all.norm()), clip, rel_tol=1e-4):
            part = "the actor's" if at_clip[0] else "the critic's"
            return (f"{where} the gradient clipping differs: {part} gradient alone has norm {clip:g} = "
                    f"config.max_grad_norm, the whole gradient {float(g_all.norm()):.4g} (the library's "
                    f"{float(e_all.norm()):.4g}): clip the global norm of all the parameters together, one "
                    f"clip_grad_norm_(policy.parameters(), config.max_grad_norm), not each part apart {how}")
        if pa and pc:  # each part only rescaled
            if math.isclose(scale(ea, ga), scale(ec, gc), rel_tol=1e-3):
                return (f"{where} your gradient points the same way as the library's but its norm is "
                        f"{float(g_all.norm()):.4g}, not {float(e_all.norm()):.4g}: the gradient clipping differs "
                        f"(clip the global norm of all the parameters to config.max_grad_norm; 0 means no clipping) "
                        f"{how}")
            sa, sc = scale(ea, ga), scale(ec, gc)
            # a binding clip rescales both parts together: then only their relative weight can be read
            binds = bool(clip) and any(math.isclose(float(x.norm()), clip, rel_tol=1e-4) for x in (e_all, g_all))
            if not binds and math.isclose(sc, 1.0, rel_tol=1e-3):  # the critic's part is the library's
                part = (f"the policy loss differs by a factor {sa:.4g} (the value part of the gradient is the "
                        f"library's): the policy loss's scale, e.g. the advantages' normalisation (each minibatch "
                        f"with the library's normalize, (A - mean) / (std + 1e-8) with the unbiased std), or its "
                        f"weight or mean")
            elif not binds and math.isclose(sa, 1.0, rel_tol=1e-3):
                part = (f"the value loss differs by a factor {sc:.4g} (the policy part of the gradient is the "
                        f"library's): its weight config.value_coef, or value_loss's 1/2 (V - R)^2")
            else:
                part = ("the policy part and the value part of the gradient each point the library's way, but are "
                        "weighted differently against each other: the value loss's weight (config.value_coef, and "
                        "value_loss's 1/2 (V - R)^2) or the policy loss's scale (e.g. the advantages' "
                        "normalisation)")
        elif pa:  # the actor's part equal or only rescaled (by a binding clip)
            part = "the value loss differs (the value targets, value_loss's 1/2 (V - R)^2, or config.value_coef)"
        elif pc:
            part = ("the policy loss differs (the clipped surrogate with config.clip_eps, the ratio against the "
                    "stored log-probs, the advantages and their normalisation, or the entropy bonus)")
        else:
            part = ("both the policy loss and the value loss differ: they share the advantages and value targets, "
                    "computed once from the rollout with config.gamma, config.gae_lambda and the truncation rule, "
                    "and the minibatch (torch.randperm(B, generator=generator), walked in order); or gradients "
                    "were not zeroed before backward()")
        if i > 0:
            part += "; the earlier steps agreed"
        return f"{where} {part} {how}"
    return None


def _diagnostics_problem(exp: UpdateRecord, got: UpdateRecord) -> str | None:
    info, ref = got.returned, exp.returned
    missing = [k for k in REQUIRED_DIAGNOSTICS if k not in info]
    if missing:
        keys = ", ".join(repr(k) for k in info) or "none"
        return (f"the diagnostics: the dict your function returned has no key {missing[0]!r} ({REQUIRED_DIAGNOSTICS[missing[0]]}); "
                f"its keys are: {keys}")
    for key, what in REQUIRED_DIAGNOSTICS.items():
        mine, theirs = float(info[key]), float(ref[key])
        if math.isnan(theirs) and math.isnan(mine):
            continue
        if not math.isclose(mine, theirs, rel_tol=1e-3, abs_tol=1e-6):
            return (f"the parameters are right, but the diagnostics differ: {key!r} is {mine:.6g}, the library's "
                    f"{theirs:.6g} ({what})")
    return None


def _compare(expected: UpdateRecord, got: UpdateRecord) -> str | None:
    if got.changed_input is not None:
        return (f"your function changed its input {got.changed_input} in place: the caller still needs it "
                f"(work on copies, e.g. x = x.flatten() rather than an in-place edit)")
    if not isinstance(got.returned, dict):
        return (f"your function must return a dict of diagnostics (with the keys "
                f"{', '.join(REQUIRED_DIAGNOSTICS)}), it returned {type(got.returned).__name__}")
    if got.next_cell is not None:
        return f"the chapter's next cell cannot use what your function returned: {got.next_cell}"
    if len(got.steps) != len(expected.steps):
        return _step_count_problem(expected, got)
    problem = _gradient_problem(expected, got)
    if problem is None and not _close(expected.params, got.params):
        moved = float((got.params - expected.params).abs().max())
        problem = (f"the gradients at every optimizer.step() match the library's, but the parameters after the update "
                   f"differ by up to {moved:.3g}: the step itself differs (the optimiser given, its learning rate, "
                   f"or parameters changed outside optimizer.step())")
    if problem is not None:
        return problem
    return _diagnostics_problem(expected, got)


# ----------------------------------------------------------------------------- the usual mistakes
def learner_style_update(policy, optimizer, rollout, config, generator, *, clip_eps=None, gamma=None, lam=None,
                         truncation_as_termination=None, keep_last_minibatch=False, normalize_whole_batch=False,
                         always_normalize=None, clip_with_zero=False, zero_grad=True, mse_value_loss=False,
                         ratio_to_current=False, stop_estimator="k3", stop_per_minibatch=False, stop_ge=False,
                         explained_with_new_values=False, clip_fraction_last_only=False, epochs_off_by_one=False,
                         kl_key_k1=False, stop_factor=1.0):
    """The update written out from the chapter's step list, with switches for the usual mistakes (all off:
    the library's update)."""
    from ppo_lib.advantages import rollout_advantages
    from ppo_lib.losses import approx_kl, clipped_surrogate, normalize, value_loss

    actor = policy.actor
    eps = config.clip_eps if clip_eps is None else clip_eps
    tat = (not config.bootstrap_truncation) if truncation_as_termination is None else truncation_as_termination
    advantages, targets = rollout_advantages(rollout, config.gamma if gamma is None else gamma,
                                             config.gae_lambda if lam is None else lam, truncation_as_termination=tat)
    obs, actions = rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1)
    logp_old, values_old = rollout.logprobs.flatten(), rollout.values.flatten()
    advantages, targets = advantages.flatten(), targets.flatten()
    if normalize_whole_batch:
        advantages = normalize(advantages)
    norm = config.normalize_advantages if always_normalize is None else always_normalize
    B, M = obs.shape[0], config.minibatch_size
    clip_fractions, epochs_run, stop = [], 0, False

    def kl_exceeds():
        with torch.no_grad():
            k1, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
        k = k3 if stop_estimator == "k3" else k1
        return k >= stop_factor * config.target_kl if stop_ge else k > stop_factor * config.target_kl

    for _ in range(config.epochs):
        perm = torch.randperm(B, generator=generator)
        ends = range(0, B, M) if keep_last_minibatch else range(0, B - M + 1, M)
        for start in ends:
            mb = perm[start:start + M]
            dist = actor.distribution(obs[mb])
            logp = actor.log_prob(dist, actions[mb])
            ratio = torch.exp(logp - (logp.detach() if ratio_to_current else logp_old[mb]))
            adv = advantages[mb]
            if norm and not normalize_whole_batch:
                adv = normalize(adv)
            values = policy.value(obs[mb])
            v_loss = (values - targets[mb]).pow(2).mean() if mse_value_loss else value_loss(values, targets[mb])
            loss = (-clipped_surrogate(ratio, adv, eps) + config.value_coef * v_loss
                    - config.entropy_coef * actor.entropy(dist).mean())
            if zero_grad:
                optimizer.zero_grad()
            loss.backward()
            if clip_with_zero or config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            clip_fractions.append(((ratio - 1).abs() > eps).float().mean().item())
            if stop_per_minibatch and config.target_kl is not None and kl_exceeds():
                stop = True
                break
        epochs_run += 1
        if stop or (not stop_per_minibatch and config.target_kl is not None and kl_exceeds()):
            break
    with torch.no_grad():
        k1, k3 = approx_kl(logp_old, actor.log_prob(actor.distribution(obs), actions))
        values_now = policy.value(obs)
    fit = values_now if explained_with_new_values else values_old
    var_y = targets.var().item()
    explained = float("nan") if var_y == 0 else 1.0 - (targets - fit).var().item() / var_y
    return {"clip_fraction": clip_fractions[-1] if clip_fraction_last_only else sum(clip_fractions) / len(clip_fractions),
            "approx_kl_k3": k1 if kl_key_k1 else k3, "epochs": float(epochs_run - epochs_off_by_one),
            "explained_variance": explained}


def _but(name: str, **changes):
    def impl(policy, optimizer, rollout, config, generator):
        return learner_style_update(policy, optimizer, rollout, config, generator, **changes)

    impl.__name__ = name
    return impl


def _as_library_but(**changes):
    """The library's update with one setting done differently: a usual mistake."""

    def impl(policy, optimizer, rollout, config, generator):
        return library_ppo_update(policy, optimizer, rollout, dataclass_replace(config, **changes), generator)

    return impl


def dataclass_replace(config, **changes):
    new = copy.copy(config)
    for k, v in changes.items():
        object.__setattr__(new, k, v)
    return new


def _no_update(policy, optimizer, rollout, config, generator):
    return {k: 0.0 for k in REQUIRED_DIAGNOSTICS}


CASES = [
    Case(({}, 0), "CartPole, 4 envs x 32 steps (B = 128), 2 epochs of minibatches of 32, clip 0.2, gamma 0.99, "
                  "lambda 0.95, advantages normalised, gradient norm clipped at 0.5, no early stopping"),
    Case(({"clip_eps": 0.1, "gamma": 0.9, "gae_lambda": 0.8, "entropy_coef": 0.01, "value_coef": 0.5,
           "max_grad_norm": 0.1, "epochs": 3}, 1),
         "clip 0.1, gamma 0.9, lambda 0.8, entropy bonus 0.01, value coefficient 0.5, gradient norm clipped at 0.1 "
         "(it binds), 3 epochs"),
    Case(({"clip_eps": 0.3, "normalize_advantages": False, "max_grad_norm": 0.0}, 2),
         "clip 0.3, advantages NOT normalised, max_grad_norm = 0 (no gradient clipping)"),
    Case(({"bootstrap_truncation": True}, 3, 10),
         "episodes cut at 10 steps (truncations in the rollout), bootstrap_truncation = True"),
    Case(({"bootstrap_truncation": False}, 3, 10),
         "the same rollout with bootstrap_truncation = False (truncations treated as terminations)"),
    Case(({"minibatch_size": 48}, 4),
         "minibatches of 48 from B = 128: two per epoch, the incomplete last one (32 samples) dropped"),
    Case(({"target_kl": 1e-5, "epochs": 4}, 5),
         "target_kl = 1e-5: k3 on the whole batch exceeds it after the first epoch, so the epochs stop there"),
    Case(({"target_kl": 0.004, "epochs": 4, "clip_eps": 0.3}, 0),
         "target_kl = 0.004, 4 epochs: the rule is k3 (not k1) on the whole batch after each epoch, stop when "
         "k3 > target_kl"),
    Case(({"target_kl": 0.005, "epochs": 6}, 0),
         "target_kl = 0.005, 6 epochs: the rule exactly as the text states it, k3 > target_kl (no factor such "
         "as Stable-Baselines3's 1.5), decides after which epoch the update stops"),
]

check_ppo_update = Exercise(
    "ppo_update",
    reference=library_ppo_update,
    reference_name="ppo_lib.algos.ppo.ppo_update",
    run=_run,
    compare=_compare,
    cases=CASES,
    mistakes=[
        Mistake("no update", _no_update, "the parameters did not move: did you call optimizer.step()?"),
        Mistake("advantages not normalised", _as_library_but(normalize_advantages=False),
                "normalise the advantages of each *minibatch* (mean 0, std 1, with the library's `normalize`) "
                "when config.normalize_advantages is True, and only then."),
        Mistake("advantages always normalised", _but("always_normalize", always_normalize=True),
                "normalise the advantages only when config.normalize_advantages is True."),
        Mistake("advantages normalised over the batch", _but("normalize_whole_batch", normalize_whole_batch=True),
                "normalise the advantages of each *minibatch*, not once over the whole batch."),
        Mistake("no gradient clipping", _as_library_but(max_grad_norm=0.0),
                "clip the global gradient norm to config.max_grad_norm between backward() and step()."),
        Mistake("clipping at 0", _but("clip_with_zero", clip_with_zero=True),
                "max_grad_norm = 0 means no clipping: clip_grad_norm_(params, 0) would scale every gradient to 0."),
        Mistake("no early stopping", _as_library_but(target_kl=None),
                "after each epoch, when config.target_kl is set, compute the k3 KL estimate on the whole batch "
                "and stop the epochs once it exceeds target_kl."),
        Mistake("early stop on k1", _but("stop_on_k1", stop_estimator="k1"),
                "the early stop compares k3 (never negative), not k1, with config.target_kl."),
        Mistake("early stop at 1.5 x target_kl", _but("stop_sb3", stop_factor=1.5),
                "the text's rule is k3 > config.target_kl; stopping at 1.5 x target_kl is Stable-Baselines3's "
                "rule, not this one: with it the epochs run longer."),
        Mistake("early stop per minibatch", _but("stop_per_minibatch", stop_per_minibatch=True),
                "check the KL after each *epoch*, not after each minibatch."),
        Mistake("no entropy bonus", _as_library_but(entropy_coef=0.0),
                "the loss subtracts config.entropy_coef times the mean entropy of the minibatch (a tensor with its "
                "gradient: not detached, not a number from .item())."),
        Mistake("value coefficient ignored", _as_library_but(value_coef=1.0),
                "multiply the value loss by config.value_coef."),
        Mistake("value loss not halved", _but("mse_value_loss", mse_value_loss=True),
                "the value loss is the library's value_loss: 1/2 (V - R)^2 averaged, not the plain mean squared error."),
        Mistake("one epoch", _as_library_but(epochs=1), "run config.epochs passes over the batch, not one."),
        Mistake("clip range fixed", _but("clip_fixed", clip_eps=0.2), "use config.clip_eps, not a fixed 0.2."),
        Mistake("gamma and lambda fixed", _but("gamma_lambda_fixed", gamma=0.99, lam=0.95),
                "compute the advantages with config.gamma and config.gae_lambda, not fixed numbers."),
        Mistake("truncation as termination", _but("truncation_as_termination", truncation_as_termination=True),
                "bootstrap at a truncation (time limit) unless config.bootstrap_truncation is False: "
                "rollout_advantages(..., truncation_as_termination=not config.bootstrap_truncation)."),
        Mistake("truncation rule inverted", _but("truncation_inverted_false", truncation_as_termination=False),
                "when config.bootstrap_truncation is False, treat truncations as terminations "
                "(truncation_as_termination=not config.bootstrap_truncation)."),
        Mistake("incomplete minibatch kept", _but("keep_last_minibatch", keep_last_minibatch=True),
                "drop the incomplete last minibatch of each permutation: range(0, B - M + 1, M)."),
        Mistake("gradients not zeroed", _but("no_zero_grad", zero_grad=False),
                "call optimizer.zero_grad() before each backward(): gradients accumulate otherwise."),
        Mistake("ratio against the current policy", _but("ratio_to_current", ratio_to_current=True),
                "the ratio divides by the *stored* old probabilities (rollout.logprobs), not by the current "
                "policy's detached ones (that ratio is always 1, so nothing is ever clipped)."),
        Mistake("explained variance after the fit", _but("explained_new_values", explained_with_new_values=True),
                "compute the explained variance with the rollout's values (rollout.values), not the critic after "
                "the update."),
        Mistake("clip fraction of the last minibatch", _but("clip_fraction_last", clip_fraction_last_only=True),
                "report the mean clip fraction over every minibatch step of the update."),
        Mistake("epochs off by one", _but("epochs_off_by_one", epochs_off_by_one=True),
                "report the number of epochs that ran (the one that triggered the early stop counts)."),
        Mistake("k1 reported as k3", _but("kl_key_k1", kl_key_k1=True),
                "'approx_kl_k3' is the k3 estimate: mean((r - 1) - log r), the second value of approx_kl."),
    ],
)
_OWN_FUNCTIONS.update([library_ppo_update, *(m.impl for m in check_ppo_update.mistakes)])
