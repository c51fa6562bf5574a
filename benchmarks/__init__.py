"""Benchmarks: each module here with an async ``main()`` is run by ``make bench``."""
