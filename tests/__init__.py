"""The test suite is a package: helpers are imported by their package path
(``from tests.specs import tiny_yaml``, ``from tests.slurm.slurm_helpers import cli``),
never by a bare module name. pytest imports each test module under its package name and
puts the repository root, the folder above the outermost ``__init__.py``, on ``sys.path``
(``python -m pytest`` and plain ``pytest`` alike).
"""
