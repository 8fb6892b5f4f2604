"""The paper's table: the reading of its unstated settings nearest to its numbers.

Hinton & Zemel report, on held-out images, the factorial 4x6 VQ at 18 + 7 = 25 bits
(reconstruction + code), the standard 24-unit VQ at 36 + 4 = 40, four separate VQs on
vertical slices about 5 bits worse than the factorial one, and a linear 24-unit code
slightly lower in reconstruction and much higher in code.  They state neither the noise
sigma_x, nor the quantisation width t, nor the blur, nor the range of the heights.

This script searches a grid of readings (blur x how the heights are drawn x sigma_x) for the one
nearest to the paper, every 1994 model trained at every reading on every seed.  t shifts
every model's reconstruction by the same D log2(sigma_x sqrt(2 pi) / t) bits and nothing
else, so at each reading it is set to where the two reconstructions lie nearest the
paper's (reported as t / (sigma_x sqrt(2 pi)); 1 is the project's convention).  The
distance of a reading is its largest miss, in bits, among: the gap between the two
reconstructions (halved: t takes up the rest), the two code costs and the slices' gap.
The readings are ranked on validation images (their own stream); the table at the chosen
reading is held-out.

    python3 paper_table.py --json viz/paper_table.json
"""

import sys
import time

import cli_kit as kit

if __name__ == "__main__":
    kit.quit_on_interrupt("paper_table.py")

import spline_images_factorial_vq as sv  # noqa: E402  (sets the BLAS thread count first)

np = sv.np

BLURS = (0.4, 0.6, 0.8, 1.0, 1.3)                  # pixels
HEIGHTS = ((0.5, 6.5), (1.5, 5.5), (2.0, 5.0))     # pixel rows: a uniform range, or a normal
DISTS = ("uniform", "normal")                      # with its centre and a quarter of its width
SIGMAS = (0.15, 0.18, 0.2, 0.23, 0.26)
MODELS = sv.STOCHASTIC                             # every 1994 model but the hard codes
N_VAL = 2000                                       # validation images a reading is ranked on
PAPER_GAP = 5.0                                    # the slices "about 5 bits" above factorial
PAPER_CODE = {"factorial_vq": 7.0, "standard_vq": 4.0}
PAPER_RECON_GAP = 36.0 - 18.0                      # standard minus factorial reconstruction
TERMS = ("recon", "code", "total")
FRONTIER_WINDOW = 2.0          # readings whose reconstruction gap is the paper's 18 +- this


# ----------------------------------------------------------------------------- one reading


def entry_of(blur, low, high, dist, sigma):
    """A reading as the JSON names it."""
    return {"blur": blur, "heights": [low, high], "heights_dist": dist, "sigma_x": sigma}


def where(entry):
    reading = {"heights": entry["heights"], "heights_dist": entry["heights_dist"]}
    return (f"blur {entry['blur']:g}, heights {sv.heights_text(reading)}, sigma_x "
            f"{entry['sigma_x']:g}")


def factor_costs(model, X):
    """Per factor d of a factorial VQ on images X: the prior's entropy H(pi_d), the mean
    posterior entropy E_x H(q_d), the entropy of the codes' use H(E_x q_d) and the code
    cost E_x KL(q_d || pi_d), all in bits; the code cost is their sum over d."""
    ent = lambda p: -np.sum(p * np.log2(np.maximum(p, 1e-300)), axis=-1)
    prior = np.exp(sv.log_softmax(model.p["a"], axis=-1))                         # (M, K)
    out = []
    for q, pi in zip(model.posteriors(X), prior):
        kl = np.sum(q * (np.log2(np.maximum(q, 1e-300)) - np.log2(pi)), axis=1)
        out.append({"prior_entropy": float(ent(pi)), "posterior_entropy": float(ent(q).mean()),
                    "usage_entropy": float(ent(q.mean(axis=0))), "code": float(kl.mean())})
    return out


def reading_task(task):
    """Worker: every model of MODELS trained at one reading and seed, scored on the
    validation and the held-out images: (reading, seed, result)."""
    (blur, low, high, dist, sigma), seed = task
    heights = (low, high)
    out = sv.run_comparison(seed=seed, sigma_x=sigma, models=MODELS, reading={
        "blur_sigma": blur, "heights": heights, "heights_dist": dist})
    X_val = sv.generate_spline_images(N_VAL, seed, 2, blur, heights, dist)[0]
    result = {}
    for split, X in (("validation", X_val), ("heldout", out["heldout"])):
        result[split] = {name: {t: float(v.mean()) for t, v in
                                model.description_length(X).items() if t in TERMS}
                         for name, model in out["models"].items()}
    result["factors"] = factor_costs(out["models"]["factorial_vq"], out["heldout"])
    return [blur, low, high, dist, sigma], seed, result


# ----------------------------------------------------------------------------- the distance


def misses(m):
    """The paper's criteria at one reading from mean scores m {model: {term: bits}}: each
    miss in bits, with t chosen for the reconstructions; and the offset in bits that t adds
    to every reconstruction, at the project's convention and at the best t."""
    f, s = m["factorial_vq"], m["standard_vq"]
    offset = (18.0 + 36.0) / 2 - (f["recon"] + s["recon"]) / 2
    free = {"recon gap": ((s["recon"] - f["recon"]) - PAPER_RECON_GAP) / 2,
            "factorial code": f["code"] - PAPER_CODE["factorial_vq"],
            "standard code": s["code"] - PAPER_CODE["standard_vq"],
            "slices gap": (m["separate_slices"]["total"] - f["total"]) - PAPER_GAP}
    fixed = {"factorial recon": f["recon"] - 18.0, "standard recon": s["recon"] - 36.0,
             **{k: v for k, v in free.items() if k != "recon gap"}}
    return {"t_free": free, "t_convention": fixed, "offset": offset,
            "t_ratio": 2.0 ** (-offset / sv.D)}


def largest(miss):
    return max(abs(v) for v in miss.values())


def recon_gap(entry):
    """The standard VQ's reconstruction minus the factorial VQ's, validation, bits."""
    v = entry["validation"]
    return v["standard_vq"]["recon_mean"] - v["factorial_vq"]["recon_mean"]


def summarise(runs, seeds):
    """The search's JSON entry from the task results [[reading, seed, result]]: per reading
    the mean and sd over seeds of every model's terms on both splits, its misses and
    distances; the reading nearest on validation; the factorial VQ's per-factor costs and
    the paper's rankings there (held-out)."""
    by_reading = {}
    for reading, seed, result in runs:
        by_reading.setdefault(tuple(reading), {})[seed] = result
    readings = []
    for reading in sorted(by_reading):
        per_seed = [by_reading[reading][s] for s in seeds]
        entry = entry_of(*reading)
        for split in ("validation", "heldout"):
            entry[split] = {name: {f"{t}_{stat}": float(fn([r[split][name][t] for r in per_seed]))
                                   for t in TERMS for stat, fn in
                                   (("mean", np.mean), ("sd", lambda v: np.std(v, ddof=1)
                                                        if len(v) > 1 else 0.0))}
                            for name in MODELS}
            means = {n: {t: v[f"{t}_mean"] for t in TERMS} for n, v in entry[split].items()}
            entry[f"{split}_misses"] = misses(means)
            entry[f"{split}_distance"] = largest(entry[f"{split}_misses"]["t_free"])
            entry[f"{split}_distance_convention"] = largest(
                entry[f"{split}_misses"]["t_convention"])
        readings.append(entry)
    best = min(range(len(readings)), key=lambda i: readings[i]["validation_distance"])
    b = readings[best]
    key = (b["blur"], *b["heights"], b["heights_dist"], b["sigma_x"])
    at_best = [by_reading[key][s] for s in seeds]
    factors = [{k: float(np.mean([r["factors"][d][k] for r in at_best])) for k in at_best[0]
                ["factors"][d]} for d in range(len(at_best[0]["factors"]))]
    rankings = {}
    for rk, _, (a, ta), (b, tb) in sv.PAPER_RANKINGS:
        diffs = [r["heldout"][a][ta] - r["heldout"][b][tb] for r in at_best]
        rankings[rk] = {"diff_mean": float(np.mean(diffs)), "seeds_holding": int(sum(
            d > 0 for d in diffs))}
    near = [e for e in readings if abs(recon_gap(e) - PAPER_RECON_GAP) <= FRONTIER_WINDOW]
    low = min(near, key=lambda e: e["validation"]["factorial_vq"]["code_mean"], default=None)
    frontier = {"window": FRONTIER_WINDOW, "readings": len(near),
                "min_code": None if low is None else low["validation"]["factorial_vq"][
                    "code_mean"], "at": None if low is None else where(low)}
    return {"readings": readings, "best": best, "factors": factors, "rankings": rankings,
            "frontier": frontier,
            "seeds": list(seeds), "grid": {
                "blur": sorted({r[0] for r in by_reading}),
                "heights": [list(h) for h in sorted({r[1:3] for r in by_reading})],
                "heights_dist": sorted({r[3] for r in by_reading}),
                "sigma_x": sorted({r[4] for r in by_reading})}}


def run_search(seeds=(0, 1, 2, 3, 4), workers=2, log=None, grid=None):
    """Every reading of the grid (blur, heights, heights_dist, sigma_x lists; the default grid
    if None) at every seed, in `workers` processes: the summary, and every task's result
    under "runs" (for --merge)."""
    log = log or kit.progress_logger(True)
    blurs, heights, dists, sigmas = grid or (BLURS, HEIGHTS, DISTS, SIGMAS)
    tasks = [((b, lo, hi, d, s), seed) for b in blurs for lo, hi in heights for d in dists
             for s in sigmas for seed in seeds]
    runs, t0 = [], time.perf_counter()
    for done, item in enumerate(kit.map_workers(reading_task, tasks, workers), 1):
        runs.append(item)
        (b, lo, hi, d, s), seed, _ = item
        log(f"[{done}/{len(tasks)}] seed {seed}: {where(entry_of(b, lo, hi, d, s))}  "
            f"({time.perf_counter() - t0:.0f} s)")
    runs = sorted(kit.plain(runs), key=lambda r: (r[0], r[1]))
    return {**summarise(runs, seeds), "runs": runs}


# ----------------------------------------------------------------------------- CLI


def format_search(v, markdown=False):
    """The table at the nearest reading beside the paper, the nearest readings, what each
    setting does to the factorial VQ, its per-factor code, and the paper's findings there."""
    pm, seeds = kit.pm, v["seeds"]
    seed_text = f"seeds {', '.join(map(str, seeds))}"
    best = v["readings"][v["best"]]
    miss = best["heldout_misses"]
    paper = {"factorial_vq": "18 + 7 = 25", "standard_vq": "36 + 4 = 40",
             "separate_slices": "factorial + about 5", "pca24": "recon lower, code much higher"}
    off = miss["offset"]
    rows = [[sv.model_label(n, 4, 6)] +
            [pm(best["heldout"][n][f"{t}_mean"] + (off if t != "code" else 0.0),
                best["heldout"][n][f"{t}_sd"]) for t in TERMS] +
            [paper.get(n, "-")] for n in MODELS]
    parts = [kit.table(
        f"The nearest reading ({where(best)}; chosen on validation images): held-out bits "
        f"per image, mean ± sd over {seed_text}, recon and total at t = "
        f"{miss['t_ratio']:.3g} sigma_x sqrt(2 pi), which adds {off:+.2f} bits to every "
        f"reconstruction; its largest miss "
        f"{best['heldout_distance']:.2f} bits held-out ({best['validation_distance']:.2f} on "
        f"validation), {best['heldout_distance_convention']:.2f} at t = sigma_x sqrt(2 pi)",
        ["model", "recon", "code", "total F", "paper"], rows, markdown)]
    near = sorted(v["readings"], key=lambda e: e["validation_distance"])[:8]
    rows = [[where(e)] + [kit.num(e["validation_misses"]["t_free"][k], "+.2f")
                          for k in e["validation_misses"]["t_free"]] +
            [kit.num(e["validation_distance"]), kit.num(e["validation_distance_convention"])]
            for e in near]
    parts.append(kit.table(
        f"The eight nearest of {len(v['readings'])} readings, on validation images: each "
        f"miss in bits (reconstruction gap halved, t set per reading), the largest, and the "
        f"largest at t = sigma_x sqrt(2 pi)",
        ["reading", *near[0]["validation_misses"]["t_free"], "largest", "largest, t fixed"],
        rows, markdown))
    rows = []
    settings = ("blur", "heights", "heights_dist", "sigma_x")
    for name in settings:
        for value in v["grid"][name]:
            e = next(e for e in v["readings"] if e[name] == value and all(
                e[k] == best[k] for k in settings if k != name))
            f, s = e["validation"]["factorial_vq"], e["validation"]["standard_vq"]
            rows.append([name, f"[{value[0]:g}, {value[1]:g}]" if name == "heights" else
                         value if name == "heights_dist" else f"{value:g}",
                         kit.num(f["recon_mean"]), kit.num(f["code_mean"]),
                         kit.num(s["recon_mean"] - f["recon_mean"]), kit.num(s["code_mean"]),
                         kit.num(e["validation"]["separate_slices"]["total_mean"] -
                                 f["total_mean"]), kit.num(e["validation_distance"])])
    parts.append(kit.table(
        "What each setting does, the others at the nearest reading (validation, bits per "
        "image, t = sigma_x sqrt(2 pi)): the factorial VQ's recon and code, the standard "
        "VQ's extra recon and its code, the slices' extra total, the largest miss",
        ["setting", "value", "factorial recon", "factorial code", "standard - factorial "
         "recon", "standard code", "slices - factorial", "largest miss"], rows, markdown))
    rows = [[f"factor {d + 1}", kit.num(f["prior_entropy"]), kit.num(f["usage_entropy"]),
             kit.num(f["posterior_entropy"]), kit.num(f["code"])]
            for d, f in enumerate(v["factors"])]
    rows.append(["sum", *(kit.num(sum(f[k] for f in v["factors"])) for k in
                          ("prior_entropy", "usage_entropy", "posterior_entropy", "code"))])
    parts.append(kit.table(
        f"The factorial VQ's code at the nearest reading, per factor (held-out, mean over "
        f"{seed_text}, bits): the prior's entropy, the entropy of the codes' use, the mean "
        f"posterior entropy, and the code cost E KL(q || prior)",
        ["factor", "H(prior)", "H(use)", "E H(q)", "code"], rows, markdown))
    lines = [f"- {text}: {kit.num(v['rankings'][key]['diff_mean'], '+.2f')} bits, on "
             f"{v['rankings'][key]['seeds_holding']}/{len(seeds)} seeds"
             for key, text, *_ in sv.PAPER_RANKINGS]
    parts.append("The paper's findings at the nearest reading (held-out difference, > 0 "
                 "where it holds):\n\n" + "\n".join(lines))
    fr = v["frontier"]
    if fr["min_code"] is not None:
        parts.append(f"Of the {fr['readings']} readings whose reconstruction gap is within "
                     f"{fr['window']:g} bits of the paper's 18 (validation), the cheapest "
                     f"factorial code is {fr['min_code']:.2f} bits ({fr['at']}); the paper's "
                     f"is 7.")
    return "\n\n".join(p.rstrip("\n") for p in parts)


def merged(parts, config, markdown=False):
    """--merge (kit.merge_runs): the search over the seeds of runs split by seed."""
    runs = sorted((r for p in parts for r in p["runs"]), key=lambda r: (r[0], r[1]))
    out = {**summarise(runs, config["seeds"]), "runs": runs}
    return out, format_search(out, markdown)


def parse_args(argv=None):
    ap = kit.CLIParser(prog="paper_table.py",
                       description="Search the readings of the paper's unstated settings "
                                   "(blur, heights, sigma_x, t) for its table.")
    ap.add_argument("--seeds", type=kit.int_at_least(0, sv.MAX_SEED), nargs="+",
                    default=[0, 1, 2, 3, 4], metavar="S", help="seeds of every reading")
    ap.add_argument("--workers", type=kit.int_at_least(1, 64), default=2,
                    help="worker processes")
    ap.add_argument("--json", metavar="PATH", help="write every number here")
    args, _ = ap.parse_run(argv, None, "print the tables as Markdown")
    ap.each_once("--seeds", args.seeds, "seed")
    if args.json is not None:
        ap.output_file("--json", args.json)
    return args


def main(argv=None):
    args = parse_args(argv)
    log = kit.progress_logger(args.quiet)
    if args.merge:
        return kit.merge_runs(args, ("runs",), lambda kind, parts, config: merged(
            parts, config, args.markdown), log)
    t0 = time.perf_counter()
    n = len(BLURS) * len(HEIGHTS) * len(DISTS) * len(SIGMAS)
    kit.warn_long_run(1.25 * n * len(args.seeds) / min(args.workers, 2), log)
    log(f"{n} readings x {len(args.seeds)} seeds, {args.workers} worker(s)")
    out = run_search(args.seeds, args.workers, log)
    print(format_search(out, args.markdown))
    wall = time.perf_counter() - t0
    log(f"done in {wall:.0f} s")
    if args.json:
        kit.write_json(args.json, {"config": {"seeds": args.seeds, "models": list(MODELS)},
                                   "versions": kit.versions(), "wall_seconds": wall, **out})
    return 0


if __name__ == "__main__":
    sys.exit(kit.run_main(main, "paper_table.py"))
