"""The open-question experiments: MI estimate, importance sampling, CLI and figures."""
import json

import numpy as np
import pytest
from scipy.integrate import quad

import spline_images_factorial_vq as sv
from tests.helpers import run_script



def test_mi_of_independent_codes_is_near_zero():
    rng = np.random.default_rng(0)
    n = 20000
    q = np.eye(6)[rng.integers(0, 6, n)]
    labels = sv.quantile_bins(rng.uniform(0.5, 6.5, n))
    # the plug-in bias is about (K-1)(B-1) / (2 n ln 2) = 0.0025 bits here
    assert 0 <= sv.mutual_information(q, labels, 8) < 0.01


def test_mi_of_a_code_equal_to_the_binned_height_is_its_entropy():
    rng = np.random.default_rng(1)
    h = rng.uniform(0.5, 6.5, 4000)
    labels = sv.quantile_bins(h, 8)
    q = np.eye(8)[labels]                                           # the code is the bin
    counts = np.bincount(labels, minlength=8) / len(h)
    entropy = -np.sum(counts * np.log2(counts))
    assert entropy == pytest.approx(3.0, abs=1e-3)                  # equal-frequency bins
    assert sv.mutual_information(q, labels, 8) == pytest.approx(entropy, rel=1e-12)
    # a soft code that keeps half its mass on the right bin knows less
    soft = 0.5 * q + 0.5 / 8
    assert sv.mutual_information(soft, labels, 8) < entropy


def test_importance_sampling_agrees_with_quadrature_on_a_1d_generator():
    render = lambda h: np.stack([np.sin(3 * h[:, 0]), h[:, 0] ** 2, np.cos(h[:, 0])], axis=1)
    sigma, low, high = 0.1, 0.0, 1.0
    x = render(np.array([[0.37]]))[0] + np.array([0.03, -0.02, 0.01])
    integrand = lambda h: np.exp(-np.sum((x - render(np.array([[h]]))[0]) ** 2) / (2 * sigma**2))
    exact = -np.log2(quad(integrand, low, high, points=[0.37], limit=200)[0] / (high - low))
    log_lik = lambda h: -np.sum((x - render(h)) ** 2, axis=1) / (2 * sigma**2)
    dl, se, _ = sv.importance_dl(log_lik, np.array([0.4]), np.array([[0.05**2]]), low, high,
                                 20000, np.random.default_rng(2))
    assert 0 < se < 0.05
    assert abs(dl - exact) < 4 * se


def test_importance_sampling_measures_an_indicator_region():
    """The 8-bit limit's likelihood is an indicator: a box of known volume in 2-D."""
    inside = lambda h: np.where(np.all(np.abs(h - [0.3, 0.6]) <= [0.01, 0.02], axis=1),
                                0.0, -np.inf)
    dl, se, _ = sv.importance_dl(inside, np.array([0.3, 0.6]), np.diag([0.01, 0.02]) ** 2,
                                 0.0, 1.0, 20000, np.random.default_rng(3))
    exact = -np.log2(0.02 * 0.04)
    assert 0 < se < 0.05 and abs(dl - exact) < 4 * se


def test_generator_8bit_code_length_is_a_probability_of_the_exact_image():
    Xt, ctrl = sv.generate_spline_images(3, 0, stream=1)
    V = sv.quantise_images(Xt)
    bits, se = sv.generator_bits_8bit(V, ctrl, n_samples=1000, rng=np.random.default_rng(1))
    # five heights, each known to a few 1e-4 of its range of 6: about 12 bits apiece
    assert np.all(se < 0.5) and np.all((45 < bits) & (bits < 75))
    again, se2 = sv.generator_bits_8bit(V, ctrl, n_samples=1000, rng=np.random.default_rng(2))
    assert np.all(np.abs(bits - again) < 4 * np.hypot(se, se2) + 0.3)


def test_sigma_summary_states_where_each_finding_holds():
    """Synthetic runs at two sigmas: the rankings' signs, the seeds counted, and the sigma
    nearest the paper's four numbers."""
    def run(f, s, sl, p_recon, p_code):
        return {"factorial_vq": {"recon": f[0], "code": f[1], "total": sum(f)},
                "standard_vq": {"recon": s[0], "code": s[1], "total": sum(s)},
                "separate_slices": {"recon": sl, "code": 0.0, "total": sl},
                "pca24": {"recon": p_recon, "code": p_code, "total": p_recon + p_code}}
    runs = {0.1: [run((60, 10), (90, 4), 80, 20, 30), run((62, 10), (91, 4), 81, 21, 30)],
            0.3: [run((18, 7), (36, 4), 30, 17, 12), run((19, 7), (37, 4), 20, 20, 12)]}
    v = sv.sigma_summary(runs)
    assert v["paper_sigma"] == 0.3
    assert v["paper_distance"]["0.3"] == pytest.approx(np.linalg.norm([0.5, 0, 0.5, 0]))
    r = v["rankings"]
    assert r["factorial_beats_standard"]["0.1"] == {"diff_mean": 23.5, "diff_sd": pytest.approx(
        np.std([24, 23], ddof=1)), "seeds_holding": 2}
    assert r["linear_worse"]["0.1"]["seeds_holding"] == 0          # 50 < 70
    assert r["linear_worse"]["0.3"]["seeds_holding"] == 2          # 29, 32 > 25, 26
    assert r["slices_worse"]["0.3"]["seeds_holding"] == 1          # 30 > 25, 20 < 26
    assert r["linear_recon_lower"]["0.3"]["seeds_holding"] == 1    # 17 < 18, 20 > 19
    text = sv.format_sigma(v, [0, 1])
    # at 0.3 the slices lose on one seed and win on the mean (25 against 25.5)
    assert "separate slices above factorial VQ: on the mean at sigma_x = 0.1; on every seed " \
           "at 0.1\n" in text


def test_segment_heights_are_the_spline_means():
    ctrl = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])                    # a straight line
    np.testing.assert_allclose(sv.segment_heights(ctrl)[0], [1.5, 2.5, 3.5, 4.5], rtol=1e-3)


def test_generator_dl_is_near_the_laplace_estimate():
    Xt, ctrl = sv.generate_spline_images(5, 0, stream=1)
    bits, se = sv.generator_dl(Xt, ctrl, n_samples=2000)
    assert np.all(se < 0.2) and 15 < bits.mean() < 27               # about 21 bits




def test_experiment_cli_writes_json_and_figures(tmp_path, cli):
    import visualize_spline_images_factorial_vq as viz
    out = tmp_path / "e.json"
    res = run_script("spline_images_factorial_vq.py", "--experiment", "annealing", "--seeds", "0",
                     "--json", str(out), timeout=300)
    assert res.returncode == 0, res.stderr
    assert "[6/6]" in res.stderr and "poor optima" in res.stdout
    data = json.loads(out.read_text())
    assert set(data["annealing"]) == {"sigma", "kl", "none", "sigma/random-init",
                                      "kl/random-init", "none/random-init"}
    assert all(v["runs"] == 1 for v in data["annealing"].values())
    status, _, err = cli(viz.main, "--experiments", str(out), "--outdir", str(tmp_path / "viz"),
                         "--quiet")
    assert status == 0, err
    assert [p.name for p in (tmp_path / "viz").iterdir()] == ["annealing.png"]
    status, _, err = cli(viz.main, "--experiments", str(tmp_path / "none"),
                         "--outdir", str(tmp_path / "viz"))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
