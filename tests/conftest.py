"""Shared test helpers."""
import pytest


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
