"""troupe's benchmark harness; run it with ``python -m bench`` (see ``bench/run.py``
and ``docs/performance.rst``). Not collected by pytest (no test files here; pytest's
testpaths is ``tests``)."""
