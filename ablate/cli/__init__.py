"""``ablate`` command line: a thin layer that wires one module per command.

Each command lives in its own file in this package (``run.py``, ``table.py``, ...) and
only translates options into calls on the library (spec, plan, store, scheduler,
report). Importing this package registers every command module found here, so adding
a command is adding a file. Errors are translated to one line once, in ``_app``.
"""

from __future__ import annotations

import importlib
import pkgutil

from ablate.cli._app import app

for _mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _mod.name.startswith("_") and _mod.name != "options":
        importlib.import_module(f"{__name__}.{_mod.name}")


def main() -> None:
    app()


__all__ = ["app", "main"]
