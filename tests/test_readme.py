"""The README's result tables are the program's output: rerun it and compare."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = {
    "results": ["--seeds", "0", "1", "2", "3", "4"],
    "meanfield": ["--objective", "meanfield", "--models", "standard_vq", "separate_slices",
                  "factorial_vq"],
    "compress": ["--compress"],
}


def numbers_by_row(markdown):
    """{model label: [numbers]} from Markdown table rows, leaving out the seconds column."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and not set(cells[1]) <= set("-: "):
            if cells[0] == "model":
                continue
            rows[cells[0]] = [float(x) for c in cells[1:-1] for x in re.findall(r"-?\d+\.\d+", c)]
    return rows


def test_readme_experiments_match_a_fresh_run():
    """Every number of the open-question section: tables, scores in captions, the limit."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- experiments:start -->(.*?)<!-- experiments:end -->", readme,
                      re.S).group(1)
    fresh = subprocess.run([sys.executable, str(ROOT / "spline_images_factorial_vq.py"),
                            "--quiet", "--markdown", "--experiment", "all"], capture_output=True,
                           text=True, check=True, timeout=300).stdout
    number = r"-?\d+\.\d+"
    old, new = re.findall(number, block), re.findall(number, fresh)
    assert len(old) == len(new) > 100
    np.testing.assert_allclose(np.array(old, float), np.array(new, float), atol=0.011)


@pytest.mark.parametrize("name", TABLES)
def test_readme_table_matches_a_fresh_run(name):
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {name}:start -->(.*?)<!-- {name}:end -->", readme, re.S).group(1)
    fresh = subprocess.run([sys.executable, str(ROOT / "spline_images_factorial_vq.py"), "--quiet",
                            "--markdown", *TABLES[name]], capture_output=True, text=True,
                           check=True, timeout=120).stdout
    old, new = numbers_by_row(block), numbers_by_row(fresh)
    assert old.keys() == new.keys() and old
    for label in new:
        assert old[label] == pytest.approx(new[label], abs=0.011), label
