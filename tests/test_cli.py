"""The command line: bad input, JSON output, determinism."""
import json

import pytest

import spline_images_factorial_vq as sv
import cli_kit as kit
from tests.helpers import ROOT, run_script

SCRIPT = "spline_images_factorial_vq.py"
SMALL = ["--n-samples", "40", "--n-test", "30", "--steps", "15", "--quiet"]


def run(*args):
    return run_script(SCRIPT, *args)


BAD_INPUT = [
    # values
    ["--n-dims", "0"], ["--n-units-per-dim", "1"], ["--sigma-x", "-1"], ["--sigma-x", "nan"],
    ["--n-samples", "0"], ["--n-test", "abc"], ["--steps", "2.5"], ["--seed", "-3"],
    ["--models", "nonsense"], ["--objective", "mse"], ["--n-dims", "13"],
    ["--n-samples", "10", "--models", "pca24"], ["--seed", "1", "--seeds", "2"],
    # sizes and values that cannot run
    ["--sigma-x", "1e-300"], ["--sigma-x", "1e308"], ["--n-units-per-dim", "1000000"],
    ["--n-samples", "1000000000"], ["--n-test", "1000000000"], ["--steps", "1000000000"],
    ["--n-dims", "1000"], ["--n-dims", "96", "--n-units-per-dim", "4096"],
    # paths, checked before any work
    ["--json", "README.md/sub/out.json"], ["--json", ""], ["--json", "/tmp"],
    ["--json", "/proc/out.json"], ["--bitstream", "/tmp"], ["--bitstream", ""],
    ["--decode", ""], ["--decode", "/no/such/file"], ["--decode", "/tmp"],
    ["--seed", str(2**63)], ["--seeds", "0", str(2**63)],
    # flags that would do nothing
    ["--decode", "README.md", "--seed", "1"], ["--decode", "README.md", "--json", "x.json"],
    ["--decode", "README.md", "--compress"], ["--decode", "README.md", "--n-dims", "3"],
    ["--compress", "--models", "factorial_vq"], ["--bitstream-model", "standard_vq"],
    ["--experiment", "sweep", "--n-dims", "3"], ["--seeds", "1", "1"],
    ["--models", "pca5", "pca5"], ["--n-dim", "3"], ["--jso", "x.json"],
    ["--experiment", "sweep", "sweep"], ["--experiment", "all", "limit"],
    # a flag twice, or two that exclude each other, whatever their values
    ["--seed", "1", "--seed", "2"], ["--seeds", "1", "--seeds", "2"],
    ["--seed", "0", "--seeds", "1"],
    ["--models", "pca24", "--models", "factorial_vq"], ["--steps", "3", "--n-epochs", "4"],
    ["--sigma-x=0.2", "--sigma-x", "0.3"]]


@pytest.mark.parametrize("args", BAD_INPUT, ids=" ".join)
def test_bad_input_exits_2_with_one_line(args, cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, out, err = cli(sv.main, *args)
    lines = err.strip().splitlines()
    assert status == 2 and not out and len(lines) == 1 and "error" in lines[0], err


@pytest.mark.parametrize("args", [["--n-dims", "0"], ["--json", "/proc/out.json"],
                                  ["--sigma-x", "1e308"]])
def test_bad_input_as_a_process_prints_no_traceback(args):
    res = run(*args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_every_seed_the_cli_takes_fits_a_bitstream_header():
    """A seed the CLI accepts must be one --decode accepts back from the header."""
    assert sv.parse_args(["--seed", str(sv.MAX_SEED)])[0].seed == sv.MAX_SEED
    assert sv.HEADER_FIELDS["seed"](sv.MAX_SEED) and not sv.HEADER_FIELDS["seed"](sv.MAX_SEED + 1)
    with pytest.raises(SystemExit):
        sv.parse_args(["--seed", str(sv.MAX_SEED + 1)])


def test_bad_paths_are_named_with_what_is_wrong(cli, tmp_path):
    for path, reason in ((tmp_path, "is a folder"), (tmp_path / "missing.bin", "no such file")):
        status, _, err = cli(sv.main, "--decode", str(path))
        assert status == 2 and reason in err, err


def test_help_explains_every_flag_with_its_default(cli):
    status, out, _ = cli(sv.main, "--help")
    assert status == 0
    for flag in ("--refine", "--workers", "--seed ", "--sigma-x", "--bitstream-model"):
        assert flag in out
    assert out.count("(default:") >= 10


def test_no_output_folder_is_made_when_the_input_is_bad(tmp_path, cli):
    target = tmp_path / "new" / "r.json"
    status, _, _ = cli(sv.main, "--n-dims", "0", "--json", str(target))
    assert status == 2 and not (tmp_path / "new").exists()


def test_values_that_round_to_zero_have_no_minus_sign():
    assert kit.num(-0.001) == "0.00" and kit.num(-0.0001, "+.3f") == "+0.000"
    assert kit.num(-0.02) == "-0.02"


def test_slice_labels_say_the_band_widths():
    assert sv.model_label("separate_slices", 4, 6) == "separate 4 x 8x3 slices"
    assert sv.model_label("separate_slices", 5, 6) == "separate 5 x 8x2-3 slices"


def test_memory_estimate_grows_with_the_code_and_is_refused_beyond_the_machine():
    cfg = dict(n_dims=4, n_units_per_dim=6, n_samples=200, n_test=2000, steps=400, refine=50,
               models=list(sv.MODEL_NAMES))
    small, seconds = sv.estimate_cost(cfg)
    big, _ = sv.estimate_cost({**cfg, "n_units_per_dim": 4096})
    assert small < 2**30 < big and 0.1 < seconds < 30


def test_json_has_the_documented_shape_and_same_seed_same_numbers(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run(*SMALL, "--seeds", "0", "1", "--json", str(a)).returncode == 0
    assert run(*SMALL, "--seeds", "0", "1", "--workers", "1", "--json", str(b)).returncode == 0
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    assert {"config", "versions", "results", "summary"} <= set(ja)
    assert [r["seed"] for r in ja["results"]] == [0, 1]
    for entry in ja["results"]:
        assert set(entry["models"]) == set(sv.MODEL_NAMES)
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
