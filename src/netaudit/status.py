"""pytest's exit statuses, and how an audit's outcome changes them (the plugin, and the
supervisor that started its session, share them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .outcome import Kind

OK, TESTS_FAILED, INTERRUPTED, INTERNAL_ERROR, USAGE_ERROR, NO_TESTS = 0, 1, 2, 3, 4, 5


def worse(status: int, failure: int) -> int:
    """Violations (TESTS_FAILED) fail a passing session; an incomplete audit
    (INTERNAL_ERROR) fails any session whose tests ran to the end. Neither hides a usage
    error, an internal error or an interruption."""
    if status in (OK, NO_TESTS) or (status == TESTS_FAILED and failure == INTERNAL_ERROR):
        return failure
    return status


def with_outcome(status: int, kind: Kind) -> int:
    """The session's status once the audit's outcome is known."""
    from .outcome import Kind

    if kind is Kind.INCOMPLETE:
        return worse(status, INTERNAL_ERROR)
    if kind is Kind.VIOLATIONS:
        return worse(status, TESTS_FAILED)
    return status
