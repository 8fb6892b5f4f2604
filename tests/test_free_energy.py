"""The free energy, its gradients, exact DLs and the refinement."""
import itertools

import numpy as np
import pytest
import scipy.special

import spline_images_factorial_vq as sv

X20, _ = sv.generate_spline_images(20, seed=0)


def random_family(rng, M=3, K=4, N=7, scale=0.3):
    return (rng.random((N, sv.D)), rng.normal(0, scale, (M, K, sv.D)), rng.normal(0, 0.1, sv.D),
            rng.normal(0, 1, (M, K)), rng.normal(0, 1.5, (N, M, K)))


def test_softmax_helpers_agree_with_scipy():
    z = np.random.default_rng(0).normal(0, 30, (5, 3, 7))
    for axis in (0, 1, -1):
        np.testing.assert_allclose(sv.softmax(z, axis), scipy.special.softmax(z, axis), rtol=1e-12)
        np.testing.assert_allclose(sv.log_softmax(z, axis), scipy.special.log_softmax(z, axis),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sv.logsumexp(z, axis), scipy.special.logsumexp(z, axis),
                                   rtol=1e-12)


def test_expected_error_equals_enumeration_over_all_codes():
    rng = np.random.default_rng(1)
    X, C, b, a, logits = random_family(rng)
    sigma = 0.3
    recon, kl = sv.free_energy(X, C, b, a, logits, sigma)
    q = scipy.special.softmax(logits, axis=-1)
    log_pi = scipy.special.log_softmax(a, axis=-1)
    M, K = a.shape
    for n in range(len(X)):
        err = kl_ref = 0.0
        for k in itertools.product(range(K), repeat=M):
            w = np.prod([q[n, d, k[d]] for d in range(M)])
            xhat = b + sum(C[d, k[d]] for d in range(M))
            err += w * np.sum((X[n] - xhat) ** 2)
            kl_ref += w * sum(np.log(q[n, d, k[d]]) - log_pi[d, k[d]] for d in range(M))
        assert recon[n] == pytest.approx(err / (2 * sigma**2), rel=1e-10)
        assert kl[n] == pytest.approx(kl_ref, rel=1e-10)


@pytest.mark.parametrize("variance", [True, False])
@pytest.mark.parametrize("kl_weight", [1.0, 0.3])
def test_free_energy_gradients_match_finite_differences(variance, kl_weight):
    rng = np.random.default_rng(2)
    X, C, b, a, logits = random_family(rng)
    args = dict(C=C, b=b, a=a, logits=logits)

    def loss(**kw):
        r, c = sv.free_energy(X, kw["C"], kw["b"], kw["a"], kw["logits"], 0.4, variance=variance)
        return np.mean(r + kl_weight * c)

    _, _, g = sv.free_energy(X, C, b, a, logits, 0.4, variance, kl_weight, grad=True)
    for name, value in args.items():
        num, ana = [], []
        for idx in rng.choice(value.size, size=min(25, value.size), replace=False):
            i = np.unravel_index(idx, value.shape)
            plus, minus = value.copy(), value.copy()
            plus[i] += 1e-6
            minus[i] -= 1e-6
            num.append((loss(**{**args, name: plus}) - loss(**{**args, name: minus})) / 2e-6)
            ana.append(g[name][i])
        assert_gradient_close(ana, num)


def assert_gradient_close(analytic, numeric):
    """Central differences in float64 carry ~1e-9 noise; a wrong gradient is off by O(1)."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    assert np.max(np.abs(numeric)) > 0
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6 * np.max(np.abs(numeric)))


@pytest.mark.parametrize("kw", [
    dict(n_dims=3, n_codes=4), dict(n_dims=2, n_codes=3, n_hidden=6),
    dict(n_dims=4, n_codes=3, bands=sv.column_bands(4)),
    dict(n_dims=4, n_codes=3, n_hidden=8, bands=sv.column_bands(4)),
    dict(n_dims=2, n_codes=3, n_hidden=6, act="relu")],
    ids=["linear", "hidden", "banded-linear", "banded-hidden", "hidden-relu"])
@pytest.mark.parametrize("variance", [True, False])
def test_model_gradients_through_recognition_match_finite_differences(kw, variance):
    rng = np.random.default_rng(3)
    model = sv.FactorialVQ(sigma_x=0.3, rng=np.random.default_rng(4), **kw).init_from_hard_code(X20)
    model.theta += rng.normal(0, 0.05, model.theta.shape) * model.trainable
    _, g = model.loss_and_grad(X20, kl_weight=0.7, variance=variance, sigma_x=0.4)
    assert np.all(g[model.trainable == 0] == 0)                      # frozen entries stay put
    def numeric(i):
        old = model.theta[i]
        model.theta[i] = old + 1e-6
        fp, _ = model.loss_and_grad(X20, 0.7, variance, 0.4)
        model.theta[i] = old - 1e-6
        fm, _ = model.loss_and_grad(X20, 0.7, variance, 0.4)
        model.theta[i] = old
        return (fp - fm) / 2e-6

    # 60 random entries, plus the middle trainable entry of every parameter block
    # (codebooks, bias, prior, recognition weights), so none goes unchecked
    idx = list(rng.choice(np.flatnonzero(model.trainable), 60, replace=False))
    for sl, _ in model._layout.values():
        block = np.flatnonzero(model.trainable[sl]) + sl.start
        idx += [block[len(block) // 2]] if len(block) else []
    assert_gradient_close(g[idx], [numeric(i) for i in idx])


def trained(name, steps=60, **kw):
    X, Xt = sv.load_data(0, 200, 300)
    model, _ = sv.fit_model(name, X, seed=0, steps=steps, **kw)
    return model, Xt


def test_bound_holds_and_is_tight_for_one_factor_with_the_exact_posterior():
    model, Xt = trained("standard_vq")
    exact = model.exact_dl(Xt)
    np.testing.assert_allclose(model.description_length(Xt)["total"], exact, rtol=1e-9)
    assert np.all(model.description_length(Xt, refine=0)["total"] >= exact - 1e-9)


@pytest.mark.parametrize("name", ["factorial_vq", "separate_slices", "residual_vq"])
def test_free_energy_is_never_below_the_exact_dl(name):
    model, Xt = trained(name)
    exact = model.exact_dl(Xt)
    assert np.all(model.description_length(Xt)["total"] >= exact - 1e-9)
    if name != "residual_vq":
        assert np.all(model.description_length(Xt, refine=0)["total"] >= exact - 1e-9)


def test_exact_dl_equals_brute_force_sum():
    model, Xt = trained("factorial_vq", steps=10, n_dims=2, n_units_per_dim=3)
    x = Xt[:3]
    ref = []
    for n in range(len(x)):
        terms = [model.log_prior(np.array([k]))[0]
                 - np.sum((x[n] - model.reconstruct(np.array([k]))[0]) ** 2) / (2 * 0.15**2)
                 for k in itertools.product(range(3), repeat=2)]
        ref.append(-scipy.special.logsumexp(terms) / np.log(2))
    np.testing.assert_allclose(model.exact_dl(x), ref, rtol=1e-10)


def test_exact_dl_is_skipped_beyond_the_enumeration_limit():
    model = sv.FactorialVQ(7, 5)                                    # 5^7 = 78,125 codes
    assert model.exact_dl(X20) is None


def test_refinement_never_increases_the_free_energy():
    model, Xt = trained("factorial_vq")
    p = model.p
    q = sv.softmax(model.recognition_logits(Xt))
    previous = np.inf
    for sweeps in range(6):
        qs = sv.mean_field(Xt, p["C"], p["b"], p["a"], q, model.sigma_x, sweeps=sweeps, tol=None)
        r, c = sv.free_energy(Xt, p["C"], p["b"], p["a"], np.log(qs), model.sigma_x)
        assert np.all(r + c <= previous + 1e-9)
        previous = r + c
    # and the refined headline is no worse than the amortised one, image by image
    assert np.all(model.description_length(Xt)["total"]
                  <= model.description_length(Xt, refine=0)["total"] + 1e-9)


@pytest.mark.parametrize("K", [5, 7])                # M K = 10 < 3 D: Gram; 14 > 3 D: pixels
def test_mean_field_matches_the_update_written_out(K):
    """Both routes of mean_field (the codebooks' Gram matrix, or the other factors' mean
    image when M K > 3 D) against the update computed in pixel space factor by factor, on
    D = 4 pixels, three models at once and an early stop."""
    rng = np.random.default_rng(K)
    R, N, M, Dx, sigma = 3, 9, 2, 4, 0.4
    X, C = rng.normal(size=(N, Dx)), rng.normal(size=(R, M, K, Dx))
    b, a = rng.normal(size=(R, Dx)), rng.normal(size=(R, M, K))
    q0 = sv.softmax(rng.normal(size=(R, N, M, K)))
    for sweeps, tol in ((3, None), (40, 1e-6)):
        got = sv.mean_field(X, C, b, a, q0, sigma, sweeps=sweeps, tol=tol)
        for r in range(R):
            q = q0[r].copy()
            for n in range(N):
                for _ in range(sweeps):
                    old = q[n].copy()
                    for d in range(M):
                        rest = X[n] - b[r] - sum(q[n, e] @ C[r, e] for e in range(M) if e != d)
                        q[n, d] = sv.softmax(sv.log_softmax(a[r, d]) + (C[r, d] @ rest - 0.5 * np.sum(
                            C[r, d] ** 2, axis=1)) / sigma**2)
                    if tol is not None and np.abs(q[n] - old).max() < tol:
                        break
            np.testing.assert_allclose(got[r], q, rtol=0, atol=1e-12 if tol is None else 1e-6)


@pytest.mark.parametrize("name", ["standard_vq", "factorial_vq", "separate_slices", "residual_vq"])
def test_monte_carlo_from_sampled_codes_agrees_with_description_length(name):
    model, Xt = trained(name, sigma_x=0.6)                     # softer posteriors: a real test
    x = Xt[:100]
    n_draws = 400
    xr = np.repeat(x, n_draws, axis=0)
    codes, log_q = model.sample_codes(xr, np.random.default_rng(5))
    assert codes.shape == (len(xr), model.n_dims) and codes.dtype.kind == "i"
    cost = (np.sum((xr - model.reconstruct(codes)) ** 2, axis=1) / (2 * model.sigma_x**2)
            + log_q - model.log_prior(codes)) / np.log(2)
    # draws within an image vary around that image's F: the pooled within-image error
    within = cost.reshape(len(x), n_draws)
    target = model.description_length(x)["total"]
    if name in ("standard_vq", "separate_slices"):
        # the refined posterior of independent bands is exact: every draw costs -log2 p(x)
        np.testing.assert_allclose(within, np.repeat(target[:, None], n_draws, 1), rtol=1e-9)
        return
    assert within.std(axis=1).max() > 0.1                      # the draws really vary
    se = np.sqrt(np.sum(within.var(axis=1, ddof=1) / n_draws)) / len(x)
    assert abs(cost.mean() - target.mean()) < 4 * se, (cost.mean(), target.mean(), se)


def test_residual_chain_enumeration_matches_monte_carlo_path():
    # a broad likelihood keeps the chain's posterior uncertain, so sampling has work to do
    model, Xt = trained("residual_vq", n_dims=2, n_units_per_dim=3, sigma_x=0.8)
    exact = model.description_length(Xt[:50])
    sv_max, sv.MAX_ENUMERATION = sv.MAX_ENUMERATION, 1        # force the Monte Carlo branch
    try:
        mc = model.description_length(Xt[:50], n_draws=2000, rng=np.random.default_rng(0))
    finally:
        sv.MAX_ENUMERATION = sv_max
    assert np.median(mc["se"]) > 1e-3                           # the draws really vary
    pooled_se = np.sqrt(np.sum(mc["se"] ** 2)) / 50
    assert abs(mc["total"].mean() - exact["total"].mean()) < 4 * pooled_se
