"""``ablate`` with two test models registered beside the project's own, for tests that
need a real model to misbehave in a real sweep:

* ``OOMBPR``: RecBole's BPR whose first training batch raises torch's own
  ``OutOfMemoryError`` (the exception CUDA's caching allocator raises), with its message;
* ``NoisyBPR``: RecBole's BPR whose initial embeddings get noise from the operating
  system's random source, so that no two of its runs give the same numbers.

Run it as ``python tests/testmodels/run_ablate.py ARGS`` (the arguments of ``ablate``).
Nothing in ablate knows of it: the ``models`` package is extended the way any package is
(its ``__path__``; ``misbehaving.py`` here becomes ``models.misbehaving``), and the local
executor's workers, started by ``spawn``, run this file's top level again (as
``__mp_main__``), so they know the models too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import models

HERE = Path(__file__).resolve().parent
TEST_MODELS = ("OOMBPR", "NoisyBPR")

if str(HERE) not in models.__path__:
    models.__path__.append(str(HERE))
    models.NAMES = (*models.NAMES, *TEST_MODELS)
    models._WHERE.update(dict.fromkeys(TEST_MODELS, "misbehaving"))
    _project_defaults = models.default_config_file

    def default_config_file(name: str) -> str | None:
        return str(HERE / "config.yaml") if name in TEST_MODELS else _project_defaults(name)

    models.default_config_file = default_config_file

if __name__ == "__main__":
    from ablate.cli import main

    sys.exit(main())
