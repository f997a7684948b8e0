"""Exercise checkers, one per exercise of the course.

Usage in a chapter::

    from ppo_lib.teaching.checks import check_discounted_return
    discounted_return = check_discounted_return(discounted_return)
"""

from ppo_lib.teaching.checks.advantages import (check_bootstrap_values, check_gae, check_normalize_advantages,
                                       check_reward_to_go, check_td_errors)
from ppo_lib.teaching.checks.beyond_ppo import (check_dpo_loss, check_group_advantages, check_k3_kl,
                                      check_rloo_advantages)
from ppo_lib.teaching.checks.core import Case, CheckResult, Exercise, ExerciseError, Mistake, compare
from ppo_lib.teaching.checks.details import check_clipped_value_loss, check_running_mean_std
from ppo_lib.teaching.checks.losses import check_reinforce_loss
from ppo_lib.teaching.checks.policy_optimization import (check_adaptive_kl_beta, check_clipped_surrogate,
                                                check_conjugate_gradient, check_fisher_vector_product,
                                                check_kl_penalty_objective, check_probability_ratio)
from ppo_lib.teaching.checks.returns import check_discounted_return
from ppo_lib.teaching.checks.rlhf import (check_adaptive_kl_update, check_bradley_terry_loss, check_gather_logprobs,
                                check_masked_whiten, check_per_token_rewards)

ALL_EXERCISES = [check_discounted_return, check_reward_to_go, check_reinforce_loss, check_td_errors,
                 check_bootstrap_values, check_gae, check_normalize_advantages, check_conjugate_gradient,
                 check_fisher_vector_product, check_probability_ratio, check_clipped_surrogate,
                 check_kl_penalty_objective, check_adaptive_kl_beta, check_running_mean_std,
                 check_clipped_value_loss, check_gather_logprobs, check_per_token_rewards, check_bradley_terry_loss,
                 check_masked_whiten, check_adaptive_kl_update, check_dpo_loss, check_group_advantages,
                 check_rloo_advantages, check_k3_kl]

__all__ = ["Case", "CheckResult", "Exercise", "ExerciseError", "Mistake", "compare", "ALL_EXERCISES",
           "check_discounted_return", "check_reward_to_go", "check_reinforce_loss", "check_td_errors",
           "check_bootstrap_values", "check_gae", "check_normalize_advantages", "check_conjugate_gradient",
           "check_fisher_vector_product", "check_probability_ratio", "check_clipped_surrogate",
           "check_kl_penalty_objective", "check_adaptive_kl_beta", "check_running_mean_std",
           "check_clipped_value_loss", "check_gather_logprobs", "check_per_token_rewards",
           "check_bradley_terry_loss", "check_masked_whiten", "check_adaptive_kl_update", "check_dpo_loss",
           "check_group_advantages", "check_rloo_advantages", "check_k3_kl"]

# --- chapters 5 and 7: the capstone (the whole PPO update) and the Gaussian policy ---
from ppo_lib.teaching.checks.capstone import check_ppo_update  # noqa: E402
from ppo_lib.teaching.checks.gaussian import check_gaussian_log_prob_entropy  # noqa: E402

ALL_EXERCISES += [check_ppo_update, check_gaussian_log_prob_entropy]
__all__ += ["check_ppo_update", "check_gaussian_log_prob_entropy"]

# --- chapter 10: pass@k, the three loss aggregations of GRPO's successors, a format reward ---
from ppo_lib.teaching.checks.rlvr import check_aggregate_loss, check_format_reward, check_pass_at_k  # noqa: E402

ALL_EXERCISES += [check_pass_at_k, check_aggregate_loss, check_format_reward]
__all__ += ["check_pass_at_k", "check_aggregate_loss", "check_format_reward"]

# --- chapter 8: one PPO iteration on tokens, rollout to update (exercise 8.6), and a diagnosis (8.7) ---
from ppo_lib.teaching.checks.rlhf_diagnosis import check_rlhf_diagnosis  # noqa: E402
from ppo_lib.teaching.checks.rlhf_iteration import check_ppo_iteration  # noqa: E402

ALL_EXERCISES += [check_ppo_iteration, check_rlhf_diagnosis]
__all__ += ["check_ppo_iteration", "check_rlhf_diagnosis"]
