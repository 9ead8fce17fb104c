"""Benchmarks for aiocircuit, run with ``python -m benchmarks`` (or ``nox -s bench``).

They exist to keep one promise honest: a healthy circuit is free. Each benchmark compares
aiocircuit against a minimal hand-written equivalent measured in the same process run and
reports ratios, never bare absolute times, as its verdict, because absolute nanoseconds on
a shared machine say more about the machine than about the code. They never fail CI on
noise: a missed target is reported, not raised.
"""
