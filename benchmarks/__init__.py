"""Benchmarks of conformer-xai: ``python -m benchmarks`` (see :mod:`benchmarks.explain_speed`).

Speed goals live here, not in the tests: the numbers depend on the machine, so each run measures
every contender side by side, in one process, on the same machine, and reports ratios.
"""
