"""The one exception family for what a user can cause or fix."""

from __future__ import annotations


class FwsiemError(Exception):
    """An error a user can act on.

    The message names what failed, where (URL, index, file and line) and what to do.
    The CLI prints it as one line and exits with ``exit_code``.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class ConfigError(FwsiemError):
    """The configuration file or an option is invalid."""

    exit_code = 2


class EngineUnavailable(FwsiemError):
    """The cluster could not be reached or did not answer in time."""

    exit_code = 3


class EngineRequestError(FwsiemError):
    """The cluster answered, but refused a request (mapping, permission, bad query)."""

    exit_code = 4


class EngineLaunchError(FwsiemError):
    """A local engine could not be resolved, started or stopped."""

    exit_code = 5


class InsufficientData(FwsiemError):
    """There is too little data for the requested training or evaluation."""

    exit_code = 6


class ArtifactIntegrityError(FwsiemError):
    """A model artifact's hash does not match the registry: it is refused."""

    exit_code = 7


class InputError(FwsiemError):
    """An input file or value cannot be read or parsed."""

    exit_code = 2
