"""Shared assertions for the checker catalogues (tests/test_checks_*.py)."""


def assert_flagged(exercise, impl, words: str) -> None:
    """The checker rejects ``impl``, names the failing case, says ``words``, and
    hands back the reference so the chapter goes on."""
    result = exercise.evaluate(impl)
    assert not result.passed, f"{exercise.name} accepted {impl.__name__}"
    assert words in result.message, result.message
    assert "Case:" in result.message
    assert result.fn is exercise.reference


def assert_accepted(exercise, impl) -> None:
    result = exercise.evaluate(impl)
    assert result.passed, result.message
    assert result.fn is impl


def ids(rows) -> list[str]:
    return [f"{row[0].name}-{row[1].__name__}" for row in rows]
