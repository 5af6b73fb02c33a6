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


class OptionError(UsageError):
    """A bad value of one option of the Python API (``per_gpu``, ``fuse``, ``time`` ...).

    The message names the option as the API does (``per_gpu 0: must be at least 1``);
    the CLI, which knows the flag that set it, prints ``--per-gpu 0: must be at least 1``
    instead (:meth:`as_flag`), so core code never speaks of flags."""

    def __init__(self, option: str, message: str, value=None, sep: str = ": "):
        self.option, self.message, self.value, self.sep = option, message, value, sep
        super().__init__(self._render(option))

    def _render(self, name: str) -> str:
        return f"{name} {self.value}{self.sep}{self.message}" if self.value is not None else f"{name} {self.message}"

    def as_flag(self, flag: str) -> str:
        return self._render(flag)
