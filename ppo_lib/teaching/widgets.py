"""Live figures: a pure function computes what is shown, a thin ipywidgets view
redraws it when a control moves.

Every widget of the course is a :class:`LiveFigure`: ``compute(**values)``
returns the data (tested without any frontend), ``draw(data, fig)`` draws it on
a fresh matplotlib ``Figure``, and ``describe(data)`` gives a one-line readout.
The view puts the PNG straight into an ``Output`` widget (no pyplot, so no
figure leaks into the cell's outputs), and offers the same PNG in its mime
bundle, so a static rendering (the HTML book, nbconvert) shows the default
figure instead of an empty widget.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ppo_lib.advantages import discount_weights, discounted_return


def _in_slider_range(name: str, value, low: float, high: float) -> float:
    """A slider's initial value: a number within the slider's range, else a clear error."""
    from ppo_lib.config import check_number

    return float(check_number(name, value, low, high))


def _in_options(name: str, value, options) -> Any:
    if not any(value == o for o in options):
        raise ValueError(f"{name}={value!r}: not one of the slider's options; allowed: "
                         f"{', '.join(map(repr, options))}")
    return value


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class LiveFigure:
    """Controls, a readout and a figure that is redrawn whenever a control moves.

    ``controls`` maps keyword names of ``compute`` to ipywidgets value widgets.
    With ``cache=True`` the result of ``compute`` is kept per combination of
    values, so moving a slider back to a value already seen is instant.
    """

    def __init__(self, controls: Mapping[str, Any], compute: Callable[..., Any],
                 draw: Callable[[Any, Figure], None], describe: Callable[[Any], str] | None = None,
                 figsize=(8.0, 3.4), cache: bool = False, dpi: int = 80):
        import ipywidgets as widgets

        self.controls = dict(controls)
        self.compute, self.draw, self.describe = compute, draw, describe
        self.figsize, self.dpi = figsize, dpi
        self._cache: dict[tuple, Any] | None = {} if cache else None
        self.readout = widgets.HTML()
        self.out = widgets.Output()
        self.n_draws = 0
        self.data: Any = None
        self.png: bytes = b""
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.box = widgets.VBox([*self.controls.values(), self.readout, self.out])
        self.redraw()

    @property
    def values(self) -> dict[str, Any]:
        return {name: c.value for name, c in self.controls.items()}

    def _compute(self, values: dict[str, Any]) -> Any:
        if self._cache is None:
            return self.compute(**values)
        key = tuple(sorted(values.items()))
        if key not in self._cache:
            self._cache[key] = self.compute(**values)
        return self._cache[key]

    def redraw(self) -> None:
        self.data = self._compute(self.values)
        fig = Figure(figsize=self.figsize)
        self.draw(self.data, fig)
        self.png = figure_png(fig, self.dpi)
        if self.describe is not None:
            self.readout.value = self.describe(self.data)
        # Replace the outputs in one assignment: no flicker, no stray <Figure> text.
        self.out.outputs = ({
            "output_type": "display_data",
            "data": {"image/png": base64.b64encode(self.png).decode("ascii"),
                     "text/plain": f"<figure: {self.values}>"},
            "metadata": {},
        },)
        self.n_draws += 1

    def _on_change(self, _change) -> None:
        self.redraw()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs) or {}
        if isinstance(bundle, tuple):  # (data, metadata)
            bundle = bundle[0]
        bundle = dict(bundle)
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        bundle["text/plain"] = f"LiveFigure({self.values})"
        return bundle


# --------------------------------------------------------------------------
# Chapter 0: the discount factor
# --------------------------------------------------------------------------

#: A sample episode for the gamma widget: a small cost on every step on the way,
#: and a prize at the end. Whether the trip is worth it depends on gamma.
SAMPLE_REWARDS = tuple([-0.1] * 30 + [5.0])


@dataclasses.dataclass(frozen=True)
class DiscountView:
    gamma: float
    t: np.ndarray           # (T,)
    weights: np.ndarray     # (T,) gamma**t
    rewards: np.ndarray     # (T,)
    discounted: np.ndarray  # (T,) gamma**t * r_t
    running: np.ndarray     # (T,) sum of gamma**k * r_k for k <= t; running[-1] == G0
    G0: float               # sum of discounted
    horizon: float          # 1 / (1 - gamma), inf for gamma = 1


def discount_view(gamma: float, rewards: Sequence[float] = SAMPLE_REWARDS) -> DiscountView:
    """What the gamma widget shows, computed without any frontend."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or len(r) == 0:
        raise ValueError(f"rewards: shape {r.shape}; allowed: a non-empty 1-D sequence of rewards")
    w = discount_weights(gamma, len(r))
    horizon = float("inf") if gamma >= 1.0 else 1.0 / (1.0 - gamma)
    return DiscountView(float(gamma), np.arange(len(r)), w, r, w * r, np.cumsum(w * r),
                        discounted_return(r, gamma), horizon)


def draw_discount(view: DiscountView, fig: Figure) -> None:
    ax_w, ax_r = fig.subplots(1, 2)
    ax_w.bar(view.t, view.weights, color="tab:blue")
    ax_w.set_ylim(0, 1.05)
    ax_w.set_xlabel("step t")
    ax_w.set_title(rf"weights $\gamma^t$ ($\gamma$ = {view.gamma:.2f})")
    if np.isfinite(view.horizon) and view.horizon <= view.t[-1] + 1:
        ax_w.axvline(view.horizon, color="tab:red", ls="--", label=rf"$1/(1-\gamma)$ = {view.horizon:.1f}")
        ax_w.legend(loc="upper right")
    ax_r.bar(view.t, view.discounted, color="tab:orange", alpha=0.5, label=r"$\gamma^t r_t$")
    ax_r.plot(view.t, view.running, color="tab:orange", marker=".",
              label=r"running sum $\sum_{k \leq t} \gamma^k r_k$")
    ax_r.axhline(0, color="black", lw=0.5)
    ax_r.set_ylim(min(-3.2, view.running.min() - 0.2), max(5.2, view.running.max() + 0.2))
    ax_r.set_xlabel("step t")
    ax_r.set_title(rf"discounted return $G_0$ = {view.G0:+.3f}")
    ax_r.legend(loc="upper left", fontsize="small")
    fig.tight_layout()


def describe_discount(view: DiscountView) -> str:
    verdict = "worth the walk" if view.G0 > 0 else "not worth the walk"
    horizon = "infinite" if not np.isfinite(view.horizon) else f"{view.horizon:.1f} steps"
    return (f"<b>gamma = {view.gamma:.2f}</b>: G<sub>0</sub> = {view.G0:+.3f} ({verdict}); "
            f"effective horizon 1/(1-gamma) = {horizon}")


def gamma_widget(gamma: float = 0.9, rewards: Sequence[float] = SAMPLE_REWARDS) -> LiveFigure:
    """A slider for gamma; the figure shows gamma**t and the discounted rewards."""
    import ipywidgets as widgets

    gamma = _in_slider_range("gamma", gamma, 0.0, 1.0)  # the slider would clamp it silently

    slider = widgets.FloatSlider(value=gamma, min=0.0, max=1.0, step=0.01, description="gamma",
                                 readout_format=".2f", continuous_update=True,
                                 layout=widgets.Layout(width="60%"))
    rewards = tuple(float(x) for x in rewards)
    return LiveFigure({"gamma": slider}, lambda gamma: discount_view(gamma, rewards),
                      draw_discount, describe_discount)


# --------------------------------------------------------------------------
# Chapter 3: the GAE lambda on a problem whose advantages are known
# --------------------------------------------------------------------------


def draw_gae_study(data, fig: Figure) -> None:
    """``data``: (study, lam). Left: bias^2, variance and MSE against lambda; right:
    the estimates for the chosen lambda against the true advantages."""
    study, lam = data
    k = int(np.argmin(np.abs(study.lambdas - lam)))
    ax_c, ax_s = fig.subplots(1, 2)
    ax_c.plot(study.lambdas, study.bias_sq, marker=".", label="bias$^2$")
    ax_c.plot(study.lambdas, study.variance, marker=".", label="variance")
    ax_c.plot(study.lambdas, study.mse, color="black", lw=2, label="bias$^2$ + variance")
    ax_c.axvline(study.lambdas[k], color="tab:red", ls="--")
    ax_c.set_xlabel(r"$\lambda$")
    ax_c.set_title("error of the advantage estimates")
    ax_c.legend(fontsize="small")
    rng = np.random.default_rng(0)
    jitter = rng.normal(0, 0.004, size=study.truth.shape)
    centred = study.centred(k)
    ax_s.scatter(study.truth + jitter, centred, s=3, alpha=0.15, color="tab:blue")
    lo, hi = study.truth.min() - 0.05, study.truth.max() + 0.05
    ax_s.plot([lo, hi], [lo, hi], color="black", lw=1, ls=":", label="estimate = truth")
    ax_s.set_xlim(lo, hi)
    ax_s.set_ylim(-0.6, 0.6)
    ax_s.set_xlabel(r"true advantage $A(s, a)$")
    ax_s.set_ylabel(r"estimate $\hat A_t$ (per-state shift removed)")
    ax_s.set_title(rf"GAE estimates, $\lambda$ = {study.lambdas[k]:.2f}")
    ax_s.legend(fontsize="small", loc="upper left")
    fig.tight_layout()


def describe_gae_study(data) -> str:
    study, lam = data
    k = int(np.argmin(np.abs(study.lambdas - lam)))
    return (f"<b>lambda = {study.lambdas[k]:.2f}</b>: bias<sup>2</sup> = {study.bias_sq[k]:.5f}, "
            f"variance = {study.variance[k]:.5f}, total = {study.mse[k]:.5f} "
            f"(best lambda here: {study.lambdas[int(np.argmin(study.mse))]:.2f})")


def lambda_widget(make_study, lambdas, errors=(0.0, 0.25, 0.5, 0.75, 1.0), lam: float = 0.95,
                  error: float = 1.0) -> LiveFigure:
    """Sliders for lambda and for how wrong the critic is. ``make_study(error)``
    returns a :class:`~ppo_lib.teaching.toy_problems.GAEStudy` over ``lambdas``; each
    critic is studied once and kept."""
    import ipywidgets as widgets

    lambdas = [float(x) for x in lambdas]
    if not lambdas:
        raise ValueError("lambdas=[]: give at least one lambda in [0, 1]")
    lam = _in_slider_range("lam", lam, 0.0, 1.0)
    error = _in_options("error", error, [float(e) for e in errors])
    lam_slider = widgets.SelectionSlider(options=[(f"{x:.2f}", x) for x in lambdas],
                                         value=min(lambdas, key=lambda x: abs(x - lam)), description="lambda",
                                         continuous_update=True, layout=widgets.Layout(width="60%"))
    err_slider = widgets.SelectionSlider(options=[(f"{x:.2f}", float(x)) for x in errors], value=float(error),
                                         description="critic error", continuous_update=False,
                                         style={"description_width": "initial"},
                                         layout=widgets.Layout(width="60%"))
    studies: dict[float, object] = {}

    def compute(lam, critic_error):
        if critic_error not in studies:
            studies[critic_error] = make_study(critic_error)
        return studies[critic_error], lam

    return LiveFigure({"lam": lam_slider, "critic_error": err_slider}, compute, draw_gae_study,
                      describe_gae_study, figsize=(10.0, 3.8))


def training_widget(run_fn, options: Sequence, value, name: str, draw, describe=None,
                    figsize=(10.0, 3.6)) -> LiveFigure:
    """A slider over a few settings of a training run: ``run_fn(setting)`` is slow,
    so each setting is trained once (with its own progress bar) and cached; moving
    back to a setting already seen is instant. ``options``: values, or
    ``(label, value)`` pairs."""
    import ipywidgets as widgets

    pairs = [o if isinstance(o, tuple) else (f"{o:g}", o) for o in options]
    if not pairs:
        raise ValueError(f"options=[]: give at least one setting for {name}")
    _in_options("value", value, [v for _, v in pairs])
    slider = widgets.SelectionSlider(options=pairs, value=value, description=name, continuous_update=False,
                                     style={"description_width": "initial"}, layout=widgets.Layout(width="60%"))
    return LiveFigure({name: slider}, lambda **kw: run_fn(kw[name]), draw, describe, figsize=figsize, cache=True)


# --------------------------------------------------------------------------
# Chapter 5: the clipped objective
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClipView:
    eps: float
    r: np.ndarray               # (R,) probability ratios
    clipped_pos: np.ndarray     # L_CLIP for A = +1
    clipped_neg: np.ndarray     # L_CLIP for A = -1
    flat_pos: np.ndarray        # (R,) bool: zero gradient for A = +1 (r > 1 + eps)
    flat_neg: np.ndarray        # (R,) bool: zero gradient for A = -1 (r < 1 - eps)


def clip_view(eps: float, r_max: float = 2.0, points: int = 401) -> ClipView:
    """L_CLIP(r) = min(r A, clip(r, 1-eps, 1+eps) A) for A = +1 and A = -1, computed
    with the library's own ``clipped_surrogate`` and its gradient (autograd)."""
    import torch

    from ppo_lib.losses import clipped_surrogate

    r = torch.linspace(0.0, r_max, points, dtype=torch.float64)
    out, grads = {}, {}
    for sign in (1.0, -1.0):
        rr = r.clone().requires_grad_(True)
        # per-element objective: the mean over one element is the element itself
        vals = torch.stack([clipped_surrogate(rr[i:i + 1], torch.tensor([sign], dtype=torch.float64), eps)
                            for i in range(points)])
        vals.sum().backward()
        out[sign], grads[sign] = vals.detach().numpy(), rr.grad.numpy()
    return ClipView(float(eps), r.numpy(), out[1.0], out[-1.0], grads[1.0] == 0.0, grads[-1.0] == 0.0)


def draw_clip(view: ClipView, fig: Figure) -> None:
    axes = fig.subplots(1, 2, sharey=False)
    for ax, sign, vals, flat in ((axes[0], 1, view.clipped_pos, view.flat_pos),
                                 (axes[1], -1, view.clipped_neg, view.flat_neg)):
        ax.plot(view.r, sign * view.r, color="gray", ls="--", label=r"unclipped $r A$")
        ax.plot(view.r, vals, color="tab:blue", lw=2.5, label=r"$L^{CLIP}$")
        ymin, ymax = min(vals.min(), (sign * view.r).min()), max(vals.max(), (sign * view.r).max())
        ax.fill_between(view.r, ymin - 0.1, ymax + 0.1, where=flat, color="tab:red", alpha=0.12,
                        label="zero gradient")
        for edge in (1 - view.eps, 1 + view.eps):
            ax.axvline(edge, color="tab:red", lw=0.8, ls=":")
        ax.axvline(1.0, color="black", lw=0.5)
        ax.set_xlabel(r"probability ratio $r = \pi_\theta / \pi_{old}$")
        ax.set_title(f"advantage A {'> 0' if sign > 0 else '< 0'} (A = {sign:+d}), eps = {view.eps:.2f}")
        ax.legend(fontsize="small", loc="upper left" if sign > 0 else "upper right")
    fig.tight_layout()


def describe_clip(view: ClipView) -> str:
    return (f"<b>eps = {view.eps:.2f}</b>: for A &gt; 0 the objective stops rewarding r beyond "
            f"{1 + view.eps:.2f}; for A &lt; 0 it stops rewarding r below {1 - view.eps:.2f}")


def clip_widget(eps: float = 0.2) -> LiveFigure:
    import ipywidgets as widgets

    eps = _in_slider_range("eps", eps, 0.05, 0.5)  # the slider's range: it would clamp anything else
    slider = widgets.FloatSlider(value=eps, min=0.05, max=0.5, step=0.05, description="epsilon",
                                 readout_format=".2f", continuous_update=True, layout=widgets.Layout(width="60%"))
    return LiveFigure({"eps": slider}, clip_view, draw_clip, describe_clip, figsize=(10.0, 3.6))
