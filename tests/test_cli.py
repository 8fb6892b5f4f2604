"""The command line (SPEC section 5): bad input, JSON output, determinism."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "spline_images_factorial_vq.py"
SMALL = ["--n-samples", "40", "--n-test", "30", "--steps", "15", "--quiet"]


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args", [
    ["--n-dims", "0"], ["--n-units-per-dim", "1"], ["--sigma-x", "-1"], ["--sigma-x", "nan"],
    ["--n-samples", "0"], ["--n-test", "abc"], ["--steps", "2.5"], ["--seed", "-3"],
    ["--models", "nonsense"], ["--objective", "mse"], ["--n-dims", "13"],
    ["--n-samples", "10", "--models", "pca24"], ["--json", "/no/such/folder/out.json"],
    ["--seed", "1", "--seeds", "2"]])
def test_bad_input_exits_2_with_one_line(args):
    res = run(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], res.stderr


def test_json_has_the_documented_shape_and_same_seed_same_numbers(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run(*SMALL, "--seeds", "0", "1", "--json", str(a)).returncode == 0
    assert run(*SMALL, "--seeds", "0", "1", "--workers", "1", "--json", str(b)).returncode == 0
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    assert {"config", "versions", "results", "summary"} <= set(ja)
    assert [r["seed"] for r in ja["results"]] == [0, 1]
    for entry in ja["results"]:
        assert set(entry["models"]) == {"standard_vq", "separate_slices", "residual_vq",
                                        "factorial_vq", "pca5", "pca24"}
        for res in entry["models"].values():
            for split in ("heldout", "train"):
                assert {"recon", "code", "total", "exact"} <= set(res[split])
            assert res["seconds"] > 0
    assert "total_amortised" in ja["results"][0]["models"]["factorial_vq"]["heldout"]
    assert set(ja["summary"]["factorial_vq"]) == {"heldout_total_mean", "heldout_total_sd"}
    strip = lambda j: [{n: {k: v for k, v in r.items() if k != "seconds"}
                        for n, r in e["models"].items()} for e in j["results"]]
    assert strip(ja) == strip(jb)                 # identical numbers, 1 or 2 worker processes


def test_exact_is_null_when_enumeration_is_skipped(tmp_path):
    out = tmp_path / "r.json"
    res = run(*SMALL, "--n-dims", "7", "--n-units-per-dim", "5", "--models", "factorial_vq",
              "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stdout
    assert json.loads(out.read_text())["results"][0]["models"]["factorial_vq"]["heldout"]["exact"] is None


def test_meanfield_objective_shows_the_legacy_number_next_to_the_valid_one(tmp_path):
    out = tmp_path / "r.json"
    res = run(*SMALL, "--objective", "meanfield", "--models", "factorial_vq", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "legacy (not a DL)" in res.stdout and "not a code length" in res.stdout
    held = json.loads(out.read_text())["results"][0]["models"]["factorial_vq"]["heldout"]
    assert held["legacy"] < held["total_amortised"]   # dropping the code variance flatters it


def test_progress_lines_go_to_stderr_and_the_table_to_stdout():
    res = run("--n-samples", "40", "--n-test", "30", "--steps", "5", "--models", "pca5")
    assert res.returncode == 0
    assert "held-out F" in res.stderr and "pca5" in res.stderr
    assert res.stdout.startswith("Bits-back description length")
