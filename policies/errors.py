"""Typed policy errors. Loading errors are loud (startup); evaluation errors never escape: they deny."""

from __future__ import annotations


class PolicyError(Exception):
    """Base class of policy failures, with a snake_case `code` and a human `message`."""

    code: str = "policy_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PolicyLoadError(PolicyError):
    """The policy file or its schema is missing, unparsable, fails validation, or lacks
    @id/@message/version."""

    code = "policy_invalid"


class InvalidFacts(PolicyError):
    """The facts cannot be judged (NaN distance, negative face count, unknown consent state...)."""

    code = "policy_invalid_facts"
