# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix — Where to go next
#
# You now have a PPO you can read from end to end: the clipped objective, GAE, the
# implementation details of chapter 7, the token-level version of chapter 8 and its
# successors of chapters 9 and 10. The libraries people use do the same things under other
# names, with other defaults, and with the machinery to run on more than one machine. This
# appendix is a map for that step, not a lesson: which published systems used which method,
# a lookup table from our settings to theirs, and what changes once one machine is not enough.
# It has no exercises; its one code cell checks that the "ours" column of the tables is what
# the library's configurations hold today.
#
# **Your time:** about 30 minutes to read.
#
# **Learning objectives.** After this appendix you can:
#
# - Name the preference or RL method behind published systems (InstructGPT, Llama 2 and 3, Zephyr, DeepSeekMath and R1, Tülu 3) and find its source.
# - Map the course's settings to their names and defaults in Stable-Baselines3, CleanRL, RLlib, TRL and OpenRLHF.
# - Say what changes when RLHF or PPO runs on more than one machine: generation engines, GPU placement, weight synchronisation, asynchrony.

# %%
import dataclasses

from ppo_lib.algos.ppo import PPOConfig
from ppo_lib.rlhf.ppo import TokenPPOConfig

# %% [markdown]
# ## Which systems trained with what
#
# | System | Year | Preference / RL stage | Source |
# |---|---|---|---|
# | InstructGPT | 2022 | PPO against a reward model with a KL penalty. The released "InstructGPT" models are **PPO-ptx** (PPO plus a pre-training log-likelihood term). | Ouyang et al., *Training language models to follow instructions with human feedback*, arXiv:2203.02155 |
# | ChatGPT | 2022 | RLHF "using the same methods as InstructGPT": reward models trained on ranked comparisons, then fine-tuning with **PPO**, over several iterations | OpenAI, *Introducing ChatGPT* (blog) |
# | Llama 2-Chat | 2023 | Iterative RLHF (V1…V5): **rejection-sampling fine-tuning** and **PPO**, two reward models (helpfulness, safety) | Touvron et al., *Llama 2*, arXiv:2307.09288 |
# | Zephyr-7B-β | 2023 | dSFT, then **dDPO** (DPO on GPT-4-ranked UltraFeedback pairs). No sampling during fine-tuning. | Tunstall et al., *Zephyr: Direct Distillation of LM Alignment*, arXiv:2310.16944 |
# | Llama 3 | 2024 | "Several rounds of SFT and **DPO**". SFT data comes partly from rejection sampling with a reward model. | Llama Team, *The Llama 3 Herd of Models*, arXiv:2407.21783 |
# | DeepSeekMath | 2024 | **GRPO** (introduced here): a PPO variant with no critic, whose baseline comes from a group of sampled answers | Shao et al., arXiv:2402.03300 |
# | DeepSeek-R1 / R1-Zero | 2025 | **GRPO** with rule-based (accuracy, format) rewards | DeepSeek-AI, arXiv:2501.12948 |
# | Tülu 3 | 2024 | SFT → length-normalised **DPO** (`dpo_norm`) → **RLVR**, optimised with **PPO** (`ppo_vllm_thread_ray_gtrl.py`) | Lambert et al., arXiv:2411.15124; allenai/open-instruct `docs/tulu3.md` |

# %% [markdown]
# ## Our names, their names
#
# Versions checked: **Stable-Baselines3 2.8.0** (`PPO.__init__`; identical on main, 2.9.0a4) ·
# **CleanRL** main @ `fe8d8a0` (`Args` in `cleanrl/ppo.py` / `ppo_continuous_action.py`; values are written "ppo / continuous") ·
# **RLlib, Ray 2.60.0 wheel**, new API stack (`PPOConfig().training(...)`, `.env_runners(...)`) ·
# **TRL 1.0.0** `trl.experimental.ppo.PPOConfig` (field-for-field identical in 1.9.0 and on main 1.10.0.dev0); fields it inherits from
# `transformers.TrainingArguments` were checked in transformers 5.24.0 ·
# **OpenRLHF 0.11.0** `python -m openrlhf.cli.train_ppo_ray` (dotted flags since 0.10.2; the flat names in parentheses
# are from 0.10.1.post2; the non-Ray `openrlhf.cli.train_ppo` was removed in March 2025, PR #882).
# A default is shown wherever the source sets one. "—" means there is no equivalent.
#
# **A. Classic PPO (`ppo_lib.algos.ppo.PPOConfig`)**
#
# | Ours (default) | SB3 `PPO(...)` | CleanRL `Args` | RLlib `PPOConfig` | TRL `PPOConfig` | OpenRLHF flag |
# |---|---|---|---|---|---|
# | `clip_eps` 0.2 | `clip_range=0.2` | `clip_coef=0.2` | `training(clip_param=0.3)` | `cliprange=0.2` | `--actor.eps_clip 0.2` (`--eps_clip`) |
# | `gamma` 0.99 | `gamma=0.99` | `gamma=0.99` | `training(gamma=0.99)` | `gamma=1.0` | `--algo.advantage.gamma 1` (`--gamma`) |
# | `gae_lambda` 0.95 | `gae_lambda=0.95` | `gae_lambda=0.95` | `training(lambda_=1.0)` | `lam=0.95` | `--algo.advantage.lambd 1` (`--lambd`) |
# | `lr` 3e-4 | `learning_rate=3e-4` | `learning_rate=2.5e-4 / 3e-4` | `training(lr=5e-5)` | `learning_rate=3e-6` | `--actor.adam.lr 1e-6`, `--critic.adam.lr 9e-6` (`--actor_learning_rate`, `--critic_learning_rate`) |
# | `rollout_steps` 2048 | `n_steps=2048` | `num_steps=128 / 2048` | `env_runners(rollout_fragment_length="auto")` | — | — |
# | `num_envs` 1 | size of the VecEnv, e.g. `make_vec_env(env_id, n_envs=1)` | `num_envs=4 / 1` | `env_runners(num_env_runners=2, num_envs_per_env_runner=1)` | — | — |
# | `epochs` 10 | `n_epochs=10` | `update_epochs=4 / 10` | `training(num_epochs=30)` | `num_ppo_epochs=4` | `--train.max_epochs 1` (`--max_epochs`) |
# | `minibatch_size` 64 | `batch_size=64` | `num_minibatches=4 / 32` (size is computed) | `training(minibatch_size=128)` | `num_mini_batches=1` (size is computed) | `--train.batch_size 128` (`--train_batch_size`) |
# | `value_coef` 1.0 on ½·MSE | `vf_coef=0.5` on MSE | `vf_coef=0.5` on ½·MSE | `training(vf_loss_coeff=1.0)` on MSE | `vf_coef=0.1` on ½·MSE | — (the critic has its own optimiser) |
# | `entropy_coef` 0.0 | `ent_coef=0.0` | `ent_coef=0.01 / 0.0` | `training(entropy_coeff=0.0)` | — | `--actor.entropy_coef` None (`--entropy_loss_coef`) |
# | `max_grad_norm` 0.5 | `max_grad_norm=0.5` | `max_grad_norm=0.5` | `training(grad_clip=None, grad_clip_by="global_norm")` | `max_grad_norm=1.0` (TrainingArguments) | `--actor.max_norm 1.0` (`--max_norm`) |
# | `target_kl` None | `target_kl=None` (stops once approx-KL > 1.5×, checked every minibatch) | `target_kl=None` (checked after each epoch) | — | — | — |
# | `clip_value` False | `clip_range_vf=None` (its own range around the old values; loss on the clipped prediction only, no max) | `clip_vloss=True` (uses `clip_coef`, like ours) | `training(vf_clip_param=10.0)` (clips the squared error, not the value) | `cliprange_value=0.2` (always on) | `--critic.value_clip 0.5` (`--value_clip`) |
# | `normalize_advantages` True | `normalize_advantage=True` (per minibatch) | `norm_adv=True` (per minibatch) | — (always on, whole batch, in the GAE connector) | — (always whitened) | — (always on for `gae`; `--algo.advantage.no_std_norm` keeps the centring only) |
# | `anneal_lr` False | pass a schedule: `learning_rate=LinearSchedule(3e-4, 0.0, 1.0)` (`get_linear_fn` is deprecated) | `anneal_lr=True` | `training(lr=[[0, 3e-4], [T, 0.0]])` | `lr_scheduler_type="linear"` (TrainingArguments) | `--actor.lr_scheduler cosine_with_min_lr` (`--lr_scheduler`) |
# | `adam_eps` 1e-5 | `policy_kwargs=dict(optimizer_kwargs=dict(eps=...))`, default 1e-5 for Adam | hard-coded `eps=1e-5` | — (override `Learner.configure_optimizers_for_module`) | `adam_epsilon=1e-8` (TrainingArguments) | `--actor.adam.eps 1e-8` (no flag in 0.10.1.post2) |
# | `beta` 1.0 (penalty) | — | — | `training(kl_coeff=0.2)` with `use_kl_loss=True` | — | — |
# | `kl_target` 0.01 | — | — | `training(kl_target=0.01)` | — | — |
# | `adaptive_beta` True | — | — | — (always adaptive: ×1.5 when KL > 2·target, ×0.5 when KL < target/2) | — | — |
#
# RLlib's default is clipping *and* an adaptive KL penalty to the old policy used together. Its update constants differ
# from the paper's rule (×2 / ÷2 at 1.5× / ÷1.5), which is ours. For the TRL and OpenRLHF columns, `gamma`/`lam`
# are per token, as in chapter 8.
#
# **B. PPO on tokens (`ppo_lib.rlhf.ppo.TokenPPOConfig`).** SB3, CleanRL and RLlib have no equivalent for any row: "—".
#
# | Ours (default) | TRL 1.0.0 `PPOConfig` | OpenRLHF 0.11.0 flag (0.10.1.post2 name) |
# |---|---|---|
# | `beta` 0.05 | `kl_coef=0.05` | `--algo.kl.init_coef 0.01` (`--init_kl_coef`) |
# | `kl_estimator` "k1" | `kl_estimator="k1"` (`"k1"` or `"k3"`) | `--algo.kl.estimator k1` (k1/k2/k3) (`--kl_estimator`) |
# | `adaptive_kl` False | — in 1.x (TRL 0.11 `trl/trainer/ppo_config.py`: `adap_kl_ctrl=True`) | on as soon as `--algo.kl.target` is set (Ziegler's controller, `AdaptiveKLController`) |
# | `kl_target` 6.0 | — (0.11: `target=6.0`) | `--algo.kl.target` None (`--kl_target`) |
# | `kl_horizon` 10 000 | — (0.11: `horizon=10000`) | `--algo.kl.horizon 10000` (`--kl_horizon`) |
# | `ptx_coef` 0.0 | — | — in 0.11.0; `--ptx_coef 0.05` up to 0.10.1.post2 |
# | `batch_size` 64 responses | `batch_size` is computed: `per_device_train_batch_size` (8) × `gradient_accumulation_steps` × world size | `--rollout.batch_size 1024` prompts × `--rollout.n_samples_per_prompt 1` (`--rollout_batch_size`, `--n_samples_per_prompt`) |
# | `epochs` 4 | `num_ppo_epochs=4` | `--train.max_epochs 1` (`--max_epochs`) |
# | `num_minibatches` 2 | `num_mini_batches=1` | implied: rollout batch × samples ÷ `--train.batch_size 128` |
# | `clip_eps` 0.2 | `cliprange=0.2` | `--actor.eps_clip 0.2` (`--eps_clip`) |
# | `value_clip_range` 0.2 | `cliprange_value=0.2` | `--critic.value_clip 0.5` (`--value_clip`) |
# | `value_coef` 0.1 | `vf_coef=0.1` | — (separate critic model and optimiser) |
# | `gamma` 1.0 | `gamma=1.0` | `--algo.advantage.gamma 1` (`--gamma`) |
# | `gae_lambda` 0.95 | `lam=0.95` | `--algo.advantage.lambd 1` (`--lambd`) |
# | `temperature` 1.0 | `temperature=0.7` | `--rollout.temperature 1.0` (`--temperature`) |
# | `missing_eos_score` −1 | `missing_eos_penalty=None` (a positive number *subtracted* from the score) | `--reward.stop_properly_penalty_coef` None (if < 0, a fixed reward for truncated samples) (`--stop_properly_penalty_coef`) |
# | `max_grad_norm` 1.0 | `max_grad_norm=1.0` (TrainingArguments) | `--actor.max_norm 1.0` (`--max_norm`) |
# | `whiten_advantages` True | — (always `masked_whiten`) | — (always for `gae`; `--algo.advantage.no_std_norm` turns off the division) (`--no_advantage_std_norm`) |
# | `lr` 1e-3 | `learning_rate=3e-6` | `--actor.adam.lr 1e-6` (`--actor_learning_rate`) |

# %% [markdown]
# The "Ours (default)" column of tables A and B, checked against the library's configurations
# (a default that changes in the code breaks this cell, not silently the table):

# %%
table_a = {"clip_eps": 0.2, "gamma": 0.99, "gae_lambda": 0.95, "lr": 3e-4, "rollout_steps": 2048, "num_envs": 1,
           "epochs": 10, "minibatch_size": 64, "value_coef": 1.0, "entropy_coef": 0.0, "max_grad_norm": 0.5,
           "target_kl": None, "clip_value": False, "normalize_advantages": True, "anneal_lr": False,
           "adam_eps": 1e-5, "beta": 1.0, "kl_target": 0.01, "adaptive_beta": True}
table_b = {"beta": 0.05, "kl_estimator": "k1", "adaptive_kl": False, "kl_target": 6.0, "kl_horizon": 10_000,
           "ptx_coef": 0.0, "batch_size": 64, "epochs": 4, "num_minibatches": 2, "clip_eps": 0.2,
           "value_clip_range": 0.2, "value_coef": 0.1, "gamma": 1.0, "gae_lambda": 0.95, "temperature": 1.0,
           "missing_eos_score": -1.0, "max_grad_norm": 1.0, "whiten_advantages": True, "lr": 1e-3}
for name, table, config in (("A", table_a, PPOConfig()), ("B", table_b, TokenPPOConfig())):
    library = dataclasses.asdict(config)
    wrong = {k: (v, library[k]) for k, v in table.items() if library[k] != v}
    assert not wrong, f"table {name}: (stated, library) differ for {wrong}"
    print(f"table {name}: {len(table)} defaults, all equal to {type(config).__name__}()'s")


# %% [markdown]
# ## What changes when one machine is not enough (on paper)
#
# - **Generation becomes the cost to beat.** OpenRLHF's README: "RLHF training spends **80%** of the time on sample
#   generation". Its answer is to generate with vLLM engines and to use Ray to put the actor, critic, reward and
#   reference models on separate GPU groups, "for models up to **70B+** parameters". Tülu 3's code reused OpenRLHF's
#   Ray + vLLM code "for scaling up PPO RLVR training into the 70B scale" (open-instruct README).
# - **You have to decide how to split the GPUs.** OpenRLHF's tuning guide (0.6.0 README) suggests vLLM : actor : critic
#   = 1 : 1 : 1, e.g. a 70B model on 48 A100s as 16/16/16. Its timing table (1024 prompts, 1 PPO epoch, 70B, 32 A800s)
#   shows 4488.53 s against 10 407.0 s for an optimised DeepSpeed-Chat, a **2.3×** speed-up. The README itself marks
#   these numbers as outdated.
# - **Weights must travel to the generators.** Once sampling runs in another engine, every update has to be copied
#   there: OpenRLHF `--vllm.sync_backend nccl`; in TRL's server mode the trainer calls
#   `vllm_client.update_named_param`. TRL's vLLM support has a colocate mode (the default) and a server mode. It covers
#   GRPO, Online DPO, NashMD, XPO and RLOO; the experimental `PPOConfig` has no vLLM option.
# - **Asynchrony trades freshness for throughput.** OpenRLHF's `--train.async_enable` / `--train.async_queue_size`
#   overlap generation and training ("larger = more off-policy"). `--algo.advantage.is_correction_enable` adds an
#   importance-sampling correction (`tis`, `icepop`, `seq-mask-tis`). The README warns that async training "may
#   affect convergence".
# - **Classic RL separates sampling from learning.** In RLlib, EnvRunners collect samples
#   (`num_env_runners`, `num_envs_per_env_runner`, `rollout_fragment_length`) and Learners train (`num_learners`,
#   `num_gpus_per_learner`). The effective batch is `num_learners × train_batch_size_per_learner`. PPO's default
#   is `num_env_runners=2`.
# - **Synchronous data-parallel PPO scales well.** DD-PPO reports near-linear scaling: a **107×** speed-up on
#   **128 GPUs**, and 2.5 billion steps in under 3 days on 64 GPUs. OpenAI Five ran PPO through its "Rapid"
#   system on batches of about **2 million frames every 2 seconds**.
# - **Asynchronous actor–learner designs.** IMPALA separates acting from learning and corrects the lag with V-trace,
#   reaching **250,000 frames/s** on "thousands of machines". RLlib's APPO follows IMPACT (Luo et al. 2020), a
#   clipped-target variant of the same idea.
#
# These figures are the projects' own (OpenRLHF's README; TRL's vLLM documentation; RLlib's
# source; Wijmans et al. 2020 for DD-PPO; Espeholt et al. 2018 for IMPALA; Berner et al. 2019
# for OpenAI Five); this course has not reproduced them. The parameter tables were checked
# against the libraries' source at the versions named above; defaults change between
# releases, so check the version you install.

# %% [markdown]
# ## Further reading
#
# - L. Ouyang et al., *Training language models to follow instructions with human feedback*, 2022.
# - E. Wijmans et al., *DD-PPO: learning near-perfect PointGoal navigators from 2.5 billion frames*, 2020.
# - L. Espeholt et al., *IMPALA: scalable distributed deep-RL with importance weighted actor-learner architectures*, 2018.
# - OpenRLHF's README and TRL's documentation (the versions named above): the best map of what
#   a production RLHF stack runs today.
