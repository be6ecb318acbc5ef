"""The benchmark scripts of edgefg: each one measures a figure of the README or the docs on real data
and writes its JSON (results/, benchmarks/out/) and its result block.

Run a script either way, with the same arguments:

    python benchmarks/pareto.py --rounds 5     # what the README, the docs and the Makefile say
    python -m benchmarks.pareto --rounds 5     # from the checkout's root

:mod:`benchmarks.common` is the one place for the paths (REPO, DATA, RUNS, RESULTS, OUT), running the
edgefg CLI as a subprocess, the machine line, writing JSON and writing result blocks (found by their
``<!-- NAME:start -->`` / ``<!-- NAME:end -->`` markers in README.md or docs/**/*.md). Scripts import
it, and each other's public helpers, as ``benchmarks.X``; the one sys.path shim for the first way of
running is :mod:`benchmarks._checkout`.
"""
