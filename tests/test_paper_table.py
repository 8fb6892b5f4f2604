"""The search for the paper's reading (paper_table.py): the generator's options, the
distance, the committed search against its block and against a fresh fit of one reading,
and its merge."""
import json

import numpy as np
import pytest

import paper_table as pt
import spline_images_factorial_vq as sv
from tests.helpers import ROOT, TOL, readme_block, run_script

COMMITTED = ROOT / "viz" / "paper_table.json"


@pytest.fixture(scope="module")
def search():
    return json.loads(COMMITTED.read_text())


def test_the_default_reading_is_the_generator_every_number_was_made_with():
    images, controls = sv.generate_spline_images(50, 3, 1)
    same = sv.generate_spline_images(50, 3, 1, sv.BLUR_SIGMA, sv.CONTROL_RANGE, "uniform")
    assert np.array_equal(images, same[0]) and np.array_equal(controls, same[1])
    assert controls.min() >= 0.5 and controls.max() <= 6.5
    _, normal = sv.generate_spline_images(20_000, 3, 1, 0.6, (1.5, 5.5), "normal")
    assert abs(normal.mean() - 3.5) < 0.02 and abs(normal.std() - 1.0) < 0.02
    wide = sv.generate_spline_images(5, 3, 1, 1.3)[0]
    assert not np.allclose(wide, images[:5])                   # the blur reaches the pixels


def test_t_takes_up_half_the_reconstruction_gap_and_every_miss_is_counted():
    means = {"factorial_vq": {"recon": 40.0, "code": 9.0, "total": 49.0},
             "standard_vq": {"recon": 61.0, "code": 4.5, "total": 65.5},
             "separate_slices": {"recon": 50.0, "code": 9.0, "total": 59.0}}
    m = pt.misses(means)
    f, s = (means[n]["recon"] + m["offset"] for n in ("factorial_vq", "standard_vq"))
    assert f - 18 == pytest.approx(-(s - 36)) == pytest.approx(m["t_free"]["recon gap"] * -1)
    assert m["t_free"] == pytest.approx({"recon gap": 1.5, "factorial code": 2.0,
                                         "standard code": 0.5, "slices gap": 5.0})
    assert pt.largest(m["t_free"]) == 5.0 and pt.largest(m["t_convention"]) == 25.0
    # t shifts every reconstruction by D log2(sigma sqrt(2 pi) / t)
    assert sv.D * np.log2(1 / m["t_ratio"]) == pytest.approx(m["offset"])


def test_the_block_is_the_committed_search(search):
    assert readme_block("paper_table").strip() == pt.format_search(search, markdown=True).strip()
    assert len(search["readings"]) == (len(pt.BLURS) * len(pt.HEIGHTS) * len(pt.DISTS)
                                       * len(pt.SIGMAS))
    assert search["seeds"] == [0, 1, 2, 3, 4]
    best = search["readings"][search["best"]]
    assert best["validation_distance"] == min(e["validation_distance"]
                                              for e in search["readings"])


def test_the_verdict_quotes_the_committed_search(search):
    page = (ROOT / "docs" / "paper.md").read_text()
    verdict = page[page.index("What it shows:", page.index("paper_table:end")):]
    verdict = " ".join(verdict[:verdict.index("\n## ")].split())
    best = search["readings"][search["best"]]
    factors = {k: sum(f[k] for f in search["factors"]) for k in search["factors"][0]}
    held = best["heldout"]
    quoted = [f"{best['heldout_distance']:.2f} bits held-out",
              f"{search['frontier']['min_code']:.2f} bits",
              f"{factors['posterior_entropy']:.2f} bits of entropy",
              f"{factors['usage_entropy']:.2f} bits of the 10.34",
              f"{held['separate_slices']['total_mean'] - held['factorial_vq']['total_mean']:.1f} "
              f"bits behind", f"blur {best['blur']:g} pixels", f"σ_x = {best['sigma_x']:g}",
              f"{factors['code'] - 7:.1f} bits less"]
    settings = ("blur", "heights", "heights_dist", "sigma_x")
    spread = {name: np.ptp([e["validation_distance"] for e in search["readings"] if all(
        e[k] == best[k] for k in settings if k != name)]) for name in settings}
    caption = " ".join(page[page.index("*Left: the largest miss"):page.index("What it shows:")]
                       .split())
    quoted_caption = [f"blur by {spread['blur']:.1f} bits", f"σ_x by {spread['sigma_x']:.1f}",
                      f"heights by {spread['heights']:.1f}",
                      f"distribution by {spread['heights_dist']:.1f}"]
    assert not [q for q in quoted_caption if q not in caption], quoted_caption
    missing = [q for q in quoted if q not in verdict]
    assert not missing, missing
    assert f"{4 * np.log2(6):.2f}" == "10.34"             # four uniform factors of 6 codes


def test_one_reading_refits_to_the_committed_numbers(search):
    best = search["readings"][search["best"]]
    reading = [best["blur"], *best["heights"], best["heights_dist"], best["sigma_x"]]
    _, _, fresh = pt.reading_task((reading, 0))
    committed = next(r for key, seed, r in search["runs"] if key == reading and seed == 0)
    for split in ("validation", "heldout"):
        for name in ("factorial_vq", "standard_vq", "separate_slices"):
            for term in pt.TERMS:
                assert fresh[split][name][term] == pytest.approx(
                    committed[split][name][term], abs=TOL), (split, name, term)


def test_the_search_split_by_seed_merges_back_to_itself(tmp_path, search):
    paths = []
    for seed in (4, 0, 2, 1, 3):
        part = {"config": {**search["config"], "seeds": [seed]}, "runs": [
            r for r in search["runs"] if r[1] == seed]}
        paths.append(str(tmp_path / f"s{seed}.json"))
        (tmp_path / f"s{seed}.json").write_text(json.dumps(part))
    out = run_script("paper_table.py", "--merge", *paths, "--json", str(tmp_path / "m.json"),
                     "--quiet")
    assert out.returncode == 0, out.stderr
    merged = json.loads((tmp_path / "m.json").read_text())
    assert {k: merged[k] for k in ("readings", "best", "factors", "rankings", "runs")} == \
        {k: search[k] for k in ("readings", "best", "factors", "rankings", "runs")}
    assert out.stdout.strip() == pt.format_search(search).strip()


@pytest.mark.parametrize("args, message", [
    (["--heights", "3", "2"], "LOW must be below HIGH"),
    (["--compress", "--blur", "1.3"], "code the default generator's images"),
    (["--experiment", "sweep", "--heights-dist", "normal"], "leave out --heights-dist"),
    (["--blur", "0"], "--blur: must be >="),
])
def test_bad_readings_are_refused_in_one_line(args, message):
    out = run_script("spline_images_factorial_vq.py", *args)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1


def test_a_reading_is_named_in_the_table_and_kept_with_saved_models(tmp_path):
    args = ["--models", "pca5", "--n-test", "50", "--blur", "1.3", "--heights", "1.5", "5.5",
            "--heights-dist", "normal", "--quiet"]
    out = run_script("spline_images_factorial_vq.py", *args, "--save-models", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "images blurred by 1.3 pixels, heights normal, mean 3.5, sd 1" in out.stdout
    out = run_script("spline_images_factorial_vq.py", "--models", "pca5", "--n-test", "50",
                     "--quiet", "--load-models", str(tmp_path))
    assert out.returncode == 2 and "blur_sigma = 1.3; this run asks for 0.6" in out.stderr
