"""Benchmark: wall time of the main commands (not collected by pytest).

    python3 -m tests.bench [--repeats 3]

Prints the median wall time of each command over the repeats, measured around the whole
process (interpreter start, imports, training, evaluation, drawing), as a user would see
it: the default run, the five-seed run, the six figures and the training GIF (these two
write into a temporary folder), the coder's encode + decode time (from its JSON), tracing
one step of each training phase of the factorial VQ for its data movement, the sigma_x
sweep, and the open-question experiments.

    python3 -m tests.bench --readme

instead reruns the full-size results, coder, training, open-question and sigma_x runs (about
three minutes) and checks every number of those sections of the pages against them, with the test
suite's tolerance (scaled up below sigma_x = 0.15, see check_sigma); the suite itself refits
only a few cheap rows.

    python3 -m tests.bench --write-readme

reruns every command behind a generated table and writes its output into its page in place
(the modern-code tables from the committed JSON files in viz/, see --neural).

    python3 -m tests.bench --scoreboard

times the 8-bit scoreboard (neural_codes.py --scoreboard), without the VAEs and whole, with
every code's model coded and the small 8-bit VAEs of the model-counted total (target 10
minutes), and checks the pages' scoreboard against the fresh run.

    python3 -m tests.bench --acn        python3 -m tests.bench --one-bit

time the ACN run at N = 20000 (one seed, target 5 minutes) and the one-bit experiment
(five seeds, about 12 minutes; target 15 minutes a seed), and check them against the
committed viz/acn.json and the pages.

    python3 -m tests.bench --paper-table

times the search for the paper's reading (paper_table.py, target 10 minutes) and checks its
block in docs/paper.md against the fresh run.

    python3 -m tests.bench --neural

instead times the modern codes (neural_codes.py): the default run, a VAE training step at
batch 128, the five-seed N = 200 run and the training-size sweep (about 12 minutes) with its
peak memory, and checks the pages' modern-code tables against these fresh runs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tests.helpers import NEURAL_JSON, ROOT, neural_block

CODERS = ("standard_vq", "separate_slices", "residual_vq", "factorial_vq", "factorial_vq_amortised")
TMP = tempfile.mkdtemp()
RUNS = {
    "default run (seed 0, all models, 2000 held-out, exact DLs)":
        ["spline_images_factorial_vq.py"],
    "five seeds (--seeds 0 1 2 3 4, 2 workers)":
        ["spline_images_factorial_vq.py", "--seeds", "0", "1", "2", "3", "4"],
    "six figures (visualize, seed 0)":
        ["visualize_spline_images_factorial_vq.py", "--outdir", TMP],
    "training GIF (seed 0, --snapshot-every 2)":
        ["make_spline_images_factorial_vq_gif.py", "--out", os.path.join(TMP, "a.gif")],
}


def wall(args):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / args[0]), "--quiet", *args[1:]], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def check_readme_experiments():
    """Every number of the pages' training and experiment sections against fresh
    full-size runs."""
    from tests.helpers import (EXPERIMENT_ARGS, JSON_TABLES, TOL, fresh, mismatches,
                             numbers_by_row, readme_block)
    import numpy as np
    import re
    number = r"-?\d+\.\d+"
    status = 0
    for block, (args, _, _) in JSON_TABLES.items():
        if block == "sigma":
            status |= check_sigma(args)
            continue
        t0 = time.perf_counter()
        old, new = numbers_by_row(readme_block(block)), numbers_by_row(fresh(*args))
        bad = mismatches(old, new)
        print(f"block {block}: {len(old)} rows against a fresh run (tolerance {TOL}): "
              f"{'ok' if not bad else 'FAIL: ' + ', '.join(bad)}; {time.perf_counter() - t0:.1f} s")
        status |= bool(bad)
    for block, args in EXPERIMENT_ARGS.items():
        t0 = time.perf_counter()
        old = np.array(re.findall(number, readme_block(block)), float)
        new = np.array(re.findall(number, fresh(*args)), float)
        if len(old) != len(new):
            print(f"block {block}: {len(old)} numbers, a fresh run prints {len(new)}: FAIL")
            status = 1
            continue
        worst = float(np.abs(old - new).max())
        ok = worst <= TOL
        print(f"block {block}: {len(old)} numbers, largest difference {worst:.3f} bits "
              f"(tolerance {TOL}): {'ok' if ok else 'FAIL'}; {time.perf_counter() - t0:.1f} s")
        status |= not ok
    return status


def check_sigma(args):
    """viz/sigma.json (the pages' sigma_x section) against a fresh sweep: every mean and sd
    of the table and of the rankings, and every count of seeds on which a ranking holds.

    The tolerance is TOL at sigma_x >= 0.15 and TOL (0.15 / sigma_x)^2 below: a fitted model
    follows the CPU's floating-point kernels in its last bits, hard assignments can turn that
    into a different codebook, and the same change in squared error costs (0.15 / sigma_x)^2
    times more bits at sigma_x than at 0.15 (the recon term is SSE / (2 sigma_x^2 ln 2)).
    Measured between the committed run and a rerun on another CPU (same numpy and scipy):
    0.011 bits at most from 0.1 up, 0.67 at 0.05 (the residual chain's sd; 1.95 bits on its
    seed 1, out of 850)."""
    from tests.helpers import TOL, committed, fresh
    t0 = time.perf_counter()
    path = os.path.join(TMP, "sigma.json")
    fresh(*args, "--json", path)
    with open(path) as f:
        new = json.load(f)["sigma"]
    old = committed("sigma")["sigma"]
    bad, worst, n = [], 0.0, 0
    if new["sigmas"] != old["sigmas"] or new["models"] != old["models"]:
        bad.append("sigmas or models")
    for sigma in old["sigmas"]:
        key, tol = f"{sigma:g}", TOL * max(1.0, (0.15 / sigma) ** 2)
        pairs = [(f"{m} {f}", old["table"][key][m][f], new["table"][key][m][f])
                 for m in old["models"] for f in old["table"][key][m]]
        pairs += [(f"{r} {f}", old["rankings"][r][key][f], new["rankings"][r][key][f])
                  for r in old["rankings"] for f in ("diff_mean", "diff_sd")]
        for label, a, b in pairs:
            n += 1
            worst = max(worst, abs(a - b) / tol)
            if abs(a - b) > tol:
                bad.append(f"{label} at {key} ({a:.2f} against {b:.2f}, tolerance {tol:.2f})")
        bad += [f"{r} at {key}: {old['rankings'][r][key]['seeds_holding']} seeds against "
                f"{new['rankings'][r][key]['seeds_holding']}" for r in old["rankings"]
                if old["rankings"][r][key]["seeds_holding"]
                != new["rankings"][r][key]["seeds_holding"]]
    if new["paper_sigma"] != old["paper_sigma"]:
        bad.append(f"nearest sigma_x {old['paper_sigma']} against {new['paper_sigma']}")
    print(f"block sigma: {n} means and sds against a fresh sweep (tolerance {TOL} bits, "
          f"scaled by (0.15 / sigma_x)^2 below 0.15; largest difference {worst:.2f} of it) and "
          f"every seed count: {'ok' if not bad else 'FAIL: ' + '; '.join(bad)}; "
          f"{time.perf_counter() - t0:.1f} s")
    return int(bool(bad))


NEURAL_RUNS = {"neural_seeds": [["--seeds", "0", "1", "2", "3", "4"]],
               "neural_variants": [["--seeds", "0", "1", "2", "3", "4", "--models", "vq_vae_4x6",
                                    "vq_vae_4x64", "vq_vae_residual_4x6", "factorial_vq"]],
               "neural_sweep": [["--sweep"]],
               "neural_latents": [["--n-samples", "2000", "--latents", str(L), "--models", "vae"]
                                  for L in (2, 10)],
               "choices": [["--choose"]]}


def bench_neural():
    """Wall time, speed and peak memory of the modern codes; the pages' tables of them
    against the fresh runs."""
    import resource
    import numpy as np
    import neural_models as nm
    from tests.helpers import FLOAT32_TOL, mismatches, numbers_by_row, readme_block
    t = wall(["neural_codes.py"])
    print(f"neural codes default run (N = 200, seed 0, 4 models): {t:.2f} s wall")
    X, V, _, _ = nm.load_split(0, 20000, n_test=10)
    for name, model in (("Gaussian VAE", nm.GaussianVAE(5, nm.HIDDEN, rng=np.random.default_rng(0))),
                        ("VQ-VAE 4x6", nm.VQVAE(4, 6, rng=np.random.default_rng(0)))):
        model = model.astype(np.float32)
        if name.startswith("VQ"):
            model.init_codebooks(X[:2000].astype(np.float32), np.random.default_rng(0))
        h = nm.train_network(model, X.astype(np.float32), V[:100].astype(np.float32),
                             np.random.default_rng(1), 3000, batch=128, eval_every=10**6)
        print(f"{name} training step, batch 128, hidden {nm.HIDDEN}, float32: "
              f"{h['steps_run'] / h['seconds']:.0f} steps per second (3000 steps)")
    status = 0
    for block, runs in NEURAL_RUNS.items():
        paths = []
        for i, args in enumerate(runs):
            paths.append(os.path.join(TMP, f"{block}_{i}.json"))
            t = wall(["neural_codes.py", *args, "--json", paths[-1]])
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
            print(f"neural_codes.py {' '.join(args)}: {t:.1f} s wall, peak memory of any run "
                  f"so far {rss:.2f} GB")
        old, new = numbers_by_row(readme_block(block)), numbers_by_row(neural_block(block, paths))
        bad = mismatches(old, new, tol=FLOAT32_TOL)
        drift = max((abs(a - b) for k in old if k in new for a, b in zip(old[k], new[k])),
                    default=0.0)
        print(f"block {block} against the fresh run (tolerance {FLOAT32_TOL}: the networks' "
              f"float32 training follows the CPU's kernels; largest difference {drift:.2f}): "
              f"{'ok' if not bad else 'FAIL: ' + ', '.join(bad)}")
        status |= bool(bad)
    return status


def write_readme():
    """Every generated block of the README and docs/ pages (between its <!-- name:start/end
    --> markers), rerun and written in place."""
    from tests.helpers import EXPERIMENT_ARGS, JSON_TABLES, TABLES, block_page, fresh, write_block
    blocks = {**{k: args for k, (args, _, _) in JSON_TABLES.items()}, **TABLES, **EXPERIMENT_ARGS}
    for block, args in blocks.items():
        t0 = time.perf_counter()
        if block in JSON_TABLES:          # the tests compare these with their committed JSON
            _, json_path, table = JSON_TABLES[block]
            fresh(*args, "--json", str(ROOT / json_path))
            with open(ROOT / json_path) as f:
                body = table(json.load(f))
        else:
            body = fresh(*args)
        write_block(block, body)
        print(f"{block_page(block).name} {block}: written ({time.perf_counter() - t0:.1f} s)")
    for block in NEURAL_JSON:
        write_block(block, neural_block(block))
        print(f"{block_page(block).name} {block}: written from {NEURAL_JSON[block]}")
    return 0


def bench_scoreboard():
    """Wall time of the 8-bit scoreboard, its 1994 part alone and whole, and the
    scoreboard block against the fresh whole run."""
    import neural_codes as nc
    from tests.helpers import FLOAT32_TOL, TOL, mismatches, numbers_by_row, readme_block
    t = wall(["neural_codes.py", "--scoreboard", "--models", *nc.SCORE_CORE])
    print(f"scoreboard without the VAE (6 models x {len(nc.SCORE_SIGMAS)} sigmas, coders, "
          f"compressors, limit): {t:.1f} s wall")
    path = os.path.join(TMP, "s.json")
    t = wall(["neural_codes.py", "--scoreboard", "--json", path])
    with open(path) as f:
        data = json.load(f)
    rows = data["scoreboard"]["rows"]
    vaes = {k: r["train_seconds"] for k, r in rows.items() if "train_seconds" in r}
    print(f"whole scoreboard: {t:.1f} s wall (target < 600 s); training the 8-bit VAEs: "
          + ", ".join(f"{k} {s:.0f} s" for k, s in vaes.items())
          + f"; every model coded and decoded: "
          f"{all(r['model_roundtrip'] for r in rows.values())}")
    old = numbers_by_row(readme_block("scoreboard"))
    new = numbers_by_row(nc.report(data, markdown=True))
    # the VAE's rows follow BLAS's and numpy's kernels (its float32 training), the rest TOL
    split = lambda rows, vae: {k: v for k, v in rows.items() if ("VAE" in k) == vae}
    bad = (mismatches(split(old, False), split(new, False))
           + mismatches(split(old, True), split(new, True), tol=FLOAT32_TOL))
    drift = max((abs(a - b) for k in split(old, True) if k in new
                 for a, b in zip(old[k], new[k])), default=0.0)
    print(f"block scoreboard against the fresh run (tolerance {TOL} bits, {FLOAT32_TOL} for "
          f"the float32-trained VAE rows, which differ by up to {drift:.2f}): "
          f"{'ok' if not bad else 'FAIL ' + ', '.join(bad)}")
    return int(bool(bad))


def bench_acn_one_bit(which):
    """Wall time of the ACN run at N = 20000 (one seed; target < 5 minutes) or of the
    one-bit experiment (target < 15 minutes a seed), and their tables against the committed JSON
    (the ACN's whole five-seed run takes about 25 minutes: neural_codes.py --acn --seeds 0 1
    2 3 4 --json viz/acn.json)."""
    from tests.helpers import FLOAT32_TOL as TOL, mismatches, numbers_by_row, readme_block
    path = os.path.join(TMP, f"{which}.json")
    if which == "acn":
        t = wall(["neural_codes.py", "--acn", "--n-samples", "20000", "--seed", "0",
                  "--json", path])
        print(f"ACN run at N = 20000, seed 0 (VAE, ACN fine-tune, tour, coder): {t:.1f} s "
              f"wall (target < 300 s)")
        with open(path) as f:
            fresh = json.load(f)["acn"]["20000"]["0"]
        with open(ROOT / "viz" / "acn.json") as f:
            want = json.load(f)["acn"]["20000"]["0"]
        bad = [k for k in ("vae", "vae_set", "acn_set", "acn_ordered")
               if abs(fresh[k] - want[k]) > TOL]
        print(f"seed 0 at N = 20000 against viz/acn.json (tolerance {TOL}: float32 training "
              f"follows the CPU's kernels): "
              f"{'ok' if not bad else 'FAIL: ' + ', '.join(bad)}")
        return int(bool(bad))
    import neural_models as nm
    t = wall(["neural_codes.py", "--one-bit", "--json", path])
    print(f"one-bit experiment (60 one-bit VAEs of {nm.ONE_BIT_RESTARTS} starts each and 10 "
          f"factorial VQs, five seeds, 2 workers): {t:.1f} s wall, {t / 5:.0f} s a seed "
          f"(target < 900 s a seed)")
    bad = mismatches(numbers_by_row(readme_block("one_bit")), numbers_by_row(
        neural_block("one_bit", [path])))
    print(f"block one_bit against the fresh run (tolerance {TOL}: float32 training follows "
          f"the CPU's kernels): "
          f"{'ok' if not bad else 'FAIL: ' + ', '.join(bad)}")
    return int(bool(bad))


VQ_CODES = ["--seeds", "0", "1", "2", "3", "4", "--n-samples", "2000", "--models",
            "vq_vae_4x6", "vq_vae_4x6_loss", "vq_vae_4x64", "gumbel_vq_vae_4x6", "factorial_vq"]


def bench_seed_experiment(which):
    """Wall time of the beta sweep or of the ACN variants (five seeds, N = 2000, two fits at
    a time; target < 15 minutes a seed), or of the VQ codes at N = 2000 (five seeds one
    after another; target < 10 minutes a seed), and their block against the committed
    JSON (the VQ codes: the N = 2000 tables)."""
    from tests.helpers import FLOAT32_TOL as TOL, mismatches, numbers_by_row, readme_block
    path = os.path.join(TMP, f"{which}.json")
    args = {"beta": ["--beta"], "acn_variants": ["--acn-variants"], "vq_codes": VQ_CODES}[which]
    t = wall(["neural_codes.py", *args, "--json", path])
    what = {"beta": "6 betas x 5 seeds: 30 VAEs, 2 workers",
            "acn_variants": "5 seeds: a VAE and 4 ACNs each, 2 workers",
            "vq_codes": "5 seeds: 4 networks and the factorial VQ each"}[which]
    target = 600 if which == "vq_codes" else 900
    print(f"{' '.join(args[:1])} ({what}): {t:.0f} s wall, {t / 5:.0f} s a seed "
          f"(target < {target} s a seed)")
    # the VQ codes' block holds three sizes under the same row labels: the N = 2000 tables
    # are checked against their committed JSON, which the suite holds to the block
    old = (neural_block(which, [ROOT / "viz" / "vq_codes_2000.json"]) if which == "vq_codes"
           else readme_block(which))
    bad = mismatches(numbers_by_row(old), numbers_by_row(neural_block(which, [path])))
    print(f"block {which} against the fresh run (tolerance {TOL}: float32 training follows "
          f"the CPU's kernels): {'ok' if not bad else 'FAIL: ' + ', '.join(bad)}")
    return int(bool(bad))


def bench_paper_table():
    """Wall time of the search for the paper's reading (target < 10 minutes on 2 cores) and
    its block in docs/paper.md against the fresh run."""
    import paper_table as pt
    from tests.helpers import TOL, mismatches, numbers_by_row, readme_block
    path = os.path.join(TMP, "paper_table.json")
    t = wall(["paper_table.py", "--json", path])
    with open(path) as f:
        data = json.load(f)
    print(f"paper_table.py ({len(data['readings'])} readings x {len(data['seeds'])} seeds, "
          f"every 1994 model, 2 workers): {t:.0f} s wall (target < 600 s)")
    bad = mismatches(numbers_by_row(readme_block("paper_table")),
                     numbers_by_row(pt.format_search(data, markdown=True)))
    print(f"block paper_table against the fresh run (tolerance {TOL}): "
          f"{'ok' if not bad else 'FAIL: ' + ', '.join(bad)}")
    return int(bool(bad))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    for flag, text in (
            ("--readme", "check the pages' training and experiment sections against "
                         "full-size runs"),
            ("--write-readme", "rerun every generated table and write it into its page"),
            ("--neural", "time the modern codes and check their tables (12 minutes)"),
            ("--scoreboard", "time the 8-bit scoreboard and check its table (3 minutes)"),
            ("--acn", "time the ACN run at N = 20000 (one seed) and check it (5 minutes)"),
            ("--one-bit", "time the one-bit experiment and check its table (12 minutes)"),
            ("--beta", "time the beta sweep and check its block (35 minutes)"),
            ("--acn-variants", "time the ACN variants and check their block (35 minutes)"),
            ("--vq-codes", "time the VQ codes at N = 2000 and check their block (50 minutes)"),
            ("--paper-table", "time the search for the paper's reading and check its block "
                              "(10 minutes)"),
            ("--times", "time every command behind an artifact (about two hours) and write "
                        "viz/timings.json and its block in docs/reproduce.md")):
        ap.add_argument(flag, action="store_true", help=text)
    opts = ap.parse_args()
    if opts.times:
        return write_times()
    if opts.paper_table:
        return bench_paper_table()
    if opts.beta or opts.acn_variants or opts.vq_codes:
        return bench_seed_experiment("beta" if opts.beta else "acn_variants"
                                     if opts.acn_variants else "vq_codes")
    if opts.acn or opts.one_bit:
        return bench_acn_one_bit("acn" if opts.acn else "one_bit")
    if opts.scoreboard:
        return bench_scoreboard()
    if opts.neural:
        return bench_neural()
    if opts.write_readme:
        return write_readme()
    if opts.readme:
        return check_readme_experiments()
    n = opts.repeats
    for label, args in RUNS.items():
        times = [wall(args) for _ in range(n)]
        print(f"{label}: median {statistics.median(times):.2f} s wall over {n} "
              f"(min {min(times):.2f}, max {max(times):.2f})")
    gif = os.path.join(TMP, "a.gif")
    print(f"GIF size: {os.path.getsize(gif) / 1e6:.2f} MB")
    coding = []
    for _ in range(n):
        path = os.path.join(TMP, "c.json")
        wall(["spline_images_factorial_vq.py", "--compress", "--json", path])
        with open(path) as f:
            coding.append(json.load(f)["compress"]["seconds"])
    print(f"bits-back encode + decode of 2000 images, all {len(CODERS)} coder rows: "
          f"median {statistics.median(coding):.2f} s wall over {n}")
    trace_steps()
    t = wall(["spline_images_factorial_vq.py", "--experiment", "sigma"])
    print(f"sigma_x sweep (--experiment sigma, 10 sigmas x 6 models x 5 seeds, 2 workers): "
          f"{t:.2f} s wall, once (target < 120 s)")
    t = wall(["spline_images_factorial_vq.py", "--experiment", "all"])
    print(f"open-question experiments (--experiment all, 5 seeds, 2 workers): {t:.2f} s wall, once")


def write_times():
    """Time every command of TIMED, write viz/timings.json and its block in
    docs/reproduce.md (the one place the docs take run times from)."""
    import datetime
    import platform
    from tests.helpers import TIMED, timings_table, write_block
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    data = {"date": datetime.date.today().isoformat(),
            "machine": f"{cpu}, {os.cpu_count()} cores", "runs": {}}
    for label, shown, repeats in TIMED:
        args = [a.format(tmp=TMP) for a in shown]     # run into a temporary folder
        seconds = []
        for _ in range(repeats):
            module = args[0] == "-m"                     # the test suite
            command = args if module else [str(ROOT / args[0]), *args[1:], "--quiet"]
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *command], check=not module, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - t0)
        data["runs"][label] = {"command": [a.format(tmp="out") for a in shown],
                               "seconds": statistics.median(seconds),
                               "runs": repeats}
        print(f"{label}: {statistics.median(seconds):.1f} s (median of {repeats})", flush=True)
    with open(ROOT / "viz" / "timings.json", "w") as f:
        json.dump(data, f, indent=1)
    write_block("timings", timings_table(data))
    print("wrote viz/timings.json and the timings block of docs/reproduce.md")
    return 0


def trace_steps():
    """Wall time of tracing one step of each training phase of the factorial 4x6 VQ (seed
    0): the numpy operations recorded, then every read's LRU stack distance."""
    import numpy as np
    import data_movement as dm
    import spline_images_factorial_vq as sv
    X, _ = sv.load_data(0)
    model = sv.FactorialVQ(4, 6, refine=50, rng=np.random.default_rng([0, 1003]))
    model.init_from_hard_code(X)
    groups = sv.pixel_groups(4)
    stack = lambda key: np.stack([f[key] for f in model.starts])
    C, b, a = stack("C"), stack("b"), stack("a")
    q = np.full((len(C), len(X), 4, 6), 1 / 6)
    steps = {
        "hard-code search alternation (8 starts)":
            lambda: sv.trace_hard_step(X, model.starts, model.sigma_x, groups),
        "EM iteration (8 starts)": lambda: dm.movement(*dm.trace(lambda: sv.em_step(
            *(v.view(dm.Traced) for v in (X, C, b, a, q)), model.sigma_x, groups))),
        "Adam step": lambda: sv.trace_adam_step(model, X),
    }
    for label, step in steps.items():
        t0 = time.perf_counter()
        reads = step()["reads"]
        print(f"trace one {label} of the factorial 4x6 VQ: {time.perf_counter() - t0:.2f} s "
              f"({reads / 1e6:.2f} million reads)")


if __name__ == "__main__":
    sys.exit(main())
