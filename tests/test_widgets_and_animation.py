"""Pure parts of the widgets and the animation helper, without any frontend."""

import base64

import gymnasium as gym
import numpy as np
import pytest

from ppo_lib.advantages import discount_weights, discounted_return
from ppo_lib.teaching.animation import animate_cartpole, animate_frames, animate_pendulum, cartpole_geometry, run_episode
from ppo_lib.teaching.widgets import SAMPLE_REWARDS, LiveFigure, discount_view, gamma_widget


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_discounted_return_of_constant_reward_is_the_geometric_series(gamma):
    T = 37
    closed = T if gamma == 1.0 else (1 - gamma**T) / (1 - gamma)
    assert discounted_return([1.0] * T, gamma) == pytest.approx(closed)


def test_discounted_return_by_hand_and_bad_input():
    assert discounted_return([1.0, 0.0, 2.0], 0.5) == pytest.approx(1.0 + 0.25 * 2.0)
    assert discounted_return([], 0.9) == 0.0
    with pytest.raises(ValueError, match=r"gamma=1.5: must be in \[0, 1\]"):
        discounted_return([1.0], 1.5)
    with pytest.raises(ValueError, match="1-D"):
        discounted_return([[1.0]], 0.9)
    with pytest.raises(ValueError, match="horizon=-1"):
        discount_weights(0.9, -1)


def test_discount_view_matches_its_closed_form():
    view = discount_view(0.9, SAMPLE_REWARDS)
    # 30 steps at -0.1, then +5 at t=30
    expected = -0.1 * (1 - 0.9**30) / (1 - 0.9) + 5 * 0.9**30
    assert view.G0 == pytest.approx(expected)
    assert view.running[-1] == pytest.approx(view.G0)
    assert view.horizon == pytest.approx(10.0)
    np.testing.assert_allclose(view.weights, 0.9 ** np.arange(31))
    assert discount_view(1.0).horizon == float("inf")
    assert discount_view(1.0).G0 == pytest.approx(2.0)


def test_gamma_widget_redraws_when_the_slider_moves():
    w = gamma_widget(gamma=0.9)
    png0, readout0 = w.png, w.readout.value
    assert png0.startswith(b"\x89PNG") and "gamma = 0.90" in readout0
    w.controls["gamma"].value = 0.95
    assert w.n_draws == 2
    assert w.png != png0
    assert "gamma = 0.95" in w.readout.value
    assert w.data.G0 == pytest.approx(discount_view(0.95).G0)
    shown = w.out.outputs[0]["data"]["image/png"]
    assert base64.b64decode(shown) == w.png


def test_live_figure_offers_the_default_png_for_static_pages():
    w = gamma_widget(gamma=0.9)
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == w.png


def test_live_figure_cache_computes_each_setting_once():
    import ipywidgets as widgets

    calls = []

    def compute(x):
        calls.append(x)
        return x

    slider = widgets.IntSlider(value=1, min=0, max=5)
    w = LiveFigure({"x": slider}, compute, lambda d, fig: fig.add_subplot().plot([0, d]), cache=True)
    slider.value = 2
    slider.value = 1
    slider.value = 2
    assert calls == [1, 2]
    assert w.n_draws == 4


def test_random_episode_is_reproducible_from_its_seed():
    env = gym.make("CartPole-v1")
    a, b = run_episode(env, seed=3), run_episode(env, seed=3)
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.length == len(a.actions) == len(a.observations) - 1
    assert a.terminated and not a.truncated
    assert a.total_reward == a.length  # CartPole pays +1 per step


def test_episode_cut_by_max_steps_is_truncated_not_terminated():
    env = gym.make("CartPole-v1")
    ep = run_episode(env, policy=lambda obs: int(obs[2] > 0), seed=0, max_steps=5)
    assert ep.length == 5 and ep.truncated and not ep.terminated
    with pytest.raises(ValueError, match="max_steps=0"):
        run_episode(env, max_steps=0)


def test_cartpole_geometry():
    pivot, tip = cartpole_geometry([0.5, 0.0, 0.0, 0.0])
    assert tip[0] == pytest.approx(pivot[0]) and tip[1] > pivot[1]
    _, tip_right = cartpole_geometry([0.0, 0.0, 0.2, 0.0])
    assert tip_right[0] > 0  # positive angle leans right


def test_animations_render_every_frame():
    states = np.zeros((7, 4))
    states[:, 0] = np.linspace(-1, 1, 7)
    html = animate_cartpole(states).data
    assert html.count("frames[") >= 7 or "new Animation" in html
    with pytest.raises(ValueError, match=r"shape \(T, 4\)"):
        animate_cartpole(np.zeros((3, 2)))
    frames = [np.full((8, 8, 3), i * 30, dtype=np.uint8) for i in range(3)]
    assert "img" in animate_frames(frames).data.lower()
    with pytest.raises(ValueError, match="at least one frame"):
        animate_frames([])


def test_pendulum_animation_checks_its_input():
    obs = np.stack([np.cos(np.linspace(0, 3, 5)), np.sin(np.linspace(0, 3, 5)), np.zeros(5)], 1)
    assert "Animation" in animate_pendulum(obs).data
    with pytest.raises(ValueError, match=r"shape \(T, 3\)"):
        animate_pendulum(np.zeros((4, 4)))
