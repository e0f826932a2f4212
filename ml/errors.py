"""The error ``ml`` raises for an input it cannot use; the CLI shows it as a user error."""

from __future__ import annotations


class ModelInputError(ValueError):
    """An input (scenario, rule set, option) that a model or the simulator cannot use.

    ``hint`` says what to do. ``ml`` knows nothing of the CLI: ``plugin`` turns this into
    its own ``InputError`` (one line, exit code 2).

    Examples
    --------
    >>> e = ModelInputError("no scenario named 'x'", hint="use one of: default")
    >>> str(e), e.hint
    ("no scenario named 'x'", 'use one of: default')
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(message)
