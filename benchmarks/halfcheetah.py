"""PPO on HalfCheetah-v5 (MuJoCo) for 1M steps: final return and wall time. Not run in CI.

    .venv/bin/pip install -e ".[bench]"
    MUJOCO_GL=egl .venv/bin/python benchmarks/halfcheetah.py [--steps 1000000] [--seed 0] [--render]

Settings: the PPO paper's MuJoCo hyperparameters (T=2048, 10 epochs, minibatch 64,
Adam 3e-4, gamma 0.99, lambda 0.95, clip 0.2) with the details CleanRL's
continuous-action PPO uses: observation normalisation, reward scaling,
learning-rate annealing, value coefficient 0.5. CleanRL reports about 1443 at
1M steps on HalfCheetah-v4. ``--render`` writes an HTML animation of a greedy
episode (rgb frames need ``MUJOCO_GL=egl``). Writes results/halfcheetah.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.algos import PPO, PPOConfig  # noqa: E402
from ppo_lib.train import evaluate, train  # noqa: E402

CONFIG = dict(normalize_obs=True, scale_rewards=True, anneal_lr=True, value_coef=0.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--render", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import gymnasium as gym

    env = gym.make(args.env)
    algo = PPO(env.observation_space, env.action_space, PPOConfig(**CONFIG), seed=args.seed)
    t0 = time.perf_counter()
    result = train(algo, args.env, args.steps, seed=args.seed, progress=sys.stderr.isatty())
    wall = time.perf_counter() - t0
    h = result.history
    scores = evaluate(algo.policy, args.env, episodes=10, seed=10_000 + args.seed)
    last = float(np.mean(h.episode_returns[-10:])) if h.episode_returns else float("nan")
    print(f"{args.env}: {h.total_steps:,} steps in {wall / 60:.1f} min ({h.total_steps / wall:,.0f} steps/s); "
          f"mean of the last 10 training episodes {last:.0f}; deterministic evaluation "
          f"{np.mean(scores):.0f} +- {np.std(scores):.0f} (10 episodes)")
    record = {**header(torch_threads=args.threads), "env": args.env, "config": {**CONFIG}, "steps": h.total_steps,
              "wall_seconds": round(wall, 1), "last10_training_return": round(last, 1),
              "eval_mean": round(float(np.mean(scores)), 1), "eval_std": round(float(np.std(scores)), 1),
              "curve": {"steps": h.episode_steps[::10], "returns": [round(r, 1) for r in h.episode_returns[::10]]}}
    write(record, RESULTS / "halfcheetah.json")
    if args.render:
        from ppo_lib.teaching.animation import animate_frames

        renv = gym.make(args.env, render_mode="rgb_array")
        obs, _ = renv.reset(seed=123)
        frames, rms = [], algo.policy.obs_rms
        for _ in range(300):
            o = torch.as_tensor(rms.normalize(obs), dtype=torch.float32).unsqueeze(0)
            obs, _, term, trunc, _ = renv.step(algo.policy.env_actions(algo.policy.greedy(o))[0])
            frames.append(renv.render())
            if term or trunc:
                break
        (RESULTS / "halfcheetah.html").write_text(animate_frames(frames[::3], interval_ms=60).data)
        print(f"wrote {RESULTS / 'halfcheetah.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
