"""The typed errors ablate raises. The CLI turns each into one line and exit code 2.

Library code raises; only ``ablate.cli`` prints. That keeps every message in one shape
(``ablate: error: <where>: <what>``) and keeps tracebacks away from users.
"""

from __future__ import annotations


class AblateError(Exception):
    """Any error a user can fix. ``str(err)`` is the whole one-line message."""

    exit_code = 2


class SpecError(AblateError):
    """A spec file that cannot be read, parsed, validated or expanded."""

    def __init__(self, path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class StoreError(AblateError):
    """The results store cannot be opened or is not in the expected state."""


class UsageError(AblateError):
    """Bad command-line arguments that Typer itself cannot catch."""
