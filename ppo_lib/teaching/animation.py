"""Watching an agent: run an episode, then show it as an inline JS animation.

Matplotlib's JavaScript animation needs no ffmpeg and plays in JupyterLab, in
nbconvert HTML and in the book. CartPole is drawn from its state with
matplotlib patches, so no pygame is needed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
from matplotlib import animation
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


@dataclasses.dataclass
class Episode:
    observations: np.ndarray  # (T+1, *obs_shape): s_0 .. s_T
    actions: np.ndarray       # (T, *act_shape)
    rewards: np.ndarray       # (T,)
    terminated: bool          # the episode reached a terminal state
    truncated: bool           # it was cut by a time limit (or max_steps)

    @property
    def length(self) -> int:
        return len(self.rewards)

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())


def run_episode(env, policy: Callable[[np.ndarray], object] | None = None, seed: int | None = 0,
                max_steps: int = 1000) -> Episode:
    """Run one episode. ``policy(obs) -> action``; None means uniformly random
    actions (the action space is seeded too, so a seed gives the same episode)."""
    from ppo_lib.config import check_number, check_seed

    max_steps = check_number("max_steps", max_steps, 1, integer=True)
    if seed is not None:
        seed = check_seed(seed)
    if isinstance(env, str):
        raise TypeError(f"env={env!r}: expected an environment object; pass gymnasium.make({env!r})")
    if not (hasattr(env, "reset") and hasattr(env, "step") and hasattr(env, "action_space")):
        raise TypeError(f"env: expected a Gymnasium environment (with reset and step), got a {type(env).__name__}")
    if policy is not None and (not callable(policy) or hasattr(policy, "agent") or hasattr(policy, "policy")
                               or hasattr(policy, "greedy")):
        hint = ("`lambda obs: int(agent.greedy(torch.as_tensor(obs).unsqueeze(0))[0])` with `agent = result.agent`"
                if hasattr(policy, "agent") or hasattr(policy, "policy") or hasattr(policy, "greedy") else
                "a function obs -> action")
        raise TypeError(f"policy: got a {type(policy).__name__}; expected None (random actions) or a function "
                        f"obs -> action, e.g. {hint}")
    obs, _ = env.reset(seed=seed)
    if policy is None:
        env.action_space.seed(seed)
        policy = lambda _obs: env.action_space.sample()  # noqa: E731
    observations, actions, rewards = [obs], [], []
    terminated = truncated = False
    for _ in range(max_steps):
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        if terminated or truncated:
            break
    else:
        truncated = True
    return Episode(np.asarray(observations), np.asarray(actions), np.asarray(rewards),
                   bool(terminated), bool(truncated))


CART_WIDTH, CART_HEIGHT, POLE_LENGTH = 0.5, 0.3, 1.0  # CartPole's pole is 2 x 0.5 long
X_LIMIT = 2.4  # CartPole-v1 terminates when |x| > 2.4


def cartpole_geometry(state: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Pivot and tip of the pole for a CartPole state (x, x_dot, theta, theta_dot).
    A positive theta leans the pole to the right (towards +x)."""
    x, _, theta, _ = state
    pivot = (float(x), CART_HEIGHT)
    tip = (float(x + POLE_LENGTH * np.sin(theta)), float(CART_HEIGHT + POLE_LENGTH * np.cos(theta)))
    return pivot, tip


def _js_animation(fig: Figure, update: Callable[[int], None], n_frames: int, interval_ms: int):
    from IPython.display import HTML

    anim = animation.FuncAnimation(fig, update, frames=n_frames, interval=interval_ms, blit=False)
    html = anim.to_jshtml(default_mode="once")
    return HTML(html)


def animate_cartpole(observations: np.ndarray, interval_ms: int = 40, every: int = 1,
                     title: str = "CartPole-v1", dpi: int = 72):
    """An inline animation (``IPython.display.HTML``) of CartPole states."""
    obs = np.asarray(observations)[::max(1, every)]
    if obs.ndim != 2 or obs.shape[1] != 4:
        raise ValueError(f"observations: expected CartPole states of shape (T, 4), got {obs.shape}")
    fig = Figure(figsize=(6, 3.0), dpi=dpi)
    ax = fig.add_subplot()
    ax.set_xlim(-X_LIMIT - 0.5, X_LIMIT + 0.5)
    ax.set_ylim(-0.2, CART_HEIGHT + POLE_LENGTH + 0.2)
    ax.set_aspect("equal")
    ax.set_yticks([])
    ax.axhline(0, color="black", lw=1)
    for side in (-X_LIMIT, X_LIMIT):
        ax.axvline(side, color="tab:red", ls=":", lw=1)
    cart = Rectangle((0, 0), CART_WIDTH, CART_HEIGHT, color="tab:blue")
    ax.add_patch(cart)
    (pole,) = ax.plot([], [], lw=5, color="tab:brown", solid_capstyle="round")
    label = ax.set_title(title)

    def update(i):
        (px, py), (tx, ty) = cartpole_geometry(obs[i])
        cart.set_x(px - CART_WIDTH / 2)
        pole.set_data([px, tx], [py, ty])
        label.set_text(f"{title}   step {i * max(1, every)}")

    return _js_animation(fig, update, len(obs), interval_ms)


def animate_frames(frames: Sequence[np.ndarray], interval_ms: int = 40, dpi: int = 60, title: str = ""):
    """An inline animation of RGB frames (e.g. from ``env.render()`` in rgb_array mode)."""
    frames = list(frames)
    if not frames:
        raise ValueError("frames: need at least one frame")
    h, w = frames[0].shape[:2]
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    image = ax.imshow(frames[0])
    if title:
        ax.set_title(title)

    def update(i):
        image.set_data(frames[i])

    return _js_animation(fig, update, len(frames), interval_ms)


def animate_pendulum(observations: np.ndarray, interval_ms: int = 50, every: int = 1,
                     title: str = "Pendulum-v1", dpi: int = 72):
    """An inline animation of Pendulum states (cos theta, sin theta, theta_dot);
    theta = 0 is upright."""
    obs = np.asarray(observations)[::max(1, every)]
    if obs.ndim != 2 or obs.shape[1] != 3:
        raise ValueError(f"observations: expected Pendulum states of shape (T, 3), got {obs.shape}")
    fig = Figure(figsize=(3.2, 3.2), dpi=dpi)
    ax = fig.add_subplot()
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    (rod,) = ax.plot([], [], lw=8, color="tab:red", solid_capstyle="round")
    ax.plot([0], [0], "o", color="black")
    label = ax.set_title(title)

    def update(i):
        cos, sin = obs[i, 0], obs[i, 1]
        rod.set_data([0, sin], [0, cos])  # theta = 0 points up
        label.set_text(f"{title}   step {i * max(1, every)}")

    return _js_animation(fig, update, len(obs), interval_ms)
