"""Exercise checkers, one per exercise of the course.

Usage in a chapter::

    from ppo_lib.checks import check_discounted_return
    discounted_return = check_discounted_return(discounted_return)
"""

from ppo_lib.checks.core import Case, CheckResult, Exercise, ExerciseError, Mistake, compare
from ppo_lib.checks.returns import check_discounted_return

__all__ = ["Case", "CheckResult", "Exercise", "ExerciseError", "Mistake", "compare",
           "check_discounted_return"]
