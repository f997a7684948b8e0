"""How fast does PPO learn on the CPU? ppo_lib against Stable-Baselines3, same harness.

    .venv/bin/pip install -e ".[bench]"          # stable-baselines3, gymnasium[mujoco]
    .venv/bin/python benchmarks/ppo_speed.py      # all sections (about 10 minutes)
    .venv/bin/python benchmarks/ppo_speed.py --sections cartpole --seeds 0 1 2 3 4

Sections:
- cartpole: wall time (training only) until a deterministic evaluation -- 10
  episodes, run every 5 000 env steps, its own time excluded -- first reaches a
  mean of 475 on CartPole-v1. ppo_lib with its fast CartPole preset, and SB3's PPO
  with the rl-baselines3-zoo hyperparameters (n_envs 8, n_steps 32, batch 256,
  gamma 0.98, lambda 0.8, 20 epochs, lr and clip linearly annealed from 1e-3 and
  0.2), on the same seeds, one torch thread each.
- throughput: env steps per second of rollout collection alone and of full PPO
  iterations (collection + update), with 1 and 2 torch threads.
- pendulum: seconds and steps until the evaluation mean reaches -200 on Pendulum-v1.

Prints a table (median, min, max per peer and the ratio), writes JSON (with the
command, the date and the machine) and a plot to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import RESULTS, header, write  # noqa: E402
from ppo_lib.algos import CARTPOLE_FAST_PRESET, PENDULUM_PRESET, PPO, PPOConfig  # noqa: E402
from ppo_lib.envs import VecEnv  # noqa: E402
from ppo_lib.rollout import collect_rollout  # noqa: E402
from ppo_lib.train import evaluate, train  # noqa: E402

EVAL_EVERY, EVAL_EPISODES = 5_000, 10


class EvalClock:
    """Evaluates every EVAL_EVERY env steps; keeps the evaluation time apart."""

    def __init__(self, evaluate_fn, threshold: float):
        self.evaluate_fn, self.threshold = evaluate_fn, threshold
        self.next_eval, self.eval_seconds, self.reached_at, self.curve = EVAL_EVERY, 0.0, None, []

    def check(self, steps: int) -> bool:
        if steps < self.next_eval:
            return False
        self.next_eval = (steps // EVAL_EVERY + 1) * EVAL_EVERY
        t0 = time.perf_counter()
        score = float(np.mean(self.evaluate_fn()))
        self.eval_seconds += time.perf_counter() - t0
        self.curve.append((steps, score))
        if score >= self.threshold:
            self.reached_at = steps
            return True
        return False


def run_ours(env_id: str, preset: dict, seed: int, threshold: float, budget: int) -> dict:
    torch.manual_seed(seed)
    import gymnasium as gym

    env = gym.make(env_id)
    algo = PPO(env.observation_space, env.action_space, PPOConfig(**preset), seed=seed)
    clock = EvalClock(lambda: evaluate(algo.policy, env_id, EVAL_EPISODES, seed=10_000 + seed), threshold)
    t0 = time.perf_counter()
    result = train(algo, env_id, budget, seed=seed, progress=False,
                   callback=lambda h: clock.check(h.update_steps[-1]))
    wall = time.perf_counter() - t0 - clock.eval_seconds
    return {"seed": seed, "steps": clock.reached_at, "seconds": round(wall, 3) if clock.reached_at else None,
            "steps_run": result.history.total_steps, "curve": clock.curve}


def run_sb3(seed: int, threshold: float, budget: int) -> dict:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    def linear(start):
        return lambda progress_remaining: progress_remaining * start

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=10_000 + seed)
    model = SB3PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                   ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu",
                   verbose=0)
    clock = EvalClock(lambda: evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True,
                                              return_episode_rewards=True)[0], threshold)

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return not clock.check(self.num_timesteps)

    t0 = time.perf_counter()
    model.learn(total_timesteps=budget, callback=Stop())
    wall = time.perf_counter() - t0 - clock.eval_seconds
    return {"seed": seed, "steps": clock.reached_at, "seconds": round(wall, 3) if clock.reached_at else None,
            "steps_run": int(model.num_timesteps), "curve": clock.curve}


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["steps"] is not None]
    out = {"reached": f"{len(ok)}/{len(runs)}", "runs": runs}
    for key in ("seconds", "steps"):
        vals = [r[key] for r in ok]
        if vals:
            out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def throughput(threads: int, seconds: float = 3.0) -> dict:
    torch.set_num_threads(threads)
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    cfg = PPOConfig(**CARTPOLE_FAST_PRESET)
    algo = PPO(env.observation_space, env.action_space, cfg, seed=0)
    venv = VecEnv("CartPole-v1", cfg.num_envs, seed=0)
    obs = venv.reset()
    collect_rollout(venv, algo.policy, cfg.rollout_steps, obs)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, obs = collect_rollout(venv, algo.policy, cfg.rollout_steps, obs)
        n += cfg.rollout_steps * cfg.num_envs
    rollout_sps = n / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch, obs = collect_rollout(venv, algo.policy, cfg.rollout_steps, obs)
        algo.update(batch)
        n += cfg.rollout_steps * cfg.num_envs
    return {"threads": threads, "rollout_steps_per_s": round(rollout_sps), "ppo_iteration_steps_per_s":
            round(n / (time.perf_counter() - t0))}


def fmt(row: dict, key: str, spec: str) -> str:
    if key not in row:
        return "never reached"
    v = row[key]
    return f"{v['median']:{spec}} [{v['min']:{spec}}, {v['max']:{spec}}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="+", default=["cartpole", "throughput", "pendulum"],
                   choices=["cartpole", "throughput", "pendulum"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--pendulum-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--no-sb3", action="store_true", help="skip Stable-Baselines3")
    p.add_argument("--budget", type=int, default=100_000,
                   help="env steps per run; the learning rate anneals over it (both peers)")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = header()
    if "cartpole" in args.sections:
        torch.set_num_threads(1)
        peers = {"ppo_lib": [run_ours("CartPole-v1", CARTPOLE_FAST_PRESET, s, 475, args.budget) for s in args.seeds]}
        for r in peers["ppo_lib"]:
            print(f"ppo_lib seed {r['seed']}: {r['steps']} steps, {r['seconds']} s", flush=True)
        if not args.no_sb3:
            peers["stable-baselines3"] = []
            for s in args.seeds:
                peers["stable-baselines3"].append(run_sb3(s, 475, args.budget))
                r = peers["stable-baselines3"][-1]
                print(f"SB3     seed {r['seed']}: {r['steps']} steps, {r['seconds']} s", flush=True)
        rows = {k: summarise(v) for k, v in peers.items()}
        record["cartpole"] = {"threshold": 475, "eval_every": EVAL_EVERY, "eval_episodes": EVAL_EPISODES,
                              "preset": CARTPOLE_FAST_PRESET, "results": rows}
        print(f"\nCartPole-v1: training seconds (eval excluded) until a deterministic 10-episode evaluation, "
              f"every {EVAL_EVERY} steps, first reaches 475; seeds {args.seeds}")
        print(f"{'peer':18s} {'reached':>8s} {'seconds median [min, max]':>30s} {'env steps median [min, max]':>34s}")
        for name, row in rows.items():
            print(f"{name:18s} {row['reached']:>8s} {fmt(row, 'seconds', '7.2f'):>30s} {fmt(row, 'steps', '8.0f'):>34s}")
        if "stable-baselines3" in rows and "seconds" in rows["ppo_lib"] and "seconds" in rows["stable-baselines3"]:
            ratio = rows["stable-baselines3"]["seconds"]["median"] / rows["ppo_lib"]["seconds"]["median"]
            steps_ratio = rows["stable-baselines3"]["steps"]["median"] / rows["ppo_lib"]["steps"]["median"]
            record["cartpole"]["speedup_vs_sb3"] = round(ratio, 2)
            print(f"ppo_lib is {ratio:.1f}x faster than SB3 in wall time (median), and needs "
                  f"{1 / steps_ratio:.2f}x SB3's env steps")
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 3.5))
            for (name, runs), color in zip(peers.items(), ("tab:blue", "tab:orange")):
                for i, r in enumerate(runs):
                    if r["curve"]:
                        xs, ys = zip(*r["curve"])
                        ax.plot(xs, ys, color=color, alpha=0.7, label=name if i == 0 else None)
            ax.axhline(475, color="gray", ls=":")
            ax.set_xlabel("env steps")
            ax.set_ylabel("deterministic evaluation (10 episodes)")
            ax.set_title("CartPole-v1")
            ax.legend()
            fig.tight_layout()
            fig.savefig(RESULTS / "ppo_speed_cartpole.png", dpi=100)
        except Exception as exc:  # the plot is a bonus, never a reason to lose the numbers
            print(f"(no plot: {exc})")

    if "throughput" in args.sections:
        record["throughput"] = [throughput(1), throughput(2)]
        print("\nThroughput on CartPole-v1 with the fast preset (env steps per second):")
        for row in record["throughput"]:
            print(f"  {row['threads']} torch thread(s): rollout {row['rollout_steps_per_s']:>9,}   "
                  f"full PPO iteration {row['ppo_iteration_steps_per_s']:>8,}")
        torch.set_num_threads(1)

    if "pendulum" in args.sections:
        torch.set_num_threads(1)
        runs = [run_ours("Pendulum-v1", PENDULUM_PRESET, s, -200, 150_000) for s in args.pendulum_seeds]
        for r in runs:
            print(f"pendulum seed {r['seed']}: {r['steps']} steps, {r['seconds']} s", flush=True)
        row = summarise(runs)
        record["pendulum"] = {"threshold": -200, "preset": PENDULUM_PRESET, "results": row}
        print(f"\nPendulum-v1 to an evaluation mean of -200: reached {row['reached']}; seconds "
              f"{fmt(row, 'seconds', '.1f')}; env steps {fmt(row, 'steps', '.0f')}")

    write(record, RESULTS / "ppo_speed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
