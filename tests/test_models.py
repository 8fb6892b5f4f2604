"""PCA, Adam, k-means++ seeding and the public API."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import spline_images_factorial_vq as sv


@pytest.mark.parametrize("n", [5, 24])
def test_ppca_total_is_the_closed_form_gaussian_density(n):
    X, Xt = sv.load_data(0, 200, 100)
    model = sv.PCA(n, sigma_x=0.15).fit(X)
    cov = model.W @ np.diag(model.lam) @ model.W.T + 0.15**2 * np.eye(sv.D)
    nats = -multivariate_normal(model.mean, cov).logpdf(Xt) - sv.D * np.log(0.15 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(model.description_length(Xt)["total"], nats / np.log(2), rtol=1e-9)
    parts = model.description_length(Xt)
    np.testing.assert_allclose(parts["recon"] + parts["code"], parts["total"])
    assert np.all(parts["code"] >= 0)


def test_ppca_prior_variances_are_the_ml_estimates():
    X, _ = sv.load_data(0, 200, 10)
    model = sv.PCA(5, sigma_x=0.15).fit(X)
    scores = (X - model.mean) @ model.W
    np.testing.assert_allclose(model.lam, scores.var(axis=0) - 0.15**2, rtol=1e-9)
    np.testing.assert_allclose(model.W.T @ model.W, np.eye(5), atol=1e-12)
    with pytest.raises(ValueError):
        sv.PCA(24).fit(X[:10])


def reference_adam(grad, x0, lr, steps, b1=0.9, b2=0.999, eps=1e-8):
    """Kingma & Ba's Algorithm 1, one scalar at a time."""
    x = list(x0)
    m, v = [0.0] * len(x), [0.0] * len(x)
    for t in range(1, steps + 1):
        g = grad(np.array(x))
        for i in range(len(x)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            x[i] -= lr * (m[i] / (1 - b1**t)) / ((v[i] / (1 - b2**t)) ** 0.5 + eps)
    return np.array(x)


def test_adam_matches_the_reference_on_a_quadratic():
    A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.3]])
    target = np.array([1.0, -2.0, 0.5])
    grad = lambda x: A @ (x - target)
    x = np.zeros(3)
    opt = sv.Adam([x], lr=0.05)
    for _ in range(300):
        opt.step([grad(x)])
    np.testing.assert_allclose(x, reference_adam(grad, np.zeros(3), 0.05, 300), rtol=1e-12)
    assert np.linalg.norm(x - target) < 0.1                       # and it does minimise


def test_adam_keeps_state_per_parameter():
    a, b = np.zeros(2), np.zeros(3)
    opt = sv.Adam([a, b], lr=0.1)
    opt.step([np.ones(2), -np.ones(3)])
    np.testing.assert_allclose(a, -0.1, rtol=1e-6)
    np.testing.assert_allclose(b, 0.1, rtol=1e-6)


def test_kmeans_pp_picks_distinct_far_apart_rows():
    X = np.repeat(np.eye(6), 10, axis=0)                          # 6 distinct points
    idx = sv.kmeans_pp(X, 6, np.random.default_rng(0))
    assert len({tuple(X[i]) for i in idx}) == 6


def test_run_comparison_returns_the_api_of_the_spec():
    out = sv.run_comparison(seed=1, n_samples=60, n_test=40, steps=15)
    assert set(out["models"]) == set(sv.MODEL_NAMES)
    assert out["train"].shape == (60, 96) and out["heldout"].shape == (40, 96)
    rng = np.random.default_rng(0)
    for name, model in out["models"].items():
        dl = model.description_length(out["heldout"])
        assert set(dl) >= {"recon", "code", "total"} and dl["total"].shape == (40,)
        if name.startswith("pca"):
            assert model.reconstruct(out["heldout"]).shape == (40, 96)
            continue
        codes, log_q = model.sample_codes(out["heldout"], rng)
        M = 1 if name in ("standard_vq", "hard_standard") else 4
        assert codes.shape == (40, M) and log_q.shape == (40,) and np.all(log_q <= 0)
        assert model.reconstruct(codes).shape == (40, 96)
        assert model.log_prior(codes).shape == (40,)
        assert model.exact_dl(out["heldout"]).shape == (40,)
        assert model.sigma_x == 0.15
        if name != "residual_vq":
            q = model.posteriors(out["heldout"])
            assert len(q) == M and all(np.allclose(qd.sum(axis=1), 1) for qd in q)


def test_slice_codebooks_stay_inside_their_bands():
    out = sv.run_comparison(seed=0, n_samples=60, n_test=10, steps=30, models=["separate_slices"])
    C = out["models"]["separate_slices"].p["C"]
    outside = 1.0 - sv.column_bands(4)[:, None, :]
    assert np.all(C * outside == 0) and np.any(C != 0)


def test_training_history_records_both_sets():
    out = sv.run_comparison(seed=0, n_samples=60, n_test=20, steps=20, eval_every=5,
                            models=["factorial_vq"])
    h = out["histories"]["factorial_vq"]
    em = list(range(0, sv.EM_ITERS + 1, 5))                 # the EM's iterations, then Adam's
    assert h["eval_step"] == em + [sv.EM_ITERS + t for t in (5, 10, 15, 20)]
    assert len(h["train"]) == len(h["heldout"]) == len(h["heldout_code"]) == len(em) + 4
    assert len(h["loss"]) == 20


def test_copies_keep_parameters_as_views_of_theta():
    import copy
    import pickle
    model = sv.FactorialVQ(2, 3).init_from_hard_code(sv.load_data(0, 200, 10)[0])
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.theta += 1.0
        np.testing.assert_array_equal(clone.p["b"], model.p["b"] + 1.0)
        assert not np.shares_memory(clone.theta, model.theta)


def test_residual_history_follows_the_chain_training():
    out = sv.run_comparison(seed=0, n_samples=60, n_test=20, steps=40, eval_every=10,
                            models=["residual_vq"])
    model, h = out["models"]["residual_vq"], out["histories"]["residual_vq"]
    assert h["eval_step"] == [0, 10, 20, 30, 40]
    assert h["heldout"][-1] == pytest.approx(model.description_length(out["heldout"])["total"].mean())


def test_snapshots_replay_the_training():
    X = sv.load_data(0, 200, 10)[0][:50]
    model = sv.FactorialVQ(2, 3, rng=np.random.default_rng(0)).init_from_hard_code(X)
    h = sv.train(model, X, steps=12, snapshot_every=5)
    assert [s for s, _ in h["snapshots"]] == [0, 5, 10, 12]
    np.testing.assert_array_equal(h["snapshots"][-1][1], model.theta)


@pytest.mark.parametrize("name", ["factorial_vq", "residual_vq"])
def test_mean_reconstruction_is_the_average_of_sampled_reconstructions(name):
    X, Xt = sv.load_data(0, 200, 20)
    model, _ = sv.fit_model(name, X, steps=40, sigma_x=0.4)
    xr = np.repeat(Xt, 3000, axis=0)
    codes, _ = model.sample_codes(xr, np.random.default_rng(1))
    mc = model.reconstruct(codes).reshape(20, 3000, sv.D).mean(axis=1)
    np.testing.assert_allclose(model.mean_reconstruction(Xt), mc, atol=0.03)
    if name == "factorial_vq":
        np.testing.assert_allclose(model.contributions(Xt).sum(axis=0) + model.p["b"],
                                   model.mean_reconstruction(Xt), rtol=1e-12)


def test_run_comparison_gives_the_same_models_in_parallel():
    kw = dict(seed=2, n_samples=60, n_test=30, steps=20, score=True)
    one, two = sv.run_comparison(workers=1, **kw), sv.run_comparison(workers=2, **kw)
    assert list(two["models"]) == list(sv.MODEL_NAMES)
    for name in sv.MODEL_NAMES:
        assert one["scores"][name] == two["scores"][name]
