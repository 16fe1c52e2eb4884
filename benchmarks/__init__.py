"""Benchmarks that a user can rerun: ``python -m benchmarks.eval``, ``python -m benchmarks.search`` and
``python -m benchmarks.extract``. Each prints a table and writes JSON (``--out``, default under
``runs/benchmarks/``); ``--quick`` is the small version that CI runs."""
