"""Shared test helpers."""
import os

# One BLAS thread per process, as the modules set for themselves: the test files import
# numpy before them, and two workers with two BLAS threads each fight over two cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402


@pytest.fixture
def cli(capsys):
    """Run a script's main(argv) in this process: returns (exit status, stdout, stderr).
    Cheaper than a subprocess for checks of the argument handling, which exits early."""
    def call(main, *args):
        try:
            status = main(list(args))
        except SystemExit as stop:
            status = stop.code
        out = capsys.readouterr()
        return status, out.out, out.err
    return call
