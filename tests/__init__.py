"""The test suite; tests/bench.py is the benchmark (python3 -m tests.bench)."""
