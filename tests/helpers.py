"""What the tests and the benchmark share: running the scripts, finite differences, and
the generated blocks of the README and docs/ pages with the runs they are formatted from.

The benchmark imports this as tests.helpers (run it as `python3 -m tests.bench` from the
repository's folder), the tests the same way.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import spline_images_factorial_vq as sv

ROOT = Path(__file__).resolve().parents[1]
TOL = 0.2
TABLES = {"meanfield": ["--objective", "meanfield", "--models", "standard_vq",
                        "separate_slices", "factorial_vq"]}
# a cheap row of the open-question tables, recomputed here; `python3 -m tests.bench
# --readme` reruns the whole experiment section and the training table (about a minute)
SPOT_ROWS = ((3, 8),)
EXPERIMENT_ARGS = {"training": ["--experiment", "training"],
                   "experiments": ["--experiment", "sweep", "alignment", "annealing", "limit"],
                   "movement": ["--experiment", "movement"]}


# every page a generated block may live in: the README and the docs
PAGES = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))


def block_page(name):
    """The page that holds the block <!-- name:start --> ... <!-- name:end -->."""
    pages = [p for p in PAGES if f"<!-- {name}:start -->" in (ROOT / p).read_text()]
    if len(pages) != 1:
        raise LookupError(f"block {name!r} is in {len(pages)} pages, not one: {pages}")
    return ROOT / pages[0]


def readme_block(name):
    """The text of a generated block, wherever it lives (README.md or docs/)."""
    text = block_page(name).read_text()
    return re.search(rf"<!-- {name}:start -->(.*?)<!-- {name}:end -->", text, re.S).group(1)


def write_block(name, body):
    """Replace a generated block's text in its page."""
    page = block_page(name)
    head, rest = page.read_text().split(f"<!-- {name}:start -->")
    _, tail = rest.split(f"<!-- {name}:end -->")
    page.write_text(f"{head}<!-- {name}:start -->\n{body.strip()}\n<!-- {name}:end -->{tail}")


def numbers_by_row(markdown):
    """{row label: [numbers]} from the Markdown tables in a text; a seconds column (wall
    time, which no two runs share) is left out."""
    rows, header = {}, None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(cells[1]) <= set("-: "):
            keep = cells[1:-1] if header[-1] == "seconds" else cells[1:]
            rows[cells[0]] = [float(x) for c in keep for x in re.findall(r"-?\d+\.\d+", c)]
    return rows


def mismatches(old, new, tol=TOL):
    """Row labels whose numbers differ by more than tol, or that one side lacks."""
    bad = sorted(set(old) ^ set(new))
    for label in set(old) & set(new):
        if len(old[label]) != len(new[label]) or not np.allclose(old[label], new[label],
                                                                 rtol=0, atol=tol):
            bad.append(label)
    return bad


def fresh(*args):
    return subprocess.run([sys.executable, str(ROOT / "spline_images_factorial_vq.py"),
                           "--quiet", "--markdown", *args], capture_output=True, text=True,
                          check=True, timeout=300).stdout


def results_table(data):
    """The headline table, formatted from the JSON of a run of the main CLI."""
    return sv.format_table({r["seed"]: r["models"] for r in data["results"]}, data["config"],
                           markdown=True)


def compress_table(data):
    """The coder table, formatted from the JSON of `--compress`."""
    cfg = {**data["config"], "seed": data["config"]["seeds"][0]}
    return sv.format_compress_table(data["compress"], cfg, markdown=True)


def sigma_table(data):
    """The sigma_x section, formatted from the JSON of `--experiment sigma`."""
    return sv.format_experiments({"sigma": data["sigma"]}, data["config"]["seeds"], markdown=True)


def earlier_table(data):
    """The earlier recipe's section, formatted from the JSON of `--experiment earlier`."""
    return sv.format_experiments({"earlier": data["earlier"]}, data["config"]["seeds"],
                                 markdown=True)


# Blocks formatted from a committed run in viz/ (written by the CLI with these arguments and
# --json): the tests refit a part of each, `python3 -m tests.bench --readme` reruns them whole.
JSON_TABLES = {"results": (["--seeds", "0", "1", "2", "3", "4"], "viz/results.json",
                           results_table),
               "compress": (["--compress"], "viz/compress.json", compress_table),
               "sigma": (["--experiment", "sigma"], "viz/sigma.json", sigma_table),
               "earlier": (["--experiment", "earlier"], "viz/earlier.json", earlier_table)}


def committed(name):
    with open(ROOT / JSON_TABLES[name][1]) as f:
        return json.load(f)


# The networks train in float32, and their training follows BLAS's kernels and thread count,
# not only numpy's: seed 0's VQ-VAE 4x6 came out 126.8 bits per image on an AVX-512 machine
# and 128.9, 129.8 and 131.1 on an AVX2 one (OpenBLAS's Sandybridge kernels, 2 threads,
# 1 thread); the seeds 0-4 spread 2.8 bits (standard deviation).  Against the committed run
# a fresh fit can only be checked to within that drift, which catches a broken VQ-VAE, not
# a small change.  (Trained in float64 the same fit is 128.5876 bits in all four settings.)
FLOAT32_TOL = 8.0


NEURAL_JSON = {"scoreboard": ["viz/scoreboard.json"],
               "neural_seeds": ["viz/neural_seeds.json"],
               "neural_variants": ["viz/neural_variants.json"],
               "neural_sweep": ["viz/neural_sweep.json"],
               "neural_latents": ["viz/neural_latents_2.json", "viz/neural_latents_10.json"],
               "acn": ["viz/acn.json"], "one_bit": ["viz/one_bit_vae.json"],
               "beta": ["viz/beta_vae.json"], "acn_variants": ["viz/acn_variants.json"],
               "vq_codes": ["viz/vq_codes_200.json", "viz/vq_codes_2000.json",
                            "viz/vq_codes_20000.json"],
               "choices_tau": ["viz/choices_tau.json"],
               "choices_ar_rate": ["viz/choices_ar_rate.json"],
               "choices": ["viz/choices.json"]}


def neural_block(name, paths=None):
    """A block of the modern codes, formatted from its JSON files."""
    import neural_codes as nc
    tables = []
    for path in paths or [ROOT / p for p in NEURAL_JSON[name]]:
        with open(path) as f:
            tables.append(nc.report(json.load(f), markdown=True))
    return "\n\n".join(tables)


# ----------------------------------------------------------------------------- run times
#
# Every command behind an artifact, timed by `python3 -m tests.bench --times` into
# viz/timings.json, whose block in docs/reproduce.md is the one place the docs take run times
# from.  (label, script and arguments, how many runs: the median is reported).
TIMED = (
    ("results table, seed 0", ["spline_images_factorial_vq.py"], 3),
    ("results table, seeds 0-4", ["spline_images_factorial_vq.py", "--seeds", "0", "1", "2",
                                  "3", "4"], 3),
    ("coder table (--compress)", ["spline_images_factorial_vq.py", "--compress"], 3),
    ("--experiment training", ["spline_images_factorial_vq.py", "--experiment", "training"], 1),
    ("--experiment sweep alignment annealing limit", ["spline_images_factorial_vq.py",
     "--experiment", "sweep", "alignment", "annealing", "limit"], 1),
    ("--experiment movement", ["spline_images_factorial_vq.py", "--experiment", "movement"], 1),
    ("--experiment sigma", ["spline_images_factorial_vq.py", "--experiment", "sigma"], 1),
    ("--experiment all", ["spline_images_factorial_vq.py", "--experiment", "all"], 1),
    ("--experiment earlier", ["spline_images_factorial_vq.py", "--experiment", "earlier"], 3),
    ("the paper's table searched", ["paper_table.py"], 1),
    ("six figures (a fresh training run)", ["visualize_spline_images_factorial_vq.py",
                                            "--outdir", "{tmp}"], 3),
    ("training GIF", ["make_spline_images_factorial_vq_gif.py", "--out", "{tmp}/a.gif"], 3),
    ("experiment figures from viz/experiments.json", ["visualize_spline_images_factorial_vq.py",
     "--experiments", "viz/experiments.json", "--outdir", "{tmp}"], 3),
    ("neural_codes.py, seed 0", ["neural_codes.py"], 1),
    ("neural_codes.py --seeds 0 1 2 3 4", ["neural_codes.py", "--seeds", "0", "1", "2", "3",
                                          "4"], 1),
    ("VQ-VAE variants, seeds 0-4", ["neural_codes.py", "--seeds", "0", "1", "2", "3", "4",
     "--models", "vq_vae_4x6", "vq_vae_4x64", "vq_vae_residual_4x6", "factorial_vq"], 1),
    ("VAE at N = 2000, one latent count", ["neural_codes.py", "--n-samples", "2000",
                                           "--latents", "2", "--models", "vae"], 1),
    ("--sweep (seed 0)", ["neural_codes.py", "--sweep"], 1),
    ("--scoreboard", ["neural_codes.py", "--scoreboard"], 1),
    ("--one-bit", ["neural_codes.py", "--one-bit"], 1),
    ("--choose rate mix", ["neural_codes.py", "--choose", "rate", "mix"], 1),
    ("--choose tau", ["neural_codes.py", "--choose", "tau"], 1),
    ("--choose ar_rate", ["neural_codes.py", "--choose", "ar_rate"], 1),
    ("--acn, one seed (two sizes)", ["neural_codes.py", "--acn", "--seed", "0"], 1),
    ("--beta (five seeds)", ["neural_codes.py", "--beta"], 1),
    ("--acn-variants (five seeds)", ["neural_codes.py", "--acn-variants"], 1),
    ("VQ codes, N = 2000, seeds 0-4", ["neural_codes.py", "--seeds", "0", "1", "2", "3", "4",
     "--n-samples", "2000", "--models", "vq_vae_4x6", "vq_vae_4x6_loss", "vq_vae_4x64",
     "gumbel_vq_vae_4x6", "factorial_vq"], 1),
    ("VQ codes, N = 20000, seeds 0-4", ["neural_codes.py", "--seeds", "0", "1", "2", "3", "4",
     "--n-samples", "20000", "--models", "gumbel_vq_vae_4x6", "vq_vae_4x6", "factorial_vq"], 1),
    ("the test suite", ["-m", "pytest", "-q", "-p", "no:cacheprovider"], 1),
)


def timings_table(data):
    """The timings block, formatted from viz/timings.json.  A run whose time is its own
    record (its JSON's wall_seconds, from a run that shared the machine with others: an
    upper bound) carries a note saying so."""
    rows = [f"| {label} | `python3 {' '.join(r['command'])}` | {r['seconds']:.1f} s"
            f"{' (' + r['note'] + ')' if r.get('note') else ''} | {r['runs']} |"
            for label, r in data["runs"].items()]
    return "\n".join([f"*Wall time on {data['machine']}, measured {data['date']} by `python3 -m "
                      f"tests.bench --times`: the median over the runs counted; a note marks "
                      f"a time taken from the run's own record instead*", "",
                      "| run | command | wall time | runs |", "| --- | --- | ---: | ---: |",
                      *rows])


# ----------------------------------------------------------------------------- running code

# numpy's AVX-512 kernels off: a file written with the default kernels must decode here too
NO_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


def run_script(script, *args, timeout=120, env=None):
    """Run one of the project's scripts in a fresh process: the CompletedProcess, text."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env=None if env is None else {**os.environ, **env})


def run_python(code, *args, env=None, timeout=120):
    """Run Python source in a fresh process in the repository's folder."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def finite_difference(f, theta, idx, h=1e-6):
    """Central differences of the scalar f() with respect to theta[idx], in place."""
    out = []
    for i in idx:
        old = theta[i]
        theta[i] = old + h
        up = f()
        theta[i] = old - h
        down = f()
        theta[i] = old
        out.append((up - down) / (2 * h))
    return np.array(out)


def rewrite(path, edit=lambda header: None, edit_rest=lambda rest: rest):
    """Change a bitstream's header or the bytes after it (parameters and message) and
    recompute its checksum, as a hand edit would."""
    import hashlib
    blob = path.read_bytes()
    body = blob[37:]
    n = int.from_bytes(body[:4], "little")
    header = json.loads(body[4:4 + n])
    edit(header)
    head = json.dumps(header).encode()
    body = len(head).to_bytes(4, "little") + head + edit_rest(body[4 + n:])
    path.write_bytes(blob[:5] + hashlib.sha256(body).digest() + body)
