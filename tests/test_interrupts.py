"""Ctrl-C (SIGINT to the process group) during any of the scripts: status 130, one line, no
traceback from the parent or its workers, no process left, nothing half-written.  SIGTERM
or SIGKILL to the parent alone of a run with worker processes: no worker outlives it."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT



def group_size(pgid):
    """Processes in the process group pgid (Linux: from /proc)."""
    n = 0
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[-1].split()          # after the command name
        n += entry.isdigit() and fields[0] != "Z" and int(fields[2]) == pgid
    return n


def start(script, *args, workers=True):
    """Start a script in a group of its own; return once its two workers run (workers=True)
    or once it has printed its first progress line, with that line."""
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not workers:
        first = proc.stderr.readline()              # training has started
        time.sleep(0.5)
        return proc, first
    end = time.monotonic() + 30
    while group_size(proc.pid) < 3 and time.monotonic() < end:
        time.sleep(0.05)
    assert group_size(proc.pid) >= 3, "the worker pool did not start"
    time.sleep(0.2)
    return proc, ""


def group_gone_within(pgid, seconds):
    """True once no process of the group is left running, polled for up to `seconds` (a
    dead process waiting for init to reap it runs nothing and does not count)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if group_size(pgid) == 0:
            return True
        time.sleep(0.05)
    return False


def kill_group(pgid):
    """End whatever is left of a group after a failed check."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def signalled(proc, sig, target, script):
    """Send sig to target (a pid, or minus a group id), then (status, stderr) of proc."""
    os.kill(target, sig)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        pytest.fail(f"{script} hung after signal {sig}")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    return proc.returncode, err


@pytest.mark.parametrize("script,args", [
    ("spline_images_factorial_vq.py", ["--seeds", "0", "1", "2", "--json", "{out}/r.json"]),
    ("visualize_spline_images_factorial_vq.py", ["--outdir", "{out}"]),
    ("make_spline_images_factorial_vq_gif.py", ["--out", "{out}/a.gif"]),
])
def test_interrupt_ends_the_run_cleanly(tmp_path, script, args):
    out = tmp_path / "new"
    args = [a.format(out=out) for a in args]
    proc, first = start(script, *args, workers=script.startswith("spline"))
    status, err = signalled(proc, signal.SIGINT, -proc.pid, script)     # Ctrl-C: the group
    assert status == 130 and (first + err).strip().splitlines()[-1].endswith("interrupted"), err
    with pytest.raises(ProcessLookupError):         # no worker left in the group
        os.killpg(proc.pid, 0)
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("script,args", [
    ("spline_images_factorial_vq.py", ["--seeds", "0", "1", "2", "3", "4"]),
    ("neural_codes.py", ["--one-bit"]),
])
def test_sigterm_to_the_parent_ends_its_workers_with_one_line(tmp_path, script, args):
    out = tmp_path / "r.json"
    proc, _ = start(script, *args, "--json", str(out))
    status, err = signalled(proc, signal.SIGTERM, proc.pid, script)    # the parent alone,
    assert status == 143 and err.strip().splitlines()[-1].endswith("terminated"), err
    assert group_gone_within(proc.pid, 2.0), "a worker outlived its parent"
    assert not out.exists()


def test_workers_die_with_a_killed_parent():
    proc, _ = start("neural_codes.py", "--one-bit")   # each worker's task takes seconds
    os.kill(proc.pid, signal.SIGKILL)               # no handler runs: the kernel ends them
    proc.wait(timeout=5)                            # the parent alone (its pipes stay open
                                                    # while a worker lives)
    gone = group_gone_within(proc.pid, 2.0)
    if not gone:
        kill_group(proc.pid)
    assert gone, "a worker outlived its killed parent"
