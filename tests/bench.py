"""Benchmark: wall time of the default run and of the five-seed run (not collected by pytest).

    python3 tests/bench.py [--repeats 3]

Prints the median wall time of each command over the repeats, measured around the whole
process (interpreter start, imports, training, evaluation), as a user would see it.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "spline_images_factorial_vq.py"
RUNS = {"default run (seed 0, all models, 2000 held-out, exact DLs)": [],
        "five seeds (--seeds 0 1 2 3 4, 2 workers)": ["--seeds", "0", "1", "2", "3", "4"]}


def wall(args):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(SCRIPT), "--quiet", *args], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    n = ap.parse_args().repeats
    for label, args in RUNS.items():
        times = [wall(args) for _ in range(n)]
        print(f"{label}: median {statistics.median(times):.2f} s wall over {n} "
              f"(min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
