"""The earlier reproduction's recipe (--experiment earlier): its models, its number beside the
valid F, and its table rerun."""
import math

import numpy as np
import pytest

import spline_images_factorial_vq as sv
from tests.helpers import ROOT, TOL, committed, readme_block

X, XT = sv.load_data(0, 200, 50)


def test_its_vq_is_one_relu_network_per_factor_with_no_bias_and_a_uniform_prior():
    model = sv.earlier_vq(6, [1, 2, 3])
    H = sv.EARLIER["hidden"]
    before = model.recognition_logits(X[:10])
    model.p["W1"][:, H:2 * H] += 1.0                   # factor 1's hidden units only
    after = model.recognition_logits(X[:10])
    changed = np.abs(after - before).max(axis=(0, 2)) > 0
    assert changed.tolist() == [False, True, False]
    assert model.act == "relu" and np.all(model.p["b"] == 0) and np.all(model.p["a"] == 0)
    _, g = model.loss_and_grad(X[:20], kl_weight=0.5, variance=False)
    views = model._views(g)
    assert np.all(views["b"] == 0) and np.all(views["a"] == 0)     # frozen: never learned
    assert np.all(views["W2"][:H, 6:] == 0)                        # unit of 0 -> factor 1: cut
    # its draws: factor d's weights and codewords from default_rng(its seed), in its order
    rng = np.random.default_rng(3)
    assert np.allclose(model.p["W1"][:, 2 * H:], 0.3 * rng.standard_normal((96, H)))
    assert np.allclose(model.p["W2"][2 * H:, 12:], 0.3 * rng.standard_normal((H, 6)))
    assert np.allclose(model.p["C"][2], 0.09 * rng.standard_normal((6, 96)))


def test_joined_separate_vqs_feed_x_to_every_factor():
    seeds = [5, 6, 7, 8]
    stages = [sv.earlier_vq(6, [s]) for s in seeds]
    for i, stage in enumerate(stages):                 # make them differ from their draws
        stage.theta += np.random.default_rng(i).normal(0, 0.1, stage.theta.shape) * stage.trainable
    joined = sv.join_factors(stages)
    want = sum(stage.mean_reconstruction(X) for stage in stages)
    assert np.allclose(joined.mean_reconstruction(X), want, atol=1e-12)
    kl = sum(stage.description_length(X, refine=0)["code"] for stage in stages)
    assert np.allclose(joined.description_length(X, refine=0)["code"], kl)


def test_its_pca_valid_F_adds_the_spread_and_a_sampled_estimate_agrees():
    got = sv.earlier_pca(X, XT)
    sigma, s = sv.EARLIER["sigma_x"], sv.EARLIER["pca_sd"]
    spread = 5 * s**2 / (2 * sigma**2) / math.log(2)
    for a, b in (("its", "valid"), ("its_heldout", "valid_heldout")):
        assert got[b]["recon"] - got[a]["recon"] == pytest.approx(spread, abs=1e-9)
        assert got[b]["code"] == pytest.approx(got[a]["code"], abs=1e-12)
    # the valid recon is E_q ||x - mean - V z||^2 / (2 sigma^2) for z ~ N(score, s^2 I)
    mean = X.mean(axis=0)
    V = np.linalg.svd(X - mean, full_matrices=False)[2][:5].T
    z = (XT - mean) @ V
    rng = np.random.default_rng(0)
    draws = z[None] + s * rng.standard_normal((2000, *z.shape))
    err = ((XT - mean)[None] - draws @ V.T) ** 2
    sampled = err.sum(axis=2).mean() / (2 * sigma**2) / math.log(2)
    assert sampled == pytest.approx(got["valid_heldout"]["recon"], rel=2e-3)


def test_below_both_finds_the_first_last_and_lasting_steps():
    t = {"step": [0, 10, 20, 30, 40], "standard_vq": {"x": [5, 5, 5, 5, 5]},
         "separate_vq": {"x": [9, 9, 9, 9, 9]}, "factorial_vq": {"x": [6, 4, 6, 4, 3]}}
    assert sv.below_both(t, "x") == {"first": 10, "last": 40, "stays": 30}
    t["factorial_vq"]["x"] = [6, 4, 4, 6, 6]
    assert sv.below_both(t, "x") == {"first": 10, "last": 20, "stays": None}
    t["factorial_vq"]["x"] = [6, 6, 6, 6, 6]
    assert sv.below_both(t, "x") == {"first": None, "last": None, "stays": None}


def test_the_page_is_the_committed_run_which_is_its_table_and_merges_by_seed():
    data = committed("earlier")
    v = data["earlier"]
    assert readme_block("earlier").strip() == sv.format_experiments(
        {"earlier": v}, data["config"]["seeds"], markdown=True).strip()
    assert v["seeds"] == [0, 1, 2, 3, 4]
    assert v["seed0_miss"] <= 2.0 and v["totals_miss"] <= 2.0       # the aim
    for name in sv.EARLIER_LABELS:                  # the variance term is never negative
        assert v["table"][name]["valid"]["recon_mean"] >= v["table"][name]["its"]["recon_mean"]
    runs = data["experiment_runs"]
    parts = [{"experiment_runs": [r for r in runs if r[1] == s]} for s in (0, 1, 2, 3, 4)]
    merged, _ = sv.merged("experiment_runs", parts, data["config"])
    assert merged["earlier"] == v


def test_the_page_quotes_its_committed_run():
    page = (ROOT / "docs" / "paper.md").read_text()
    prose = page[page.index("<!-- earlier:end -->"):]
    v = committed("earlier")["earlier"]
    t, tb = v["trajectory"], v["table"]
    factorial = np.array(t["factorial_vq"]["valid_heldout"])
    last = [b["last"] for b in v["below_both"]["valid_heldout"]]
    quoted = [f"{v['seed0_miss']:.2f}", f"{v['totals_miss']:.2f}",
              *(f"{tb[n][k]['total_mean']:.2f}" for k in ("valid", "its", "valid_heldout")
                for n in ("standard_vq", "separate_vq", "factorial_vq")),
              f"{v['no_code_heldout'][0]:.2f}", f"{tb['factorial_vq']['its']['code_mean']:.2f}",
              f"{t['factorial_vq']['its'][0]:.2f}", f"{t['factorial_vq']['its'][-1]:.2f}",
              f"step {t['step'][int(factorial.argmin())]} ({factorial.min():.2f} bits",
              f"{factorial[-1]:.2f}", f"steps {min(last)}–{max(last)}",
              f"{tb['pca5']['valid']['total_mean'] - tb['pca5']['its']['total_mean']:.2f} bits"]
    assert [q for q in quoted if q not in prose] == []
    assert all(b["first"] == 10 for b in v["below_both"]["its"])       # "from ... (10) on"
    assert all(b["stays"] == 10 for b in v["below_both"]["its"])


def test_a_fresh_run_of_seed_0_is_the_committed_one(monkeypatch):
    """The task the CLI runs per seed; the trajectory's cadence does not touch the final
    scores, so it is coarsened here to save time."""
    monkeypatch.setitem(sv.EARLIER, "eval_every", sv.EARLIER["steps"])
    kind, seed, _, res = sv.experiment_task((sv.EARLIER_EXPERIMENT, 0, None))
    assert (kind, seed, res["trajectory"]["step"]) == ("earlier", 0, [0, sv.EARLIER["steps"]])
    want = next(r for r in committed("earlier")["experiment_runs"] if r[1] == 0)[3]
    got = res["models"]
    for name in want["models"]:
        for key in want["models"][name]:
            for term in ("recon", "code", "total"):
                assert abs(got[name][key][term] - want["models"][name][key][term]) <= TOL, \
                    (name, key, term)
    for name in ("standard_vq", "factorial_vq"):
        assert abs(res["trajectory"][name]["its"][-1] - want["trajectory"][name]["its"][-1]) <= TOL


def test_earlier_is_asked_for_by_name_and_not_with_all(cli):
    status, _, err = cli(sv.main, "--experiment", "all", "earlier")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert sv.EARLIER_EXPERIMENT not in sv.EXPERIMENTS
