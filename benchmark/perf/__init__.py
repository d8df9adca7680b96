"""Performance benchmarks (scripts, not timed tests).

- ``python -m npasbench.perf.trainer_overhead``: per-step cost of the common trainer against a bare
  PyTorch loop on the same model, data, optimizer and threads.
"""
