"""Exercise checkers, one per exercise of the course.

Usage in a chapter::

    from ppo_lib.checks import check_discounted_return
    discounted_return = check_discounted_return(discounted_return)
"""

from ppo_lib.checks.advantages import (check_bootstrap_values, check_gae, check_normalize_advantages,
                                       check_reward_to_go, check_td_errors)
from ppo_lib.checks.core import Case, CheckResult, Exercise, ExerciseError, Mistake, compare
from ppo_lib.checks.losses import check_reinforce_loss
from ppo_lib.checks.returns import check_discounted_return

ALL_EXERCISES = [check_discounted_return, check_reward_to_go, check_reinforce_loss, check_td_errors,
                 check_bootstrap_values, check_gae, check_normalize_advantages]

__all__ = ["Case", "CheckResult", "Exercise", "ExerciseError", "Mistake", "compare", "ALL_EXERCISES",
           "check_discounted_return", "check_reward_to_go", "check_reinforce_loss", "check_td_errors",
           "check_bootstrap_values", "check_gae", "check_normalize_advantages"]
