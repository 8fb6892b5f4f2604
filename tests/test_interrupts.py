"""Ctrl-C (SIGINT to the process group) during any of the three scripts: status 130, one
line, no traceback from the parent or its workers, no process left, nothing half-written."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT



@pytest.mark.parametrize("script,args", [
    ("spline_images_factorial_vq.py", ["--seeds", "0", "1", "2", "--json", "{out}/r.json"]),
    ("visualize_spline_images_factorial_vq.py", ["--outdir", "{out}"]),
    ("make_spline_images_factorial_vq_gif.py", ["--out", "{out}/a.gif"]),
])
def test_interrupt_ends_the_run_cleanly(tmp_path, script, args):
    out = tmp_path / "new"
    proc = subprocess.Popen([sys.executable, str(ROOT / script),
                             *[a.format(out=out) for a in args]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    first = proc.stderr.readline()                  # training has started ...
    time.sleep(0.5)                                 # ... and its worker pool is up
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, rest = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{script} hung after Ctrl-C")
    err = first + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted")
    with pytest.raises(ProcessLookupError):         # no worker left in the group
        os.killpg(proc.pid, 0)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
