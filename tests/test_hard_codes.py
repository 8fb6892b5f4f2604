"""Hard codes, least-squares codebooks, variational EM and the residual chain's exact F:
the pieces that bring every bits-back model to at least its hard code."""
import itertools

import numpy as np
import pytest
import scipy.interpolate

import spline_images_factorial_vq as sv

X40 = sv.load_data(0, 200, 10)[0][:40]


def brute_force_codes(X, C, b, log_pi, sigma):
    """argmin_k ||x - xhat(k)||^2 / (2 sigma^2) - log p(k) by listing every joint code."""
    M, K = log_pi.shape
    joint = np.array(list(itertools.product(range(K), repeat=M)))
    xhat = b + C[np.arange(M), joint].sum(axis=1)
    cost = (((X[:, None] - xhat[None]) ** 2).sum(-1) / (2 * sigma**2)
            - log_pi[np.arange(M), joint].sum(axis=1))
    return joint[cost.argmin(axis=1)], cost.min(axis=1)


def random_models(rng, R=3, M=3, K=4, bands=None):
    C = rng.normal(0, 0.3, (R, M, K, sv.D))
    if bands is not None:
        C = C * bands[:, None, :]
    return C, rng.normal(0, 0.1, (R, sv.D)), sv.log_softmax(rng.normal(0, 1, (R, M, K)))


@pytest.mark.parametrize("banded", [False, True])
def test_shortest_codes_are_the_brute_force_minimum_for_every_model(banded):
    rng = np.random.default_rng(0)
    bands = sv.column_bands(3) if banded else None      # disjoint: one sweep is exact
    C, b, log_pi = random_models(rng, bands=bands)
    codes = sv.shortest_codes(X40, C, b, log_pi, 0.3)
    for r in range(len(C)):
        want, _ = brute_force_codes(X40, C[r], b[r], log_pi[r], 0.3)
        np.testing.assert_array_equal(codes[r], want)


def test_coordinate_search_beyond_the_limit_ends_at_a_local_optimum():
    rng = np.random.default_rng(1)
    C, b, log_pi = random_models(rng, R=2)
    codes = sv.shortest_codes(X40, C, b, log_pi, 0.3, max_joint=8)   # 4^3 codes: too many
    M, K = log_pi.shape[1:]
    for r in range(2):
        length = lambda k: (((X40 - b[r] - C[r][np.arange(M), k].sum(1)) ** 2).sum(1) / 0.18
                            - log_pi[r][np.arange(M), k].sum(1))
        best = length(codes[r])
        for d, k in itertools.product(range(M), range(K)):      # no single change helps
            moved = codes[r].copy()
            moved[:, d] = k
            assert np.all(length(moved) >= best - 1e-9)


@pytest.mark.parametrize("banded", [False, True])
def test_least_squares_codebooks_zero_the_gradient_of_the_expected_error(banded):
    rng = np.random.default_rng(2)
    M, K = 3, 4
    bands = sv.column_bands(M) if banded else None
    q = sv.softmax(rng.normal(0, 2, (40, M, K)))
    C_old = rng.normal(0, 0.3, (M, K, sv.D))
    b, C = sv.least_squares_codebooks(X40, q, C_old, sv.pixel_groups(M, bands))
    _, _, g = sv.free_energy(X40, C, b, np.zeros((M, K)), np.log(q), 0.3, grad=True)
    mask = np.ones((M, K, sv.D)) if bands is None else np.repeat(bands[:, None], K, axis=1)
    assert np.abs(g["C"] * mask).max() < 1e-9 and np.abs(g["b"]).max() < 1e-9
    if banded:
        assert np.all(C * (1 - mask) == 0)


def test_one_hot_least_squares_fit_equals_the_design_matrix_fit():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, (40, 2))
    b, C = sv.least_squares_codebooks(X40, sv.one_hot(codes, 4), np.zeros((2, 4, sv.D)),
                                      sv.pixel_groups(2))
    design = np.concatenate([np.ones((40, 1)), sv.one_hot(codes, 4).reshape(40, -1)], axis=1)
    fitted = design @ np.linalg.lstsq(design, X40, rcond=None)[0]
    np.testing.assert_allclose(b + C[np.arange(2), codes].sum(1), fitted, atol=1e-9)


def test_hard_code_search_ends_at_a_fixed_point_and_reports_its_length():
    found = sv.hard_code_search(X40, 2, 3, 0.15, np.random.default_rng(4), restarts=3)
    assert [f["bits"] for f in found] == sorted(f["bits"] for f in found)
    for f in found:
        codes = sv.shortest_codes(X40, f["C"], f["b"], sv.log_softmax(f["a"]), 0.15)
        freq = sv.one_hot(codes, 3).mean(axis=0)
        np.testing.assert_allclose(np.exp(f["a"]), freq, atol=1e-12)    # frequencies settled
        bits = sv.hard_code_bits(X40, f["C"], f["b"], f["a"], 0.15, codes)["total"].mean()
        assert bits == pytest.approx(f["bits"], abs=1e-9)


def test_a_hard_code_is_a_one_hot_posterior_and_costs_at_least_the_exact_dl():
    model = sv.HardCode(2, 3, 0.15, rng=np.random.default_rng(5))
    model.fit(X40)
    codes, log_q = model.sample_codes(X40)
    assert np.all(log_q == 0) and all(np.all(q.max(axis=1) == 1) for q in model.posteriors(X40))
    cost = (((X40 - model.reconstruct(codes)) ** 2).sum(1) / (2 * 0.15**2)
            - model.log_prior(codes)) / np.log(2)
    total = model.description_length(X40)["total"]
    np.testing.assert_allclose(cost, total, rtol=1e-12)
    assert np.all(model.exact_dl(X40) <= total + 1e-9)


def test_variational_em_never_raises_the_exact_dl_of_one_factor():
    # with one factor the E-step is the exact posterior, so EM is exact EM on -log p(x)
    model = sv.StochasticVQ(5, 0.2, rng=np.random.default_rng(6)).init_from_hard_code(X40)
    trace = []

    def record(t, C, b, a):
        model.p["C"][...], model.p["b"][...], model.p["a"][...] = C[0], b[0], a[0]
        trace.append(model.exact_dl(X40).mean())

    start = model.starts[0]
    sv.variational_em(X40, start["C"][None], start["b"][None],
                      np.maximum(start["a"], np.log(1e-4))[None], 0.2, sv.pixel_groups(1),
                      schedule="none", on_step=record)
    assert np.all(np.diff(trace) <= 1e-9) and trace[-1] < trace[0]


def test_em_ends_no_worse_than_each_hard_code_it_starts_from():
    model = sv.FactorialVQ(2, 3, 0.15, rng=np.random.default_rng(7)).init_from_hard_code(X40)
    stack = lambda key: np.stack([f[key] for f in model.starts])
    *_, F = sv.variational_em(X40, stack("C"), stack("b"), stack("a"), 0.15,
                              sv.pixel_groups(2), schedule="none")
    assert np.all(F <= stack("bits") + 1e-9)


@pytest.mark.parametrize("name", ["standard_vq", "separate_slices", "factorial_vq",
                                  "residual_vq"])
def test_each_model_starts_from_its_hard_code_row(name):
    X = sv.load_data(0, 60, 10)[0]
    hard = next(h for h, n in sv.HARD_CODES.items() if n == name)
    model, _ = sv.fit_model(name, X, seed=3, steps=2)
    row, _ = sv.fit_model(hard, X, seed=3)
    for key in ("C", "b", "a"):
        np.testing.assert_array_equal(model.hard_code().p[key], row.p[key])


@pytest.mark.parametrize("beta", [0.7, 1.0])
def test_residual_chain_gradient_matches_finite_differences(beta):
    model = sv.ResidualVQ(3, 3, 0.3, rng=np.random.default_rng(8)).init_from_hard_code(X40[:25])
    rng = np.random.default_rng(9)
    model.theta += rng.normal(0, 0.05, model.theta.shape)
    _, g = model.loss_and_grad(X40[:25], kl_weight=beta, sigma_x=0.4)
    idx = list(rng.choice(len(model.theta), 40, replace=False))
    for sl, _ in model._layout.values():              # and one entry of every block
        idx.append(sl.start + (sl.stop - sl.start) // 2)
    numeric = []
    for i in idx:
        old = model.theta[i]
        model.theta[i] = old + 1e-6
        fp, _ = model.loss_and_grad(X40[:25], beta, sigma_x=0.4)
        model.theta[i] = old - 1e-6
        fm, _ = model.loss_and_grad(X40[:25], beta, sigma_x=0.4)
        model.theta[i] = old
        numeric.append((fp - fm) / 2e-6)
    np.testing.assert_allclose(g[idx], numeric, rtol=1e-5, atol=1e-6 * np.max(np.abs(numeric)))
    total, _ = model.chain_free_energy(X40[:25], 0.4, beta, grad=True)
    recon, code, _ = model.chain_free_energy(X40[:25], 0.4)
    np.testing.assert_allclose(total, recon + beta * code, rtol=1e-12)


def test_natural_spline_basis_matches_scipy_on_uneven_knots():
    rng = np.random.default_rng(10)
    knots = np.concatenate([[0.0], np.sort(rng.uniform(0, 11, 5)), [11.0]])
    heights, xs = rng.normal(size=(4, 7)), np.linspace(0, 11, 300)
    ref = scipy.interpolate.CubicSpline(knots, heights.T, bc_type="natural")(xs).T
    np.testing.assert_allclose(heights @ sv.natural_spline_basis(knots, xs), ref, atol=1e-12)


def test_learning_rate_rises_then_decays():
    f = np.array([sv.learning_rate_factor(t, 100) for t in range(100)])
    peak = int(np.argmax(f))
    assert f[0] < 0.15 and np.all(np.diff(f[:peak + 1]) > 0) and np.all(np.diff(f[peak:]) < 0)
    assert f.max() <= 1.0 and f[-1] == pytest.approx(0.05, abs=0.01)
