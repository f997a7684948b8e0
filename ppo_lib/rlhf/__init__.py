"""PPO on a language model (chapters 8 to 10), one concept per module:

- ``task``: a task as a value (vocabulary, prompts, supervised data, verifier or reward model);
- ``language``: the tiny language of reviews and its hidden gold reward (``language.TASK``, the default;
  ``language.PROMPTED_TASK``: a gold that depends on the prompt's subject);
- ``addition``: 3-digit addition with a scratchpad and its verifier (chapter 10's ``addition.TASK``);
- ``model``: the decoder-only transformer, ``generate`` (tokens, log-probs, masks);
- ``pretrain``: next-token pre-training (the SFT model and the frozen reference);
- ``reward_model``: preference pairs (optionally from a labeller who likes length), the Bradley-Terry
  loss, the reward model, and ensembles of reward models (``RewardEnsemble``);
- ``kl``: per-token KL estimators and the adaptive KL controller;
- ``token_advantages``: per-token rewards, GAE over tokens, whitening over a mask;
- ``ppo``: PPO on tokens (reuses ``ppo_lib.losses``);
- ``best_of_n``: best-of-n sampling and Gao et al.'s over-optimisation fits;
- ``evaluate``: one evaluator (gold, proxy, KL, grammar) for every method; pass@k for verifiable tasks;
- ``dpo``, ``grpo``: chapter 9's successors of PPO; GRPO's 2025 successors are switches of ``grpo``;
- ``cache``: trained models kept on disk, keyed by their settings;
- ``arguments``: the argument checks every entry point shares (NaN, counts, flags, models vs results);
- ``presets``: a larger configuration for a GPU; chapter 10's settings and GRPO variants;
- ``hf``: optional (the ``hf`` extra, ``transformers``): the GRPO trainer on a Hugging Face causal LM.
"""
