"""The tables of README.md and docs/ are the program's output: rerun it and compare.

Tolerance (TOL in tests/helpers.py).  The pages are written on one machine; the suite runs
on any.  numpy picks its exp/log and reduction kernels by CPU (AVX-512, AVX2, baseline), and
the last bits of a trained model follow them.  Measured with NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL
AVX512_SPR" against the default kernels, every description length agrees to 0.02 bits
(the coder's actual bits, which follow sampled codes, moved most).  TOL = 0.2 bits is ten
times that, and still well under the 0.5-bit drift of a real change that was not written
back into the pages, which must fail (test_a_half_bit_drift_fails).  The networks of
neural_codes.py, trained in float32, drift further (FLOAT32_TOL).
"""
import json
import re

import numpy as np
import pytest

import compressors
import spline_images_factorial_vq as sv
from tests.helpers import (ROOT, SPOT_ROWS, TABLES, TOL, committed, compress_table,
                           fresh, mismatches, neural_block, numbers_by_row, readme_block,
                           results_table, sigma_table)

def test_readme_results_table_is_the_committed_run_and_seed_0_refits():
    data = committed("results")
    assert readme_block("results").strip() == results_table(data).strip()
    cfg = {k: v for k, v in data["config"].items() if k != "seeds"}
    got = sv.run_seeds(cfg, [0])[0]
    want = next(r for r in data["results"] if r["seed"] == 0)["models"]
    assert list(got) == list(want)
    for name in want:
        for split in ("heldout", "train"):
            for term, value in want[name][split].items():
                new = got[name][split][term]
                assert (new is value is None) or abs(new - value) <= TOL, (name, split, term)


def test_readme_compress_table_is_the_committed_run_and_a_row_recodes():
    data = committed("compress")
    assert readme_block("compress").strip() == compress_table(data).strip()
    want = data["compress"]["factorial_vq"]
    X, Xt = sv.load_data(0)
    model, _ = sv.fit_model("factorial_vq", X, seed=0)
    row, _ = sv.code_and_check(model, sv.quantise_images(Xt), 0)
    assert row["roundtrip"] and abs(row["actual_bits"] - want["actual_bits"]) <= TOL
    V = sv.quantise_images(Xt)
    assert compressors.baseline_bits(V, sv.HEIGHT, sv.WIDTH) == data["compress"]["baselines"]


@pytest.mark.parametrize("name", TABLES)
def test_readme_table_matches_a_fresh_run(name):
    old, new = numbers_by_row(readme_block(name)), numbers_by_row(fresh(*TABLES[name]))
    assert old and not mismatches(old, new)


def test_a_half_bit_drift_fails():
    old = numbers_by_row(readme_block("results"))
    label = next(iter(old))
    drifted = {k: list(v) for k, v in old.items()}
    drifted[label][2] += 0.5                                    # the total F column
    assert mismatches(old, drifted) == [label]
    assert not mismatches(old, {k: list(np.add(v, 0.02)) for k, v in old.items()})


def test_readme_experiment_rows_match_a_fresh_fit():
    """Spot check of the open-question tables: the sweep rows in SPOT_ROWS, refitted."""
    rows = numbers_by_row(readme_block("experiments"))
    for M, K in SPOT_ROWS:
        runs = [sv.experiment_task(("fit", s, (M, K, "sigma", "band", False)))[3]
                for s in range(5)]
        totals = [r["total"] for r in runs]
        exact = [r["exact"] for r in runs]
        got = [M * K, K**M, np.mean(totals), np.std(totals, ddof=1), np.mean(exact),
               np.std(exact, ddof=1)]
        want = rows[f"{M}x{K}"]
        # codewords and joint codes are whole numbers and not matched by numbers_by_row
        assert np.allclose(want, got[2:], rtol=0, atol=TOL), (f"{M}x{K}", want, got)


def test_readme_training_rows_match_a_fresh_fit():
    """Spot check of the training table: the EM from the hard code, refitted, and the hard
    code it starts from."""
    rows = numbers_by_row(readme_block("training"))
    hard, em = [], []
    for s in range(5):
        X, Xt = sv.load_data(s)
        model = sv.recipe_step("em_hard_start", X, s)
        em.append(model.description_length(Xt)["total"].mean())
        hard.append(model.hard_code().description_length(Xt)["total"].mean())
    label = dict(sv.RECIPE_STEPS)["em_hard_start"]
    for want, got in ((rows["hard code: factorial 4x6"], hard), (rows[label], em)):
        assert np.allclose(want[:2], [np.mean(got), np.std(got, ddof=1)], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["neural_seeds", "neural_variants", "neural_sweep",
                                  "neural_latents", "acn", "one_bit", "choices"])
def test_readme_modern_code_tables_are_the_committed_runs(name):
    """The modern-code tables are formatted from the JSON of their runs, committed in viz/
    (`python3 -m tests.bench --neural` reruns them and compares)."""
    assert readme_block(name).strip() == neural_block(name).strip()


def test_committed_modern_code_runs_match_a_fresh_fit():
    """Spot check of viz/neural_seeds.json: seed 0's factorial VQ and PPCA-24 refitted to
    TOL.  (Its networks, trained in float32, can only be held to FLOAT32_TOL, which catches
    a broken network and not a drift; `python3 -m tests.bench --neural` refits them all.)"""
    import neural_codes as nc
    import neural_models as nm
    with open(ROOT / "viz" / "neural_seeds.json") as f:
        want = next(r for r in json.load(f)["results"] if r["seed"] == 0)["models"]
    data = nm.load_split(0, 200)
    for name in ("factorial_vq", "pca24"):
        total = nc.run_core(name, data, 0)["total"]
        assert abs(total - want[name]["total"]) <= TOL, (name, total, want[name]["total"])


def test_readme_sigma_tables_are_the_committed_run_and_a_cell_refits():
    """The sigma_x section is formatted from viz/sigma.json (`python3 -m tests.bench --readme`
    reruns the sweep), and seed 0 at the paper's sigma_x refits to the file's numbers."""
    data = committed("sigma")
    seeds = data["config"]["seeds"]
    assert readme_block("sigma").strip() == sigma_table(data).strip()
    sigma = data["sigma"]["paper_sigma"]
    want = data["sigma"]["per_seed"][f"{sigma:g}"][seeds.index(0)]
    X, Xt = sv.load_data(0)
    for name in ("factorial_vq", "pca24"):
        model, _ = sv.fit_model(name, X, seed=0, sigma_x=sigma)
        got = sv.evaluate(model, Xt)
        for term in ("recon", "code", "total"):
            assert abs(got[term] - want[name][term]) <= TOL, (name, term)


def test_readme_scoreboard_is_the_committed_run_and_a_row_refits():
    """The 8-bit scoreboard is formatted from viz/scoreboard.json (`python3 -m tests.bench
    --scoreboard` reruns it), and the factorial VQ's row refits and recodes to it."""
    import neural_codes as nc
    with open(ROOT / "viz" / "scoreboard.json") as f:
        data = json.load(f)
    assert readme_block("scoreboard").strip() == nc.report(data, markdown=True).strip()
    want = data["scoreboard"]["rows"]["factorial_vq"]
    X, Xt = sv.load_data(0)
    model, _ = sv.fit_model("factorial_vq", X, seed=0, sigma_x=want["sigma_x"])
    row, _ = sv.code_and_check(model, sv.quantise_images(Xt), 0)
    assert row["roundtrip"] and abs(row["actual_bits"] - want["actual_bits"]) <= TOL


def test_committed_one_bit_run_matches_a_fresh_fit():
    """Spot check of viz/one_bit_vae.json (`python3 -m tests.bench --one-bit` reruns it all):
    the one- and two-layer VAEs at ndims 2, seed 0, the start the run kept refitted."""
    import neural_models as nm
    with open(ROOT / "viz" / "one_bit_vae.json") as f:
        want = json.load(f)["one_bit"]["one_bit"]
    for layers in (1, 2):
        run = want[str(layers)]["2"]["0"]
        got = dict(zip(("loss", "recon", "code"),
                       nm.fit_one_bit(2, layers, 0, run["restart"]).bits()))
        for term, value in got.items():
            assert abs(value - run[term]) <= TOL, (layers, term)


def test_the_front_page_is_short_and_leads_with_the_results():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert any("<!-- results:start -->" in line for line in lines[:60])


def markdown_pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(page):
    """GitHub's anchors of a page's headings: lower case, punctuation but - and _ dropped,
    spaces as -."""
    heads = [line.lstrip("#").strip() for line in page.read_text().splitlines()
             if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_every_link_of_the_pages_leads_inside_the_repository_to_a_place_that_exists():
    for page in markdown_pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            assert "://" not in target or target.startswith("https://"), (page.name, target)
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.is_relative_to(ROOT) and dest.exists(), (page.name, target)
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), (page.name, target)


def test_no_page_or_module_cites_a_file_outside_the_repository():
    texts = [p.read_text() for p in markdown_pages()] + [p.read_text() for p in ROOT.glob("*.py")]
    for text in texts:
        assert "shared/" not in text and "SPEC" not in text


def test_the_settings_in_the_code_are_the_ones_chosen_on_validation_images():
    """The 8-bit VAE's rates and the ACN coder's mixture are what `neural_codes.py --choose`
    picked (viz/choices.json), not numbers typed after looking at held-out bits."""
    import neural_models as nm
    choices = json.loads((ROOT / "viz" / "choices.json").read_text())["choices"]
    assert nm.PIXEL_LR_AT == {int(n): float(r) for n, r in choices["pixel_lr_pick"].items()}
    assert [str(nm.ACN_CODER_MIX)] == list(choices["coder_mix_pick"].values())


def test_the_longer_runs_quoted_in_the_coding_page_are_their_files():
    """docs/coding.md quotes the 8-bit VAE trained longer; the numbers are those of the runs'
    JSON files, to the digit shown."""
    page = (ROOT / "docs" / "coding.md").read_text()
    for steps in (56000, 100000):
        data = json.loads((ROOT / "viz" / f"scoreboard_{steps}_steps.json").read_text())
        row = data["scoreboard"]["rows"]["pixel_vae_20000"]
        assert row["steps_run"] <= steps and f"{row['actual_bits']:.1f}" in page, steps


def test_the_timings_block_is_the_benchmarks_file():
    """Run times come from one place: viz/timings.json, written with its block by
    `python3 -m tests.bench --times`."""
    from tests.helpers import TIMED, timings_table
    data = json.loads((ROOT / "viz" / "timings.json").read_text())
    assert readme_block("timings").strip() == timings_table(data).strip()
    assert list(data["runs"]) == [label for label, _, _ in TIMED]


def test_the_one_bit_page_quotes_its_committed_run():
    """The phenomena's numbers on docs/one_bit_vae.md come from viz/one_bit_vae.json."""
    import numpy as np
    with open(ROOT / "viz" / "one_bit_vae.json") as f:
        one = json.load(f)["one_bit"]["one_bit"]
    page = (ROOT / "docs" / "one_bit_vae.md").read_text()
    text = " ".join(page[page.index("The three phenomena"):].split())
    mean = lambda k, n, key: f"{np.mean([r[key] for r in one[k][n].values()]):.2f}"
    spread = max(max(r["loss"] for r in runs.values()) - min(r["loss"] for r in runs.values())
                 for k in one for runs in one[k].values())
    quoted = [", ".join(mean(k, n, "loss") for n in ("2", "5", "10", "100")) for k in "12"]
    quoted += [mean(k, "1000", "loss") for k in "12"]
    quoted += [f"is {mean('1', '100', 'gap')} bit at ndims 100 and {mean('1', '1000', 'gap')}",
               f"gap is {mean('2', '100', 'gap')} and {mean('2', '1000', 'gap')} bit",
               f"−log p(x) is {mean('2', '1000', 'neg_log_p')}", f"within {spread:.2f} bit"]
    assert not [q for q in quoted if q not in text], quoted


def test_the_one_bit_likelihood_agrees_with_its_quadrature_as_the_page_says():
    with open(ROOT / "viz" / "one_bit_vae.json") as f:
        one = json.load(f)["one_bit"]["one_bit"]
    worst = max(abs(r["neg_log_p"] - r["neg_log_p_quadrature"])
                for runs in one.values() for n in runs.values() for r in n.values())
    assert worst <= 0.03 and "to within 0.03 bit everywhere" in " ".join(
        (ROOT / "docs" / "one_bit_vae.md").read_text().split())
