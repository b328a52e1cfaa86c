"""pytest-benchmark entry points of ``freshkeep bench`` (run them with ``pytest benchmarks``)."""
