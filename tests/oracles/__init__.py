"""Oracles: what ablate's numbers are checked against, independent of ablate's own code
paths. ``bare_recbole.py`` runs a config the way RecBole's quick start does, in a fresh
process; ``recbole_runs`` writes a sweep spec, runs it that way and through ``ablate
run``, and compares the stored metrics. The reference tests assert the two agree; the
benchmarks in ``bench/`` import the same module to time the two ways.
"""
